"""Media end to end: real `scrapy crawl` runs against the sandbox's file host on 127.0.0.2."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from crawlhelp import REPO, assert_matches_sandbox, crawl, crawl_cmd, crawl_env
from tzcrawl.media import manifest
from tzcrawl.media.pipeline import media_name
from tzcrawl.sandbox import media as sandbox_media
from tzcrawl.store import BackupView

SMALL = dict(personalities=1, memories=5, messages=80, empty_last=False)


def media_urls(sb, username: str) -> set[str]:
    """Every file-host URL the service's records of ``username`` point at (the ground truth)."""
    truth = sb.export(username)
    found: set[str] = set()

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and sb.files_url and value.startswith(sb.files_url):
            found.add(value)

    walk([truth["profile"], truth["messages"], truth["knowledge"], truth["training"]])
    return found


def entries(out, username: str) -> dict[str, dict]:
    return manifest.load(BackupView(out).media_manifest_path(username))


def served_bytes(sb, url: str) -> bytes:
    path = urlsplit(url).path
    return sandbox_media.make(path, sb.app.files.size_of(path), sb.config.seed)


def only(sb) -> str:
    return sb.personalities[0]["username"]


def test_every_media_file_comes_home_once_and_a_second_run_fetches_none(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=5, messages=120, empty_last=False)
    out = tmp_path / "b"
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    view = BackupView(out)
    fetched = sb.file_stats()
    for p in sb.personalities:
        name = p["username"]
        urls = media_urls(sb, name)
        held = entries(out, name)
        assert set(held) == urls and len(urls) > 10
        profile = sb.export(name)["profile"]
        assert profile["avatar"] == profile["avatar_url"]  # two fields, one URL: one entry, one file
        for url, entry in held.items():
            data = (view.directory(name) / entry["path"]).read_bytes()
            assert data == served_bytes(sb, url)
            assert entry["status"] == "ok" and entry["size"] == len(data)
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert entry["path"] == "media/" + media_name(url, entry["content_type"])
            assert entry["content_type"] == sandbox_media.CONTENT_TYPES[Path(urlsplit(url).path).suffix]
            assert entry["source"]["resource"] in ("profile", "messages", "knowledge") and entry["first_seen"]
        assert len(list(view.media_dir(name).iterdir())) == len(urls)
        mode = stat.S_IMODE
        assert mode(view.media_dir(name).stat().st_mode) == 0o700
        assert mode(view.media_manifest_path(name).stat().st_mode) == 0o600
        assert {mode(f.stat().st_mode) for f in view.media_dir(name).iterdir()} == {0o600}
        assert_matches_sandbox(sb, out, name)
    assert fetched["requests"] == sum(len(media_urls(sb, p["username"])) for p in sb.personalities)
    assert set(fetched["paths"].values()) == {1}, "each file fetched exactly once"
    assert fetched["requests_with_cookie"] == 0 and fetched["requests_with_credentials"] == 0
    assert "media" in result.stderr.split("Backup summary", 1)[1].splitlines()[1]

    sb.reset_stats()
    again = crawl(sb, "all_personalities", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sb.file_stats()["requests"] == 0, "an incremental run with nothing new costs no media request"
    assert f"'backup/media/uptodate': " in again.stderr

    name = only(sb)
    before = set(entries(out, name))
    sb.add(name, messages=60)
    sb.reset_stats()
    grown = crawl(sb, "all_personalities", out)
    assert grown.returncode == 0, grown.stderr[-3000:]
    after = set(entries(out, name))
    assert after == media_urls(sb, name) and after > before
    assert set(sb.file_stats()["paths"]) == {urlsplit(u).path for u in after - before}, "only the new files"


def test_the_cookie_never_reaches_the_file_host_or_the_host_it_redirects_to(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="redirect")
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert result.returncode == 0, result.stderr[-3000:]
    stats = sb.file_stats()
    assert stats["hosts"].get("127.0.0.3", 0) == len(media_urls(sb, only(sb))), "every file came via the redirect"
    assert stats["requests_with_cookie"] == 0 and stats["requests_with_credentials"] == 0
    held = entries(out, only(sb))
    assert set(held) == media_urls(sb, only(sb)) and {e["status"] for e in held.values()} == {"ok"}
    for url, entry in held.items():  # recorded under the URL the record holds, bytes from the mirror
        assert (BackupView(out).directory(only(sb)) / entry["path"]).read_bytes() == served_bytes(sb, url)


def test_gone_files_are_reported_not_failed_and_only_a_full_run_asks_again(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="404", media_fault_share=0.3)
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert result.returncode == 0, result.stderr[-3000:]
    held = entries(out, only(sb))
    gone = {u for u, e in held.items() if e["status"] == "gone"}
    assert gone and len(gone) < len(held) and all("404" in held[u]["error"] for u in gone)
    assert f"{len(held) - len(gone)} (+{len(held) - len(gone)}), {len(gone)} gone" in result.stderr
    assert not any((BackupView(out).media_dir(only(sb)) / media_name(u, None)).exists() for u in gone)
    assert_matches_sandbox(sb, out, only(sb))

    sb.set_knobs(media_fault="none")
    sb.reset_stats()
    again = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert again.returncode == 0 and sb.file_stats()["requests"] == 0
    full = crawl(sb, "personality", out, "-a", f"personality={only(sb)}", "-a", "full=1")
    assert full.returncode == 0, full.stderr[-3000:]
    assert sb.file_stats()["requests"] == len(gone), "the full run asked again for the gone files only"
    assert {e["status"] for e in entries(out, only(sb)).values()} == {"ok"}


def test_a_5xx_that_recovers_is_retried_within_the_run(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="flaky")
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {e["status"] for e in entries(out, only(sb)).values()} == {"ok"}
    assert sb.file_stats()["status"]["503"] == 2 * len(media_urls(sb, only(sb)))


def test_429s_from_the_file_host_never_slow_the_api(sandbox_factory, tmp_path):
    # The pacing middleware learns the API's limit from its 429s; the file host's (its own slot) must
    # not teach it anything.
    sb = sandbox_factory(**SMALL, media_fault="429")
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sb.file_stats()["status"]["429"] == 2 * len(media_urls(sb, only(sb)))
    assert {e["status"] for e in entries(out, only(sb)).values()} == {"ok"}
    assert "'backup/pacing/interval_ms': 0.0" in result.stderr


def test_failed_files_fail_the_run_but_never_hold_back_the_text_and_are_retried_next_run(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="500", media_fault_share=0.25)
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}", settings={"RETRY_TIMES": "1"})
    assert result.returncode == 1, result.stderr[-3000:]
    assert_matches_sandbox(sb, out, only(sb))  # every JSON file committed all the same
    held = entries(out, only(sb))
    failed = {u for u, e in held.items() if e["status"] == "failed"}
    assert failed and all(held[u]["error"] == "HTTP 503" for u in failed)
    assert f"{len(failed)} FAILED" in result.stderr and "Backup INCOMPLETE" in result.stderr
    assert not any(held[u]["path"] for u in failed)

    sb.set_knobs(media_fault="none")
    sb.reset_stats()
    again = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert set(sb.file_stats()["paths"]) == {urlsplit(u).path for u in failed}, "only the failed ones, once each"
    assert {e["status"] for e in entries(out, only(sb)).values()} == {"ok"}


