"""The jar of the service's session cookies, and the cookie file that keeps it between runs.

One jar per crawl: the cookie middleware sends what it holds to the service's origin and merges the
service's ``Set-Cookie`` rotations into it; the session check resolves a bare value to its name.
The file is 0600, replaced atomically, written under an advisory lock: when two runs rotate the same
session, each cookie's newest value (by when it was received) wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tzcrawl.fsutil import FILE_MODE, atomic_write_text, ensure_private_dir
from tzcrawl.session.forms import (CLEARANCE_NAMES, SESSION_NAMES, CookieError, SetCookie, check_value, is_session,
                                   parse, part_order, redact, secure_only)

logger = logging.getLogger(__name__)
FORMAT = "tzcrawl-cookie-jar/2"


def default_cookie_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "tzcrawl" / "cookie.json"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Cookie:
    value: str
    received: float = 0.0       # Unix time the value came (from the service, or the user); newest wins
    expires: str | None = None  # ISO UTC when known


class Jar:
    """The session cookies (``name → Cookie``), or one bare value whose name is not known yet."""

    def __init__(self, cookies: dict[str, Cookie] | None = None, bare: str | None = None, *,
                 known: tuple[str, ...] = SESSION_NAMES, keep: tuple[str, ...] = CLEARANCE_NAMES,
                 site: str | None = None):
        self.cookies: dict[str, Cookie] = dict(cookies or {})
        self.bare = bare
        self.known, self.keep = known, keep
        self.site = site

    @classmethod
    def from_text(cls, text: str, *, known=SESSION_NAMES, keep=CLEARANCE_NAMES, received: float = 0.0,
                  expires: str | None = None, site: str | None = None) -> tuple["Jar", tuple[str, ...]]:
        """A pasted cookie text → (jar, names of the cookies dropped)."""
        pasted = parse(text, known, keep)
        cookies = {name: Cookie(value, received, expires) for name, value in pasted.cookies.items()}
        return cls(cookies, pasted.bare, known=known, keep=keep, site=site), pasted.dropped

    # -- what is sent ---------------------------------------------------------------------------
    def session_names(self) -> list[str]:
        return sorted((n for n in self.cookies if is_session(n, self.known)), key=part_order)

    def candidates(self, secure: bool) -> list[str | None]:
        """Names to try a bare value under, in order (``[None]``: the jar is named already)."""
        if self.bare is None:
            return [None]
        return [name for name in self.known if secure or not secure_only(name)]

    def header(self, secure: bool, bare_as: str | None = None) -> str | None:
        """The ``Cookie`` header for one request to the service (None: nothing may be sent).
        ``__Secure-`` cookies only over HTTPS; ``bare_as`` names the bare value for a session check."""
        pairs = [(n, self.cookies[n].value) for n in self.session_names()]
        pairs += [(n, c.value) for n, c in self.cookies.items() if n in self.keep]
        if self.bare is not None and bare_as:
            pairs.insert(0, (bare_as, self.bare))
        pairs = [(n, v) for n, v in pairs if secure or not secure_only(n)]
        return "; ".join(f"{n}={v}" for n, v in pairs) or None

    def name_bare(self, name: str, received: float | None = None) -> None:
        """The session check found the bare value's name: it becomes an ordinary cookie."""
        if self.bare is None:
            return
        self.cookies[name] = Cookie(self.bare, received if received is not None else time.time())
        self.bare = None

    def describe(self) -> str:
        """Names and short prefixes only: what may be logged."""
        if self.bare is not None:
            return f"a bare value {redact(self.bare)}"
        return ", ".join(f"{n}={redact(c.value)}" for n, c in self.cookies.items()) or "no cookie"

    def values(self) -> list[str]:
        """Every value held: what must never appear in a log, a stat or a backup."""
        return [c.value for c in self.cookies.values()] + ([self.bare] if self.bare else [])

    # -- rotation -------------------------------------------------------------------------------
    def merge(self, updates: list[SetCookie], now: float) -> list[str]:
        """The service's ``Set-Cookie``s for session and clearance cookies; returns the names changed."""
        changed = []
        for update in updates:
            if not (is_session(update.name, self.known) or update.name in self.keep):
                continue
            held = self.cookies.get(update.name)
            if update.deleted:
                if held is not None:
                    del self.cookies[update.name]
                    changed.append(update.name)
                continue
            if held is not None and held.value == update.value and held.expires == update.expires:
                continue
            self.cookies[update.name] = Cookie(update.value, now, update.expires)
            changed.append(update.name)
            if self.bare is not None and is_session(update.name, self.known):
                self.bare = None  # the service named the session itself
        return changed

    # -- the file -------------------------------------------------------------------------------
    def to_record(self) -> dict:
        record = {"format": FORMAT, "site": self.site, "saved_at": _now_iso(),
                  "cookies": {n: {"value": c.value, "received": c.received, "expires": c.expires}
                              for n, c in self.cookies.items()}}
        if self.bare is not None:
            record["bare"] = self.bare
        return record

    def expires(self) -> str | None:
        dates = [self.cookies[n].expires for n in self.session_names() if self.cookies[n].expires]
        return min(dates) if dates else None


