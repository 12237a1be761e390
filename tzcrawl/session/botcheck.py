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


def _names(headers) -> Iterable[tuple[str, str]]:
    """(lowercase name, first value) of a Scrapy ``Headers``, a dict or a list of pairs."""
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        if isinstance(value, (list, tuple)):
            value = value[0] if value else b""
        name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        yield name.lower(), value


def looks_like_login_page(body: bytes) -> bool:
    return bool(_PASSWORD_FIELD.search(body[:200_000]))


def is_html(content_type: str, body: bytes) -> bool:
    return "html" in (content_type or "").lower() or body.lstrip()[:1] == b"<"


def bot_check(status: int, headers, content_type: str, body: bytes) -> str | None:
    """What was seen, in a few words, when the answer is a bot check; None otherwise."""
    for name, value in _names(headers or {}):
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
