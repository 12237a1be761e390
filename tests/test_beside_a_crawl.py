"""`scrapy verify` and `scrapy export` while a crawl is backing the same personality up: they read its
last committed state (and say so), or wait for the crawl (`-a wait=SECONDS`); never a false alarm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from crawlhelp import REPO, crawl, crawl_cmd, crawl_env, metadata
from test_export import export
from test_verify import verify
from tzcrawl.store import BackupView


def start_slow_crawl(sb, backup):
    return subprocess.Popen(crawl_cmd("all_personalities"), cwd=REPO, env=crawl_env(sb, backup),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop(proc) -> None:
    """Let the crawl finish (it is past the personality: closing); kill it only when it hangs."""
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def waiting_for(sb, proc, backup, *command: str) -> subprocess.CompletedProcess:
    """``scrapy <command> -a wait=120`` started while the sandbox holds the crawl: it must say it waits
    for that crawl before the hold is lifted (order, not time); then its whole output."""
    reader = subprocess.Popen([sys.executable, "-m", "scrapy", *command, "-a", "wait=120"], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={"BACKUP_DIR": str(backup), "PATH": "/usr/bin:/bin"})
    said = reader.stdout.readline()
    assert f"being backed up now by process {proc.pid}; waiting up to 120 s" in said, said
    sb.set_knobs(hold_chat_after=None)  # only now does the crawl go on
    out, err = reader.communicate(timeout=120)
    return subprocess.CompletedProcess(reader.args, reader.returncode, said + out, err)


def wait_until(condition, proc, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, "the crawl ended before the moment the test needs"
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_verify_and_export_beside_a_running_crawl(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=30, messages=200, empty_last=False)
    backup = tmp_path / "backup"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    name = sb.personalities[0]["username"]
    sb.add(name, memories=10, messages=400)
    sb.set_knobs(hold_chat_after=1)  # the crawl stops mid-history, after one page: held by order, not by time
    staging = BackupView(backup).directory(name) / ".staging" / "messages"
    proc = start_slow_crawl(sb, backup)
    try:
        # memories are committed (40), messages are being staged: the moment the old verify called damaged
        wait_until(lambda: staging.exists() and metadata(backup, name)["resources"]["memories"]["total"] == 40, proc)
        checked = verify(None, backup)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"being backed up now by process {proc.pid}: checked its last committed state" in checked.stdout
        assert "leftover" not in checked.stdout and "40 records" in checked.stdout and "200 records" in checked.stdout

        now = export(backup, tmp_path / "now", "-a", "format=md")
        assert now.returncode == 0, now.stdout + now.stderr
        assert f"being backed up now by process {proc.pid}; exporting its last committed state" in now.stdout
        assert "md: done (messages 200, memories 40," in now.stdout, "as last committed: not the staged messages"

        waited = waiting_for(sb, proc, backup, "export", "-a", f"out={tmp_path / 'waited'}", "-a", "format=md")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert "exporting its last committed state" not in waited.stdout
        assert "md: done (messages 600, memories 40," in waited.stdout, "it waited for the crawl's messages"
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    again = verify(None, backup)
    assert again.returncode == 0 and "being backed up now" not in again.stdout
    assert not list((backup / ".locks" / "views").iterdir()), "the readers' views are gone"


def test_verify_waits_for_the_crawl_when_asked(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=10, messages=60, empty_last=False)
    backup = tmp_path / "backup"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    name = sb.personalities[0]["username"]
    sb.add(name, messages=200)
    sb.set_knobs(hold_chat_after=1)
    staging = BackupView(backup).directory(name) / ".staging" / "messages"
    proc = start_slow_crawl(sb, backup)
    try:
        wait_until(staging.exists, proc)
        checked = waiting_for(sb, proc, backup, "verify")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "checked its last committed state" not in checked.stdout
        assert "260 records" in checked.stdout, "it waited for the crawl to let go: its messages are in"
    finally:
        stop(proc)
