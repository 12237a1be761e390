#!/usr/bin/env python3
"""Benchmark the backup crawl against the sandbox service (loopback only); prints figures and ratios.

1. Flat out (delays off), one sandbox, every contender side by side in each repeat: 1 personality with
   20,000 memories and 100,000 messages (3,006 requests). Contenders: a bare keep-alive http.client
   loop; the floor, a minimal Scrapy spider fetching the same URLs with json.loads and nothing else;
   tzcrawl; and with --compare-rev REV, tzcrawl as it was at REV (a temporary git worktree). Printed:
   wall seconds (medians), tzcrawl / floor (target <= 1.25), peak RSS (target <= 150 MB), and an
   incremental run after 10 new memories and 10 new messages (target <= 8 requests).
2. Merge: a full re-read of 300,000 messages merged over a saved history of the same 300,000 (the
   store alone, no network); with --compare-rev, the same at REV and the speed-up (target >= 3x).
3. Rate-limited: the sandbox allows 5 requests/s (token bucket, burst 5); DOWNLOAD_DELAY=0 and
   AutoThrottle on as shipped. Printed: the share of the limit used, (successful requests - burst) /
   rate / time over the whole run (process start to exit; target >= 0.92), and in steady state (from
   the first 429 to the last answer, from the server's counters sampled every 0.25 s; target >= 0.95),
   the share of 429s (target <= 1 %), and whether everything arrived.

    .venv/bin/python scripts/bench_crawl.py [--repeats 3] [--compare-rev c41ee53] [--skip-flat]
        [--skip-merge] [--skip-rate] [--merge-records 300000]
"""

from __future__ import annotations

import argparse
import ast
import compileall
import contextlib
import http.client
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tzcrawl import api, paging, registry  # noqa: E402
from tzcrawl.config import ServiceConfig  # noqa: E402
from tzcrawl.sandbox import Sandbox, SandboxConfig  # noqa: E402
from tzcrawl.store import BackupView  # noqa: E402
from tzcrawl.store.timestamps import to_epoch  # noqa: E402

# Text only: media downloads have their own benchmark (bench_media.py).
FLAT_OUT = {"DOWNLOAD_DELAY": "0", "AUTOTHROTTLE_ENABLED": "False", "BACKUP_PERSONALITY_DELAY": "0", "BACKUP_MEDIA": "no"}

# The floor: fetch a list of URLs one at a time, json.loads each answer, nothing else.
FLOOR_SPIDER = textwrap.dedent('''
    import json
    import scrapy

    class Floor(scrapy.Spider):
        name = "floor"
        custom_settings = {"CONCURRENT_REQUESTS": 1, "DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False,
                           "TELNETCONSOLE_ENABLED": False, "REMOTE_CONTROL_ENABLED": False,
                           "ROBOTSTXT_OBEY": False, "COOKIES_ENABLED": False, "LOG_LEVEL": "INFO"}

        async def start(self):
            with open(self.urls) as fh:
                urls = fh.read().split()
            for url in urls:
                yield scrapy.Request(url, headers={"Cookie": self.cookie}, dont_filter=True)

        def parse(self, response):
            json.loads(response.body)
            self.crawler.stats.inc_value("floor/parsed")
''')

# The merge alone: save N messages, then commit a full re-read of the same N over them.
MERGE_CHILD = textwrap.dedent('''
    import json, sys, time
    from tzcrawl.store import BackupStore
    root, n = sys.argv[1], int(sys.argv[2])
    person = {"id": "p", "username": "bench", "name": "Bench"}
    def pages():
        for top in range(n, 0, -50):  # newest first, 50 a page, like the chat history
            yield [{"id": f"m{i}", "ts": 1.7e9 + i * 0.5, "message": "hello there " * 3, "reply": "hi! " * 20,
                    "voice_reply_url": None} for i in range(top - 1, max(top - 51, -1), -1)]
    store = BackupStore(root, chunk_size=5000)
    for label in ("first", "re-read"):
        run = store.begin(person, "messages")
        for page in pages():
            run.add(page)
        started = time.perf_counter()
        figures = run.commit(requests=n // 50)
        print(label, time.perf_counter() - started, figures["total"], figures["new"], flush=True)
''')


