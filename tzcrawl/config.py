"""Service and backup configuration, read once: ``-s`` settings first, then the environment.

Every problem is a ``ConfigError`` whose message is one line saying what to set, so the crawl
command can print it and exit non-zero without a traceback.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tzcrawl.fsutil import FILE_MODE, ensure_private_dir
from tzcrawl.session.forms import CLEARANCE_NAMES, SESSION_NAMES, CookieError, secure_only
from tzcrawl.session.jar import Jar, default_cookie_file, load_jar

_JARGON_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PATH_RE = re.compile(r"^[A-Za-z0-9_.~-]+(/[A-Za-z0-9_.~-]+)*$")


class ConfigError(ValueError):
    """Configuration is missing or malformed; the message names the setting to fix."""


def lookup(settings, name: str, default=None):
    """A ``-s`` setting if given, else the environment variable of the same name, else ``default``."""
    value = settings.get(name) if settings is not None else None
    if value in (None, ""):
        value = os.environ.get(name)
    return default if value in (None, "") else value


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def flag(raw, what: str) -> bool | None:
    """``yes``/``no`` (and 1/0, true/false, on/off) → bool; None when not given; ConfigError otherwise."""
    if raw is None or isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ConfigError(f"{what} takes yes or no, not {raw!r}")


def seconds(settings, name: str, default: float) -> float:
    raw = lookup(settings, name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite, non-negative number of seconds (got {raw!r})")
    return value


def whole(settings, name: str, default: int) -> int:
    raw = lookup(settings, name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1 (got {raw!r})")
    return value


def website(settings) -> str:
    raw = lookup(settings, "SERVICE_WEBSITE")
    if not raw:
        raise ConfigError("SERVICE_WEBSITE is not set: export SERVICE_WEBSITE=https://service.example.com "
                          "(or pass -s SERVICE_WEBSITE=...)")
    parts = urlsplit(str(raw).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"SERVICE_WEBSITE must be an http(s) URL like https://service.example.com, not {raw!r}")
    path = parts.path.rstrip("/")
    if path.lower().endswith("/api"):  # the site, not its API: the paths add /api themselves
        path = path[:-len("/api")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def cookie_file(settings) -> Path:
    return Path(str(lookup(settings, "TZCRAWL_COOKIE_FILE", default_cookie_file()))).expanduser()


def names(settings, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of cookie names (``TZCRAWL_SESSION_COOKIES``, ``TZCRAWL_CLEARANCE_COOKIES``)."""
    raw = lookup(settings, name)
    if raw is None:
        return default
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    found = tuple(dict.fromkeys(str(n).strip() for n in items if str(n).strip()))
    if not found and name == "TZCRAWL_SESSION_COOKIES":
        raise ConfigError(f"TZCRAWL_SESSION_COOKIES names no cookie (default: {','.join(default)})")
    return found


@dataclass(frozen=True)
class CookieSource:
    """Where the session came from: the jar, a name for logs, and the cookie file when it came from one
    (the file a rotation keeps up to date)."""

    jar: Jar
    source: str
    dropped: tuple[str, ...] = ()
    file: Path | None = None


def cookie(settings) -> CookieSource:
    """The session's cookies: SERVICE_COOKIE (any pasted form), else the cookie file."""
    known = names(settings, "TZCRAWL_SESSION_COOKIES", SESSION_NAMES)
    keep = names(settings, "TZCRAWL_CLEARANCE_COOKIES", CLEARANCE_NAMES)
    raw = lookup(settings, "SERVICE_COOKIE")
    try:
        if raw:
            jar, dropped = Jar.from_text(str(raw), known=known, keep=keep)
            return CookieSource(jar, "SERVICE_COOKIE", dropped)
        path = cookie_file(settings)
        if path.exists():
            return CookieSource(load_jar(path, known=known, keep=keep), str(path), (), path)
    except CookieError as exc:
        source = "SERVICE_COOKIE" if raw else "TZCRAWL_COOKIE_FILE"
        raise ConfigError(f"{source}: {exc}") from None
    raise ConfigError(f"no session cookie: export SERVICE_COOKIE='{known[0]}=<value>' (or paste the browser's "
                      f"Cookie header), or run `scrapy crawl login` to save one to {path}")


def check_transport(site: str, jar: Jar) -> None:
    """``__Secure-`` cookies exist only over HTTPS: with an http site they could never be sent."""
    if site.startswith("http://") and jar.cookies and all(secure_only(n) for n in jar.session_names()):
        raise ConfigError(f"the session cookie {jar.session_names()[0]} is only ever sent over HTTPS, and "
                          f"SERVICE_WEBSITE is {site}: use its https:// address")


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service is and how it spells its paths (see tzcrawl.api)."""

    website: str
    jargon: str = "personalities"
    profile_path: str = "personalities/username"

    @classmethod
    def from_settings(cls, settings) -> "ServiceConfig":
        jargon = str(lookup(settings, "PERSONALITY_JARGON_TERM", "personalities")).strip("/ ")
        if not _JARGON_RE.match(jargon):
            raise ConfigError(f"PERSONALITY_JARGON_TERM must be one path word like 'personalities', not {jargon!r}")
        profile_path = str(lookup(settings, "PROFILE_INFO_PRIVATE_PATH", f"{jargon}/username")).strip("/ ")
        if not _PATH_RE.match(profile_path) or {".", ".."} & set(profile_path.split("/")):
            raise ConfigError(f"PROFILE_INFO_PRIVATE_PATH must be a path like '{jargon}/username', not {profile_path!r}")
        return cls(website=website(settings), jargon=jargon, profile_path=profile_path)


@dataclass(frozen=True)
class BackupConfig:
    """Where backups go and how politely bulk runs move between personalities."""

    backup_dir: Path
    personality_delay: float = 2.0
    lock_timeout: float = 60.0
    merge_chunk: int = 5000  # records sorted in memory at a time when merging (bounds RAM)
    full_every: float = 7.0  # days: a collection not read in full for longer is read in full (0: never)

    @classmethod
    def from_settings(cls, settings) -> "BackupConfig":
        backup_dir = Path(str(lookup(settings, "BACKUP_DIR", "data/personalities"))).expanduser()
        return cls(
            backup_dir=backup_dir,
            personality_delay=seconds(settings, "BACKUP_PERSONALITY_DELAY", 2.0),
            lock_timeout=seconds(settings, "BACKUP_LOCK_TIMEOUT", 60.0),
            merge_chunk=whole(settings, "BACKUP_MERGE_CHUNK", 5000),
            full_every=seconds(settings, "BACKUP_FULL_EVERY", 7.0),
        )

    def check_backup_dir(self) -> None:
        """Create BACKUP_DIR (0700) and prove it takes a file; a ConfigError in one line if not."""
        try:
            directory = ensure_private_dir(self.backup_dir, tighten=True)
            probe = directory / f".write-test-{os.getpid()}.tmp"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"BACKUP_DIR {str(self.backup_dir)!r} cannot be created or written: "
                              f"{exc.strerror or exc}") from None


def split_names(value: str | None) -> list[str]:
    """``foo,bar`` → ``["foo", "bar"]``, trimmed, without blanks or repeats (spider and command arguments)."""
    names = [n.strip() for n in (value or "").split(",")]
    return list(dict.fromkeys(n for n in names if n))
