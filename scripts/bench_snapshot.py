#!/usr/bin/env python3
"""Benchmark: `snapshot.py create` against GNU `tar czf` (same file list) + `sqlite3 .backup`, and the
deduplicated layout over a day of edits.

Generates a code tree (~170 MB archived, mixed text and binary, plus ignored folders) and a ~200 MB
WAL database under /tmp, keeps a writer process committing to the database during every run, and
times both ways alternately in the same run. (sqlite3's ``.backup`` restarts on every commit of
another connection and does not finish under the writer: the baseline's ``.backup`` runs with the
writer paused, which favours the baseline; a capped attempt under the live writer is printed.) Prints each run, the medians, the ratio (target ≤ 1.1×)
and peak RSS (of the process and the children it waited for: gzip included). Deletes its data after.

    .venv/bin/python scripts/bench_snapshot.py            # full size, 3 runs each (a few minutes)
    .venv/bin/python scripts/bench_snapshot.py --small    # quick check
    .venv/bin/python scripts/bench_snapshot.py --cases dedup,day --runs 5   # issue 23's cases only

Cases: ``plain`` (a)-(c), the plain layout against the baseline, a live writer committing throughout;
``dedup`` (d) a first deduplicated snapshot, (e) one file changed and the database grown by ~50 KB
(time against (d), new disk against the file's compressed size + the changed pages + 1 MB), beside
restic (when installed) doing the same with a sqlite3 backup-API copy; ``day`` (f) 30 snapshots with
1 % of the files and 1 % of the rows changed between each: total disk against one full snapshot, and
every one exported, extracted with tar and compared (tree byte for byte, rows, integrity_check).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_crawl import as_installed  # noqa: E402
from tzcrawl.snapshot import codetree, store  # noqa: E402

WRITER = r"""
import os, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
stop = sys.argv[2]
n = 0
deadline = time.monotonic() + 3600
while not os.path.exists(stop) and time.monotonic() < deadline:
    conn.execute("INSERT INTO events(kind, body) VALUES ('TurnAppended', ?)", (os.urandom(800).hex(),))
    n += 1
    time.sleep(0.02)
print(n)
"""

WORDS = ("const let function return import export from await async if else for while class extends "
         "this new true false null undefined memory event turn session brain bridge hands voice rule "
         "document chunk append index query result error value config state props render").split()


def text_blob(rng: random.Random, size: int) -> bytes:
    lines = []
    total = 0
    while total < size:
        indent = "  " * rng.randint(0, 4)
        line = indent + " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + f" {rng.getrandbits(32):x};\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def make_tree(root: Path, mb: float, rng: random.Random) -> None:
    target = int(mb * 1024 * 1024)
    text_share = int(target * 0.6)
    services = ["codex-brain", "codex-bridge", "codex-orchestrator", "codex-hands", "codex-voice",
                "codex-desktop", "codex-boot-manager", "packages"]
    (root / "package.json").write_text('{"name": "codex"}\n')
    (root / ".gitignore").write_text("build/\n*.tmp\ncoverage/\n")
    written, i = 0, 0
    while written < text_share:
        svc = services[i % len(services)]
        d = root / svc / "src" / f"mod{i % 37}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(2_000, 60_000)
        (d / f"file{i}.ts").write_bytes(text_blob(rng, size))
        written += size
        i += 1
    j = 0
    while written < target:
        svc = services[j % len(services)]
        d = root / svc / "assets"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(100_000, 900_000)
        (d / f"blob{j}.bin").write_bytes(rng.randbytes(size))
        written += size
        j += 1
    for svc in services:  # ignored weight: dependencies, builds, logs
        nm = root / svc / "node_modules" / "dep"
        nm.mkdir(parents=True, exist_ok=True)
        for k in range(40):
            (nm / f"m{k}.js").write_bytes(text_blob(rng, 20_000))
        (root / svc / "dist").mkdir(exist_ok=True)
        (root / svc / "dist" / "bundle.js").write_bytes(text_blob(rng, int(target * 0.01)))
        (root / svc / "build").mkdir(exist_ok=True)
        (root / svc / "build" / "out.bin").write_bytes(rng.randbytes(int(target * 0.005)))
        (root / svc / "server.log").write_bytes(text_blob(rng, 200_000))
        (root / svc / ".env").write_text("SECRET=1\n")


def make_db(path: Path, mb: float, rng: random.Random) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT, body TEXT)")
    conn.execute("CREATE TABLE chunks(id INTEGER PRIMARY KEY, doc TEXT, blob BLOB)")
    target = int(mb * 1024 * 1024)
    done = 0
    while done < target:
        conn.execute("BEGIN")
        rows = [(f"doc{rng.getrandbits(20)}", text_blob(rng, 4000) if k % 2 else rng.randbytes(4000))
                for k in range(2000)]
        conn.executemany("INSERT INTO chunks(doc, blob) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
        done += 2000 * 4100
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def timed(argv: list[str], **kw) -> tuple[float, int, int]:
    """Wall seconds, exit status, peak RSS in KiB of the command and the children it waited for.

    GNU time measures the RSS when it is there: a child forked straight from this (large) Python
    process would report this process's RSS as its own high-water mark.
    """
    rss_file = None
    if os.path.exists("/usr/bin/time"):
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = ["/usr/bin/time", "-q", "-f", "%M", "-o", rss_file, *argv]
    t = time.perf_counter()
    proc = subprocess.Popen(argv, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss
    if rss_file:
        rss = int(Path(rss_file).read_text().split()[-1])
        os.unlink(rss_file)
    return wall, proc.returncode, rss


SNAPSHOT = [sys.executable, str(ROOT / "scripts/snapshot.py")]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOT_")}


def du(path: Path) -> int:
    """Bytes the folder takes on disk (allocated blocks)."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*")) + path.lstat().st_blocks * 512


