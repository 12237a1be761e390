"""What the watch counts as a change (tzcrawl.snapshot.watch): growth between checks, and pages
SQLite wrote, on real databases in WAL and rollback-journal mode."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest

from test_snapshot_support import clean_env, make_db, snapshots, wait_for
from tzcrawl.snapshot import dbcopy, watch
from tzcrawl.snapshot.watch import Reading, changed_bytes

KB = 1024


def reading(db: Path) -> Reading:
    return watch.read(db, dbcopy.logical_size(db))


def execute(db: Path, *statements: tuple) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for sql, *args in statements:
            conn.execute(sql, *args)
    finally:
        conn.close()


def sums(*values: int) -> array:
    return array("I", values)


def test_changed_bytes_is_growth_or_pages_written_whichever_is_larger():
    page = 4 * KB
    base = Reading(size=100 * KB, page_size=page, sums=sums(1, 2, 3, 4), wal_salt=b"s1", wal_frames=10)
    assert changed_bytes(base, base) == 0
    grown = Reading(size=300 * KB, page_size=page, sums=sums(1, 2, 3, 4, 5, 6), wal_salt=b"s1", wal_frames=15)
    assert changed_bytes(base, grown) == 200 * KB  # 5 frames (20 KB) < 200 KB of growth
    in_wal = Reading(size=100 * KB, page_size=page, sums=sums(1, 2, 3, 4), wal_salt=b"s1", wal_frames=40)
    assert changed_bytes(base, in_wal) == 30 * page  # no growth, file unchanged: the 30 frames written
    restarted = Reading(size=100 * KB, page_size=page, sums=sums(1, 2, 3, 4), wal_salt=b"s2", wal_frames=3)
    assert changed_bytes(base, restarted) == 3 * page  # a new WAL generation: its frames are new
    in_file = Reading(size=100 * KB, page_size=page, sums=sums(9, 2, 8, 7), wal_salt=None)
    assert changed_bytes(base, in_file) == 3 * page  # three pages of the file rewritten (checkpoint, journal)
    shrunk = Reading(size=8 * KB, page_size=page, sums=sums(9, 8), wal_salt=None)
    assert changed_bytes(base, shrunk) == 2 * page  # a VACUUM: what is left was rewritten, nothing grew


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_rows_changed_in_place_count_though_nothing_grows(tmp_path, journal_mode):
    db = tmp_path / "brain.db"
    make_db(db, journal_mode=journal_mode, rows=300)
    before = reading(db)
    execute(db, *[("UPDATE item SET payload = ? WHERE id = ?", (os.urandom(1500).hex(), i)) for i in range(1, 101)])
    after = reading(db)
    assert after.size - before.size < 50 * KB  # by its size alone, under the default 50 KB threshold
    assert changed_bytes(before, after) >= 100 * KB  # 100 rows of 3 KB, rewritten in place


def test_growth_after_a_vacuum_shrank_the_file_adds_up(tmp_path):
    db = tmp_path / "brain.db"
    make_db(db, journal_mode="wal", rows=600)  # ~1.8 MB
    first = reading(db)
    execute(db, ("DELETE FROM item WHERE id > 100",), ("VACUUM",))
    shrunk = reading(db)
    assert shrunk.size < first.size - 1000 * KB
    execute(db, *[("INSERT INTO item(payload) VALUES (?)", (os.urandom(1500).hex(),)) for _ in range(200)])
    grown = reading(db)
    assert grown.size < first.size  # the old comparison with the size before saw no growth at all
    assert changed_bytes(first, shrunk) + changed_bytes(shrunk, grown) > 600 * KB


@pytest.mark.parametrize("change", ["rows updated in place", "rows added after a VACUUM"])
def test_the_watch_snapshots_changes_the_old_size_rule_missed(tmp_path, change):
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.txt").write_text("a\n")
    db = tmp_path / "brain.db"
    make_db(db, rows=400)
    if change == "rows added after a VACUUM":
        execute(db, ("INSERT INTO item(payload) SELECT payload || 'x' FROM item",))  # ~2.4 MB
    dest = tmp_path / "backups"
    env = clean_env(tmp_path, SNAPSHOT_DB=db, SNAPSHOT_CODE=code, SNAPSHOT_DEST=dest,
                    SNAPSHOT_INTERVAL="1s", SNAPSHOT_GROWTH="50KB")
    out_path = tmp_path / "watch.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts/snapshot.py"),
                                 "watch"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(snapshots(dest)) == 1, 30, "the first snapshot")
        if change == "rows updated in place":
            execute(db, *[("UPDATE item SET payload = ? WHERE id = ?", (os.urandom(1500).hex(), i))
                          for i in range(1, 101)])
        else:
            execute(db, ("DELETE FROM item WHERE id > 100",), ("VACUUM",))
            time.sleep(1.5)  # a check sees the smaller file first
            execute(db, *[("INSERT INTO item(payload) VALUES (?)", (os.urandom(1500).hex(),)) for _ in range(200)])
        wait_for(lambda: len(snapshots(dest)) == 2, 30, "a snapshot of the change")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert "changed by" in out_path.read_text()
