#!/usr/bin/env python3
"""Benchmark `scrapy export` on a large backup (loopback sandbox crawl first); prints figures.

1 personality, 100,000 messages and 20,000 memories (text only: media have their own benchmark),
crawled once, then each format exported into a fresh folder, ``--repeats`` times: wall seconds and
peak RSS per format (targets: the HTML archive <= 10 s, every format under 60 s, RSS <= 200 MB), then
an unchanged re-export of all formats (target under 2 s), then ``--repeats`` times: 10 new messages on
the service, an incremental crawl, and a re-export of all formats (target <= 2 s), whose result is
compared with a fresh export of the same backup, file by file (must be byte-identical).

    .venv/bin/python scripts/bench_export.py [--repeats 3] [--messages 100000] [--memories 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_crawl import FLAT_OUT, ROOT, as_installed, median, run_crawl, run_measured  # noqa: E402

from tzcrawl.sandbox import Sandbox, SandboxConfig  # noqa: E402

FORMATS = ("html", "md", "card", "st")


def export(backup: Path, out: Path, *args: str) -> dict:
    env = {**os.environ, "BACKUP_DIR": str(backup)}
    cmd = [sys.executable, "-m", "scrapy", "export", "-a", f"out={out}", *args]
    result = run_measured(cmd, ROOT, env, out.parent / f"export-{out.name}.log")
    assert result["exit"] == 0, result["log"][-3000:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--memories", type=int, default=20_000)
    parser.add_argument("--skip-formats", action="store_true", help="not the per-format fresh exports (the "
                        "all-formats, unchanged and incremental cases only)")
    args = parser.parse_args()
    as_installed()
    config = SandboxConfig(personalities=1, memories=args.memories, messages=args.messages, empty_last=False)
    with Sandbox(config, port=0, max_lifetime=3600) as sb, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backup = tmp / "backup"
        crawl = run_crawl(sb, backup, FLAT_OUT)
        assert crawl["exit"] == 0, crawl["log"][-3000:]
        size = sum(f.stat().st_size for f in backup.rglob("*.json"))
        print(f"== export of 1 personality, {args.messages} messages, {args.memories} memories "
              f"({size / 1e6:.0f} MB of JSON; crawled in {crawl['wall']:.1f} s) ==")
        rows: dict[str, list[dict]] = {fmt: [] for fmt in FORMATS}
        for repeat in range(0 if args.skip_formats else args.repeats):
            for fmt in FORMATS:
                rows[fmt].append(export(backup, tmp / f"{fmt}-{repeat}", "-a", f"format={fmt}"))
            print(f"  repeat {repeat + 1}: " + ", ".join(f"{fmt} {rows[fmt][-1]['wall']:.1f} s" for fmt in FORMATS))
        for fmt in FORMATS if not args.skip_formats else ():
            print(f"  median {fmt:<5} {median(r['wall'] for r in rows[fmt]):6.2f} s, "
                  f"peak RSS {max(r['rss_mb'] for r in rows[fmt]):.0f} MB (targets: < 60 s, <= 200 MB)")
        out = tmp / "all"
        everything = export(backup, out)
        unchanged = [export(backup, out) for _ in range(args.repeats)]
        assert all(r["log"].count(": unchanged") == len(FORMATS) for r in unchanged)
        print(f"  all formats at once: {everything['wall']:.1f} s, peak RSS {everything['rss_mb']:.0f} MB; "
              f"unchanged re-export: median {median(r['wall'] for r in unchanged):.2f} s (target < 2 s)")
        name = sb.personalities[0]["username"]
        after = []
        for _ in range(args.repeats):
            sb.add(name, messages=10)
            again = run_crawl(sb, backup, FLAT_OUT)
            assert again["exit"] == 0, again["log"][-3000:]
            after.append(export(backup, out))
            steps = [line.split(" · ")[-1] for line in after[-1]["log"].splitlines() if line.startswith("export · ")]
            print(f"    {after[-1]['wall']:.2f} s: " + "; ".join(steps), flush=True)
        fresh = tmp / "fresh"
        export(backup, fresh)
        same = tree(out) == tree(fresh)
        print(f"  after 10 new messages (incremental crawl, then all formats): median "
              f"{median(r['wall'] for r in after):.2f} s, peak RSS {max(r['rss_mb'] for r in after):.0f} MB "
              f"(target <= 2 s); byte-identical to a fresh export of the same backup: {same}")
        assert same, "the incremental export differs from a fresh one"


def tree(folder: Path) -> dict[str, str]:
    """Every file of an export (the export state aside) by relative path, with its sha256."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != ".tzcrawl-export.json"}


if __name__ == "__main__":
    main()
