"""Run real `scrapy crawl` processes against a sandbox and read back what they saved."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tzcrawl import registry
from tzcrawl.store import BackupStore
from tzcrawl.store.timestamps import sort_key

MEMORY_TIME = registry.get("memories").when  # metadata.created_at (2026), else created_at (2025)

REPO = Path(__file__).resolve().parent.parent
# Flat out against the local sandbox; short backoff so retried faults don't slow the suite.
FAST = {"DOWNLOAD_DELAY": "0", "AUTOTHROTTLE_ENABLED": "False", "BACKUP_PERSONALITY_DELAY": "0",
        "TZCRAWL_RETRY_BACKOFF_BASE": "0.02", "TZCRAWL_RETRY_BACKOFF_MAX": "0.2"}


def crawl_env(sb, backup_dir, cookie: str | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "TZCRAWL_", "BACKUP_"))}
    env.update(SERVICE_WEBSITE=sb.base_url, SERVICE_COOKIE=sb.cookie if cookie is None else cookie,
               BACKUP_DIR=str(backup_dir), TZCRAWL_COOKIE_FILE=str(Path(backup_dir).parent / "no-cookie-file"))
    if sb.ca_file:  # the sandbox's own CA: trusted as a user trusts a private one
        env["TZCRAWL_CA_FILE"] = sb.ca_file
    if sb.media_hosts:  # its file host is on loopback: listed, as a user lists a NAS or a LAN host
        env["BACKUP_MEDIA_PRIVATE_HOSTS"] = sb.media_hosts
    env.update(extra)
    return env


def crawl_cmd(spider: str, *args: str, settings: dict | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider, *args]
    for name, value in {**FAST, **(settings or {})}.items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def crawl(sb, spider: str, backup_dir, *args: str, settings: dict | None = None, cookie: str | None = None,
          env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """One real crawl as a user runs it; returns the finished process (stdout, stderr, returncode)."""
    return subprocess.run(crawl_cmd(spider, *args, settings=settings), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env or crawl_env(sb, backup_dir, cookie))


def saved(backup_dir, username: str, resource: str):
    store = BackupStore(backup_dir)
    if resource in ("memories", "messages"):
        path = store.path(username, resource)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    return store.read_document(username, resource)


def metadata(backup_dir, username: str) -> dict:
    return BackupStore(backup_dir).metadata(username)


def oldest_first(records: list, field: str) -> list:
    return sorted(records, key=lambda r: sort_key(r, field))


def data_files(backup_dir) -> dict[str, bytes]:
    """Every saved data file (not metadata or lock) by relative path, with its bytes."""
    root = Path(backup_dir)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))
            if p.is_file() and not p.name.startswith(".")}


RESOURCES = ("profile", "memories", "messages", "knowledge", "training", "user_data")


def assert_matches_sandbox(sb, backup_dir, username: str, resources=RESOURCES):
    truth = sb.export(username)
    if "profile" in resources:
        assert saved(backup_dir, username, "profile") == truth["profile"]
    if "memories" in resources:
        memories = saved(backup_dir, username, "memories")
        assert memories == oldest_first(truth["memories"], MEMORY_TIME)
        assert len({m["id"] for m in memories}) == len(memories)
    if "messages" in resources:
        messages = saved(backup_dir, username, "messages")
        assert messages == oldest_first(truth["messages"], "ts")
        assert len({m["id"] for m in messages}) == len(messages)
    if "knowledge" in resources:
        assert saved(backup_dir, username, "knowledge") == truth["knowledge"]
    if "training" in resources:
        assert saved(backup_dir, username, "training") == truth["training"]
    if "user_data" in resources:
        assert saved(backup_dir, username, "user_data") == truth["user"]


def read_terminal(fd: int, timeout: float = 120, answer=None) -> bytes:
    """Everything a process writes to its pseudo-terminal ``fd`` until it closes it (or ``timeout``);
    ``answer(output so far)`` may return bytes to type in (a password at a prompt)."""
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
        typed = answer(output) if answer else None
        if typed:
            os.write(fd, typed)
    return output


def unshare_works() -> bool:
    """A private mount namespace is possible here (root, or user namespaces): tests mount a small tmpfs
    in one to fill a disk."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0
