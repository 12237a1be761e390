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

# Holds a personality's lock until another personality's backup is complete (bounded: 60 s).
HOLD_UNTIL_DONE = """
import sys, time
from tzcrawl.store import BackupStore
store = BackupStore(sys.argv[1])
with store.lock(sys.argv[2]):
    print("locked", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        resources = store.metadata(sys.argv[3]).get("resources", {})
        if len(resources) == 6 and all(r.get("outcome") == "complete" for r in resources.values()):
            print("released after the other was complete", flush=True)
            break
        time.sleep(0.05)
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


def test_the_crawl_goes_on_with_the_others_while_another_run_holds_one(sandbox, tmp_path):
    """The first personality is locked by another run until the last one is backed up: the crawl
    goes on downloading the others, comes back to the first, waits for its lock and completes."""
    out = tmp_path / "b"
    names = [p["username"] for p in sandbox.personalities]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_DONE, str(out), names[0], names[-1]],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = crawl(sandbox, "all_personalities", out, settings={"BACKUP_LOCK_TIMEOUT": "60"})
        released = holder.stdout.readline().strip()
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    assert released == "released after the other was complete"  # the others were done while it held
    assert f"{names[0]} is being backed up by another run; coming back to it after the others" in result.stderr
    assert "waiting up to 60s (BACKUP_LOCK_TIMEOUT)" in result.stderr
    saved_order = [line.split(" · ")[0].split()[-1] for line in result.stderr.splitlines()
                   if " · profile: saved" in line]
    assert saved_order == [*names[1:], names[0]]
    for name in names:
        assert_matches_sandbox(sandbox, out, name)
