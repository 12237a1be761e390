"""The session cookie: the forms users paste it in, its redacted form for logs, and the cookie file.

The cookie is a password. It is never logged beyond ``redact()``'s short prefix, never passed as a
job argument, and the cookie file is written 0600 (atomically) and warned about if others can read it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tzcrawl.fsutil import atomic_write_text, ensure_private_dir

COOKIE_NAME = "appSession"
logger = logging.getLogger(__name__)

# RFC 6265 cookie-octets, plus the quoted form some browsers' copy buttons produce.
_VALUE_RE = re.compile(r'^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+$')


class CookieError(ValueError):
    """The cookie given cannot be used; the message says what to do."""


def parse_cookie(text: str) -> str:
    """Return the appSession value from a raw value, ``appSession=VALUE`` or a whole Cookie header."""
    text = _unquote((text or "").strip())
    for header in ("set-cookie:", "cookie:"):  # a pasted request header, or the response's Set-Cookie line
        if text.lower().startswith(header):
            text = text[len(header):].strip()
    # A trailing "=" alone is base64 padding of a bare value, not a name=value pair.
    if "=" in text.rstrip("=") or text.startswith(f"{COOKIE_NAME}="):
        pairs = (part.strip().partition("=") for part in text.split(";"))
        found = [value.strip() for name, _, value in pairs if name.strip() == COOKIE_NAME]
        if not found:
            raise CookieError(f"the cookie text has no {COOKIE_NAME}=... part; copy the {COOKIE_NAME} cookie's value")
        text = found[-1]
    text = _unquote(text)
    if not text:
        raise CookieError(f"the {COOKIE_NAME} cookie is empty")
    if not _VALUE_RE.match(text):
        raise CookieError(f"the {COOKIE_NAME} cookie holds spaces or characters a cookie cannot have; copy its value only")
    return text


def _unquote(text: str) -> str:
    """``"value"`` or ``'value'`` (as pasted into a shell or a file) → ``value``."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip()
    return text


def redact(value: str | None, keep: int = 6) -> str:
    """A log-safe form: a short prefix and the length, never the whole value."""
    if not value:
        return "<none>"
    return f"{value[:min(keep, len(value) // 4)]}…({len(value)} chars)"


def default_cookie_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "tzcrawl" / "cookie.json"


@dataclass(frozen=True)
class StoredCookie:
    value: str
    saved_at: str | None = None
    expires: str | None = None
    site: str | None = None


def save_cookie_file(path: str | os.PathLike, value: str, *, expires: str | None = None,
                     site: str | None = None) -> Path:
    """Write the cookie file atomically, 0600, in a 0700 directory."""
    path = Path(path).expanduser()
    ensure_private_dir(path.parent)
    record = {
        COOKIE_NAME: parse_cookie(value),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "expires": expires,
        "site": site,
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def load_cookie_file(path: str | os.PathLike) -> StoredCookie:
    """Read a cookie file written by ``save_cookie_file`` (or holding just the value / a header)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CookieError(f"cannot read the cookie file {path}: {exc.strerror}") from None
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("cookie file %s can be read by other users (mode %o): chmod 600 it", path, mode & 0o777)
    try:
        record = json.loads(text)
    except ValueError:
        record = text
    if isinstance(record, dict):
        return StoredCookie(parse_cookie(str(record.get(COOKIE_NAME, ""))), record.get("saved_at"),
                            record.get("expires"), record.get("site"))
    return StoredCookie(parse_cookie(str(record)))