def test_a_file_over_the_size_limit_is_refused_and_nothing_partial_stays(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="huge", media_fault_share=0.2, media_huge_kb=600)
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}",
                   settings={"BACKUP_MEDIA_MAX_SIZE": str(100 * 1024)})
    assert result.returncode == 1
    held = entries(out, only(sb))
    big = {u for u, e in held.items() if e["status"] == "failed"}
    assert big and all("BACKUP_MEDIA_MAX_SIZE" in held[u]["error"] for u in big)
    media_dir = BackupView(out).media_dir(only(sb))
    names = {f.name for f in media_dir.iterdir()}
    assert names == {Path(e["path"]).name for e in held.values() if e["status"] == "ok"}, "no partial or temp file"
    assert all(f.stat().st_size < 100 * 1024 for f in media_dir.iterdir())


def test_an_html_page_instead_of_a_file_is_refused(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_fault="html", media_fault_share=0.3)
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert result.returncode == 1
    held = entries(out, only(sb))
    refused = {u for u, e in held.items() if e["status"] == "failed"}
    assert refused and all("HTML page" in held[u]["error"] for u in refused)
    for entry in held.values():
        if entry["status"] == "ok":
            assert entry["content_type"] != "text/html"


def test_odd_url_forms_are_never_fetched_and_said_once(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, hostile_media_urls=True)
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert result.returncode == 0, result.stderr[-3000:]
    held = entries(out, only(sb))
    assert set(held) == media_urls(sb, only(sb)), "file:, javascript:, relative and data: URLs are not entries"
    for shown in ("'file:///etc/passwd'", "'javascript:alert(1)'", "'/relative/shot.png'"):
        assert result.stderr.count(shown) == 1 and "not an http(s) URL" in result.stderr
    assert result.stderr.count("a data: URL: its bytes are in the JSON already") == 1
    # a URL with a user name and password: refused in one line that shows neither, never fetched
    assert result.stderr.count("it carries a user name or password: refused") == 1
    assert "s3cr3t-pass" not in result.stderr and "sandbox-user" not in result.stderr and "Traceback" not in result.stderr
    assert "'http://***@127.0.0.2:" in result.stderr
    assert not [path for path in sb.file_stats()["paths"] if path.endswith("-secret.png")]
    assert sb.file_stats()["requests_with_credentials"] == 0
    assert sb.export(only(sb))["profile"]["screenshots"][-1]["url"].startswith("data:")
    assert_matches_sandbox(sb, out, only(sb))  # the data: URL is kept, in the profile JSON


