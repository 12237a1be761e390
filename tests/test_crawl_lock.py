"""Two runs of one personality at once (a scheduled run overlapping a manual one): the second waits
or skips with a clear line, never interleaves writes; a killed holder never blocks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from crawlhelp import assert_matches_sandbox, crawl, data_files

HOLD = """
import sys, time
from tzcrawl.store import BackupStore
with BackupStore(sys.argv[1]).lock(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold_lock(out, username, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), username, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_locked_personality_is_skipped_with_a_clear_line_and_left_alone(sandbox, tmp_path):
    out = tmp_path / "b"
    assert crawl(sandbox, "all_personalities", out).returncode == 0
    first, second = (p["username"] for p in sandbox.personalities[:2])
    sandbox.add(first, memories=5, messages=5)
    sandbox.add(second, memories=5, messages=5)
    before = data_files(out)
    holder = hold_lock(out, first, 60)
    try:
        result = crawl(sandbox, "all_personalities", out, settings={"BACKUP_LOCK_TIMEOUT": "0.5"})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert f"Skipping {first}: backup of '{first}' is locked by process {holder.pid}" in result.stderr
    assert "Traceback" not in result.stderr
    after = data_files(out)
    assert {k: v for k, v in after.items() if k.startswith(first)} == \
        {k: v for k, v in before.items() if k.startswith(first)}
    assert_matches_sandbox(sandbox, out, second)


def test_second_run_waits_for_the_first_then_completes(sandbox, tmp_path):
    out = tmp_path / "b"
    name = sandbox.personalities[0]["username"]
    holder = hold_lock(out, name, 2)
    started = time.monotonic()
    result = crawl(sandbox, "personality", out, "-a", f"personality={name}",
                   settings={"BACKUP_LOCK_TIMEOUT": "30"})
    holder.wait(timeout=30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "waiting up to 30s (BACKUP_LOCK_TIMEOUT)" in result.stderr
    assert time.monotonic() - started >= 1.0
    assert_matches_sandbox(sandbox, out, name)


def test_lock_of_a_killed_process_does_not_block(sandbox, tmp_path):
    out = tmp_path / "b"
    name = sandbox.personalities[0]["username"]
    holder = hold_lock(out, name, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = crawl(sandbox, "personality", out, "-a", f"personality={name}", settings={"BACKUP_LOCK_TIMEOUT": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "locked" not in result.stderr
    assert_matches_sandbox(sandbox, out, name)