def as_installed(tree: Path = ROOT) -> None:
    """Byte-compile the tree's tzcrawl package, as installing it does: this environment sets
    PYTHONDONTWRITEBYTECODE, so every timed run would otherwise compile each changed module again."""
    compileall.compile_dir(str(tree / "tzcrawl"), quiet=1)


def median(values) -> float:
    return statistics.median(values)


def run_measured(cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """One subprocess; its wall seconds, its own peak RSS (MB), exit status and output."""
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    text = log.read_text()
    match = re.search(r"Dumping Scrapy stats:\n(\{.*?\})\n", text, re.S)
    stats = ast.literal_eval(re.sub(r"datetime\.datetime\([^)]*\)", "None", match.group(1))) if match else {}
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "exit": os.waitstatus_to_exitcode(status),
            "stats": stats, "log": text}


def crawl_env(sb: Sandbox, out: Path, tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "TZCRAWL_", "BACKUP_"))}
    env.update(SERVICE_WEBSITE=sb.base_url, SERVICE_COOKIE=sb.cookie_header, BACKUP_DIR=str(out),
               TZCRAWL_COOKIE_FILE=str(out.parent / "none"), PYTHONPATH=str(tree))
    if sb.ca_file:  # today's service: HTTPS, verified against the sandbox's own CA
        env["TZCRAWL_CA_FILE"] = sb.ca_file
    if sb.media_hosts:  # the file host is on loopback: listed, or its media are refused
        env["BACKUP_MEDIA_PRIVATE_HOSTS"] = sb.media_hosts
    return env


def run_crawl(sb: Sandbox, out: Path, settings: dict, tree: Path = ROOT) -> dict:
    """One `scrapy crawl all_personalities` of the tzcrawl in ``tree`` (this checkout or a worktree)."""
    cmd = [sys.executable, "-m", "scrapy", "crawl", "all_personalities"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    return run_measured(cmd, tree, crawl_env(sb, out, tree), out.parent / f"crawl-{tree.name}.log")


def walk_urls(sb: Sandbox) -> list[str]:
    """The URLs tzcrawl asks for, found with tzcrawl's own URL builder and paging decisions over a
    bare keep-alive http.client connection; also times that loop (the network's floor)."""
    endpoints = api.Endpoints(ServiceConfig(sb.base_url))
    if sb.ca_file:
        conn = http.client.HTTPSConnection("127.0.0.1", sb.port, timeout=30,
                                           context=ssl.create_default_context(cafile=sb.ca_file))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=30)
    headers = {"Cookie": sb.cookie_header}
    urls: list[str] = []

    def get(url: str):
        urls.append(url)
        conn.request("GET", url[len(sb.base_url):], headers=headers)
        response = conn.getresponse()
        return json.loads(response.read())

    for person in get(endpoints.personalities()):
        me = get(endpoints.resource(registry.get("profile"), person))
        for resource in registry.REGISTRY[1:]:
            if not resource.collection:
                get(endpoints.resource(resource, me))
                continue
            pager = paging.pager_for(resource, paging.Held(), True, to_epoch)  # tzcrawl's own, as in a full run
            position = pager.first
            while True:
                step = pager.step(pager.read(get(endpoints.resource(resource, me, position))), position)
                if not isinstance(step.decision, paging.Next):
                    break
                position = step.decision.value
    conn.close()
    return urls


