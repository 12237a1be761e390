"""The store against real processes: kill -9 in the middle of a commit, lock contention, scale.

A backup must survive the worst moment: whatever instant a run is killed at, every file saved
before stays intact and valid, and the next run cleans up and completes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tzcrawl.store import BackupLocked, BackupStore

REPO = Path(__file__).resolve().parents[1]
P = {"id": "p-9", "username": "crashy", "name": "Crashy"}

# Commits a journal of N fresh messages into the store at ROOT; prints markers. With a fourth
# argument FUNCTION:K it stops itself (SIGSTOP) at the K-th call of FUNCTION during the commit, so
# the parent can kill it at exactly that moment, whatever this machine's speed.
COMMIT_CHILD = r"""
import json, os, signal, sys
from tzcrawl.store import BackupStore
root, n = sys.argv[1], int(sys.argv[2])
store = BackupStore(root, chunk_size=2000, index_limit=5000)
run = store.begin(json.loads(sys.argv[3]), "messages")
for start in range(0, n, 1000):
    run.add([{"id": f"n{i}", "ts": (i * 7919) % n + 0.5, "message": "new"} for i in range(start, min(n, start + 1000))])
print("committing", flush=True)
if len(sys.argv) > 4:
    name, k = sys.argv[4].split(":")
    calls = [0]
    def stop_at(frame, event, arg):
        if event == "call" and frame.f_code.co_name == name:
            calls[0] += 1
            if calls[0] == int(k):
                os.kill(os.getpid(), signal.SIGSTOP)
    sys.setprofile(stop_at)
