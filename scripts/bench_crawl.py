#!/usr/bin/env python3
"""Benchmark the backup crawl against the sandbox service (loopback only); prints figures.

1. Flat out (delays off): 1 personality with 20,000 memories and 100,000 messages — requests, wall
   time, requests/s and peak RSS of the crawl process (target <= 150 MB); then after 10 new memories
   and 10 new messages: requests (target <= 8) and wall time.
2. Rate-limited: the sandbox allows 5 requests/s (token bucket, burst 5); the crawl runs with
   DOWNLOAD_DELAY=0 and AutoThrottle on — achieved requests/s (target >= 4.5), the share of 429
   answers (target <= 1 %), and whether everything arrived.

    .venv/bin/python scripts/bench_crawl.py [--repeats 3] [--skip-rate] [--rate-memories 6000]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tzcrawl.sandbox import Sandbox, SandboxConfig  # noqa: E402
from tzcrawl.store import BackupStore  # noqa: E402

FLAT_OUT = {"DOWNLOAD_DELAY": "0", "AUTOTHROTTLE_ENABLED": "False", "BACKUP_PERSONALITY_DELAY": "0"}


def run_crawl(sb: Sandbox, out: Path, settings: dict, *args: str) -> dict:
    """One `scrapy crawl` subprocess; returns wall seconds, its own peak RSS and its final stats."""
    cmd = [sys.executable, "-m", "scrapy", "crawl", "all_personalities", *args]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    env = {**os.environ, "SERVICE_WEBSITE": sb.base_url, "SERVICE_COOKIE": sb.cookie, "BACKUP_DIR": str(out),
           "TZCRAWL_COOKIE_FILE": str(out.parent / "none")}
    log = out.parent / "crawl.log"
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    text = log.read_text()
    match = re.search(r"Dumping Scrapy stats:\n(\{.*?\})\n", text, re.S)
    stats = ast.literal_eval(re.sub(r"datetime\.datetime\([^)]*\)", "None", match.group(1))) if match else {}
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "exit": os.waitstatus_to_exitcode(status),
            "stats": stats, "log": text}


def bench_flat_out(repeats: int, memories: int, messages: int) -> None:
    print(f"== flat out: 1 personality, {memories} memories, {messages} messages, delays off ==")
    config = SandboxConfig(personalities=1, memories=memories, messages=messages, empty_last=False)
    full, incremental = [], []
    for _ in range(repeats):
        with Sandbox(config, port=0, max_lifetime=1800) as sb, tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "backup"
            first = run_crawl(sb, out, FLAT_OUT)
            requests = sb.stats()["requests"]
            assert first["exit"] == 0, first["log"][-2000:]
            name = sb.personalities[0]["username"]
            store = BackupStore(out)
            assert store.held(name, "memories").total == memories
            assert store.held(name, "messages").total == messages
            sb.add(name, memories=10, messages=10)
            sb.reset_stats()
            second = run_crawl(sb, out, FLAT_OUT)
            assert second["exit"] == 0, second["log"][-2000:]
            assert store.held(name, "messages").total == messages + 10
            full.append((requests, first["wall"], first["rss_mb"]))
            incremental.append((sb.stats()["requests"], second["wall"], second["rss_mb"]))
            print(f"  run: full {requests} requests in {first['wall']:.1f} s ({requests / first['wall']:.0f} req/s), "
                  f"peak RSS {first['rss_mb']:.0f} MB; incremental {incremental[-1][0]} requests in "
                  f"{second['wall']:.2f} s")
    med = lambda rows, i: statistics.median(r[i] for r in rows)  # noqa: E731
    print(f"  median full run:        {med(full, 0):.0f} requests, {med(full, 1):.1f} s wall, "
          f"{med(full, 0) / med(full, 1):.0f} requests/s, peak RSS {med(full, 2):.0f} MB (target <= 150 MB)")
    print(f"  median incremental run: {med(incremental, 0):.0f} requests (target <= 8), {med(incremental, 1):.2f} s wall, "
          f"peak RSS {med(incremental, 2):.0f} MB")


def bench_rate_limited(memories: int, messages: int, rate: float, burst: int) -> None:
    print(f"\n== rate-limited: sandbox allows {rate:g} req/s (burst {burst}); DOWNLOAD_DELAY=0, AutoThrottle on ==")
    config = SandboxConfig(personalities=1, memories=memories, messages=messages, empty_last=False,
                           rate_limit=rate, rate_burst=burst)
    settings = {"DOWNLOAD_DELAY": "0", "AUTOTHROTTLE_ENABLED": "True", "BACKUP_PERSONALITY_DELAY": "0"}
    with Sandbox(config, port=0, max_lifetime=3600) as sb, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "backup"
        result = run_crawl(sb, out, settings)
        stats = sb.stats()
        name = sb.personalities[0]["username"]
        store = BackupStore(out)
        complete = (result["exit"] == 0 and store.held(name, "memories").total == memories
                    and store.held(name, "messages").total == messages)
        ok = stats["status"].get("200", 0)
        limited = stats["status"].get("429", 0)
        elapsed = result["stats"].get("elapsed_time_seconds") or result["wall"]
        print(f"  {stats['requests']} requests: {ok} answered 200, {limited} answered 429 "
              f"({100 * limited / stats['requests']:.2f} %, target <= 1 %)")
        print(f"  achieved {ok / elapsed:.2f} successful requests/s over {elapsed:.1f} s of crawling "
              f"(target >= 4.5), {stats['requests'] / elapsed:.2f} requests/s sent")
        print(f"  learned pacing interval at the end: {result['stats'].get('backup/pacing/interval_ms')} ms; "
              f"backup complete and exact counts: {complete}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memories", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--skip-flat", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--rate-memories", type=int, default=6000, help="memories for the rate-limited run")
    parser.add_argument("--rate-messages", type=int, default=7500, help="messages for the rate-limited run")
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    if not args.skip_flat:
        bench_flat_out(args.repeats, args.memories, args.messages)
    if not args.skip_rate:
        bench_rate_limited(args.rate_memories, args.rate_messages, args.rate, args.burst)


if __name__ == "__main__":
    main()
