"""Media that must come home, and fetches that must not happen: real crawls against the sandbox."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from crawlhelp import (REPO, RESOURCES, assert_matches_sandbox, crawl_cmd, crawl_env, metadata,
                       unshare_works)
from test_media_crawl import SMALL, entries, media_urls, only
from test_verify import verify
from tzcrawl import registry
from tzcrawl.media import manifest
from tzcrawl.store import BackupView

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class Private:
    """A service of this machine's that must never be fetched as media: it counts every request."""

    def __init__(self):
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append((self.path, self.headers.get("Cookie")))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def private():
    server = Private()
    yield server
    server.stop()


def run(sb, out, *args, settings=None, env_extra=None):
    env = crawl_env(sb, out, **(env_extra or {}))
    return subprocess.run(crawl_cmd("personality", "-a", f"personality={only(sb)}", *args, settings=settings),
                          cwd=REPO, capture_output=True, text=True, timeout=180, env=env)


def summary_row(stderr: str, name: str) -> str:
    table = stderr.split("Backup summary", 1)[1]
    return next(line for line in table.splitlines() if line.startswith(name))


# -- finding 1: media of records already held -----------------------------------------------------
def test_media_of_records_saved_by_a_text_only_run_come_home_on_the_next_run(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL)
    out, name = tmp_path / "b", only(sb)
    text = run(sb, out, "-a", "media=0")
    assert text.returncode == 0, text.stderr[-3000:]
    assert sb.file_stats()["requests"] == 0
    urls = media_urls(sb, name)
    checked = verify(None, out)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"{len(urls)} media URLs of saved records are not in the manifest" in checked.stdout
    assert "verified: 0 ok, 0 damaged, 1 incomplete" in checked.stdout

    again = run(sb, out)  # nothing new on the service: every file is of a record saved earlier
    assert again.returncode == 0, again.stderr[-3000:]
    held = entries(out, name)
    assert set(held) == urls and {e["status"] for e in held.values()} == {"ok"}
    assert sb.file_stats()["requests"] == len(urls)
    assert f"{len(urls)} media files of records saved earlier were not in the manifest" in again.stderr
    resources = metadata(out, name)["resources"]
    assert all(resources[r.name]["media_listed"] for r in registry.REGISTRY)
    assert verify(None, out).returncode == 0

    sb.reset_stats()
    third = run(sb, out)
    assert third.returncode == 0 and sb.file_stats()["requests"] == 0
    assert "not in the manifest" not in third.stderr, "listed once: saved records are not read again"

    # a manifest lost (deleted by hand, never written): the next run lists every saved record's media again
    BackupView(out).media_manifest_path(name).unlink()
    fourth = run(sb, out)
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert set(entries(out, name)) == urls and {e["status"] for e in entries(out, name).values()} == {"ok"}