run.commit(requests=n // 50)
print("done", flush=True)
"""


def kill_when_stopped(child: subprocess.Popen) -> None:
    """Wait until the child has stopped itself (or ended), then SIGKILL it."""
    _pid, status = os.waitpid(child.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), (status, child.stderr.read())
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

# Holds the personality's lock until stdin closes (bounded: gives up after 60 s).
LOCK_CHILD = r"""
import select, sys
from tzcrawl.store import BackupStore
store = BackupStore(sys.argv[1])
with store.lock(sys.argv[2], timeout=10):
    print("locked", flush=True)
    select.select([sys.stdin], [], [], 60)
print("released", flush=True)
"""


def spawn(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(proc: subprocess.Popen, marker: str) -> str:
    line = proc.stdout.readline()
    assert line.startswith(marker), (line, proc.stderr.read() if proc.poll() is not None else "")
    return line


def seed(root: Path, count: int = 3000) -> BackupStore:
    store = BackupStore(root)
    run = store.begin(P, "messages")
    run.add([{"id": f"o{i}", "ts": i * 10.0, "message": "old", "unknown": {"k": [i]}} for i in range(count)])
    run.commit(requests=1)
    return store


N = 30_000


# Moments inside a commit: the merge starts (temp file open, empty), the first, a middle and the
# last record line written.
KILL_POINTS = ["merge_collection:1", "write_line:1", f"write_line:{N // 2}", f"write_line:{3000 + N}"]


def test_kill_9_mid_commit_leaves_the_saved_file_intact_and_the_next_run_completes(tmp_path):
    store = seed(tmp_path / "backups")
    path = store.path("crashy", "messages")
    saved = path.read_bytes()
    saved_meta = store.metadata_path("crashy").read_bytes()
    expected = 3000
    for point in KILL_POINTS:
        child = spawn(COMMIT_CHILD, store.root, N, json.dumps(P), point)
        wait_for(child, "committing")
        kill_when_stopped(child)
        assert child.returncode == -signal.SIGKILL, point
        assert any(name.endswith(".tmp") for name in os.listdir(path.parent)), f"{point}: not mid-write"
        assert path.read_bytes() == saved, point
        assert store.metadata_path("crashy").read_bytes() == saved_meta, point
        json.loads(saved)

    # the next run (a new store, as a new process would have) discards the debris and completes
    summary = BackupStore(store.root).begin(P, "messages")
    summary.add([{"id": "o5", "ts": 50.0, "message": "edited"}, {"id": "z", "ts": 1e9}])
    result = summary.commit(requests=1)
    assert result["total"] == expected + 1 and result["new"] == 1
    by_id = {r["id"]: r for r in store.read_collection("crashy", "messages") if r["id"] in ("o5", "o6")}
    assert by_id["o5"] == {"id": "o5", "ts": 50.0, "message": "edited"}
    assert by_id["o6"] == {"id": "o6", "ts": 60.0, "message": "old", "unknown": {"k": [6]}}
    assert sorted(os.listdir(path.parent)) == [".backup-metadata.json", "crashy_messages.json", "history"]
    (kept,) = [json.loads(line) for line in (path.parent / "history" / "messages.jsonl").read_text().splitlines()]
    assert kept["record"]["id"] == "o5" and kept["record"]["message"] != "edited"  # the earlier copy of o5


def test_a_killed_first_run_leaves_no_final_file(tmp_path):
    root = tmp_path / "backups"
    for point in ("merge_collection:1", f"write_line:{N // 2}"):
        child = spawn(COMMIT_CHILD, root, N, json.dumps(P), point)
        wait_for(child, "committing")
        kill_when_stopped(child)
        store = BackupStore(root)
        assert not store.path("crashy", "messages").exists()
        assert not store.held("crashy", "messages").exists
    run = BackupStore(root).begin(P, "messages")
    run.add([{"id": "a", "ts": 1}])
    assert run.commit(requests=1)["total"] == 1


def test_lock_contention_between_processes_names_the_holder(tmp_path):
    root = tmp_path / "backups"
    holder = spawn(LOCK_CHILD, root, "crashy")
    try:
        wait_for(holder, "locked")
        store = BackupStore(root)
        with pytest.raises(BackupLocked) as caught:
            with store.lock("crashy", timeout=0):
                pass
        assert caught.value.pid == holder.pid and "crashy" in str(caught.value) and str(holder.pid) in str(caught.value)
        started = time.monotonic()
        with pytest.raises(BackupLocked):
            store.lock("crashy", timeout=0.5).__enter__()
        assert time.monotonic() - started >= 0.45
        with pytest.raises(BackupLocked):  # writes take the lock too
            store.save_document(P, "profile", {"x": 1}, 1, 1)
        with pytest.raises(BackupLocked):
            store.begin(P, "memories")
        assert not store.path("crashy", "profile").exists()
        with store.lock("someone-else", timeout=0):  # other personalities are not blocked
            pass
        holder.stdin.close()  # let it finish; we wait for the lock
        with store.lock("crashy", timeout=10):
            store.save_document(P, "profile", {"x": 1}, 1, 1)
        assert wait_for(holder, "released")
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    root = tmp_path / "backups"
    holder = spawn(LOCK_CHILD, root, "crashy")
    wait_for(holder, "locked")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    store = BackupStore(root)
    lock_file = store.root / ".locks" / "crashy.lock"
    assert lock_file.read_text().strip() == str(holder.pid)  # stale pid left
    with store.lock("crashy", timeout=0):
        assert lock_file.read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("order", ["newest first", "shuffled"])
def test_large_merge_streams_a_newest_first_journal_and_sorts_any_other(tmp_path, order):
    """200k records, the id index spilled to SQLite: pages newest first (as the service sends them)
    are merged read backward, without run files; pages in any other order go through the external
    sort in small chunks. Both give the same, complete file."""
    store = BackupStore(tmp_path / "backups", chunk_size=10_000, index_limit=50_000)
    run = store.begin(P, "memories")
    run.add([{"id": f"s{i}", "created_at": i} for i in range(0, 200_000, 4)])
    run.commit(requests=1)
    run = store.begin(P, "memories")
    tops = [200_000 - start for start in range(0, 200_000, 5_000)]
    if order == "shuffled":
        random.Random(5).shuffle(tops)
    for top in tops:
        run.add([{"id": f"s{i}", "created_at": i} for i in range(top - 1, top - 5_001, -1)])
    summary = run.commit(requests=40)
    assert summary["index_spilled"]
    if order == "shuffled":
        assert (summary["runs"], summary["streamed"]) == (20, False)
    else:
        assert (summary["runs"], summary["streamed"]) == (0, True)
    assert (summary["total"], summary["new"]) == (200_000, 150_000)
    previous = -1
    for count, record in enumerate(store.read_collection("crashy", "memories"), 1):
        assert record["created_at"] > previous
        previous = record["created_at"]
    assert count == 200_000
    assert not (store.directory("crashy") / ".staging").exists()
