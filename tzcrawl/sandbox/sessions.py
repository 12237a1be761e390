"""The sandbox's login sessions, in the three forms the service has had (shared/service-api.md):

- ``better-auth`` (since April 2026, the default): one ``__Secure-better-auth.session_token`` cookie,
  HTTPS only, set again now and then (``rotate_every`` authenticated answers): with a later expiry, as
  Better Auth's refresh does, or with a new value (``rotate_values``);
- ``auth0`` (until April 2026): ``appSession.0`` … ``appSession.{chunks-1}``, all parts together, a new
  value for every part on every answer;
- ``appsession`` (2025): one ``appSession`` cookie, never rotated.

A value a rotation replaced keeps working for ``superseded_grace`` more requests, then answers 401.
Counters for tests: requests carrying other cookies than the session's and the bot-check clearance,
the secure cookie arriving over plain http, and requests made with a superseded value.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Mapping

BETTER_AUTH, AUTH0, APPSESSION = "better-auth", "auth0", "appsession"
SESSION_MODES = (BETTER_AUTH, AUTH0, APPSESSION)
BETTER_AUTH_COOKIE = "__Secure-better-auth.session_token"
CLEARANCE_COOKIES = ("cf_clearance", "datadome")


def cookie_pairs(header: str | None) -> list[tuple[str, str]]:
    """``Cookie:`` header → (name, value) pairs in order."""
    pairs = []
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip():
            pairs.append((name.strip(), value.strip().strip('"')))
    return pairs


@dataclass
class _Session:
    token: str
    expires: float
    uses: int = 0
    answers: int = 0                                        # authenticated answers since the last rotation
    superseded: dict[str, int] = field(default_factory=dict)  # old token → requests it may still make


class Sessions:
    """Minting, checking and rotating session cookies for one sandbox."""

    def __init__(self, mode: str, chunks: int, ttl: float, secure_transport: bool):
        self.mode, self.chunks, self.ttl, self.secure_transport = mode, max(1, chunks), ttl, secure_transport
        self.lock = threading.RLock()
        self._by_token: dict[str, _Session] = {}
        self.counts: Counter = Counter()

    # -- names ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if self.mode == BETTER_AUTH:
            return [BETTER_AUTH_COOKIE]
        if self.mode == AUTH0:
            return [f"appSession.{i}" for i in range(self.chunks)]
        return ["appSession"]

    def parts(self, token: str) -> list[str]:
        """A token as the cookie values the browser holds (Auth0 splits it into chunks)."""
        if self.mode != AUTH0:
            return [token]
        size = -(-len(token) // self.chunks)
        return [token[i * size:(i + 1) * size] for i in range(self.chunks)]

    def header(self, token: str) -> str:
        """The ``Cookie`` header a browser would send for this session."""
        return "; ".join(f"{n}={v}" for n, v in zip(self.names(), self.parts(token)))

    def set_cookie_lines(self, token: str) -> list[str]:
        expires = formatdate(time.time() + self.ttl, usegmt=True)
        secure = "; Secure" if self.mode == BETTER_AUTH or self.secure_transport else ""
        return [f"{n}={v}; Path=/; HttpOnly; SameSite=Lax{secure}; Expires={expires}"
                for n, v in zip(self.names(), self.parts(token))]

    # -- life -----------------------------------------------------------------------------------
    def _new_token(self) -> str:
        return secrets.token_urlsafe(48 if self.mode != AUTH0 else 24 * self.chunks)  # Auth0's: large, split

    def mint(self) -> str:
        token = self._new_token()
        with self.lock:
            self._by_token[token] = _Session(token, time.time() + self.ttl)
        return token

    def expire_all(self) -> int:
        with self.lock:
            count = len({id(s) for s in self._by_token.values()})
            self._by_token.clear()
        return count

    def reset_uses(self) -> None:
        with self.lock:
            for session in self._by_token.values():
                session.uses = 0

    def reset_counts(self) -> None:
        with self.lock:
            self.counts = Counter()

    # -- a request ------------------------------------------------------------------------------
    def presented(self, headers: Mapping[str, str]) -> str | None:
        """The token a request's cookies carry (parts joined), counting stray and insecure cookies."""
        pairs = cookie_pairs(headers.get("Cookie"))
        mine = set(self.names()) | {"appSession", BETTER_AUTH_COOKIE}
        with self.lock:
            if any(n not in mine and n not in CLEARANCE_COOKIES and not n.startswith("appSession.")
                   for n, _ in pairs):
                self.counts["requests_with_other_cookies"] += 1
            if not self.secure_transport and any(n.startswith(("__Secure-", "__Host-")) for n, _ in pairs):
                self.counts["secure_cookie_over_http"] += 1
        values = dict(pairs)
        parts = [values.get(n) for n in self.names()]
        if any(not p for p in parts):
            return None
        return "".join(parts)

    def authenticate(self, headers: Mapping[str, str], *, max_uses: int | None, rotate_every: int | None,
                     grace: int, count_use: bool, new_values: bool = False) -> tuple[bool, list[str]]:
        """(accepted, Set-Cookie lines to send back)."""
        token = self.presented(headers)
        with self.lock:
            session = self._by_token.get(token or "")
            if session is None:
                return False, []
            if token != session.token:  # a value a rotation replaced
                left = session.superseded.get(token, 0)
                if left <= 0:
                    self.counts["refused_superseded"] += 1
                    return False, []
                session.superseded[token] = left - 1
                self.counts["requests_with_superseded"] += 1
            if session.expires <= time.time():
                return False, []
            if max_uses is not None and session.uses >= max_uses:
                return False, []
            if not count_use:
                return True, []
            session.uses += 1
            session.answers += 1
            every = 1 if self.mode == AUTH0 else (rotate_every if self.mode == BETTER_AUTH else None)
            if not every or session.answers < every:
                return True, []
            if self.mode == BETTER_AUTH and not new_values:  # the refresh: same value, later expiry
                session.answers, session.expires = 0, time.time() + self.ttl
                self.counts["renewals"] += 1
                return True, self.set_cookie_lines(session.token)
            return True, self._rotate(session, grace)

    def _rotate(self, session: _Session, grace: int) -> list[str]:
        new = self._new_token()
        session.superseded[session.token] = grace  # spent ones stay known: their refusals are counted
        session.token, session.answers = new, 0
        self._by_token[new] = session
        self.counts["rotations"] += 1
        return self.set_cookie_lines(new)
