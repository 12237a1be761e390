"""`make demo`: back up every personality of the bundled sandbox service, twice.

Starts `scrapy sandbox` in the background (small generated dataset, loopback only), runs
`scrapy crawl all_personalities -a category=self,recent` against it (the 3 personalities the sandbox's
user owns and the 2 of other people they talked to: of those, what a non-owner may read), lets the sandbox "write" 10 new memories and 10 new
messages, runs again to show how few requests an incremental run needs (and that no media file is
fetched twice), then stops the sandbox and proves the backup complete (`scrapy sandbox --from-backup` serves it as
the service; a crawl of that into an empty folder must give back every data and media file byte for
byte), and exports it (`scrapy export`: an offline HTML archive, Markdown transcripts, character
cards, SillyTavern chats). The backup, media files included,
lands in demo-data/personalities/, the export in demo-data/export/; the last line is the archive's
file:// address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tzcrawl.sandbox.client import call, post_json, trust
from tzcrawl.sandbox.frombackup import round_trip_difference
from tzcrawl.session.jar import save_cookie_text

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-data" / "personalities"
EXPORT = ROOT / "demo-data" / "export"
SCRAPY = [sys.executable, "-m", "scrapy"]
# Quick but still polite to a real server: small delays instead of the 1 s / 2 s defaults.
FAST = ["-s", "DOWNLOAD_DELAY=0.05", "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "BACKUP_PERSONALITY_DELAY=0.2"]
# every personality owned, and every one talked to lately (other people's too), each once
SPIDER = ["all_personalities", "-a", "category=self,recent"]


def control(base_url: str, path: str, payload: dict | None = None) -> dict:
    """The sandbox's control surface (loopback only): GET, or POST a JSON payload."""
    answer = call(base_url, path) if payload is None else post_json(base_url, path, payload)
    if answer.status != 200:
        raise SystemExit(f"demo: the sandbox answered {answer.status} to {path}: {answer.text[:200]}")
    return answer.json()


def crawl(env: dict) -> int:
    print(f"\n$ scrapy crawl {' '.join(SPIDER)}   (BACKUP_DIR={OUT.relative_to(ROOT)})", flush=True)
    return subprocess.run([*SCRAPY, "crawl", *SPIDER, *FAST], cwd=ROOT, env=env).returncode


def start_sandbox(ready: Path, *extra: str) -> subprocess.Popen | None:
    """``scrapy sandbox`` in the background, once its ready file is written (None: it did not start)."""
    proc = subprocess.Popen([*SCRAPY, "sandbox", "--ready-file", str(ready), "--max-lifetime", "600", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_sandbox(proc)
            print(proc.stdout.read() if proc.stdout else "", file=sys.stderr)
            return None
        time.sleep(0.1)
    return proc


def stop_sandbox(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def prove(tmp: Path) -> int:
    """The round trip: the backup served as the service, crawled into an empty folder, the same files."""
    print(f"\n$ scrapy sandbox --from-backup {OUT.relative_to(ROOT)}   (and a crawl of it into an empty folder)",
          flush=True)
    ready, again = tmp / "ready-backup.json", tmp / "again"
    proc = start_sandbox(ready, "--from-backup", str(OUT))
    if proc is None:
        print("demo: the backup could not be served", file=sys.stderr)
        return 1
    try:
        info = json.loads(ready.read_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "TZCRAWL_", "BACKUP_"))}
        env.update(SERVICE_WEBSITE=info["base_url"], SERVICE_COOKIE=info["cookie_header"], BACKUP_DIR=str(again),
                   TZCRAWL_CA_FILE=info.get("ca_file") or "", BACKUP_MEDIA_PRIVATE_HOSTS=info.get("media_hosts") or "",
                   TZCRAWL_COOKIE_FILE=str(tmp / "no-cookie-file"))
        code = subprocess.run([*SCRAPY, "crawl", *SPIDER, *FAST, "-s", "LOG_LEVEL=WARNING"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    finally:
        stop_sandbox(proc)
    files, difference = round_trip_difference(OUT, again)
    if code or difference:
        print(f"Round trip FAILED (crawl exit {code}): {difference}")
        return 1
    print(f"Round trip: the backup served as the service and crawled again gives back the same {files} files "
          f"(data and media), byte for byte.")
    return 0


def main() -> int:
    if OUT.exists():  # the demo's own scratch backup: start fresh so the first run is a full one
        shutil.rmtree(OUT)
    with tempfile.TemporaryDirectory(prefix="tzcrawl-demo-") as tmp:
        ready = Path(tmp) / "ready.json"
        sandbox = start_sandbox(ready)
        if sandbox is None:
            print("demo: the sandbox service did not start", file=sys.stderr)
            return 1
        try:
            info = json.loads(ready.read_text())
            base = info["base_url"]
            if info.get("ca_file"):  # today's service speaks HTTPS; the sandbox's own CA vouches for it
                trust(base, info["ca_file"])
            print(f"Sandbox service running at {base} (totals: {control(base, '/_sandbox/totals').get('sum')})")
            # The session as `scrapy crawl login` leaves it: a cookie file (0600), which the crawl keeps up to
            # date when the service renews the session.
            cookie_file = save_cookie_text(Path(tmp) / "cookie.json", info["cookie_header"], site=base)
            env = {k: v for k, v in os.environ.items() if k != "SERVICE_COOKIE"}
            env.update(SERVICE_WEBSITE=base, TZCRAWL_COOKIE_FILE=str(cookie_file), BACKUP_DIR=str(OUT),
                       TZCRAWL_CA_FILE=info.get("ca_file") or "",
                       # the sandbox's file host is on loopback: media are fetched from it only when listed
                       BACKUP_MEDIA_PRIVATE_HOSTS=info.get("media_hosts") or "")
            print(f"Session: {info['cookie_header'].split('=')[0]} in {cookie_file}; certificate: {info.get('ca_file')}")

            first = crawl(env)
            stats = control(base, "/_sandbox/stats")
            files = stats["files"]
            print(f"First run: exit {first}, {stats['requests']} requests to the service, {files['requests']} media "
                  f"files from its file host ({info['files_url']}; requests that carried the cookie there: "
                  f"{files['requests_with_cookie']})")

            listed = control(base, "/_sandbox/totals")["personalities"]
            target = listed[0]["username"]
            control(base, "/_sandbox/add", {"personality": target, "memories": 10, "messages": 10})
            control(base, "/_sandbox/stats/reset", {})
            print(f"\nThe service now has 10 new memories and 10 new messages for {target}.")

            second = crawl(env)
            stats = control(base, "/_sandbox/stats")
            print(f"Incremental run: exit {second}, {stats['requests']} requests to the service "
                  f"({stats['routes']}), {stats['files']['requests']} media requests (only new messages' files)")
            held = sum(len(list(p.glob("media/*"))) for p in OUT.iterdir() if p.is_dir())
            print(f"\nBackup written to {OUT}/ — one folder per personality, plain JSON, and {held} media "
                  f"files in their media/ folders (listed in <name>_media.json).")
        finally:
            stop_sandbox(sandbox)
        proved = prove(Path(tmp))
    print(f"\n$ scrapy export   (offline: reads {OUT.relative_to(ROOT)}, writes {EXPORT.relative_to(ROOT)})",
          flush=True)
    exported = subprocess.run([*SCRAPY, "export", "-a", f"out={EXPORT}"], cwd=ROOT,
                              env={**os.environ, "BACKUP_DIR": str(OUT)}).returncode
    return first or second or proved or exported


if __name__ == "__main__":
    sys.exit(main())