@contextlib.contextmanager
def worktree(rev: str | None):
    """A temporary checkout of ``rev`` beside this one (None: nothing)."""
    if not rev:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="tzcrawl-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), rev], cwd=ROOT, check=True,
                   capture_output=True)
    as_installed(path)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def bench_flat_out(repeats: int, memories: int, messages: int, base: Path | None, session: str,
                   records: str) -> None:
    config = SandboxConfig(personalities=1, memories=memories, messages=messages, empty_last=False, session=session,
                           records=records)
    print(f"== flat out: 1 personality, {memories} memories, {messages} messages, delays off; session {session} "
          f"({'https' if config.https else 'http'}), {records} records ==")
    rows: dict[str, list[dict]] = {}
    with Sandbox(config, port=0, max_lifetime=3600) as sb, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name = sb.personalities[0]["username"]
        started = time.perf_counter()
        urls = walk_urls(sb)
        print(f"  {len(urls)} URLs; first bare walk {time.perf_counter() - started:.2f} s")
        (tmp / "urls.txt").write_text("\n".join(urls))
        (tmp / "floor.py").write_text(FLOOR_SPIDER)
        for repeat in range(repeats):
            started = time.perf_counter()
            assert walk_urls(sb) == urls
            rows.setdefault("bare http.client loop", []).append({"wall": time.perf_counter() - started, "rss_mb": 0})
            floor = run_measured([sys.executable, "-m", "scrapy", "runspider", str(tmp / "floor.py"),
                                  "-a", f"urls={tmp / 'urls.txt'}", "-a", f"cookie={sb.cookie_header}"],
                                 tmp, {**os.environ, "PYTHONPATH": ""}, tmp / "floor.log")
            assert floor["exit"] == 0 and floor["stats"].get("floor/parsed") == len(urls), floor["log"][-2000:]
            rows.setdefault("floor: minimal Scrapy spider", []).append(floor)
            for label, tree in (("tzcrawl", ROOT), ("tzcrawl at base", base)):
                if tree is None:
                    continue
                out = tmp / f"backup-{repeat}-{tree.name}"
                sb.reset_stats()
                result = run_crawl(sb, out, FLAT_OUT, tree)
                assert result["exit"] == 0, result["log"][-3000:]
                # tzcrawl first checks the session (users/info; on the 2025 service a 404 there, then users/me);
                # the floor does not
                routes = sb.stats()["routes"]
                api_requests = sb.stats()["requests"] - sum(routes.get(r, 0) for r in ("users_me", "users_info",
                                                                                       "not_found"))
                assert api_requests == len(urls), (api_requests, len(urls))
                view = BackupView(out)
                assert view.held(name, "memories").total == memories
                assert view.held(name, "messages").total == messages
                rows.setdefault(label, []).append(result)
            print(f"  repeat {repeat + 1}: " + ", ".join(f"{label} {runs[-1]['wall']:.2f} s"
                                                         for label, runs in rows.items()))
        for label, runs in rows.items():
            rss = f", peak RSS {median(r['rss_mb'] for r in runs):.0f} MB" if runs[0]["rss_mb"] else ""
            print(f"  median {label:<30} {median(r['wall'] for r in runs):6.2f} s{rss}")
        floor_wall = median(r["wall"] for r in rows["floor: minimal Scrapy spider"])
        ours = rows["tzcrawl"]
        print(f"  tzcrawl / floor: {median(r['wall'] for r in ours) / floor_wall:.2f} (target <= 1.25); "
              f"tzcrawl peak RSS {median(r['rss_mb'] for r in ours):.0f} MB (target <= 150)")
        if base is not None:
            print(f"  tzcrawl at base / floor: {median(r['wall'] for r in rows['tzcrawl at base']) / floor_wall:.2f}")

        out = tmp / f"backup-{repeats - 1}-{ROOT.name}"
        sb.add(name, memories=10, messages=10)
        sb.reset_stats()
        second = run_crawl(sb, out, FLAT_OUT)
        assert second["exit"] == 0, second["log"][-2000:]
        assert BackupView(out).held(name, "messages").total == messages + 10
        print(f"  incremental run after 10 new memories and 10 new messages: {sb.stats()['requests']} requests "
              f"(target <= 8), {second['wall']:.2f} s wall, peak RSS {second['rss_mb']:.0f} MB")


