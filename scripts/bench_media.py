#!/usr/bin/env python3
"""Benchmark media downloads against the sandbox's file host (loopback only); prints figures.

1 personality, 2,000 messages of which about half carry media (voice replies and attachments), about
1,000 files of 50-500 KB on the file host (127.0.0.2), delays off. Side by side in each repeat:
the same crawl with ``-a media=0`` (text only) and with media. Printed (medians): wall seconds of
both and the media run / text-only ratio, the bytes brought home and the disk throughput (bytes /
wall seconds of the media run), peak RSS of the media run (target <= 150 MB: files stream to disk,
none held whole for long), and a second run's media requests (target 0).

    .venv/bin/python scripts/bench_media.py [--repeats 3] [--messages 2000] [--share 0.25]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_crawl import FLAT_OUT, ROOT, median, run_crawl  # noqa: E402

from tzcrawl.media import manifest  # noqa: E402
from tzcrawl.sandbox import Sandbox, SandboxConfig  # noqa: E402
from tzcrawl.store import BackupView  # noqa: E402


def bench(repeats: int, messages: int, share: float) -> None:
    config = SandboxConfig(personalities=1, memories=20, messages=messages, empty_last=False,
                           voice_replies=share, attachments=share, media_min_kb=50, media_max_kb=500)
    with_media = {**FLAT_OUT, "BACKUP_MEDIA": "yes"}
    text_only = {**FLAT_OUT, "BACKUP_MEDIA": "no"}
    with Sandbox(config, port=0, max_lifetime=3600) as sb, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name = sb.personalities[0]["username"]
        rows: dict[str, list[dict]] = {"text only (-a media=0)": [], "with media": []}
        files = size = 0
        for repeat in range(repeats):
            sb.reset_stats()
            text = run_crawl(sb, tmp / f"text-{repeat}", text_only)
            assert text["exit"] == 0 and sb.file_stats()["requests"] == 0, text["log"][-2000:]
            rows["text only (-a media=0)"].append(text)
            out = tmp / f"media-{repeat}"
            sb.reset_stats()
            media = run_crawl(sb, out, with_media)
            assert media["exit"] == 0, media["log"][-3000:]
            held = manifest.load(BackupView(out).media_manifest_path(name))
            assert held and all(e["status"] == "ok" for e in held.values())
            files, size = len(held), sum(e["size"] for e in held.values())
            assert sb.file_stats()["requests"] == files and sb.file_stats()["requests_with_cookie"] == 0
            media["bytes"] = size
            rows["with media"].append(media)
            print(f"  repeat {repeat + 1}: text only {text['wall']:.2f} s, with media {media['wall']:.2f} s "
                  f"({files} files, {size / 1e6:.1f} MB, peak RSS {media['rss_mb']:.0f} MB)")
        text_wall = median(r["wall"] for r in rows["text only (-a media=0)"])
        media_wall = median(r["wall"] for r in rows["with media"])
        print(f"== 1 personality, {messages} messages, {files} media files, {size / 1e6:.1f} MB ==")
        for label, runs in rows.items():
            print(f"  median {label:<24} {median(r['wall'] for r in runs):6.2f} s, "
                  f"peak RSS {median(r['rss_mb'] for r in runs):.0f} MB")
        print(f"  with media / text only: {media_wall / text_wall:.2f}; {size / 1e6 / media_wall:.1f} MB/s to disk "
              f"over the whole media run, {files / media_wall:.0f} files/s")
        print(f"  peak RSS with media {median(r['rss_mb'] for r in rows['with media']):.0f} MB (target <= 150)")

        sb.reset_stats()
        second = run_crawl(sb, tmp / f"media-{repeats - 1}", with_media)
        assert second["exit"] == 0, second["log"][-2000:]
        print(f"  second run: {sb.file_stats()['requests']} media requests (target 0), {second['wall']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--share", type=float, default=0.25, help="share of messages with a voice reply, "
                        "and with an attachment (0.25 each: ~1,000 files for 2,000 messages)")
    args = parser.parse_args()
    print(f"tzcrawl at {ROOT}")
    bench(args.repeats, args.messages, args.share)


if __name__ == "__main__":
    main()
