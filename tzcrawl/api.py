"""The one module that knows the service's paths and answer shapes (see shared/service-api.md).

Pure: builds URLs from the resource registry and turns decoded answers into plain lists and numbers.
A non-JSON answer to an API call means "not authenticated" (some deployments answer 200 with an
HTML login page), never data.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from tzcrawl import jsonio
from tzcrawl.registry import Resource
from tzcrawl.session.botcheck import bot_check, is_html

HISTORY_LIMIT = 50  # the server's maximum batch size for chat history
CURRENT_USER_PATHS = ("users/info", "users/me")  # 2026, then the 2025 path


class NotAuthenticated(Exception):
    """The service refused the cookie (401/403, a login redirect, or HTML where JSON belongs)."""


class Forbidden(NotAuthenticated):
    """HTTP 403 with an answer that is neither a bot check nor a login page: an expired session, or a
    refusal of this one resource while the session holds (only the current-user call can tell)."""


class BadAnswer(Exception):
    """The service answered, but not in a shape this client knows; the data must not be trusted."""


class NotFound(BadAnswer):
    """HTTP 404: no such thing, or (for a personality the user does not own) nothing they may see."""


class Blocked(Exception):
    """The site's bot protection answered instead of the service (not an expired session)."""


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``: what the session cookie and the backup's data are tied to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme, 0)


class Endpoints:
    """The service's URLs, from its configuration (``config.ServiceConfig``) and the registry."""

    def __init__(self, service):
        self.service = service
        self.origin = origin(service.website)

    def _url(self, path: str, query: dict) -> str:
        query = {k: v for k, v in query.items() if v is not None}
        return f"{self.service.website}/api/{path}" + (f"?{urlencode(query)}" if query else "")

    def current_user(self, path: str = CURRENT_USER_PATHS[0]) -> str:
        """The cheap authenticated call that proves a cookie works (``users/info``; ``users/me`` in 2025)."""
        return self._url(path, {})

    def personalities(self, category: str = "self") -> str:
        return self._url(self.service.jargon, {"category": category})

    @property
    def public_profile_path(self) -> str:
        """Where anyone's profile is, as far as the user may see it (``{jargon}/username``)."""
        return f"{self.service.jargon}/username"

    def public_profile(self, personality: dict) -> str | None:
        """The public profile's URL, when it is not already the configured (private) profile path."""
        if self.service.profile_path == self.public_profile_path:
            return None
        return self._url(f"{self.public_profile_path}/{quote(str(personality.get('username', '')), safe='')}", {})

    def resource(self, resource: Resource, personality: dict, position=None) -> str:
        """The URL of ``resource`` for ``personality``; ``position`` is the page number or before_ts."""
        pid = str(personality.get("id", ""))
        path = resource.path.format(
            jargon=self.service.jargon, profile_path=self.service.profile_path,
            id=quote(pid, safe=""), username=quote(str(personality.get("username", "")), safe=""))
        query = {}
        if resource.paging == "before_ts":
            query = {"limit": HISTORY_LIMIT, "shape_id": pid}
        if resource.paging:
            query[resource.paging] = position
        return self._url(path, query)


def decode(status: int, content_type: str, body: bytes, url: str = "", headers=None) -> object:
    """Decode one API answer; raise Blocked, NotAuthenticated or BadAnswer instead of returning non-data."""
    seen = bot_check(status, headers or {}, content_type, body)
    if seen:
        raise Blocked(f"{seen} from {url}")
    if status == 403:
        raise Forbidden(f"HTTP 403 from {url}")
    if status == 401:
        raise NotAuthenticated(f"HTTP 401 from {url}")
    if status in (301, 302, 303, 307, 308):
        raise NotAuthenticated(f"HTTP {status} redirect (to the login page) from {url}")
    if status == 404:
        raise NotFound(f"HTTP 404 from {url}")
    if not 200 <= status < 300:
        raise BadAnswer(f"HTTP {status} from {url}")
    if is_html(content_type, body):  # a page with a password field: bot_check left it to us
        raise NotAuthenticated(f"the login page instead of JSON from {url}")
    try:
        return jsonio.loads(body)
    except ValueError as exc:
        raise BadAnswer(f"invalid JSON from {url}: {exc}") from None