def bench_merge(repeats: int, records: int, base: Path | None) -> None:
    print(f"\n== merge: a full re-read of {records} messages over a saved history of {records} ==")
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for label, tree in (("tzcrawl", ROOT), ("tzcrawl at base", base)):
            if tree is None:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.run([sys.executable, "-c", MERGE_CHILD, tmp, str(records)], cwd=tree,
                                      env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
                assert proc.returncode == 0, proc.stderr[-2000:]
                reread = proc.stdout.splitlines()[1].split()
                assert reread[2:] == [str(records), "0"], reread  # all kept, nothing new
                times.setdefault(label, []).append(float(reread[1]))
    for label, values in times.items():
        print(f"  {label:<16} median {median(values):6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    if base is not None:
        print(f"  speed-up: {median(times['tzcrawl at base']) / median(times['tzcrawl']):.1f}x (target >= 3)")


def bench_rate_limited(memories: int, messages: int, rate: float, burst: int, session: str) -> None:
    print(f"\n== rate-limited: sandbox allows {rate:g} req/s (burst {burst}); DOWNLOAD_DELAY=0, AutoThrottle on ==")
    config = SandboxConfig(personalities=1, memories=memories, messages=messages, empty_last=False, session=session,
                           rate_limit=rate, rate_burst=burst)
    settings = {"DOWNLOAD_DELAY": "0", "AUTOTHROTTLE_ENABLED": "True", "BACKUP_PERSONALITY_DELAY": "0",
                "BACKUP_MEDIA": "no"}
    with Sandbox(config, port=0, max_lifetime=3600) as sb, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "backup"
        samples: list[tuple[float, int, int]] = []  # (seconds, 200s, 429s) seen by the server
        done = threading.Event()

        def sample():
            while not done.wait(0.25):
                counts = sb.stats()["status"]
                samples.append((time.perf_counter(), counts.get("200", 0), counts.get("429", 0)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_crawl(sb, out, settings)
        done.set()
        sampler.join()
        stats = sb.stats()
        name = sb.personalities[0]["username"]
        view = BackupView(out)
        complete = (result["exit"] == 0 and view.held(name, "memories").total == memories
                    and view.held(name, "messages").total == messages)
        ok = stats["status"].get("200", 0)
        limited = stats["status"].get("429", 0)
        allowed = (ok - burst) / rate  # seconds the server's bucket needed to let these through
        # Steady state: from the first 429 (the limit reached, the bucket empty) to the last answer.
        first = next((i for i, row in enumerate(samples) if row[2]), None)
        last = max(i for i, row in enumerate(samples) if row[1] == samples[-1][1])
        steady = None
        if first is not None and last > first:
            steady = (samples[last][1] - samples[first][1]) / rate / (samples[last][0] - samples[first][0])
        print(f"  {stats['requests']} requests: {ok} answered 200, {limited} answered 429 "
              f"({100 * limited / stats['requests']:.2f} %, target <= 1 %)")
        print(f"  share of the limit over the whole run (process start to exit, {result['wall']:.1f} s): "
              f"{allowed / result['wall']:.3f} (target >= 0.92)")
        print("  share of the limit in steady state (first 429 to the last answer, sampled every 0.25 s): "
              + (f"{steady:.3f}" if steady is not None else "no 429 seen") + " (target >= 0.95)")
        print(f"  learned pacing interval at the end: {result['stats'].get('backup/pacing/interval_ms')} ms; "
              f"backup complete and exact counts: {complete}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--session", default="better-auth", choices=("better-auth", "auth0", "appsession"),
                        help="the sandbox's session (appsession: the 2025 service over plain http, which a "
                             "--compare-rev from before December 2026 needs)")
    parser.add_argument("--records", default="2026", choices=("2026", "2025"),
                        help="the sandbox's record shapes (2025: what a --compare-rev before December 2026 reads)")
    parser.add_argument("--compare-rev", help="also run tzcrawl as it was at this git revision, side by side")
    parser.add_argument("--memories", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--merge-records", type=int, default=300_000)
    parser.add_argument("--skip-flat", action="store_true")
    parser.add_argument("--skip-merge", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--rate-memories", type=int, default=6000, help="memories for the rate-limited run")
    parser.add_argument("--rate-messages", type=int, default=7500, help="messages for the rate-limited run")
    args = parser.parse_args()
    as_installed()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    with worktree(args.compare_rev) as base:
        if not args.skip_flat:
            bench_flat_out(args.repeats, args.memories, args.messages, base, args.session, args.records)
        if not args.skip_merge:
            bench_merge(args.repeats, args.merge_records, base)
    if not args.skip_rate:
        bench_rate_limited(args.rate_memories, args.rate_messages, args.rate, args.burst, args.session)


if __name__ == "__main__":
    main()
