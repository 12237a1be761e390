"""Is this answer the site's bot protection rather than the service? A pure decision.

Signs (shared/service-api.md, "Bot protection"): a ``cf-mitigated`` header, a header starting
``x-datadome`` or ``x-px``, or an HTML page (200 or 403) where JSON was asked for. An HTML page
holding a password field is the login page instead (some deployments answer a lapsed session so):
that is "log in again", not a bot check. Telling the two apart matters: a user sent to log in again
when the site wants a browser check goes in circles.
"""

from __future__ import annotations

import re
from typing import Iterable

_PASSWORD_FIELD = re.compile(rb"""<input[^>]+type\s*=\s*["']?password""", re.IGNORECASE)


def _signs(headers) -> Iterable[tuple[str, str]]:
    """(lowercase name, first value) of the bot-check headers among a Scrapy ``Headers``, a dict or a
    list of pairs; other headers' values are never decoded (this runs on every answer)."""
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        name = (name.decode("latin-1") if isinstance(name, bytes) else str(name)).lower()
        if name != "cf-mitigated" and not name.startswith(("x-datadome", "x-px")):
            continue
        if isinstance(value, (list, tuple)):
            value = value[0] if value else b""
        yield name, value.decode("latin-1") if isinstance(value, bytes) else str(value)


def looks_like_login_page(body: bytes) -> bool:
    return bool(_PASSWORD_FIELD.search(body[:200_000]))


def is_html(content_type: str, body: bytes) -> bool:
    return "html" in (content_type or "").lower() or body[:512].lstrip()[:1] == b"<"  # no copy of a large body


def bot_check(status: int, headers, content_type: str, body: bytes) -> str | None:
    """What was seen, in a few words, when the answer is a bot check; None otherwise."""
    for name, value in _signs(headers or {}):
        if name == "cf-mitigated":
            return f"Cloudflare's bot check (cf-mitigated: {value.strip()[:40]}, HTTP {status})"
        if name.startswith("x-datadome"):
            return f"DataDome's bot check ({name} header, HTTP {status})"
        if name.startswith("x-px"):
            return f"PerimeterX's bot check ({name} header, HTTP {status})"
    if status in (200, 403) and is_html(content_type, body) and not looks_like_login_page(body):
        return f"an HTML page where JSON was asked for (HTTP {status}): the site's bot check, most likely"
    return None


def remedy(website: str) -> str:
    """What the user does about it, in one sentence."""
    return (f"open {website} in your browser and pass the check, then copy that browser's whole Cookie header "
            f"into SERVICE_COOKIE or the cookie file (its cf_clearance is kept) and set USER_AGENT to that "
            f"browser's User-Agent (the clearance is bound to it)")
