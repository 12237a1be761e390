#!/usr/bin/env python3
"""Benchmark the round trip at scale (loopback only): a backup of 1 personality with 20,000 memories and
100,000 messages, served by `scrapy sandbox --from-backup` (a subprocess) and crawled again into an empty
folder, flat out, text only (media have their own benchmark). Printed per repeat and as medians: the
served sandbox's start-up (its record index built) and peak RSS, the crawl's wall seconds and peak RSS,
and whether every data file came back byte for byte (compared a line at a time: on Linux a child's
peak RSS starts at its parent's, so this process stays small).

    .venv/bin/python scripts/bench_roundtrip.py [--repeats 3] [--memories 20000] [--messages 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_crawl import FLAT_OUT, median, run_crawl, run_measured  # noqa: E402
from tzcrawl.sandbox import Sandbox, SandboxConfig  # noqa: E402
from tzcrawl.sandbox.frombackup import round_trip_difference  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    """A running process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(backup: Path, ready: Path) -> tuple[subprocess.Popen, float]:
    """`scrapy sandbox --from-backup`, started; seconds until it serves (its index built)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "scrapy", "sandbox", "--from-backup", str(backup), "--ready-file",
                             str(ready), "--max-lifetime", "900"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 300
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench: the served backup did not start")
        time.sleep(0.02)
    return proc, time.perf_counter() - started


def crawl_served(info: dict, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "TZCRAWL_", "BACKUP_"))}
    env.update(SERVICE_WEBSITE=info["base_url"], SERVICE_COOKIE=info["cookie_header"], BACKUP_DIR=str(out),
               TZCRAWL_COOKIE_FILE=str(out.parent / "none"), TZCRAWL_CA_FILE=info.get("ca_file") or "",
               PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "scrapy", "crawl", "all_personalities"]
    for name, value in FLAT_OUT.items():
        cmd += ["-s", f"{name}={value}"]
    return run_measured(cmd, ROOT, env, out.parent / f"crawl-served-{out.name}.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memories", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=100_000)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tzcrawl-bench-roundtrip-") as tmp:
        base, original = Path(tmp), Path(tmp) / "original"
        with Sandbox(SandboxConfig(personalities=1, memories=opts.memories, messages=opts.messages,
                                   empty_last=False), files=False) as sb:
            made = run_crawl(sb, original, FLAT_OUT)
        if made["exit"]:
            raise SystemExit(made["log"][-3000:])
        size = sum(p.stat().st_size for p in original.rglob("*.json")) / 1e6
        print(f"backup: 1 personality, {opts.memories} memories, {opts.messages} messages, {size:.0f} MB of JSON")
        rows = []
        for n in range(opts.repeats):
            ready, again = base / f"ready-{n}.json", base / f"again-{n}"
            proc, startup = serve(original, ready)
            try:
                crawled = crawl_served(json.loads(ready.read_text()), again)
                served_rss = peak_rss_mb(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            files, difference = round_trip_difference(original, again)
            rows.append({"startup": startup, "serve_rss": served_rss, "wall": crawled["wall"],
                         "crawl_rss": crawled["rss_mb"], "exit": crawled["exit"], "same": difference is None})
            print(f"repeat {n + 1}: served in {startup:.2f} s (peak {served_rss:.0f} MB); crawl {crawled['wall']:.2f} s "
                  f"(peak {crawled['rss_mb']:.0f} MB, exit {crawled['exit']}); "
                  f"{files} files {'byte-identical' if difference is None else 'DIFFER: ' + difference}")
        print(f"median: served in {median(r['startup'] for r in rows):.2f} s, peak {median(r['serve_rss'] for r in rows):.0f} MB; "
              f"crawl {median(r['wall'] for r in rows):.2f} s, peak {median(r['crawl_rss'] for r in rows):.0f} MB; "
              f"round trip exact in {sum(r['same'] for r in rows)} of {len(rows)}")


if __name__ == "__main__":
    main()
