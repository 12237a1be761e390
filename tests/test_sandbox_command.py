"""``scrapy sandbox`` as a real subprocess: starts, prints URL and cookie, serves, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

from tzcrawl.sandbox.client import call, trust

PROJECT = Path(__file__).resolve().parent.parent


def _start(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    return subprocess.Popen([sys.executable, "-m", "scrapy", "sandbox", *args], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _banner(proc: subprocess.Popen) -> dict:
    fields = {}
    for _ in range(20):
        line = proc.stdout.readline()
        if not line or line.startswith("serving"):
            break
        key, _, value = line.partition(": ")
        fields[key] = value.strip()
    return fields


def test_command_serves_and_stops_on_sigterm(tmp_path):
    ready = tmp_path / "ready.json"
    proc = _start("--personalities", "2", "--messages", "60", "--page-size", "10", "--jargon", "shapes",
                  "--ready-file", str(ready), "--max-lifetime", "120", "--rate-limit", "1000")
    try:
        banner = _banner(proc)
        assert banner["base_url"].startswith("https://127.0.0.1:")  # today's service: HTTPS, its own CA
        assert banner["login"] == "owner@example.com / sandbox-password"
        base = banner["base_url"]
        files = banner["file host"].split()[0]
        assert files.startswith("http://127.0.0.2:")
        info = json.loads(ready.read_text())
        cookie, ca_file = info["cookie_header"], info["ca_file"]
        assert info == {"base_url": base, "cookie": info["cookie"], "cookie_header": cookie, "ca_file": ca_file,
                        "files_url": files, "media_hosts": "127.0.0.2,127.0.0.3"}
        assert banner["session"].startswith("better-auth") and cookie.startswith("__Secure-better-auth.session_token=")
        assert banner["certificate"].split()[0] == ca_file and Path(ca_file).read_text().startswith("-----BEGIN")
        assert stat.S_IMODE(ready.stat().st_mode) == 0o600
        trust(base, ca_file)
        listing = call(base, "/api/shapes?category=self", cookie)
        assert listing.status == 200 and len(listing.json()) == 2
        pid = listing.json()[0]["id"]
        assert len(call(base, f"/api/shapes/{pid}/chat/history?limit=50&shape_id={pid}", cookie).json()) == 50
        first = call(base, f"/api/memory/{pid}?page=1", cookie).json()  # 2026: the list may be called memories
        assert len(first.get("items", first.get("memories"))) == 10 and first["pagination"]["has_next"] is True
        assert call(base, "/_sandbox/knobs").json()["rate_limit"] == 1000.0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert "sandbox stopped" in out


def test_command_stops_by_itself_after_max_lifetime():
    proc = _start("--personalities", "1", "--max-lifetime", "0.5")
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert "base_url: https://127.0.0.1:" in out and "sandbox stopped" in out


def test_command_refuses_bad_knobs():
    for args in (["--error-rate", "3"], ["--overrides", "[1]"]):
        proc = _start(*args, "--max-lifetime", "5")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode != 0, args
        assert "base_url" not in out


def test_a_port_in_use_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = _start("--port", str(port), "--max-lifetime", "5")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip() == (f"sandbox: cannot listen on 127.0.0.1:{port}: Address already in use; "
                           "pick another --port, or leave it out for a free one")
    assert "base_url" not in out