def page_set(db: Path, work: Path) -> tuple[set[bytes], int]:
    """The SHA-256 of every page of a consistent copy of ``db``, and its page size."""
    import hashlib

    copy = work / "pages.db"
    src, dst = sqlite3.connect(db), sqlite3.connect(copy)
    src.backup(dst)
    size = dst.execute("PRAGMA page_size").fetchone()[0]
    src.close()
    dst.close()
    data = copy.read_bytes()
    copy.unlink()
    return {hashlib.sha256(data[i:i + size]).digest() for i in range(0, len(data), size)}, size


def grow_db(db: Path, rng: random.Random, nbytes: int = 50_000) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for _ in range(nbytes // 1000):
        conn.execute("INSERT INTO events(kind, body) VALUES ('TurnAppended', ?)", (rng.randbytes(500).hex(),))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def edit_file(code: Path, rng: random.Random, k: int = 1) -> list[Path]:
    """Change ``k`` selected text files (a line appended, as an edit does)."""
    files = [e.path for e in codetree.select(code).entries if e.rel.endswith(".ts")]
    picked = [Path(p) for p in rng.sample(sorted(files), k)]
    for p in picked:
        with open(p, "ab") as fh:
            fh.write(text_blob(rng, 80))
    return picked


def create_dedup(out: Path, code: Path, db: Path) -> tuple[float, dict]:
    t, rc, rss = timed([*SNAPSHOT, "create", "--db", str(db), "--code", str(code), "--dest", str(out)],
                       stdout=subprocess.DEVNULL, env=ENV)
    assert rc == 0, rc
    newest = store.scan(out)[0]
    return t, dict(newest.manifest, rss_kib=rss)


def restic_run(repo: Path, code: Path, db: Path, work: Path, first: bool) -> float | None:
    """restic backing up the tree and a backup-API copy of the database, as a user would script it."""
    if not shutil.which("restic"):
        return None
    env = dict(ENV, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo), RESTIC_CACHE_DIR=str(work / "restic-cache"))
    if first:
        subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True, capture_output=True)
    t = time.perf_counter()
    copy = work / "restic-db" / "brain.db"
    copy.parent.mkdir(exist_ok=True)
    copy.unlink(missing_ok=True)
    src, dst = sqlite3.connect(db), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    excludes = [f"--exclude={p}" for p in ("node_modules", "dist", "build", "*.log", ".env*")]
    subprocess.run(["restic", "backup", "--quiet", "--compression", "auto", *excludes, str(code), str(copy.parent)],
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def bench_dedup(work: Path, code: Path, db: Path, runs: int, rng: random.Random) -> None:
    """(d) a first deduplicated snapshot; (e) one file changed and the database grown by ~50 KB."""
    import zlib

    firsts, seconds, ratios, news, allowances, rss, restic = [], [], [], [], [], [], []
    for run in range(runs):
        out = work / "out-dedup"
        t1, m1 = create_dedup(out, code, db)
        first_disk = du(out)
        pages_before, page_size = page_set(db, work)
        (changed,) = edit_file(code, rng)
        grow_db(db, rng)
        pages_after, _ = page_set(db, work)
        before = du(out)
        t2, m2 = create_dedup(out, code, db)
        new_disk = du(out) - before
        changed_pages = len(pages_after - pages_before)
        allowance = len(zlib.compress(changed.read_bytes(), 6)) + changed_pages * page_size + 2**20
        assert not store.verify(store.scan(out)[0].path)
        repo = work / "restic-repo"
        r1 = restic_run(repo, code, db, work, first=True)
        (changed,) = edit_file(code, rng)
        grow_db(db, rng)
        repo_before = du(repo) if r1 is not None else 0
        r2 = restic_run(repo, code, db, work, first=False)
        if r1 is not None:
            restic.append((r1, r2, du(repo) - repo_before))
        firsts.append(t1)
        seconds.append(t2)
        ratios.append(t2 / t1)
        news.append(new_disk)
        allowances.append(allowance)
        rss.append(max(m1["rss_kib"], m2["rss_kib"]))
        tm = m2["timings"]
        print(f"run {run + 1} dedup: first {t1:.2f}s ({first_disk / 2**20:.0f} MiB on disk); one file + db +50 KB: "
              f"{t2:.2f}s = {t2 / t1:.2f}x (in-process {tm['total_s']:.2f}s: db copy {tm['db_copy_s']:.2f}s, pages "
              f"{tm['db_pages_s']:.2f}s, tree {tm['tree_s']:.2f}s, {m2['code']['files_read']} of "
              f"{m2['code']['files']} files read), new disk {new_disk / 2**10:.0f} KiB of allowance "
              f"{allowance / 2**10:.0f} KiB ({changed_pages} changed pages, {m2['store']['new_chunks']} new chunks)"
              + (f"; restic {r1:.2f}s then {r2:.2f}s, +{restic[-1][2] / 2**10:.0f} KiB" if r1 is not None else ""),
              flush=True)
        shutil.rmtree(out)
        shutil.rmtree(repo, ignore_errors=True)
    med = statistics.median
    print(f"(d) first deduplicated snapshot: median {med(firsts):.2f}s, peak RSS {max(rss) / 1024:.0f} MiB")
    print(f"(e) one file changed + database +50 KB: median {med(seconds):.2f}s = {med(ratios):.3f}x the first "
          f"(median of the runs' own ratios; the ratio of the two medians: {med(seconds) / med(firsts):.3f}x; "
          f"target <= 0.25x); new disk median {med(news) / 2**10:.0f} KiB = {med(n / a for n, a in zip(news, allowances)):.2f} "
          f"of the allowance (target <= 1)")
    if restic:
        print(f"    restic {subprocess.run(['restic', 'version'], capture_output=True, text=True).stdout.split()[1]} "
              f"beside it (backup-API copy + restic backup): first median {med(r[0] for r in restic):.2f}s, "
              f"then median {med(r[1] for r in restic):.2f}s, adding median {med(r[2] for r in restic) / 2**10:.0f} KiB")


def tree_state(code: Path) -> dict[str, bytes]:
    import hashlib

    return {e.rel: hashlib.sha256(Path(e.path).read_bytes()).digest() for e in codetree.select(code).entries
            if e.st.st_mode & 0o170000 == 0o100000}


def rows_state(db: Path) -> str:
    import hashlib

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    digest = hashlib.sha256()
    for table in ("events", "chunks"):
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
            digest.update(repr(row).encode())
    conn.close()
    return digest.hexdigest()


def bench_day(work: Path, code: Path, db: Path, count: int, rng: random.Random) -> None:
    """(f) ``count`` snapshots, 1 % of files and of rows changed between each; each restored and compared."""
    out = work / "out-day"
    files = [e for e in codetree.select(code).entries if e.st.st_mode & 0o170000 == 0o100000]
    conn = sqlite3.connect(db, isolation_level=None)
    ids = [r[0] for r in conn.execute("SELECT id FROM chunks")]
    conn.close()
    expected, times, added = [], [], []
    for i in range(count):
        if i:
            for e in rng.sample(files, max(1, len(files) // 100)):
                with open(e.path, "r+b") as fh:  # an edit in place: a few bytes in the middle
                    fh.seek(e.st.st_size // 2)
                    fh.write(text_blob(rng, 64))
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("BEGIN")
            conn.executemany("UPDATE chunks SET blob = ? WHERE id = ?",
                             [(rng.randbytes(4000), k) for k in rng.sample(ids, max(1, len(ids) // 100))])
            conn.execute("COMMIT")
            conn.close()
        before = du(out) if out.exists() else 0
        t, m = create_dedup(out, code, db)
        times.append(t)
        added.append(du(out) - before)
        expected.append((m["name"], tree_state(code), rows_state(db)))
        if i == 0:
            first_disk = du(out)
            plain = work / "out-plain-one"
            subprocess.run([*SNAPSHOT, "create", "--db", str(db), "--code", str(code), "--dest", str(plain),
                            "--layout", "plain"], env=ENV, check=True, stdout=subprocess.DEVNULL)
            plain_disk = du(plain)
            shutil.rmtree(plain)
    total = du(out)
    exact = 0
    for name, tree, rows in expected:
        dest = work / "restored"
        subprocess.run([*SNAPSHOT, "export", name, str(dest), "--dest", str(out)], env=ENV, check=True,
                       stdout=subprocess.DEVNULL)
        (dest / "tree").mkdir()
        subprocess.run(["tar", "-xzf", str(dest / "codex-code.tar.gz"), "-C", str(dest / "tree")], check=True)
        got_tree = tree_state(dest / "tree")
        conn = sqlite3.connect(dest / "codex-brain.db")
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        same = got_tree == tree and rows_state(dest / "codex-brain.db") == rows and ok
        exact += same
        if not same:
            print(f"  {name}: NOT restored exactly (tree {got_tree == tree}, rows, integrity {ok})", flush=True)
        shutil.rmtree(dest)
    med = statistics.median
    print(f"(f) {count} snapshots of a day ({len(files) // 100} files and {len(ids) // 100} rows changed between each): "
          f"{total / 2**20:.0f} MiB in all = {total / first_disk:.2f}x the first deduplicated snapshot "
          f"({first_disk / 2**20:.0f} MiB), {total / plain_disk:.2f}x one full plain snapshot ({plain_disk / 2**20:.0f} MiB) "
          f"(target <= 2x); each snapshot median {med(times):.2f}s, adding median {med(added[1:]) / 2**20:.1f} MiB; "
          f"restored exactly: {exact}/{count}")
    shutil.rmtree(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="~15 MB tree, ~20 MB database")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tree-mb", type=float)
    ap.add_argument("--db-mb", type=float)
    ap.add_argument("--cases", default="plain,dedup,day", help="comma-separated: plain, dedup, day")
    ap.add_argument("--day", type=int, default=30, help="snapshots in the day case")
    args = ap.parse_args()
    as_installed()
    cases = set(args.cases.split(","))
    tree_mb = args.tree_mb or (15 if args.small else 170)
    db_mb = args.db_mb or (20 if args.small else 200)
    rng = random.Random(1234)
    work = Path(tempfile.mkdtemp(prefix="tzcrawl-bench-", dir="/tmp"))
    writer = None
    try:
        code, db = work / "Codex", work / "brain.db"
        t = time.perf_counter()
        code.mkdir()
        make_tree(code, tree_mb, rng)
        make_db(db, db_mb, rng)
        print(f"generated in {time.perf_counter() - t:.1f}s under {work}", flush=True)
        sel = codetree.select(code)
        listed = sum(e.st.st_size for e in sel.entries if not e.rel.endswith("/") and e.st.st_size)
        on_disk = sum(p.stat().st_size for p in code.rglob("*") if p.is_file())
        print(f"tree: {on_disk / 2**20:.0f} MiB on disk, {len(sel.entries)} entries / {listed / 2**20:.0f} MiB "
              f"selected ({sel.excluded} excluded); database {db.stat().st_size / 2**20:.0f} MiB (WAL)", flush=True)
        file_list = work / "files.list"
        file_list.write_bytes(b"".join(os.fsencode(e.rel) + b"\0" for e in sel.entries))

        if "dedup" in cases:
            bench_dedup(work, code, db, args.runs, rng)
        if "day" in cases:
            bench_day(work, code, db, args.day, rng)
        if "plain" not in cases:
            return 0
        stop = work / "stop-writer"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop)], stdout=subprocess.PIPE,
                                  text=True)
        live_cap = 10 if args.small else 30
        t = time.perf_counter()
        probe = subprocess.Popen(["/usr/bin/sqlite3", str(db), f".backup '{work / 'probe.db'}'"])
        try:
            probe.wait(timeout=live_cap)
            print(f"sqlite3 .backup under the live writer: finished in {time.perf_counter() - t:.1f}s", flush=True)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()
            print(f"sqlite3 .backup under the live writer: not finished after {live_cap}s (restarts on every "
                  "commit); the baseline below pauses the writer for its .backup", flush=True)
        (work / "probe.db").unlink(missing_ok=True)
        ours, base, tar_only, rss_ours, rss_base, manifests = [], [], [], [], [], []
        unchanged, unchanged_ratio, unchanged_added, changed = [], [], [], []
        for run in range(args.runs):
            order = ("ours", "base") if run % 2 == 0 else ("base", "ours")
            for which in order:
                out = work / f"out-{which}"
                out.mkdir()
                if which == "base":
                    t1, rc1, r1 = timed(["tar", "-czf", str(out / "codex-code.tar.gz"), "-C", str(code), "--null",
                                         "--no-recursion", "-T", str(file_list)])
                    # sqlite3's .backup copies 100 pages a step and restarts whenever another connection
                    # commits: under the live writer it does not finish (see the capped attempt below),
                    # so the baseline gets a quiet database: the writer is paused for it.
                    os.kill(writer.pid, signal.SIGSTOP)
                    try:
                        t2, rc2, r2 = timed(["/usr/bin/sqlite3", str(db), f".backup '{out / 'codex-brain.db'}'"])
                    finally:
                        os.kill(writer.pid, signal.SIGCONT)
                    assert rc1 == 0 and rc2 == 0, (rc1, rc2)
                    base.append(t1 + t2)
                    tar_only.append(t1)
                    rss_base.append(max(r1, r2))
                    print(f"run {run + 1} tar czf + sqlite3 .backup: {t1 + t2:6.2f}s  (tar {t1:.2f}s, "
                          f".backup {t2:.2f}s; tarball {(out / 'codex-code.tar.gz').stat().st_size / 2**20:.0f} MiB)",
                          flush=True)
                else:
                    cmd = [sys.executable, str(ROOT / "scripts/snapshot.py"), "create", "--db", str(db),
                           "--code", str(code), "--dest", str(out), "--layout", "plain"]
                    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOT_")}
                    t1, rc, r = timed(cmd, stdout=subprocess.DEVNULL, env=env)
                    assert rc == 0, rc
                    (snap,) = [p for p in out.iterdir() if p.name.startswith("codex-backup-")]
                    # (b) again, the tree unchanged: the archive is shared, only the database is copied
                    t2, rc, _ = timed(cmd, stdout=subprocess.DEVNULL, env=env)
                    assert rc == 0, rc
                    snaps = store.scan(out)
                    added = store.space_added(snaps)[snaps[0].name]
                    second = snaps[0].manifest
                    assert second["code"]["archive"]["shared"] == "hardlink", second["code"]["archive"]
                    db_copy = second["files"]["codex-brain.db"]["size"]
                    unchanged.append(t2)
                    unchanged_ratio.append(t2 / t1)
                    unchanged_added.append(added - db_copy)
                    # (c) one file changed: archived again, and the change is in it
                    changed_file = code / "changed-by-bench.txt"
                    changed_file.write_text(f"run {run}\n")
                    t3, rc, _ = timed(cmd, stdout=subprocess.DEVNULL, env=env)
                    assert rc == 0, rc
                    third = store.scan(out)[0]
                    assert third.manifest["code"]["archive"]["from"] is None
                    listed_now = subprocess.run(["tar", "-xzOf", str(third.path / "codex-code.tar.gz"),
                                                "changed-by-bench.txt"], capture_output=True, check=True).stdout
                    assert listed_now == f"run {run}\n".encode() and not store.verify(third.path)
                    changed.append(t3)
                    print(f"      then unchanged tree: {t2:.2f}s ({t2 / t1:.2f}x the first), adds "
                          f"{added / 2**20:.1f} MiB = database copy {db_copy / 2**20:.1f} MiB + "
                          f"{(added - db_copy) / 2**10:.0f} KiB; one file changed: {t3:.2f}s, archived anew, verified",
                          flush=True)
                    m = json.loads((snap / "manifest.json").read_text())
                    manifests.append(m)
                    ours.append(t1)
                    rss_ours.append(r)
                    tm = m["timings"]
                    print(f"run {run + 1} snapshot.py create:         {t1:6.2f}s  (walk {tm['walk_s']:.2f}s, tar+gzip "
                          f"{tm['tar_s']:.2f}s, hash {tm['tar_hash_s']:.2f}s, db copy {tm['db_copy_s']:.2f}s + "
                          f"integrity_check {tm['db_check_s']:.2f}s in parallel; tarball "
                          f"{m['files']['codex-code.tar.gz']['size'] / 2**20:.0f} MiB, {m['code']['compressor']})",
                          flush=True)
                shutil.rmtree(out)
        stop.touch()
        commits = int(writer.communicate(timeout=60)[0])
        writer = None
        mo, mb = statistics.median(ours), statistics.median(base)
        print()
        print(f"{'':34}{'snapshot.py':>14}{'tar czf + .backup':>20}")
        print(f"{'median wall time (s)':34}{mo:>14.2f}{mb:>20.2f}")
        print(f"{'all runs (s)':34}{' '.join(f'{x:.2f}' for x in ours):>14}"
              f"{' '.join(f'{x:.2f}' for x in base):>20}")
        print(f"{'peak RSS (MiB, max over runs)':34}{max(rss_ours) / 1024:>14.0f}{max(rss_base) / 1024:>20.0f}")
        print(f"ratio snapshot / baseline (medians): {mo / mb:.2f}x (target <= 1.1x)")
        print(f"stricter, snapshot (db copy included) / tar czf alone: {mo / statistics.median(tar_only):.2f}x")
        print(f"(a) first snapshot / baseline: {mo / mb:.2f}x (target <= 0.6x on 2 cores with parallel gzip; "
              f"{manifests[0]['code']['compressor']})")
        print(f"(b) unchanged tree: median {statistics.median(unchanged):.2f}s, "
              f"{statistics.median(unchanged_ratio):.2f}x the first snapshot (target <= 0.2x); disk added beyond the "
              f"database copy: max {max(unchanged_added) / 2**10:.0f} KiB (target <= 1 MiB)")
        print(f"(c) one file changed: median {statistics.median(changed):.2f}s, a new archive holding the change, "
              f"verified")
        print(f"writer committed {commits} transactions during the runs; every snapshot's copy passed "
              f"integrity_check: {all(m['db']['integrity_check'] == 'ok' for m in manifests)}")
        return 0
    finally:
        if writer is not None:
            (work / "stop-writer").touch()
            writer.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
