"""A backup served as the service (`scrapy sandbox --from-backup`), and the round trip that proves a
backup complete: a crawl of the served backup into an empty folder gives back the same files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import SANDBOX_MAX_LIFETIME
from crawlhelp import REPO, crawl
from tzcrawl.sandbox import Sandbox, SandboxConfig
from tzcrawl.sandbox.frombackup import BackupWorld, files_port, round_trip_difference
from tzcrawl.sandbox.server import FILES_HOST
from tzcrawl.store import BackupView

def assert_same_backup(original: Path, again: Path) -> int:
    files, difference = round_trip_difference(original, again)
    assert difference is None, difference
    return files


def serve(backup: Path, **config) -> Sandbox:
    world = BackupWorld(backup)
    return Sandbox(SandboxConfig(**config), port=0, max_lifetime=SANDBOX_MAX_LIFETIME, world=world,
                   files_port=files_port(world, FILES_HOST)).start()


HARD = dict(personalities=3, memories=65, messages=420, ts_ties=True, unsafe_usernames=True)


@pytest.mark.parametrize("records, data", [("2026", {}), ("2026", HARD), ("2025", HARD)],
                         ids=["the demo's data", "2026 records, ties, hostile names", "2025 records"])
def test_a_crawl_of_a_served_backup_gives_back_the_same_files(sandbox_factory, tmp_path, records, data):
    sb = sandbox_factory(records=records, **data)
    original, again = tmp_path / "original", tmp_path / "again"
    first = crawl(sb, "all_personalities", original)
    assert first.returncode == 0, first.stderr[-3000:]
    sb.stop()  # the service is gone; its file host's port is free for the served backup's
    served = serve(original, records=records)
    try:
        result = crawl(served, "all_personalities", again)
        assert result.returncode == 0, result.stderr[-3000:]
        assert served.file_stats()["status"].get("404", 0) == 0
    finally:
        served.stop()
    assert assert_same_backup(original, again) > 10


def test_the_sandbox_command_serves_a_backup(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=25, messages=60, empty_last=False)
    backup = tmp_path / "b"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    name = sb.personalities[0]["username"]
    sb.stop()
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "scrapy", "sandbox", "--from-backup", str(backup), "--ready-file",
                             str(ready), "--max-lifetime", "120"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        from tzcrawl.sandbox.client import call, trust

        trust(info["base_url"], info["ca_file"])
        headers = {"Cookie": info["cookie_header"]}
        listed = call(info["base_url"], "/api/personalities?category=self", headers=headers)
        assert listed.status == 200 and [p["username"] for p in json.loads(listed.text)] == [name]
        saved = json.loads(BackupView(backup).path(name, "profile").read_text())
        profile = call(info["base_url"], f"/api/personalities/{saved['id']}", headers=headers)
        assert json.loads(profile.text) == saved
        page = json.loads(call(info["base_url"], f"/api/memory/{saved['id']}?page=2", headers=headers).text)
        assert len(page["items"]) == 5 and page["pagination"] == {"page": 2, "total_pages": 2, "has_next": False}
        refused = call(info["base_url"], "/api/personalities?category=self")
        assert refused.status == 401, "the session is still asked for"
        avatar = saved["avatar_url"]
        got = call(f"http://{urlsplit(avatar).netloc}", urlsplit(avatar).path)
        assert got.status == 200, "the saved avatar, at its original URL"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "serving the backup" in out and "read-only" in out, out + err
