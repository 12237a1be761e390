"""The one module that knows the service's paths and answer shapes (see shared/service-api.md).

Pure: builds URLs and turns decoded answers into plain lists and numbers. A non-JSON answer to an
API call means "not authenticated" (some deployments answer 200 with an HTML login page), never data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote, urlencode

HISTORY_LIMIT = 50  # the server's maximum batch size for chat history


class NotAuthenticated(Exception):
    """The service refused the cookie (401/403, a login redirect, or HTML where JSON belongs)."""


class BadAnswer(Exception):
    """The service answered, but not in a shape this client knows; the data must not be trusted."""


@dataclass(frozen=True)
class Endpoints:
    website: str
    jargon: str = "personalities"
    profile_path: str = "personalities/username"

    @classmethod
    def from_config(cls, config) -> "Endpoints":
        return cls(config.website, config.jargon, config.profile_path)

    def _url(self, path: str, **query) -> str:
        query = {k: v for k, v in query.items() if v is not None}
        return f"{self.website}/api/{path}" + (f"?{urlencode(query)}" if query else "")

    def users_me(self) -> str:
        return self._url("users/me")

    def personalities(self, category: str = "self") -> str:
        return self._url(self.jargon, category=category)

    def profile(self, username: str) -> str:
        return self._url(f"{self.profile_path}/{quote(username, safe='')}")

    def memories(self, pid: str, page: int) -> str:
        return self._url(f"memory/{quote(str(pid), safe='')}", page=page)

    def knowledge(self, pid: str) -> str:
        return self._url(f"{self.jargon}/{quote(str(pid), safe='')}/story")

    def training(self, pid: str) -> str:
        return self._url(f"{self.jargon}/{quote(str(pid), safe='')}/training")

    def user_data(self, pid: str) -> str:
        return self._url(f"{self.jargon}/{quote(str(pid), safe='')}/user")

    def chat_history(self, pid: str, before_ts: str | None = None, limit: int = HISTORY_LIMIT) -> str:
        pid = str(pid)
        return self._url(f"{self.jargon}/{quote(pid, safe='')}/chat/history",
                         limit=limit, shape_id=pid, before_ts=before_ts)


def decode(status: int, content_type: str, body: bytes, url: str = "") -> object:
    """Decode one API answer; raise NotAuthenticated or BadAnswer instead of returning non-data."""
    if status in (401, 403):
        raise NotAuthenticated(f"HTTP {status} from {url}")
    if status in (301, 302, 303, 307, 308):
        raise NotAuthenticated(f"HTTP {status} redirect (to the login page) from {url}")
    if not 200 <= status < 300:
        raise BadAnswer(f"HTTP {status} from {url}")
    if "html" in (content_type or "").lower() or body.lstrip()[:1] == b"<":
        raise NotAuthenticated(f"an HTML page instead of JSON from {url} (the login page?)")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadAnswer(f"invalid JSON from {url}: {exc}") from None


def personality_list(payload: object) -> list[dict]:
    """The owner's personalities: an array of objects with id, name, username."""
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
    page: int | None
    total_pages: int | None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def memory_page(payload: object) -> MemoryPage:
    """``{"items": [...], "pagination": {...}}``, or pagination under ``meta``, or ``totalPages``."""
    if isinstance(payload, list):
        return MemoryPage(payload, None, None)
    if not isinstance(payload, dict) or not isinstance(payload.get("items", []), list):
        raise BadAnswer("a memory page is not an object with an items array")
    pagination = payload.get("pagination")
    if not isinstance(pagination, dict):
        meta = payload.get("meta")
        pagination = meta.get("pagination") if isinstance(meta, dict) else None
    pagination = pagination if isinstance(pagination, dict) else payload
    total = next((pagination[k] for k in ("total_pages", "totalPages") if k in pagination), None)
    return MemoryPage(payload.get("items", []), _int(pagination.get("page")), _int(total))


_DOCUMENT_KEYS = {
    "knowledge": ("items", "story", "knowledge"),
    "training": ("items", "training"),
}


def entry_count(resource: str, payload: object) -> int:
    """How many entries a whole-document resource holds (the document itself is stored as received)."""
    if isinstance(payload, list):
        return len(payload)
    if isinstance(payload, dict):
        for key in _DOCUMENT_KEYS.get(resource, ()):
            if isinstance(payload.get(key), list):
                return len(payload[key])
        return len(payload) if resource == "user_data" else (1 if payload else 0)
    if payload is None:
        return 0
    raise BadAnswer(f"{resource} is neither an object nor an array")


def history_batch(payload: object) -> list[dict]:
    """A chat-history batch: an array of messages, newest first."""
    if isinstance(payload, dict):
        payload = next((payload[k] for k in ("items", "messages") if isinstance(payload.get(k), list)), None)
    if not isinstance(payload, list) or not all(isinstance(m, dict) for m in payload):
        raise BadAnswer("a chat-history batch is not an array of messages")
    return payload