def _jar_from_record(record, *, known, keep) -> Jar:
    """A cookie file's content: this format, the 2025 one (``{"appSession": ...}``), or pasted text."""
    if isinstance(record, dict) and isinstance(record.get("cookies"), dict):
        cookies = {}
        for name, entry in record["cookies"].items():
            if not isinstance(entry, dict):
                continue
            if not (is_session(name, known) or name in keep):
                continue
            value = check_value(str(entry.get("value", "")), f"{name} cookie")
            if value:
                received = entry.get("received")
                cookies[name] = Cookie(value, float(received) if isinstance(received, (int, float)) else 0.0,
                                       entry.get("expires"))
        bare = record.get("bare")
        jar = Jar(cookies, parse(str(bare), known, keep).bare if bare else None, known=known, keep=keep,
                  site=record.get("site"))
        if not any(is_session(n, known) for n in jar.cookies) and jar.bare is None:
            raise CookieError("the cookie file holds no session cookie")
        return jar
    if isinstance(record, dict):  # 2025: {"appSession": VALUE, "saved_at", "expires", "site"}
        value = record.get("appSession")
        if not isinstance(value, str) or not value.strip():
            raise CookieError("the session cookie is empty")
        jar, _ = Jar.from_text(f"appSession={value}", known=known, keep=keep, expires=record.get("expires"),
                               site=record.get("site"))
        return jar
    jar, dropped = Jar.from_text(str(record), known=known, keep=keep)
    return jar


def load_jar(path: str | os.PathLike, *, known=SESSION_NAMES, keep=CLEARANCE_NAMES) -> Jar:
    """Read a cookie file: a jar written here, a 2025 cookie file, or a value / header a user wrote."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise CookieError(f"cannot read the cookie file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("cookie file %s can be read by other users (mode %o): chmod 600 it", path, mode & 0o777)
    try:
        record = json.loads(text)
    except ValueError:
        record = text
    return _jar_from_record(record, known=known, keep=keep)


@contextlib.contextmanager
def _locked(path: Path):
    """An advisory lock beside the cookie file: two runs never interleave read-merge-write."""
    ensure_private_dir(path.parent)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_jar(path: str | os.PathLike, jar: Jar, *, merge: bool = True) -> Path:
    """Write the jar (0600, atomically). With ``merge``, a cookie another run received later than ours
    is kept as the file has it: the newest value wins."""
    path = Path(path).expanduser()
    with _locked(path):
        record = jar.to_record()
        if merge and path.exists():
            with contextlib.suppress(CookieError, OSError, ValueError):
                theirs = load_jar(path, known=jar.known, keep=jar.keep)
                for name, cookie in theirs.cookies.items():
                    ours = jar.cookies.get(name)
                    if ours is not None and cookie.received > ours.received:
                        record["cookies"][name] = {"value": cookie.value, "received": cookie.received,
                                                   "expires": cookie.expires}
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def save_cookie_text(path: str | os.PathLike, text: str, *, expires: str | None = None, site: str | None = None,
                     known=SESSION_NAMES, keep=CLEARANCE_NAMES) -> Path:
    """A pasted or harvested cookie text as the cookie file (it replaces what the file held)."""
    jar, _ = Jar.from_text(text, known=known, keep=keep, received=time.time(), expires=expires, site=site)
    return save_jar(path, jar, merge=False)
