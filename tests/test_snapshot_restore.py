"""Restore end to end: verify first, old database moved aside, atomic swap, code extracted, refusal while in use."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from test_snapshot_support import LAYOUTS, clean_env, counts, damage_db, make_db, plain_copy, run_cli, snapshots

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


@pytest.fixture(params=LAYOUTS)
def snap(tmp_path, request):
    code = tmp_path / "Codex"
    (code / "svc/src").mkdir(parents=True)
    (code / "svc/src/main.ts").write_text("v1\n")
    (code / "svc/run.sh").write_text("#!/bin/sh\n")
    (code / "svc/run.sh").chmod(0o755)
    (code / "svc/link").symlink_to("src/main.ts")
    db = code / "codex-brain/codex-brain-data/codex-brain.db"
    make_db(db, rows=50)
    dest = tmp_path / "backups"
    env = clean_env(tmp_path, SNAPSHOT_DB=db, SNAPSHOT_CODE=code, SNAPSHOT_DEST=dest, SNAPSHOT_LAYOUT=request.param)
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
    damage_db(path)
    result = run_cli(tmp_path, "restore", path.name, env=env)
    assert result.returncode == 1 and "does not verify" in result.stderr
    assert counts(db) == (52, 52) and not db.with_name(db.name + ".backup").exists()


def test_restore_where_no_database_exists_yet(snap, tmp_path):
    code, db, dest, env, path = snap
    target = tmp_path / "fresh/data/codex-brain.db"
    result = run_cli(tmp_path, "restore", path, "--db-only", "--target", target, env=env)
    assert result.returncode == 0, result.stderr
    assert counts(target) == (50, 50) and "moved aside" not in result.stdout


# -- the database's own files: never archived, never extracted (issue: stale journal, lost aside copy) --

def tar_names(tarball: Path) -> set[str]:
    listing = subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True, check=True).stdout
    return {line.rstrip("/") for line in listing.splitlines()}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_the_databases_own_files_are_never_archived(tmp_path, journal_mode, layout):
    """The documented layout: the database inside the code tree. In rollback-journal modes its
    -journal file comes and goes during writes; WAL mode has -wal and -shm."""
    code = tmp_path / "Codex"
    (code / "svc/src").mkdir(parents=True)
    (code / "svc/src/main.ts").write_text("v1\n")
    db = code / "data/brain.db"
    make_db(db, journal_mode=journal_mode, rows=20)
    add_rows(db, 1)
    Path(f"{db}-journal").write_bytes(b"")  # as journal_mode=TRUNCATE leaves it (SQLite ignores it empty)
    for path in (f"{db}.backup", f"{db}.backup-wal", f"{db}.backup.2026-11-21T00-00-00-000000Z"):
        Path(path).write_bytes(b"a copy restore moved aside")
    Path(f"{db}.notes").write_text("an ordinary file whose name only starts like the database's\n")
    dest = tmp_path / "backups"
    env = clean_env(tmp_path, SNAPSHOT_DB=db, SNAPSHOT_CODE=code, SNAPSHOT_DEST=dest, SNAPSHOT_LAYOUT=layout)
    result = run_cli(tmp_path, "create", env=env)
    assert result.returncode == 0, result.stderr
    names = tar_names(plain_copy(snapshots(dest)[-1], tmp_path, env) / "codex-code.tar.gz")
    sidecars = {"data/brain.db", "data/brain.db-journal", "data/brain.db-wal", "data/brain.db-shm",
                "data/brain.db.backup", "data/brain.db.backup-wal", "data/brain.db.backup.2026-11-21T00-00-00-000000Z"}
    assert sidecars.isdisjoint(names), sidecars & names
    assert {"svc/src/main.ts", "data/brain.db.notes"} <= names


def test_restore_never_overwrites_the_copy_it_moved_aside(snap, tmp_path):
    """S1 restored (the old database moved to .backup), S2 taken, .backup removed, new rows written,
    S2 restored: the newest rows are in the copy moved aside, not overwritten by the code."""
    code, db, dest, env, s1 = snap
    assert run_cli(tmp_path, "restore", s1.name, "--target", code, "--db", db, env=env).returncode == 0
    aside = Path(f"{db}.backup")
    assert aside.exists()
    assert run_cli(tmp_path, "create", env=env).returncode == 0
    s2 = snapshots(dest)[-1]
    assert s2 != s1
    aside.unlink()
    add_rows(db, 7)
    newest = counts(db)
    result = run_cli(tmp_path, "restore", s2.name, "--target", code, "--db", db, env=env)
    assert result.returncode == 0, result.stderr
    assert f"previous database moved aside: {aside}" in result.stdout
    assert counts(aside) == newest  # the newest rows exist: in the copy moved aside
    assert counts(db) == counts(plain_copy(s2, tmp_path, env) / "codex-brain.db")


def test_a_snapshot_holding_the_databases_files_does_not_extract_them(tmp_path):
    """Snapshots taken before this rule may hold a journal or an aside copy: restore leaves them in the archive."""
    from tzcrawl.snapshot import archive, codetree

    src = tmp_path / "src"
    rel = "data/brain.db"
    for name in ("svc/x.ts", f"{rel}-journal", f"{rel}.backup", f"{rel}.backup.2020-01-01T00-00-00-000000Z-wal"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    tarball = tmp_path / "code.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(src), "svc", "data"], check=True)
    out = tmp_path / "out"
    count = archive.extract(str(tarball), str(out), skip=lambda name: codetree.is_db_file(name, rel))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["svc/x.ts"]
    assert count == 3  # svc, svc/x.ts, data


@pytest.mark.parametrize("rel, expected", [
    ("data/brain.db", True), ("data/brain.db-wal", True), ("data/brain.db-shm", True),
    ("data/brain.db-journal", True), ("data/brain.db.backup", True), ("data/brain.db.backup-journal", True),
    ("data/brain.db.backup.2026-11-21T00-00-00-000000Z", True),
    ("data/brain.db.notes", False), ("data/brain.dbx", False), ("brain.db", False), ("data/brain.db/x", False),
    ("data/brain.db.backupx", False),
])
def test_is_db_file(rel, expected):
    from tzcrawl.snapshot.codetree import is_db_file

    assert is_db_file(rel, "data/brain.db") is expected
    assert is_db_file(rel, None) is False


def test_target_alone_puts_everything_under_it(snap, tmp_path):
    """--target R without --db: the database goes where the snapshot had it inside the code folder,
    under R, and the live database is not touched."""
    code, db, dest, env, path = snap
    live = counts(db)
    add_rows(db, 3)
    target = tmp_path / "R"
    result = run_cli(tmp_path, "restore", path.name, "--target", target, env=env)
    assert result.returncode == 0, result.stderr
    restored = target / db.relative_to(code)
    assert counts(restored) == live and counts(db) != live
    assert (target / "svc/src/main.ts").read_text() == "v1\n"


def test_a_folder_in_the_way_stops_the_restore_before_anything_is_touched(snap, tmp_path):
    """The snapshot has svc/link as a symlink; the target has a real folder there."""
    code, db, dest, env, path = snap
    target = tmp_path / "T"
    (target / "svc/link").mkdir(parents=True)
    (target / "svc/link/mine.txt").write_text("mine\n")
    target_db = target / "brain.db"
    make_db(target_db, rows=5)
    before = target_db.read_bytes()
    result = run_cli(tmp_path, "restore", path.name, "--target", target, "--db", target_db, env=env)
    assert result.returncode == 1
    assert "nothing was restored: cannot restore svc/link: a folder is in the way" in result.stderr
    assert target_db.read_bytes() == before and not Path(f"{target_db}.backup").exists()  # db untouched
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "brain.db", "svc", "svc/link", "svc/link/mine.txt"]  # no file extracted


def test_restore_keeps_modes_like_tar_xp(tmp_path):
    code = tmp_path / "Codex"
    shared = code / "shared"
    shared.mkdir(parents=True)
    os.chmod(shared, 0o2775)  # setgid, group-writable: a folder a team writes into
    (shared / "notes.txt").write_text("n\n")
    os.chmod(shared / "notes.txt", 0o664)
    (code / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(code / "run.sh", 0o750)
    db = tmp_path / "brain.db"
    make_db(db, rows=3)
    dest = tmp_path / "backups"
    env = clean_env(tmp_path, SNAPSHOT_DB=db, SNAPSHOT_CODE=code, SNAPSHOT_DEST=dest)
    assert run_cli(tmp_path, "create", env=env).returncode == 0
    target = tmp_path / "R"
    result = run_cli(tmp_path, "restore", "latest", "--code-only", "--target", target, env=env)
    assert result.returncode == 0, result.stderr
    mode = lambda p: oct(p.stat().st_mode & 0o7777)  # noqa: E731
    assert (mode(target / "shared"), mode(target / "shared/notes.txt"), mode(target / "run.sh")) == \
        ("0o2775", "0o664", "0o750")
