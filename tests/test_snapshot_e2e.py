"""The snapshot CLI end to end: live writers, crashes, locks, faults, list/verify/prune on real folders."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from crawlhelp import unshare_works
from test_snapshot_support import (LAYOUTS, Writer, clean_env, counts, damage_code, flip, is_dedup, leftovers,
                                   make_db, plain_copy, run_cli, snapshots, wait_for)


@pytest.fixture(params=LAYOUTS)
def setup(tmp_path, request):
    return make_setup(tmp_path, request.param)


def make_setup(tmp_path: Path, layout: str):
    """A code tree with the live database inside it, a destination, and the environment naming them."""
    code = tmp_path / "Codex"
    (code / "svc/src").mkdir(parents=True)
    (code / "svc/src/main.ts").write_text("export const x = 1;\n")
    (code / "package.json").write_text("{}\n")
    db = code / "codex-brain/codex-brain-data/codex-brain.db"
    make_db(db)
    dest = tmp_path / "backups"
    env = clean_env(tmp_path, SNAPSHOT_DB=db, SNAPSHOT_CODE=code, SNAPSHOT_DEST=dest, SNAPSHOT_LAYOUT=layout)
    return code, db, dest, env


def manifest(snap: Path) -> dict:
    return json.loads((snap / "manifest.json").read_text())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_copy_is_consistent_while_another_process_writes(tmp_path, journal_mode, layout):
    code = tmp_path / "code"
    code.mkdir()
    (code / "big.bin").write_bytes(os.urandom(3_000_000))  # keeps the snapshot busy a moment
    db = tmp_path / "live.db"
    make_db(db, journal_mode=journal_mode, rows=2000)
    dest = tmp_path / "backups"
    writer = Writer(db, tmp_path)
    try:
        before = counts(db)[1]
        result = run_cli(tmp_path, "create", "--db", db, "--code", code, "--dest", dest, "--layout", layout)
        after = counts(db)[1]
    finally:
        commits = writer.stop()
    assert result.returncode == 0, result.stderr
    assert commits > 0 and after > before, "the writer must have been committing during the snapshot"
    (snap,) = snapshots(dest)
    copy = plain_copy(snap, tmp_path) / "codex-brain.db"
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    conn.close()
    items, counter = counts(copy)
    assert items == counter and before <= counter <= after
    m = manifest(snap)
    assert m["db"]["source_journal_mode"] == journal_mode and m["db"]["integrity_check"] == "ok"
    kept = ["code.tree", "db.chunks", "manifest.json"] if layout == "dedup" else \
        ["codex-brain.db", "codex-code.tar.gz", "manifest.json"]
    assert sorted(os.listdir(snap)) == kept
    private = [snap, dest / ".store"] if layout == "dedup" else [snap]
    assert all(oct(d.stat().st_mode & 0o777) == "0o700" for d in private)
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for d in private for p in d.iterdir())


def test_everyday_call_uses_env_and_manifest_records_everything(setup, tmp_path):
    code, db, dest, env = setup
    result = run_cli(tmp_path, "create", env=env)
    assert result.returncode == 0, result.stderr
    (snap,) = snapshots(dest)
    m = manifest(snap)
    assert m["reason"] == "manual" and m["name"] == snap.name
    assert m["sources"]["db"] == str(db) and m["sources"]["code"] == str(code)
    for member in os.listdir(snap):
        if member != "manifest.json":
            assert m["files"][member]["size"] == (snap / member).stat().st_size
            assert len(m["files"][member]["sha256"]) == 64
    assert m["tool"]["version"] and m["timings"]["total_s"] >= 0
    # the live database inside the code tree is never tarred as a (torn) file
    plain = plain_copy(snap, tmp_path, env)
    listing = subprocess.run(["tar", "-tzf", plain / "codex-code.tar.gz"], capture_output=True, text=True).stdout
    assert "codex-brain.db" not in listing and "svc/src/main.ts" in listing

    result = run_cli(tmp_path, "list", env=env)
    assert result.returncode == 0 and snap.name in result.stdout and "verified" in result.stdout


def test_config_file_makes_it_one_word(setup, tmp_path):
    code, db, dest, _ = setup
    cfg = tmp_path / "home/.config/tzcrawl/snapshot.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[snapshot]\ndb = "{db}"\ncode = "{code}"\ndest = "{dest}"\n')
    result = run_cli(tmp_path, "boot")
    assert result.returncode == 0, result.stderr
    (snap,) = snapshots(dest)
    assert manifest(snap)["reason"] == "boot"


def test_missing_database_is_a_clear_error_and_leaves_nothing(setup, tmp_path):
    code, db, dest, env = setup
    for cmd in ("create", "boot"):
        result = run_cli(tmp_path, cmd, "--db", tmp_path / "nope.db", env=env)
        assert result.returncode == 1
        assert "database not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nope.db").exists()  # never created by looking at it
    assert leftovers(dest) == []


def test_not_a_database(setup, tmp_path):
    code, db, dest, env = setup
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    result = run_cli(tmp_path, "create", "--db", junk, env=env)
    assert result.returncode == 1 and "not an SQLite database" in result.stderr
    assert leftovers(dest) == []


def test_unreadable_file_fails_cleanly(tmp_path):
    # root reads everything, so as root the run drops to nobody
    as_nobody = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="snap-unreadable-", dir="/tmp"))
    try:
        base.chmod(0o777)
        code = base / "code"
        (code / "src").mkdir(parents=True)
        (code / "src/ok.txt").write_text("ok\n")
        secret = code / "src/secret.txt"
        secret.write_text("secret\n")
        secret.chmod(0)
        for d in (code, code / "src"):
            d.chmod(0o755)
        (code / "src/ok.txt").chmod(0o644)
        db = base / "brain.db"
        make_db(db, journal_mode="delete", rows=5)
        db.chmod(0o644)
        dest = base / "backups"
        cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts/snapshot.py"), "create",
               "--db", str(db), "--code", str(code), "--dest", str(dest)]
        if as_nobody:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = clean_env(base)
        env["HOME"] = str(base)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "cannot read src/secret.txt" in result.stderr and "Permission denied" in result.stderr
        assert leftovers(dest) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not unshare_works(), reason="needs a private mount namespace for a small tmpfs")
def test_disk_full_leaves_nothing(setup, tmp_path):
    code, db, dest, env = setup
    (code / "blob.bin").write_bytes(os.urandom(2_000_000))
    dest.mkdir()
    script = (f'mount -t tmpfs -o size=512k tmpfs "{dest}" && '
              f'"{sys.executable}" "{Path(__file__).resolve().parents[1]}/scripts/snapshot.py" create; '
              f'rc=$?; echo "LEFT:$(ls -A "{dest}" | tr "\\n" " ")"; '
              f'echo "STORE:$(ls -A "{dest}/.store" 2>/dev/null | tr "\\n" " ")"; exit $rc')
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no space left" in result.stderr.lower()
    left = dict(line.split(":", 1) for line in result.stdout.splitlines() if line.startswith(("LEFT:", "STORE:")))
    assert left["LEFT"].split() in ([".snapshot.lock"], [".snapshot.lock", ".store"]), result.stdout
    assert left["STORE"].split() == [], result.stdout  # no half-written pack, no temp index


def test_file_size_limit_write_failure_leaves_nothing(setup, tmp_path):
    import resource

    code, db, dest, env = setup
    (code / "blob.bin").write_bytes(os.urandom(3_000_000))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    result = run_cli(tmp_path, "create", env=env, preexec_fn=limit)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("snapshot: error:")
    assert leftovers(dest) == []


def test_crash_mid_snapshot_leaves_no_good_snapshot_and_prune_cleans_up(setup, tmp_path):
    code, db, dest, env = setup
    (code / "blob.bin").write_bytes(os.urandom(30_000_000))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts/snapshot.py"),
                             "create"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: dest.exists() and any(n.startswith(".tmp-") and (dest / n / ".tzcrawl-snapshot-build").exists()
                                               for n in os.listdir(dest)), 30, "the build folder")
    finally:
        proc.kill()
        proc.wait()
    assert snapshots(dest) == []
    result = run_cli(tmp_path, "list", env=env)
    assert "INCOMPLETE" in result.stdout and "verified" not in result.stdout
    # the killed process's lock is gone with it: a new snapshot goes ahead at once
    result = run_cli(tmp_path, "create", env=env)
    assert result.returncode == 0, result.stderr
    result = run_cli(tmp_path, "prune", "--keep-last", "5", env=env)
    assert "interrupted" in result.stdout
    assert [p.name for p in snapshots(dest)] == leftovers(dest)


def test_lock_stops_a_second_snapshot(setup, tmp_path):
    code, db, dest, env = setup
    dest.mkdir()
    with open(dest / ".snapshot.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        env2 = dict(env, SNAPSHOT_LOCK_WAIT="1s")
        result = run_cli(tmp_path, "boot", env=env2)
        assert result.returncode == 75 and "another snapshot operation" in result.stderr
    assert leftovers(dest) == []
    # released: it runs
    assert run_cli(tmp_path, "boot", env=env).returncode == 0


def test_boot_and_growth_racing_take_turns(setup, tmp_path):
    code, db, dest, env = setup
    (code / "blob.bin").write_bytes(os.urandom(5_000_000))
    script = str(Path(__file__).resolve().parents[1] / "scripts/snapshot.py")
    procs = [subprocess.Popen([sys.executable, script, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for args in (["boot"], ["create", "--reason", "growth"])]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    snaps = snapshots(dest)
    assert len(snaps) == 2 and sorted(manifest(s)["reason"] for s in snaps) == ["boot", "growth"]
    timings = sorted((manifest(s)["created_at"], manifest(s)["timings"]["total_s"]) for s in snaps)
    assert run_cli(tmp_path, "verify", env=env).returncode == 0
    assert leftovers(dest) == [s.name for s in snaps], timings


def test_verify_and_list_catch_damage(setup, tmp_path):
    code, db, dest, env = setup
    (code / "blob.bin").write_bytes(os.urandom(300_000))
    create_with_own_archives(code, env, tmp_path, 3)
    a, b, c = snapshots(dest)
    damage_code(a, "svc/src/main.ts")
    flip(b / ("db.chunks" if is_dedup(b) else "codex-brain.db"))
    (c / "manifest.json").unlink()
    result = run_cli(tmp_path, "verify", a.name, env=env)
    assert result.returncode == 3 and "BAD" in result.stdout
    result = run_cli(tmp_path, "verify", b, env=env)
    assert result.returncode == 3 and "sha256 differs" in result.stdout
    result = run_cli(tmp_path, "list", env=env)
    assert result.returncode == 3
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "BAD" in lines[a.name] and "BAD" in lines[b.name] and "UNKNOWN (no manifest)" in lines[c.name]
    result = run_cli(tmp_path, "verify", "codex-backup-2001-01-01T00-00-00-000Z", env=env)
    assert result.returncode == 1 and "snapshot not found" in result.stderr


def _age(dest: Path, snap: Path, name: str) -> Path:
    new = dest / name
    snap.rename(new)
    return new


def test_prune_dry_run_then_real(setup, tmp_path):
    code, db, dest, env = setup
    for _ in range(4):
        assert run_cli(tmp_path, "create", env=env).returncode == 0
    s = snapshots(dest)
    old = [_age(dest, s[0], "codex-backup-2020-01-01T00-00-00-000Z"),
           _age(dest, s[1], "codex-backup-2020-01-02T00-00-00-000Z")]
    legacy = dest / "codex-backup-2019-06-01T00-00-00-000Z"  # what the old tool left: no manifest
    legacy.mkdir()
    (legacy / "codex-brain.db").write_bytes(b"old")
    before = sorted(os.listdir(dest))

    result = run_cli(tmp_path, "prune", "--keep-last", "1", "--max-age", "7d", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(dest)) == before
    out = result.stdout
    assert out.count("would prune") == 2 and all(f"would prune {p.name}" in out for p in old)
    assert f"keep        {legacy.name}: not classified (no manifest)" in out
    assert "dry run: nothing changed" in out

    result = run_cli(tmp_path, "prune", "--keep-last", "1", "--max-age", "7d", env=env)
    assert result.returncode == 0
    assert not any(p.exists() for p in old) and legacy.exists()
    assert len(snapshots(dest)) == 3  # two young ones + legacy


def create_with_own_archives(code: Path, env, tmp_path, count: int) -> None:
    """``count`` snapshots of a tree changed before each: none shares another's archive, so damage
    to one archive is damage to one snapshot only."""
    for i in range(count):
        (code / "svc/src/main.ts").write_text(f"export const x = {i};\n")
        assert run_cli(tmp_path, "create", env=env).returncode == 0


def three_snapshots_two_of_them_old(dest, env, tmp_path):
    create_with_own_archives(dest.parent / "Codex", env, tmp_path, 3)
    a, b, c = snapshots(dest)
    return (_age(dest, a, "codex-backup-2020-01-01T00-00-00-000Z"),
            _age(dest, b, "codex-backup-2020-01-02T00-00-00-000Z"), c)


def test_a_snapshot_that_cannot_be_pruned_is_named_and_the_others_still_go(setup, tmp_path):
    code, db, dest, env = setup
    a, b, c = three_snapshots_two_of_them_old(dest, env, tmp_path)
    # prune renames a snapshot aside before deleting it: a file in that place makes the rename fail
    (dest / f".tmp-{a.name}.deleting").write_text("in the way\n")
    result = run_cli(tmp_path, "prune", "--keep-last", "1", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot prune {a.name}: " in result.stderr and "Traceback" not in result.stderr
    assert a.exists() and not b.exists() and c.exists()  # b was still pruned; the newest is kept
    assert "could not be pruned" in result.stdout


def test_prune_with_a_bad_max_age_is_a_usage_error(setup, tmp_path):
    code, db, dest, env = setup
    result = run_cli(tmp_path, "prune", "--max-age", "soon", env=env)
    assert result.returncode == 2 and "--max-age" in result.stderr and "Traceback" not in result.stderr


def test_prune_never_counts_a_damaged_snapshot_toward_keep_last(setup, tmp_path):
    code, db, dest, env = setup
    create_with_own_archives(code, env, tmp_path, 3)
    oldest, middle, newest = snapshots(dest)
    damage_code(middle, "svc/src/main.ts")  # same size: only a full check sees it
    result = run_cli(tmp_path, "prune", "--keep-last", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert oldest.exists() and newest.exists(), result.stdout  # two good copies are kept
    assert f"keep        {oldest.name}: keep-last 2: #2" in result.stdout


def test_prune_never_deletes_the_newest_good_snapshot(setup, tmp_path):
    code, db, dest, env = setup
    a, b, c = three_snapshots_two_of_them_old(dest, env, tmp_path)
    damage_code(c, "svc/src/main.ts")  # newest looks fine by size, fails full verification
    result = run_cli(tmp_path, "prune", "--keep-last", "0", "--max-age", "1d", env=env)
    assert result.returncode == 0, result.stderr
    assert f"keep        {b.name}: newest good snapshot" in result.stdout
    assert b.exists() and not a.exists() and c.exists()  # c: bad but young, reported not deleted
    assert "bad (" in result.stdout


def test_prune_without_rules_refuses(setup, tmp_path):
    code, db, dest, env = setup
    assert run_cli(tmp_path, "create", env=env).returncode == 0
    result = run_cli(tmp_path, "prune", env=env)
    assert result.returncode == 2 and "keep-last" in result.stderr  # bad usage
    assert len(snapshots(dest)) == 1


def test_watch_waits_for_db_snapshots_on_growth_and_stops_cleanly(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.txt").write_text("a\n")
    db = tmp_path / "later.db"
    dest = tmp_path / "backups"
    env = clean_env(tmp_path, SNAPSHOT_DB=db, SNAPSHOT_CODE=code, SNAPSHOT_DEST=dest,
                    SNAPSHOT_INTERVAL="1s", SNAPSHOT_GROWTH="40KB")
    script = str(Path(__file__).resolve().parents[1] / "scripts/snapshot.py")
    out_path = tmp_path / "watch.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, script, "watch"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "waiting for" in out_path.read_text(), 20, "the waiting line")
        import time
        time.sleep(2.5)  # several rounds without a database: still one line
        assert out_path.read_text().count("waiting for") == 1
        make_db(db, rows=10)  # ~30 KB: first snapshot because there is none yet
        wait_for(lambda: len(snapshots(dest)) == 1, 30, "the first snapshot")
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("INSERT INTO item(payload) VALUES (?)", ("x" * 10_000,))  # below the threshold
        time.sleep(2.5)
        assert len(snapshots(dest)) == 1
        conn.executemany("INSERT INTO item(payload) VALUES (?)", [("y" * 3000,) for _ in range(40)])
        conn.close()
        wait_for(lambda: len(snapshots(dest)) == 2, 30, "the growth snapshot")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    text = out_path.read_text()
    assert rc == 0 and "watch stopped" in text, text
    assert "changed by" in text
    assert {manifest(s)["reason"] for s in snapshots(dest)} == {"growth"}
    assert leftovers(dest) == [s.name for s in snapshots(dest)]


# -- clear errors, never a traceback; DEST inside the code tree ------------------------------------

def test_a_dest_that_is_a_file_is_one_clear_line(setup, tmp_path):
    code, db, dest, env = setup
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    for where in (not_a_folder, not_a_folder / "below"):
        result = run_cli(tmp_path, "create", "--dest", where, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"snapshot: error: the snapshot folder {where} cannot be used: ")
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_prune_removes_only_its_own_interrupted_builds(setup, tmp_path):
    code, db, dest, env = setup
    assert run_cli(tmp_path, "create", env=env).returncode == 0
    (dest / ".tmp-codex-backup-mine").mkdir()  # the user's own folder that merely has the name
    (dest / ".tmp-codex-backup-mine" / "notes.txt").write_text("mine\n")
    (dest / ".tmp-codex-backup-file").write_text("a file\n")
    (dest / ".tmp-codex-backup-link").symlink_to(code)
    ours = dest / ".tmp-codex-backup-2020-01-01T00-00-00-000Z.123"
    ours.mkdir()
    (ours / ".tzcrawl-snapshot-build").touch()
    result = run_cli(tmp_path, "prune", "--keep-last", "5", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not ours.exists() and "Traceback" not in result.stderr
    assert (dest / ".tmp-codex-backup-mine" / "notes.txt").exists()
    assert (dest / ".tmp-codex-backup-file").exists() and (dest / ".tmp-codex-backup-link").is_symlink()
    assert code.exists() and (code / "package.json").exists()


@pytest.mark.parametrize("damage", ["a 0xff byte", "nested 100,000 deep"])
def test_an_unreadable_manifest_is_named_and_skipped(setup, tmp_path, damage):
    code, db, dest, env = setup
    for _ in range(2):
        assert run_cli(tmp_path, "create", env=env).returncode == 0
    older, newer = snapshots(dest)
    text = b'{"format": "tzcrawl-snapshot/1", "name": "\xff"}' if damage.startswith("a 0xff") \
        else b"[" * 100_000 + b"]" * 100_000
    (newer / "manifest.json").write_bytes(text)
    listed = run_cli(tmp_path, "list", env=env)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    assert newer.name in listed.stdout and "manifest" in listed.stdout
    restored = run_cli(tmp_path, "restore", "latest", "--target", tmp_path / "r", "--db", tmp_path / "r.db", env=env)
    assert restored.returncode == 0, restored.stderr
    assert f"verified {older.name}" in restored.stdout  # the newest readable one
    pruned = run_cli(tmp_path, "prune", "--keep-last", "1", env=env)
    assert pruned.returncode == 0 and newer.exists() and "Traceback" not in pruned.stderr


@pytest.mark.parametrize("inside", [False, True], ids=["dest is the code folder", "dest inside the code folder"])
def test_dest_inside_or_equal_to_the_code_tree_never_nests(setup, tmp_path, inside):
    code, db, dest, env = setup
    os.chmod(code, 0o755)
    where = code / "backups" if inside else code
    env = dict(env, SNAPSHOT_DEST=str(where))
    for _ in range(3):
        result = run_cli(tmp_path, "create", env=env)
        assert result.returncode == 0, result.stderr
    members = [manifest(s)["code"]["members"] for s in snapshots(where)]
    assert len(members) == 3 and len(set(members)) == 1, members  # the same tree each time: no nesting
    listing = subprocess.run(["tar", "-tzf", str(plain_copy(snapshots(where)[-1], tmp_path, env) / "codex-code.tar.gz")],
                             capture_output=True, text=True, check=True).stdout
    assert "codex-backup-" not in listing and ".snapshot.lock" not in listing and ".store" not in listing, listing
    assert oct(code.stat().st_mode & 0o777) == "0o755"  # a folder the user already had keeps its mode