def personality_list(payload: object) -> list[dict]:
    """A list of personalities (the owner's, or those the user talked to): objects with id, name, username."""
    if isinstance(payload, dict):
        payload = next((payload[k] for k in ("items", "data", "results") if isinstance(payload.get(k), list)), None)
    if not isinstance(payload, list) or not all(isinstance(p, dict) for p in payload):
        raise BadAnswer("the personality list is not an array of objects")
    for p in payload:
        if not isinstance(p.get("username"), str) or not p["username"] or p.get("id") in (None, ""):
            raise BadAnswer(f"a personality without username or id in the list: keys {sorted(p)}")
    return payload


def profile(payload: object, username: str) -> dict:
    if not isinstance(payload, dict) or payload.get("id") in (None, ""):
        raise BadAnswer(f"the profile of {username!r} is not an object with an id")
    return payload


@dataclass(frozen=True)
class MemoryPage:
    items: list
    total_pages: int | None
    total: int | None = None  # memories on the service, where it says (``total``, ``total_items``)
    has_next: bool | None = None  # 2026: ``pagination.has_next`` (some answers give no ``total_pages``)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


MEMORY_LIST_KEYS = ("items", "memories")  # 2026 answers name the list either way


def memory_page(payload: object) -> MemoryPage:
    """``{"items" | "memories": [...], "pagination": {...}}``, or pagination under ``meta``, or
    ``totalPages``; ``has_next`` where the service says it."""
    if isinstance(payload, list):
        return MemoryPage(payload, None)
    key = next((k for k in MEMORY_LIST_KEYS if isinstance(payload, dict) and k in payload), "items")
    if not isinstance(payload, dict) or not isinstance(payload.get(key, []), list):
        raise BadAnswer("a memory page is not an object with an items (or memories) array")
    pagination = payload.get("pagination")
    if not isinstance(pagination, dict):
        meta = payload.get("meta")
        pagination = meta.get("pagination") if isinstance(meta, dict) else None
    pagination = pagination if isinstance(pagination, dict) else payload
    pages = next((pagination[k] for k in ("total_pages", "totalPages") if k in pagination), None)
    total = next((pagination[k] for k in ("total", "total_items", "totalItems") if k in pagination), None)
    has_next = next((pagination[k] for k in ("has_next", "hasNext") if k in pagination), None)
    return MemoryPage(payload.get(key, []), _int(pages), _int(total),
                      has_next if isinstance(has_next, bool) else None)


def entries(resource: Resource, payload: object) -> list:
    """A whole document's entries, however the service wrapped them (an array, ``{"items": [...]}``, one
    object standing for a single entry)."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for key in resource.entry_keys:
            if isinstance(payload.get(key), list):
                return payload[key]
        return [payload] if payload else []
    return []


def entry_count(resource: Resource, payload: object) -> int:
    """How many entries a whole-document resource holds (the document itself is stored as received)."""
    if payload is not None and not isinstance(payload, (list, dict)):
        raise BadAnswer(f"{resource.name} is neither an object nor an array")
    wrapped = isinstance(payload, dict) and any(isinstance(payload.get(k), list) for k in resource.entry_keys)
    if resource.counts_keys and isinstance(payload, dict) and not wrapped:
        return len(payload)  # an object of settings: its keys are the entries
    return len(entries(resource, payload))


def history_batch(payload: object) -> list[dict]:
    """A chat-history batch: an array of messages, newest first."""
    if isinstance(payload, dict):
        payload = next((payload[k] for k in ("items", "messages") if isinstance(payload.get(k), list)), None)
    if not isinstance(payload, list) or not all(isinstance(m, dict) for m in payload):
        raise BadAnswer("a chat-history batch is not an array of messages")
    return payload