def test_saved_records_are_read_back_once_even_by_runs_that_do_not_save_them(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL)
    out, name = tmp_path / "b", only(sb)
    assert run(sb, out, "-a", "media=0").returncode == 0
    env = crawl_env(sb, out)
    memories_only = crawl_cmd("memories", "-a", f"personality={name}")  # never commits messages or the profile
    first = subprocess.run(memories_only, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "'backup/media/saved_read': 6" in first.stderr and set(entries(out, name)) == media_urls(sb, name)
    assert all(r["media_listed"] for r in metadata(out, name)["resources"].values())
    again = subprocess.run(memories_only, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert again.returncode == 0 and "backup/media/saved_read" not in again.stderr, "not read back a second time"


def test_a_text_only_run_after_a_media_run_leaves_the_next_one_to_list_what_it_added(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL)
    out, name = tmp_path / "b", only(sb)
    assert run(sb, out).returncode == 0
    before = set(entries(out, name))
    sb.add(name, messages=40)
    assert run(sb, out, "-a", "media=0").returncode == 0
    assert metadata(out, name)["resources"]["messages"]["media_listed"] is False
    assert verify(None, out).returncode == 1
    sb.reset_stats()
    assert run(sb, out).returncode == 0  # nothing new on the service now: the media come from the saved file
    after = set(entries(out, name))
    assert after == media_urls(sb, name) and after > before
    assert set(sb.file_stats()["paths"]) == {urlsplit(u).path for u in after - before}
    assert verify(None, out).returncode == 0


# -- finding 3: media only from public addresses ----------------------------------------------------
def test_media_on_this_machine_are_refused_once_and_asked_for_again_only_when_allowed(sandbox_factory, tmp_path,
                                                                                      private):
    admin = f"http://127.0.0.1:{private.port}/private-admin-page"
    local = f"http://localhost:{private.port}/other.png"
    sb = sandbox_factory(**SMALL, extra_media_urls=f"{admin},{local}")
    out, name = tmp_path / "b", only(sb)
    first = run(sb, out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert private.hits == [], "nothing was sent to this machine's other service"
    held = entries(out, name)
    assert held[admin]["status"] == "refused" and "loopback address" in held[admin]["error"]
    assert held[local]["status"] == "refused" and "is this machine" in held[local]["error"]
    assert held[admin]["path"] is None and not any("private" in p.name for p in BackupView(out).media_dir(name).iterdir())
    assert "2 refused" in summary_row(first.stderr, name)
    assert first.stderr.count("refused: ") == 2
    assert {e["status"] for u, e in held.items() if u not in (admin, local)} == {"ok"}
    assert verify(None, out).returncode == 0  # a refusal is the user's rule, not a hole

    second = run(sb, out, "-a", "full=1")
    assert second.returncode == 0 and private.hits == [], "never retried while the setting is the same"

    allowed = run(sb, out, env_extra={"BACKUP_MEDIA_PRIVATE_HOSTS": f"{sb.media_hosts},127.0.0.1,localhost"})
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert sorted(path for path, _ in private.hits) == ["/other.png", "/private-admin-page"]
    assert {e["status"] for e in entries(out, name).values()} == {"ok"}


def test_a_redirect_to_an_address_not_listed_is_refused_after_the_hop(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="redirect")
    out, name = tmp_path / "b", only(sb)
    result = run(sb, out, env_extra={"BACKUP_MEDIA_PRIVATE_HOSTS": "127.0.0.2"})  # the mirror, 127.0.0.3, is not
    assert result.returncode == 0, result.stderr[-3000:]
    stats = sb.file_stats()
    assert stats["hosts"].get("127.0.0.3", 0) == 0 and stats["hosts"]["127.0.0.2"] == len(media_urls(sb, name))
    held = entries(out, name)
    assert {e["status"] for e in held.values()} == {"refused"}
    assert all("127.0.0.3 is a loopback address" in e["error"] for e in held.values())


def test_without_the_setting_the_sandbox_file_host_itself_is_refused(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL)
    out, name = tmp_path / "b", only(sb)
    result = run(sb, out, env_extra={"BACKUP_MEDIA_PRIVATE_HOSTS": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sb.file_stats()["requests"] == 0
    assert {e["status"] for e in entries(out, name).values()} == {"refused"}
    assert_matches_sandbox(sb, out, name)  # the text backup is whole all the same


# -- finding 4: never the cookie, the service's own origin included ---------------------------------
def test_a_media_url_on_the_services_own_origin_goes_without_the_cookie(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL)
    me = f"{sb.base_url}/api/users/info"  # the session check: with the cookie it answers the account
    sb.set_knobs(extra_media_urls=me)
    out, name = tmp_path / "b", only(sb)
    result = run(sb, out, env_extra={"BACKUP_MEDIA_PRIVATE_HOSTS": f"{sb.media_hosts},127.0.0.1"})
    assert result.returncode == 1, result.stderr[-3000:]  # the file failed: the run says so
    entry = entries(out, name)[me]
    assert entry["status"] == "failed" and entry["error"] == "HTTP 401" and entry["path"] is None
    media = BackupView(out).media_dir(name)
    assert not any(b'"email"' in f.read_bytes() or b"username" in f.read_bytes() for f in media.iterdir())
    assert sb.stats()["session"]["requests_with_other_cookies"] == 0
    assert_matches_sandbox(sb, out, name)


# -- finding 2: a disk that fills during media downloads --------------------------------------------
def _usage(root: Path) -> int:
    """Bytes a tmpfs needs for ``root``'s files (whole pages) and folders."""
    return sum(-(-p.stat().st_size // 4096) * 4096 if p.is_file() else 4096 for p in root.rglob("*"))


@pytest.mark.skipif(not unshare_works(), reason="needs a private mount namespace for a small tmpfs")
def test_a_disk_that_fills_during_media_downloads_says_it_once_and_keeps_the_manifest(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="huge", media_fault_share=0.6, media_huge_kb=256)
    name, text, copy, small = only(sb), tmp_path / "text", tmp_path / "after", tmp_path / "small"
    assert run(sb, text, "-a", "media=0").returncode == 0
    urls = media_urls(sb, name)
    small.mkdir()
    size = _usage(text) + 400 * 1024  # the text fits; a few of the 256 KB files do, not all
    cmd = " ".join(f"'{c}'" for c in crawl_cmd("personality", "-a", f"personality={name}"))
    script = (f'mount -t tmpfs -o size={size} tmpfs "{small}" && cp -a "{text}/." "{small}/" && {cmd}; '
              f'rc=$?; cp -a "{small}/." "{copy}/"; exit $rc')
    env = crawl_env(sb, small)
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    full = [line for line in result.stderr.splitlines() if "No space left on device" in line]
    # The cause, once for every file it stopped: said by the first write that hit it, a media file's
    # ("media files cannot be written to ...") or the manifest's ("<name>: media: No space left ..."), which
    # of the two depends on which write comes first; the personality's media outcome; a text file rewritten
    # while the disk was full fails too (its saved copy stays), one line for each.
    said_once = [line for line in full if "media files cannot be written to" in line or f"{name}: media: " in line]
    assert len(said_once) == 1, full
    assert sum(f"{name} · media:" in line for line in full) == 1, full
    assert all(line in said_once or f"{name} · " in line for line in full), full
    assert len(full) <= 2 + len(RESOURCES), full
    assert "Backup INCOMPLETE" in result.stderr and "0 of 1 personalities complete" in result.stderr
    held = entries(copy, name)  # the manifest was written: every URL, the missing ones failed
    assert set(held) == urls
    missing = {u for u, e in held.items() if e["status"] == "failed"}
    assert missing and all("No space left on device" in held[u]["error"] or held[u]["error"] == manifest.NOT_YET
                           for u in missing)
    assert f"{len(missing)} FAILED" in summary_row(result.stderr, name)  # the media cell: how many are missing
    directory = BackupView(copy).directory(name)
    assert all(manifest.file_ok(directory, e) for e in held.values() if e["status"] == "ok")
    assert not [f for f in BackupView(copy).media_dir(name).iterdir() if f.name.startswith(".")], "no temp file"
    assert_matches_sandbox(sb, copy, name)  # the text backup is whole

    sb.reset_stats()
    room = run(sb, copy)  # the same backup, with room: exactly the missing files come
    assert room.returncode == 0, room.stderr[-3000:]
    assert set(sb.file_stats()["paths"]) == {urlsplit(u).path for u in missing}
    assert {e["status"] for e in entries(copy, name).values()} == {"ok"}
    assert verify(None, copy).returncode == 0
