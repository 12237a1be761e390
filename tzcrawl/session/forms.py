"""The session cookie's forms, as pure decisions: which names are the service's session, what a pasted
text holds, what a ``Set-Cookie`` line says, which cookies may travel over plain http.

The service's session cookie changed name twice (shared/service-api.md, 2026 section): ``appSession``
(2025), ``appSession.0``/``.1`` (Auth0 chunks), ``__Secure-better-auth.session_token`` (Better Auth).
A browser's cookie store for the site also holds analytics, CSRF and bot-check cookies: only the
session and a bot-check clearance are kept; the rest is dropped and named (never their values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

BETTER_AUTH = "__Secure-better-auth.session_token"
APP_SESSION = "appSession"
SESSION_NAMES = (BETTER_AUTH, APP_SESSION)  # TZCRAWL_SESSION_COOKIES; a known name's ``.N`` parts count too
CLEARANCE_NAMES = ("cf_clearance", "datadome")  # bot-check clearances the user got in their browser
# Set-Cookie attributes: never cookies of their own when a Set-Cookie line is pasted without its prefix.
ATTRIBUTES = frozenset({"path", "domain", "expires", "max-age", "secure", "httponly", "samesite", "priority",
                        "partitioned"})

# RFC 6265 cookie-octets.
_VALUE_RE = re.compile(r'^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+$')
_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class CookieError(ValueError):
    """The cookie given cannot be used; the message says what to do."""


def redact(value: str | None, keep: int = 6) -> str:
    """A log-safe form: a short prefix and the length, never the whole value."""
    if not value:
        return "<none>"
    return f"{value[:min(keep, len(value) // 4)]}…({len(value)} chars)"


def is_session(name: str, known: tuple[str, ...] = SESSION_NAMES) -> bool:
    """A known session name, or one's numbered part (``appSession.0``: Auth0 splits large sessions)."""
    if name in known:
        return True
    base, dot, number = name.rpartition(".")
    return bool(dot) and number.isdigit() and base in known


def secure_only(name: str) -> bool:
    """``__Secure-`` and ``__Host-`` cookies exist only over HTTPS: never sent over plain http."""
    return name.startswith(("__Secure-", "__Host-"))


def part_order(name: str) -> tuple:
    """Chunks in order (``appSession.0`` before ``.1``), after the names that are not chunks."""
    base, dot, number = name.rpartition(".")
    return (base, int(number)) if dot and number.isdigit() else (name, -1)


def _unquote(text: str) -> str:
    """``"value"`` or ``'value'`` (as pasted into a shell or a file) → ``value``."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip()
    return text


def check_value(value: str, what: str = "session cookie") -> str:
    value = _unquote(value.strip())
    if not value:
        raise CookieError(f"the {what} is empty")
    if not _VALUE_RE.match(value):
        raise CookieError(f"the {what} holds spaces or characters a cookie cannot have; copy its value only")
    return value


@dataclass(frozen=True)
class Pasted:
    """What a cookie text holds: the cookies kept (session parts and clearance, by name), or a bare value
    whose name the session check finds, and the names of the cookies left out."""

    cookies: dict
    bare: str | None = None
    dropped: tuple[str, ...] = ()


def parse(text: str | None, known: tuple[str, ...] = SESSION_NAMES,
          keep: tuple[str, ...] = CLEARANCE_NAMES) -> Pasted:
    """A bare value, ``name=value``, a whole ``Cookie:`` header or a ``Set-Cookie:`` line → ``Pasted``."""
    text = _unquote((text or "").strip())
    set_cookie = False
    for prefix in ("set-cookie:", "cookie:"):  # a pasted request header, or a response's Set-Cookie line
        if text.lower().startswith(prefix):
            set_cookie = prefix == "set-cookie:"
            text = text[len(prefix):].strip()
    # A trailing "=" alone is base64 padding of a bare value, not a name=value pair.
    if "=" not in text.rstrip("=") and not is_session(text.split("=", 1)[0].strip(), known):
        return Pasted({}, bare=check_value(text))
    pairs = [part.strip().partition("=") for part in text.split(";")]
    if set_cookie:
        pairs = pairs[:1]  # the rest are the cookie's attributes
    cookies, dropped, empty = {}, [], []
    for name, sep, value in pairs:
        name = name.strip()
        if not name or (name.lower() in ATTRIBUTES):
            continue
        if is_session(name, known) or name in keep:
            if not _unquote(value.strip()):
                empty.append(name)
                continue
            cookies.pop(name, None)  # the last one wins, as browsers send it
            cookies[name] = check_value(value, f"{name} cookie")
        elif name not in dropped:
            dropped.append(name)
    if not any(is_session(name, known) for name in cookies):
        if empty:
            raise CookieError(f"the {empty[0]} cookie is empty")
        seen = f" (it holds {', '.join(dropped)})" if dropped else ""
        raise CookieError(f"the cookie text has no session cookie{seen}: copy the value of "
                          f"{' or '.join(known)} from the browser (developer tools → Application → Cookies)")
    return Pasted(cookies, None, tuple(dropped))


@dataclass(frozen=True)
class SetCookie:
    """One ``Set-Cookie`` answer header: the cookie, when it expires, and whether it deletes the cookie."""

    name: str
    value: str
    expires: str | None = None  # ISO UTC, when the server said
    deleted: bool = False


def parse_set_cookie(line: str, now: float) -> SetCookie | None:
    """A ``Set-Cookie`` header line, or None when it is not a cookie at all."""
    first, *attributes = line.split(";")
    name, sep, value = first.partition("=")
    name, value = name.strip(), _unquote(value.strip())
    if not sep or not name or not _NAME_RE.match(name):
        return None
    expires, deleted = None, not value
    for attribute in attributes:
        key, _, raw = attribute.strip().partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if key == "max-age":
            try:
                seconds = int(raw)
            except ValueError:
                continue
            deleted = deleted or seconds <= 0
            expires = _iso(now + seconds) if seconds > 0 else expires
        elif key == "expires" and expires is None:
            try:
                when = parsedate_to_datetime(raw).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
            deleted = deleted or when <= now
            expires = _iso(when)
    if value and not _VALUE_RE.match(value):
        return None
    return SetCookie(name, value, expires, deleted)


def _iso(when: float) -> str | None:
    from datetime import datetime, timezone

    try:
        return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None
