"""Helpers shared by the snapshot tests (no tests here): running the real CLI, real SQLite writers,
real code trees."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "snapshot.py"

WRITER = r"""
import os, sqlite3, sys, time
db, stop_file, max_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
deadline = time.monotonic() + max_s
print("ready", flush=True)
n = 0
while time.monotonic() < deadline and not os.path.exists(stop_file):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO item(payload) VALUES (?)", (os.urandom(1500).hex(),))
    conn.execute("INSERT INTO item(payload) VALUES (?)", (os.urandom(1500).hex(),))
    conn.execute("UPDATE counter SET n = n + 2")
    conn.execute("COMMIT")
    n += 1
    time.sleep(0.002)
print(n, flush=True)
"""


LAYOUTS = ["plain", "dedup"]


def clean_env(tmp_path: Path, **extra) -> dict:
    """The environment of a user with no snapshot config, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOT_")}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "home" / ".config")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(tmp_path: Path, *args, env=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env or clean_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout, **kw)


def make_db(path: Path, *, journal_mode="wal", rows=200) -> None:
    """A database whose invariant (counter.n == rows in item) a torn copy would break."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE item(id INTEGER PRIMARY KEY, payload TEXT)")
    conn.execute("CREATE INDEX item_payload ON item(payload)")
    conn.execute("CREATE TABLE counter(n INTEGER)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO item(payload) VALUES (?)", [(os.urandom(1500).hex(),) for _ in range(rows)])
    conn.execute("INSERT INTO counter VALUES (?)", (rows,))
    conn.execute("COMMIT")
    conn.close()


def counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (conn.execute("SELECT count(*) FROM item").fetchone()[0],
                conn.execute("SELECT n FROM counter").fetchone()[0])
    finally:
        conn.close()


class Writer:
    """A separate process committing to the database until stopped (bounded by ``max_s``)."""

    def __init__(self, db: Path, tmp_path: Path, max_s: float = 60):
        self.stop_file = tmp_path / f"stop-writer-{time.monotonic_ns()}"
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(self.stop_file), str(max_s)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=60)
        return int(out.strip())


def create(tmp_path: Path, env) -> Path:
    """Take one snapshot with the real command; return the new folder."""
    before = set(snapshots(Path(env["SNAPSHOT_DEST"])))
    result = run_cli(tmp_path, "create", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (new,) = set(snapshots(Path(env["SNAPSHOT_DEST"]))) - before
    return new


def snapshots(dest: Path) -> list[Path]:
    return sorted(p for p in dest.iterdir() if p.name.startswith("codex-backup-")) if dest.exists() else []


def leftovers(dest: Path) -> list[str]:
    """Anything in DEST besides the lock file and the chunk store's committed packs (a pack with its
    index): what a failed or killed run must not leave."""
    if not dest.exists():
        return []
    names = sorted(p.name for p in dest.iterdir() if p.name not in (".snapshot.lock", ".store"))
    store = dest / ".store"
    if store.is_dir():
        have = set(os.listdir(store))
        names += sorted(f".store/{n}" for n in have
                        if not (n.endswith(".idx") and n[:-4] + ".pack" in have)
                        and not (n.endswith(".pack") and n[:-5] + ".idx" in have))
    return names


def packs(dest: Path) -> list[str]:
    """The chunk store's committed packs."""
    store = dest / ".store"
    return sorted(n[:-4] for n in os.listdir(store) if n.endswith(".idx")) if store.is_dir() else []


def is_dedup(snap: Path) -> bool:
    return json.loads((snap / "manifest.json").read_text())["format"] == "tzcrawl-snapshot/2"


def plain_copy(snap: Path, tmp_path: Path, env=None) -> Path:
    """The folder holding the snapshot's codex-brain.db and codex-code.tar.gz: the snapshot itself when
    plain, else what the real ``export`` command writes."""
    if not is_dedup(snap):
        return snap
    out = tmp_path / f"export-{snap.name}-{time.monotonic_ns()}"
    result = run_cli(tmp_path, "export", snap, out, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def chunk_of(snap: Path, rel: str) -> tuple[Path, int]:
    """Where in the store the first chunk of file ``rel`` of a deduplicated snapshot lies."""
    from tzcrawl.snapshot.chunks import Store
    from tzcrawl.snapshot.dedup import load_tree

    rec = next(r for r in load_tree((snap / "code.tree").read_bytes()) if r["p"] == rel)
    with Store(snap.parent) as store:
        loc = store.index[bytes.fromhex(rec["c"][0])]
    return snap.parent / ".store" / f"{loc.pack}.pack", loc.offset + loc.clen // 2


def flip(path: Path, at: int | None = None) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(raw))


def damage_db(snap: Path) -> None:
    """Damage one page of the snapshot's database (in its file, or in the pack its pages went to)."""
    if is_dedup(snap):
        (pack,) = [p for p in (snap.parent / ".store").glob(f"{snap.name}.*-db.pack")]
        flip(pack)
    else:
        flip(snap / "codex-brain.db", 5000)


def damage_code(snap: Path, rel: str) -> None:
    """Damage the snapshot's copy of file ``rel`` (the tarball of a plain one: same size, only a full
    check sees it)."""
    if is_dedup(snap):
        flip(*chunk_of(snap, rel))
    else:
        flip(snap / "codex-code.tar.gz")


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
