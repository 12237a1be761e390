"""Restore end to end: verify first, old database moved aside, atomic swap, code extracted, refusal while in use."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from test_snapshot_support import clean_env, counts, make_db, run_cli, snapshots

HOLDER = r"""
import sqlite3, sys, time, os
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=1)
if sys.argv[2] == "write":
    conn.execute("BEGIN IMMEDIATE")
else:
    conn.execute("SELECT count(*) FROM item").fetchone()
print("holding", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
"""


@pytest.fixture
def snap(tmp_path):
    code = tmp_path / "Codex"
    (code / "svc/src").mkdir(parents=True)
    (code / "svc/src/main.ts").write_text("v1\n")
    (code / "svc/run.sh").write_text("#!/bin/sh\n")
    (code / "svc/run.sh").chmod(0o755)
    (code / "svc/link").symlink_to("src/main.ts")
    db = code / "codex-brain/codex-brain-data/codex-brain.db"
    make_db(db, rows=50)
    dest = tmp_path / "backups"
    env = clean_env(tmp_path, SNAPSHOT_DB=db, SNAPSHOT_CODE=code, SNAPSHOT_DEST=dest)
    assert run_cli(tmp_path, "create", env=env).returncode == 0
    (path,) = snapshots(dest)
    return code, db, dest, env, path


def add_rows(db: Path, n: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO item(payload) VALUES ('later')", [()] * n)
    conn.execute("UPDATE counter SET n = n + ?", (n,))
    conn.execute("COMMIT")
    conn.close()


def test_restore_into_fresh_places_like_the_nuclear_option(snap, tmp_path):
    code, db, dest, env, path = snap
    new_code = tmp_path / "Codex-new"
    new_db = new_code / "codex-brain/codex-brain-data/codex-brain.db"
    result = run_cli(tmp_path, "restore", "latest", "--target", new_code, "--db", new_db, env=env)
    assert result.returncode == 0, result.stderr
    assert (new_code / "svc/src/main.ts").read_text() == "v1\n"
    assert os.readlink(new_code / "svc/link") == "src/main.ts"
    assert (new_code / "svc/run.sh").stat().st_mode & 0o777 == 0o755
    assert counts(new_db) == (50, 50)
    conn = sqlite3.connect(new_db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # as the source was
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_db_only_moves_current_aside_and_swaps(snap, tmp_path):
    code, db, dest, env, path = snap
    add_rows(db, 7)
    (code / "svc/src/main.ts").write_text("v2\n")
    result = run_cli(tmp_path, "restore", path.name, "--db-only", env=env)
    assert result.returncode == 0, result.stderr
    assert counts(db) == (50, 50)
    aside = db.with_name(db.name + ".backup")
    assert counts(aside) == (57, 57) and str(aside) in result.stdout
    assert (code / "svc/src/main.ts").read_text() == "v2\n"  # code untouched
    assert not Path(f"{db}-wal").exists() or counts(db) == (50, 50)
    # a second restore keeps the first .backup and picks a new name
    result = run_cli(tmp_path, "restore", path.name, "--db-only", env=env)
    assert result.returncode == 0
    assert counts(aside) == (57, 57)
    assert len(list(db.parent.glob(db.name + ".backup.*"))) == 1


def test_code_only_overwrites_files_and_leaves_db(snap, tmp_path):
    code, db, dest, env, path = snap
    add_rows(db, 3)
    (code / "svc/src/main.ts").write_text("v2\n")
    (code / "svc/new.txt").write_text("new\n")
    result = run_cli(tmp_path, "restore", path.name, "--code-only", env=env)
    assert result.returncode == 0, result.stderr
    assert (code / "svc/src/main.ts").read_text() == "v1\n"
    assert (code / "svc/new.txt").exists()  # like tar -xzf: files not in the snapshot stay
    assert counts(db) == (53, 53)


@pytest.mark.parametrize("how", ["write", "read"])
def test_refuses_while_in_use_unless_forced(snap, tmp_path, how):
    code, db, dest, env, path = snap
    add_rows(db, 5)
    stop = tmp_path / "stop-holder"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), how, str(stop)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = run_cli(tmp_path, "restore", path.name, "--db-only", env=env)
        assert result.returncode == 1 and "is in use" in result.stderr and "--force" in result.stderr
        if how == "read":
            assert str(holder.pid) in result.stderr  # an idle open handle is named
        assert not db.with_name(db.name + ".backup").exists()
        result = run_cli(tmp_path, "restore", path.name, "--db-only", "--force", env=env)
        assert result.returncode == 0, result.stderr
    finally:
        stop.touch()
        holder.wait(timeout=30)
    assert counts(db) == (50, 50)
    assert counts(db.with_name(db.name + ".backup")) == (55, 55)


def test_refuses_a_snapshot_that_does_not_verify(snap, tmp_path):
    code, db, dest, env, path = snap
    add_rows(db, 2)
    raw = bytearray((path / "codex-brain.db").read_bytes())
    raw[5000] ^= 0xFF
    (path / "codex-brain.db").write_bytes(bytes(raw))
    result = run_cli(tmp_path, "restore", path.name, env=env)
    assert result.returncode == 1 and "does not verify" in result.stderr
    assert counts(db) == (52, 52) and not db.with_name(db.name + ".backup").exists()


def test_restore_where_no_database_exists_yet(snap, tmp_path):
    code, db, dest, env, path = snap
    target = tmp_path / "fresh/data/codex-brain.db"
    result = run_cli(tmp_path, "restore", path, "--db-only", "--target", target, env=env)
    assert result.returncode == 0, result.stderr
    assert counts(target) == (50, 50) and "moved aside" not in result.stdout
