"""`scrapy verify`: every kind of damage is found (offline), and what the service holds beyond the
backup is reported (online), on real crawled backups; verify never writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from crawlhelp import REPO, crawl, crawl_env, unshare_works
from tzcrawl.media import manifest
from tzcrawl.store import BackupView
from tzcrawl.store.metadata import save as save_metadata


def verify(sb, backup, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = crawl_env(sb, backup, **(env_extra or {})) if sb is not None else {"BACKUP_DIR": str(backup),
                                                                                "PATH": "/usr/bin:/bin"}
    settings = ["-s", "DOWNLOAD_DELAY=0", "-s", "AUTOTHROTTLE_ENABLED=False"]
    return subprocess.run([sys.executable, "-m", "scrapy", "verify", *settings, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


def snapshot(root) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if ".locks" not in p.parts}


@pytest.fixture
def backed(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=30, messages=80)
    backup = tmp_path / "backup"
    result = crawl(sb, "all_personalities", backup)
    assert result.returncode == 0, result.stderr[-3000:]
    return sb, backup, BackupView(backup)


def first(sb) -> str:
    return sb.personalities[0]["username"]


def test_a_whole_backup_verifies_and_nothing_is_written(backed):
    sb, backup, view = backed
    before = snapshot(backup)
    result = verify(None, backup)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified: 2 ok, 0 damaged" in result.stdout
    assert f"{first(sb)} ({view.dir_name(first(sb))}): ok" in result.stdout
    assert re.search(r"^  memories\s+ok\s+30 records; 2 flagged deleted on the service$", result.stdout, re.M)
    assert re.search(r"^  media\s+ok\s+\d+ files held, 0 gone, 0 failed$", result.stdout, re.M)
    assert snapshot(backup) == before


def damage_and_verify(sb, backup, damage) -> subprocess.CompletedProcess:
    damage()
    result = verify(None, backup)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "verified: 1 ok, 1 damaged" in result.stdout
    return result


def test_a_flipped_byte_is_found(backed):
    sb, backup, view = backed
    path = view.path(first(sb), "messages")
    data = bytearray(path.read_bytes())
    at = data.index(b'"reply":"') + 12
    data[at] = ord("Q") if data[at] != ord("Q") else ord("R")  # still valid JSON: only the checksum knows
    result = damage_and_verify(sb, backup, lambda: path.write_bytes(bytes(data)))
    assert f"{path.name}: sha256" in result.stdout and "differs from the" in result.stdout


def test_a_truncated_file_is_found(backed):
    sb, backup, view = backed
    path = view.path(first(sb), "memories")
    data = path.read_bytes()
    result = damage_and_verify(sb, backup, lambda: path.write_bytes(data[: len(data) // 2]))
    assert "not valid JSON after" in result.stdout


def test_a_duplicated_record_is_found(backed):
    sb, backup, view = backed
    path = view.path(first(sb), "memories")
    lines = path.read_text().splitlines()
    copy = lines[3] if lines[3].endswith(",") else lines[3] + ","
    result = damage_and_verify(sb, backup, lambda: path.write_text("\n".join([*lines[:4], copy, *lines[4:]]) + "\n"))
    assert "record 4 repeats the id of record 3" in result.stdout  # line 0 is the array's "["
    assert "holds 31 records, the metadata says 30" in result.stdout


def test_a_deleted_media_file_is_found(backed):
    sb, backup, view = backed
    entry = next(e for e in manifest.load(view.media_manifest_path(first(sb))).values() if e["status"] == "ok")
    result = damage_and_verify(sb, backup, lambda: (view.directory(first(sb)) / entry["path"]).unlink())
    assert f"{entry['path']} ({entry['url']}): missing" in result.stdout


def test_a_hand_edited_metadata_file_is_found(backed):
    sb, backup, view = backed
    data = view.metadata(first(sb))
    data["resources"]["messages"]["total"] = 79
    result = damage_and_verify(sb, backup, lambda: save_metadata(view.metadata_path(first(sb)), data))
    assert "holds 80 records, the metadata says 79" in result.stdout


def test_leftovers_and_loose_permissions_are_found(backed):
    sb, backup, view = backed

    def damage():
        (view.directory(first(sb)) / ".x.json.abc.tmp").write_text("{")
        os.chmod(view.path(first(sb), "knowledge"), 0o644)

    result = damage_and_verify(sb, backup, damage)
    assert ".x.json.abc.tmp is a leftover of a stopped run" in result.stdout
    assert "has mode 0644, not 0600" in result.stdout


def test_a_backup_from_before_checksums_is_noted_not_damaged(backed):
    sb, backup, view = backed
    for username in (p["username"] for p in sb.personalities):
        data = view.metadata(username)
        for entry in data["resources"].values():
            entry.pop("sha256", None)
        save_metadata(view.metadata_path(username), data)
    result = verify(None, backup)
    assert result.returncode == 0 and "no checksum yet" in result.stdout


def test_online_compares_with_the_service_and_never_writes(backed):
    sb, backup, view = backed
    before = snapshot(backup)
    same = verify(sb, backup, "-a", "online=1")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "online: 2 match the service, 0 lack something" in same.stdout

    sb.add(first(sb), memories=5, messages=3)
    sb.edit(first(sb), profile={"description": "rewritten"})
    newer = verify(sb, backup, "-a", "online=1", "-a", f"personality={first(sb)}")
    assert newer.returncode == 1, newer.stdout + newer.stderr
    assert "verified: 1 ok, 0 damaged" in newer.stdout  # offline, the backup is whole
    assert f"{first(sb)}: LACKING" in newer.stdout
    # today's service gives no record count: the newest page tells what is missing
    assert "5 of the 20 newest memories on the service are not in the backup" in newer.stdout
    assert "3 of the 50 newest messages on the service are not in the backup" in newer.stdout
    assert "profile differs from the backup (fields: description)" in newer.stdout
    assert snapshot(backup) == before, "verify wrote something"


def test_online_with_an_expired_cookie_says_it_could_not_check(backed):
    sb, backup, _ = backed
    sb.expire_cookie()
    result = verify(sb, backup, "-a", "online=1")
    assert result.returncode == 1 and "could not check: not authenticated" in result.stdout


@pytest.mark.parametrize("args, message", [
    (("-a", "colour=blue"), "expected one of personality=..., online=..."),
    (("-a", "online=maybe"), "-a online= takes yes or no"),
    (("extra",), "no positional arguments"),
])
def test_configuration_errors_exit_2(backed, args, message):
    _, backup, _ = backed
    result = verify(None, backup, *args)
    assert result.returncode == 2 and message in result.stderr


def test_no_backup_dir_or_no_cookie_exit_2(backed, tmp_path):
    sb, backup, _ = backed
    assert verify(None, tmp_path / "missing").returncode == 2
    result = verify(None, backup, "-a", "online=1")
    assert result.returncode == 2 and "SERVICE_WEBSITE" in result.stderr
    named = verify(None, backup, "-a", "personality=nobody")
    assert named.returncode == 1 and "nobody: DAMAGED  no backup of this personality" in named.stdout


@pytest.mark.skipif(not unshare_works(), reason="needs a private mount namespace for a read-only bind mount")
def test_a_read_only_backup_verifies_and_exports(backed, tmp_path):
    sb, backup, view = backed
    out = tmp_path / "export"
    scrapy = f"'{sys.executable}' -m scrapy"
    script = (f'mount --bind "{backup}" "{backup}" && mount -o remount,ro,bind "{backup}" || exit 9; '
              f'touch "{backup}/probe" 2>/dev/null && exit 8; '
              f'{scrapy} verify; v=$?; {scrapy} export -a out="{out}" -a format=md >/dev/null; e=$?; '
              f'echo "RESULT $v $e"')
    env = {"BACKUP_DIR": str(backup), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=300)
    assert "RESULT 0 0" in result.stdout, result.stdout + result.stderr
    assert "verified: 2 ok, 0 damaged" in result.stdout and list(out.rglob("chat.md"))
