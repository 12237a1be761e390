#!/usr/bin/env python3
"""Benchmark the sandbox as a crawl target: page a 100,000-message chat history with before_ts.

Prints the generation time, requests/s and MB/s of a keep-alive http.client walk (median of the
repeats), and checks every message arrived exactly once. Usage:

    .venv/bin/python scripts/bench_sandbox.py [--messages 100000] [--memories 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tzcrawl.sandbox import Sandbox, SandboxConfig  # noqa: E402


def walk_history(sb: Sandbox, pid: str) -> tuple[int, int, int]:
    """Page the whole history on one keep-alive connection; return (requests, messages, bytes)."""
    if sb.ca_file:  # today's service speaks HTTPS (the sandbox's own CA)
        conn = http.client.HTTPSConnection("127.0.0.1", sb.port, timeout=30,
                                           context=ssl.create_default_context(cafile=sb.ca_file))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=30)
    headers = {"Cookie": sb.cookie_header}
    requests = received = size = 0
    before = ""
    seen: set[str] = set()
    while True:
        conn.request("GET", f"/api/personalities/{pid}/chat/history?limit=50&shape_id={pid}{before}", headers=headers)
        response = conn.getresponse()
        body = response.read()
        requests += 1
        size += len(body)
        if response.status != 200:
            raise SystemExit(f"unexpected status {response.status}: {body[:200]!r}")
        batch = json.loads(body)
        if not batch:
            break
        received += len(batch)
        seen.update(m["id"] for m in batch)
        before = f"&before_ts={min(m['ts'] for m in batch)!r}"
    conn.close()
    if len(seen) != received:
        raise SystemExit(f"duplicates: {received} received, {len(seen)} distinct")
    return requests, received, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--memories", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    config = SandboxConfig(personalities=1, messages=args.messages, memories=args.memories)
    with Sandbox(config, port=0, max_lifetime=1800) as sb:
        generated = time.perf_counter() - started
        pid = sb.personalities[0]["id"]
        rates, mbps = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            requests, received, size = walk_history(sb, pid)
            elapsed = time.perf_counter() - t0
            if received != args.messages:
                raise SystemExit(f"got {received} messages, expected {args.messages}")
            rates.append(requests / elapsed)
            mbps.append(size / elapsed / 1e6)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"sandbox with {args.messages} messages / {args.memories} memories generated in {generated:.2f} s")
    print(f"chat history walk: {requests} requests, {received} messages, {size / 1e6:.1f} MB per walk")
    print(f"requests/s (median of {args.repeats}): {statistics.median(rates):.0f}  "
          f"[{', '.join(f'{r:.0f}' for r in rates)}]  MB/s: {statistics.median(mbps):.1f}")


if __name__ == "__main__":
    main()
