"""``tzcrawl doctor``: what would stop a backup, found before one is tried; one line each, with the fix.

Each check returns a ``Finding``: ``ok``, ``warn`` (a backup runs, but something is worth doing) or
``fail`` (a backup would not run, or not unattended). Only the session check sends a request (one
current-user call, through the crawl's own downloader: ``commands/doctor.py``); the rest read settings,
files and the machine.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from tzcrawl import config
from tzcrawl.config import BackupConfig, ConfigError, ServiceConfig
from tzcrawl.session.botcheck import remedy
from tzcrawl.session.crawler import BLOCKED, MISSING, OK, REFUSED, TLS, UNREACHABLE, Check

OK_, WARN, FAIL = "ok", "warn", "FAIL"
STALE_DAYS = 14  # a session cookie older than this often has been renewed or revoked


@dataclass(frozen=True)
class Finding:
    what: str
    status: str
    detail: str
    fix: str = ""

    def line(self, width: int) -> str:
        return f"{self.what.ljust(width)}  {self.status.ljust(4)}  {self.detail}" + (f"\n{' ' * (width + 8)}→ {self.fix}"
                                                                                    if self.fix else "")


def website(settings) -> Finding:
    try:
        return Finding("service", OK_, ServiceConfig.from_settings(settings).website)
    except ConfigError as exc:
        return Finding("service", FAIL, str(exc), "set SERVICE_WEBSITE to the site's address (https://...)")


def cookie(settings, now: float | None = None) -> Finding:
    """Where the session comes from, and how old it is (the cookie file's age, or each cookie's)."""
    try:
        source = config.cookie(settings)
    except ConfigError as exc:
        return Finding("cookie", FAIL, str(exc), "log in: tzcrawl login, or set SERVICE_COOKIE")
    if not source.jar.header(secure=True) and not source.jar.bare:
        return Finding("cookie", FAIL, "no session cookie", "log in: tzcrawl login, or set SERVICE_COOKIE")
    received = [c.received for c in source.jar.cookies.values() if getattr(c, "received", None)]
    if source.file is not None and not received:
        received = [source.file.stat().st_mtime]
    age = ((now or time.time()) - max(received)) / 86400 if received else None
    shown = f"from {source.source}" + (f", {age:.0f} days old" if age is not None else "")
    if age is not None and age > STALE_DAYS:
        return Finding("cookie", WARN, shown, "if the session check below fails: tzcrawl login")
    return Finding("cookie", OK_, shown)


def session(check: Check | None, website_url: str) -> Finding:
    """The one current-user call's verdict (``Session.check``)."""
    if check is None:
        return Finding("session", FAIL, "not checked (no service or no cookie)", "fix the lines above")
    if check.state == OK:
        return Finding("session", OK_, "accepted by the service (1 request)")
    if check.state == REFUSED:
        return Finding("session", FAIL, f"refused: {check.why}", "log in again: tzcrawl login, or a fresh "
                                                                  "SERVICE_COOKIE")
    if check.state == BLOCKED:
        return Finding("session", FAIL, f"the site's bot protection answered: {check.why}", remedy(website_url))
    if check.state == TLS:
        return Finding("session", FAIL, f"certificate not trusted: {check.why}",
                       "if it is your own or your company's CA, set TZCRAWL_CA_FILE to its certificate")
    if check.state in (UNREACHABLE, MISSING):
        return Finding("session", WARN, f"could not tell: {check.why}", "check the address and the network; "
                                                                         "a backup will try anyway")
    return Finding("session", WARN, f"{check.state}: {check.why}")


def backup_dir(settings) -> Finding:
    """Writable, and room for a copy of what it holds (a commit writes a file anew beside the old)."""
    try:
        backup = BackupConfig.from_settings(settings)
        backup.check_backup_dir()
    except ConfigError as exc:
        return Finding("backup folder", FAIL, str(exc), "set BACKUP_DIR to a folder you can write")
    root = backup.backup_dir.expanduser()
    held = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    free = shutil.disk_usage(root).free
    shown = f"{root}: {held / 1e6:.0f} MB held, {free / 1e9:.1f} GB free"
    if free < max(2 * held, 100 * 10**6):
        return Finding("backup folder", WARN, shown, "free some space: a run rewrites a collection beside the old copy")
    return Finding("backup folder", OK_, shown)


def chromium(settings) -> Finding:
    from tzcrawl.session.browser import find_chromium

    try:
        found = find_chromium(config.lookup(settings, "TZCRAWL_CHROMIUM"))
    except ConfigError as exc:
        return Finding("chromium", FAIL, str(exc), "apt-get install chromium, or set TZCRAWL_CHROMIUM")
    return Finding("chromium", OK_, f"{found} (for tzcrawl login and unattended logins)")


def keyring_backend(settings) -> Finding:
    try:
        import keyring

        backend = keyring.get_keyring()
    except Exception as exc:  # a broken backend raises anything
        return Finding("keyring", WARN, f"unusable: {exc}", "only needed for unattended logins (docs/scheduling.md)")
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    if "fail" in name.lower() or "null" in name.lower():
        unattended = config.lookup(settings, "TZCRAWL_EMAIL")
        return Finding("keyring", FAIL if unattended else WARN, f"no usable backend ({name})",
                       "install a keyring backend, or give the crawl TZCRAWL_PASSWORD (docs/scheduling.md)")
    return Finding("keyring", OK_, name)


def notify(settings) -> Finding:
    command = config.lookup(settings, "TZCRAWL_NOTIFY")
    if not command:
        return Finding("notify", WARN, "TZCRAWL_NOTIFY is not set: a failed scheduled run tells nobody",
                       "set TZCRAWL_NOTIFY to a command (docs/scheduling.md)")
    try:
        program = shlex.split(str(command))[0]
    except (ValueError, IndexError):
        return Finding("notify", FAIL, f"TZCRAWL_NOTIFY cannot be read as a command: {command!r}")
    found = shutil.which(program) or (program if os.access(program, os.X_OK) else None)
    if not found:
        return Finding("notify", FAIL, f"{program!r} is not a command here", "fix TZCRAWL_NOTIFY")
    return Finding("notify", OK_, f"runs {program}")


def scrapyd(environ=os.environ, timeout: float = 5.0) -> Finding | None:
    """scrapyd, when SCRAPYD_URL says where it is (loopback or your own host); None when not configured."""
    url = environ.get("SCRAPYD_URL")
    if not url:
        return None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/daemonstatus.json", timeout=timeout) as answer:
            status = answer.read(4096).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as exc:
        return Finding("scrapyd", FAIL, f"{url}: {exc}", "start scrapyd (docs/scheduling.md)")
    return Finding("scrapyd", OK_ if '"ok"' in status else WARN, f"{url}: {status.strip()[:80]}")


def report(findings: list[Finding]) -> tuple[str, int]:
    """The screen and the exit status (1 when anything fails)."""
    width = max(len(f.what) for f in findings)
    failed = sum(f.status == FAIL for f in findings)
    warned = sum(f.status == WARN for f in findings)
    lines = [f.line(width) for f in findings]
    lines.append(f"doctor: {failed} to fix, {warned} to consider" if failed or warned else "doctor: all is well")
    return "\n".join(lines), 1 if failed else 0


__all__ = ["Finding", "OK_", "WARN", "FAIL", "website", "cookie", "session", "backup_dir", "chromium",
           "keyring_backend", "notify", "scrapyd", "report"]