@pytest.mark.parametrize("how", [("-a", "media=0"), ("-s", "BACKUP_MEDIA=no")])
def test_text_only(sandbox_factory, tmp_path, how):
    sb = sandbox_factory(**SMALL)
    out = tmp_path / "b"
    result = crawl(sb, "personality", out, "-a", f"personality={only(sb)}", *how)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sb.file_stats()["requests"] == 0
    view = BackupView(out)
    assert not view.media_dir(only(sb)).exists() and not view.media_manifest_path(only(sb)).exists()
    assert "media" not in result.stderr.split("Backup summary", 1)[1].splitlines()[1]
    assert_matches_sandbox(sb, out, only(sb))


def test_kill_9_mid_downloads_leaves_no_partial_file_referenced_and_the_next_run_completes(sandbox_factory, tmp_path):
    sb = sandbox_factory(**SMALL, media_latency=0.3)
    out = tmp_path / "b"
    env = crawl_env(sb, out)
    proc = subprocess.Popen(crawl_cmd("personality", "-a", f"personality={only(sb)}"), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    path = BackupView(out).media_manifest_path(only(sb))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            # the messages are committed (their media listed, not yet downloaded) and some files are in
            held = manifest.load(path) if path.exists() else {}
            media_dir = BackupView(out).media_dir(only(sb))
            done = len(list(media_dir.glob("*.*"))) if media_dir.exists() else 0
            if BackupView(out).path(only(sb), "messages").exists() and 0 < done < len(held) - 4:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the crawl should have been killed mid-way"
    held = manifest.load(path)
    assert any(e["status"] == "failed" and e["error"] == manifest.NOT_YET for e in held.values()), \
        "killed while downloads were still going"
    directory = BackupView(out).directory(only(sb))
    for entry in held.values():
        if entry["status"] == "ok":
            assert manifest.file_ok(directory, entry)
    leftovers = [f.name for f in BackupView(out).media_dir(only(sb)).iterdir() if f.name.endswith(".tmp")]

    sb.set_knobs(media_latency=0.0)
    again = crawl(sb, "personality", out, "-a", f"personality={only(sb)}")
    assert again.returncode == 0, again.stderr[-3000:]
    final = manifest.load(path)
    assert set(final) == media_urls(sb, only(sb)) and {e["status"] for e in final.values()} == {"ok"}
    assert all(manifest.file_ok(directory, e) for e in final.values())
    assert not [f for f in BackupView(out).media_dir(only(sb)).iterdir() if f.name.endswith(".tmp")], leftovers
