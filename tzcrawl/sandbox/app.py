"""The sandbox service without sockets: one request in, one ``Response`` (or a drop) out.

Order of events for a service request: route match (unknown → 404) → fault dice (drop, latency)
→ rate limit (429) → 5xx dice → authentication → answer. The control surface under ``/_sandbox/``
skips all of it but answers loopback peers only.
"""

from __future__ import annotations

import html
import json
import math
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from .config import KNOB_NAMES, PAGINATION_STYLES, Knobs, SandboxConfig, coerce_knobs
from .data import CHAT_MAX, Personality, World
from .faults import FaultDice, TokenBucket, is_loopback
from .sessions import APPSESSION, Sessions, cookie_pairs

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
MAX_BODY = 1 << 20
DEEP = 100_000  # nesting levels of the deep_json knob's answers


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, [("Content-Type", JSON_TYPE), *(headers or [])])


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return json_response(status, {"error": message, "status": status}, headers)


def html_response(status: int, title: str, body: str, headers: list[tuple[str, str]] | None = None) -> Response:
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>{body}</body></html>"
    return Response(status, page.encode("utf-8"), [("Content-Type", HTML_TYPE), *(headers or [])])


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(302, b"", [("Location", location), *(headers or [])])


LOGIN_FORM = (
    "<form method='post' action='/login'>"
    "<label>Email <input type='email' name='email' autocomplete='username'></label>"
    "<label>Password <input type='password' name='password' autocomplete='current-password'></label>"
    "<button type='submit'>Log in</button></form>"
)


def cookie_from_header(header: str | None, name: str = "appSession") -> str | None:
    """The value of cookie ``name`` in a ``Cookie:`` header that may hold other cookies."""
    for key, value in cookie_pairs(header):
        if key == name:
            return value
    return None


# The browser a user passed the bot check in: its clearance cookie is bound to this User-Agent.
CLEARANCE_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) SandboxBrowser/1.0"
CHALLENGE_PAGE = ("<h1>Just a moment...</h1><p>Checking if the site connection is secure.</p>"
                  "<noscript>Enable JavaScript and cookies to continue</noscript>")


class BadRequest(Exception):
    pass


HOLD_MAX = 60.0  # seconds a held request waits at most (hold_chat_after)


class App:
    """State (data, knobs, cookies, counters) and request handling of one sandbox."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.monotonic, world=None):
        """``world``: what the service holds; generated from ``config`` unless given (a backup served
        as the service: ``frombackup.BackupWorld``)."""
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.knobs: Knobs = config.knobs()
        self.world = world if world is not None else World(config)
        self.dice = FaultDice(config.seed)
        self.bucket: TokenBucket | None = None
        self.sessions = Sessions(config.session, config.chunks, config.cookie_ttl, config.https)
        self.clearance = secrets.token_urlsafe(32)
        self._service_requests = 0
        self._bot_from = 0
        self._chat_requests = 0
        self._released = threading.Event()  # hold_chat_after: set when the hold is lifted
        self._api_requests = 0
        self._deletions_from = 0
        from .files import FileHost  # the file host reads this app's knobs and config

        self.files = FileHost(self)
        self.reset_stats()
        self._apply_knobs({})

    # -- cookies --------------------------------------------------------------------------------
    def mint_cookie(self) -> str:
        """A new session; returns its token (``Sessions.header`` makes the browser's Cookie header of it)."""
        return self.sessions.mint()

    def expire_cookies(self) -> int:
        return self.sessions.expire_all()

    def _authenticate(self, headers: Mapping[str, str], count_use: bool) -> tuple[bool, list[str]]:
        """(accepted, Set-Cookie lines of a rotation)."""
        with self.lock:
            knobs = self.knobs
        return self.sessions.authenticate(headers, max_uses=knobs.cookie_max_requests, rotate_every=knobs.rotate_every,
                                          grace=knobs.superseded_grace, count_use=count_use,
                                          new_values=knobs.rotate_values)

    def _bot_check(self, headers: Mapping[str, str]) -> Response | None:
        """The bot protection in front of the site (``bot_check``), from the ``bot_check_from``-th service
        request on; the clearance cookie sent with the User-Agent it is bound to passes."""
        with self.lock:
            self._service_requests += 1
            kind, since = self.knobs.bot_check, self._service_requests - self._bot_from
            if kind == "none" or since < self.knobs.bot_check_from:
                return None
        cookie = {"cloudflare": "cf_clearance", "datadome": "datadome"}[kind]
        if (cookie_from_header(headers.get("Cookie"), cookie) == self.clearance
                and headers.get("User-Agent") == CLEARANCE_USER_AGENT):
            return None
        with self.lock:
            self.bot_answers += 1
        if kind == "cloudflare":
            return html_response(403, "Just a moment...", CHALLENGE_PAGE,
                                 [("cf-mitigated", "challenge"), ("Server", "cloudflare"), ("cf-ray", "8f0000000000-LHR")])
        return html_response(200, "Security check", "<p>Please enable JS and disable any ad blocker</p>",
                             [("x-datadome", "protected"), ("x-dd-b", "1")])

    def clearance_pair(self) -> dict:
        """What a user's browser holds after passing the bot check: the clearance cookie and its User-Agent."""
        cookie = {"cloudflare": "cf_clearance", "datadome": "datadome"}.get(self.knobs.bot_check, "cf_clearance")
        return {"cookie": f"{cookie}={self.clearance}", "user_agent": CLEARANCE_USER_AGENT}

    # -- knobs ----------------------------------------------------------------------------------
    def set_knobs(self, **changes: Any) -> dict:
        with self.lock:
            self._apply_knobs(coerce_knobs(changes))
            return self.knobs_dict()

    def knobs_dict(self) -> dict:
        return {name: getattr(self.knobs, name) for name in KNOB_NAMES}

    def _apply_knobs(self, changes: dict) -> None:
        old = self.knobs
        self.knobs = replace(old, **changes)
        new = self.knobs
        if not changes or (new.rate_limit, new.rate_burst) != (old.rate_limit, old.rate_burst):
            self.bucket = TokenBucket(new.rate_limit, new.rate_burst, self.clock) if new.rate_limit else None
        if "delete_memories_after" in changes:
            self._deletions_from = self._api_requests  # counted from when the knob is set
        if "cookie_max_requests" in changes:
            self.sessions.reset_uses()
        if "bot_check" in changes or "bot_check_from" in changes:
            self._bot_from = self._service_requests  # counted from when the knob is set
        if "hold_chat_after" in changes:
            self._chat_requests = 0  # counted from when the knob is set
            (self._released.set if new.hold_chat_after is None else self._released.clear)()
        self.world.iso_share = new.iso_dates
        self.world.hostile_media = new.hostile_media_urls
        self.world.extra_media = [u.strip() for u in new.extra_media_urls.split(",") if u.strip()]
        self.world.hostile_text = new.hostile_text
        self.world.drift = new.drift
        self.world.set_ties(new.ts_ties)
        self.world.set_unsafe_usernames(new.unsafe_usernames)

    # -- stats ----------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        with self.lock:
            self._routes: Counter = Counter()
            self._status: Counter = Counter()
            self._route_status: dict[str, Counter] = {}
            self._dropped = 0
            self.bot_answers = 0
            self.sessions.reset_counts()
        if hasattr(self, "files"):
            self.files.reset_stats()

    def stats(self) -> dict:
        with self.lock:
            return {
                "requests": sum(self._routes.values()),
                "routes": dict(self._routes),
                "status": {str(k): v for k, v in sorted(self._status.items())},
                "route_status": {r: {str(k): v for k, v in c.items()} for r, c in self._route_status.items()},
                "dropped": self._dropped,
                "bot_check_answers": self.bot_answers,
                "session": {"requests_with_other_cookies": 0, "secure_cookie_over_http": 0,
                            "requests_with_superseded": 0, "refused_superseded": 0, "rotations": 0,
                            "renewals": 0,
                            **self.sessions.counts},
                "files": self.files.stats(),
            }

    def _count(self, route: str, response: Response) -> None:
        with self.lock:
            self._routes[route] += 1
            if response.drop:
                self._dropped += 1
                return
            self._status[response.status] += 1
            self._route_status.setdefault(route, Counter())[response.status] += 1

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes, peer: str) -> Response:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            if not is_loopback(peer):
                return error(403, "the control surface answers loopback peers only")
            try:
                return self._control(method, path[len("/_sandbox/") :], body)
            except BadRequest as exc:
                return error(400, str(exc))
        route, handler = self._match(method, path)
        response = self._serve(route, handler, query, headers, body)
        self._count(route, response)
        return response

    def _serve(self, route: str, handler: Callable | None, query: dict, headers: Mapping[str, str], body: bytes) -> Response:
        if handler is None:
            return error(405 if route == "method_not_allowed" else 404, route.replace("_", " "))
        blocked = self._bot_check(headers)
        if blocked is not None:
            return blocked
        if route == self.knobs.forbidden_route and self._authenticate(headers, count_use=False)[0]:
            return error(403, "forbidden")  # a refusal of this resource; the session itself is accepted
        if route == "chat_history" and self.knobs.hold_chat_after is not None:
            with self.lock:
                self._chat_requests += 1
                held = self._chat_requests > self.knobs.hold_chat_after
            if held:  # until the test lifts the hold; bounded, so a forgotten hold never hangs a server
                self._released.wait(HOLD_MAX)
        fault = self.dice.roll(self.knobs)
        if fault.drop:
            return Response(0, drop=True, delay=fault.delay)
        retry_after = self.bucket.take() if self.bucket else 0
        if retry_after:
            response = error(429, "too many requests")
            response.headers.append(("Retry-After", str(retry_after)))
        elif fault.status:
            response = error(fault.status, "transient upstream failure")
        else:
            try:
                response = handler(query, headers, body)
            except BadRequest as exc:
                response = error(400, str(exc))
            if route == self.knobs.deep_json and response.status == 200:  # a hostile answer: too deep to decode
                response = Response(200, b"[" * DEEP + b"]" * DEEP, [("Content-Type", JSON_TYPE)])
        response.delay = fault.delay
        return response

    # -- routing --------------------------------------------------------------------------------
    def _match(self, method: str, path: str) -> tuple[str, Callable | None]:
        if path == "/login":
            return ("login", self._login) if method == "POST" else ("login_page", self._login_page)
        if path == "/":
            return "home", self._home
        if not path.startswith("/api/"):
            return "not_found", None
        route, handler = self._match_api(path[len("/api/") :])
        if handler is not None and method != "GET":
            return "method_not_allowed", None
        return route, handler

    def _match_api(self, rest: str) -> tuple[str, Callable | None]:
        jargon, prefix = self.config.jargon, self.config.profile_prefix
        if rest == "users/me" and self.config.session == APPSESSION:  # the 2025 path
            return "users_me", self._api(lambda q: {"id": self.world.owner_id, "email": self.config.email, "name": "Sandbox Owner", "x_plan": "free"})
        if rest == "users/info" and self.config.session != APPSESSION:
            return "users_info", self._api(lambda q: {"id": self.world.owner_id, "email": self.config.email,
                                                      "shapes": [p["id"] for p in self.world.listing("self")]})
        public = f"{jargon}/username"  # anyone's profile, as far as they may see it
        if rest.startswith(prefix + "/") and len(rest) > len(prefix) + 1:
            username = unquote(rest[len(prefix) + 1 :])
            owner_only = prefix != public  # a private path distinct from the public one is the owner's alone
            return "profile", self._api(lambda q: self.world.profile(self._by_username(username, owner_only)))
        if rest.startswith(public + "/") and len(rest) > len(public) + 1:
            username = unquote(rest[len(public) + 1 :])
            return "profile", self._api(lambda q: self.world.profile(self._by_username(username)))
        if rest == jargon:
            return "list", self._api(lambda q: self.world.listing(_one(q, "category")))
        segments = rest.split("/")
        if len(segments) == 2 and segments[0] == "memory":
            return "memory", self._api(lambda q: self._memories(self._by_id(segments[1], "memory"), q))
        if len(segments) == 2 and segments[0] == jargon and segments[1] != "username":
            return "profile", self._api(lambda q: self.world.profile(self._by_id(segments[1])))
        if len(segments) >= 3 and segments[0] == jargon:
            tail = "/".join(segments[2:])
            answer = {
                "story": lambda q: self.world.knowledge(self._by_id(segments[1], "story")),
                "training": lambda q: self.world.training(self._by_id(segments[1], "training")),
                "user": lambda q: dict(self._by_id(segments[1]).user),
                "chat/history": lambda q: self._chat(self._by_id(segments[1]), q),
            }.get(tail)
            if answer is not None:
                return ("chat_history" if tail == "chat/history" else tail), self._api(answer)
        return "not_found", None

    def _api(self, answer: Callable[[dict], Any]) -> Callable:
        """Wrap an answer with authentication, the growth knob and JSON encoding."""

        def handler(query: dict, headers: Mapping[str, str], body: bytes) -> Response:
            accepted, rotation = self._authenticate(headers, count_use=True)
            if not accepted:
                return self._auth_failure()
            set_cookies = [("Set-Cookie", line) for line in rotation]
            try:
                payload = answer(query)
            except LookupError as exc:
                return error(404, str(exc), set_cookies)
            except PermissionError as exc:  # the session is fine; this is not the user's to read
                return error(403, str(exc), set_cookies)
            finally:
                self._after_api_request()
            return json_response(200, payload, set_cookies)

        return handler

    def _after_api_request(self) -> None:
        with self.lock:
            self._api_requests += 1
            every = self.knobs.grow_every
            if every and self._api_requests % every == 0:
                self.world.grow()
            after, since = self.knobs.delete_memories_after, self._api_requests - self._deletions_from
            if after and (since == after or (self.knobs.delete_memories_repeat and since % after == 0)):
                self.world.delete_memories(self.knobs.delete_memories_count)

    def _auth_failure(self) -> Response:
        mode = self.knobs.auth_failure
        if mode == "html":
            return html_response(200, "Log in", f"<h1>Please log in</h1>{LOGIN_FORM}")
        if mode == "redirect":
            return redirect("/login")
        return error(401, "not authenticated")

    def _by_id(self, pid: str, owner_only: str | None = None) -> Personality:
        found = self.world.by_id(unquote(pid))
        if found is None:
            raise LookupError("no such personality")
        return self._readable(found, owner_only)

    def _by_username(self, username: str, owner_only: bool = False) -> Personality:
        found = self.world.by_username(username)
        if found is None:
            raise LookupError("no such personality")
        return self._readable(found, "profile" if owner_only else None)

    def _readable(self, p: Personality, owner_only: str | None) -> Personality:
        """``p``, unless ``owner_only`` names a route only its owner may read and the user is not it:
        memories answer 404 (as if there were none to show), the others 403."""
        if owner_only and not self.world.owns(p):
            if owner_only == "memory":
                raise LookupError("no memories you may read")
            raise PermissionError("only the owner may read this")
        return p

    # -- resources ------------------------------------------------------------------------------
    def _memories(self, p: Personality, query: dict) -> dict:
        page = _int(query, "page", 1, low=1)
        style = p.pagination or self.knobs.pagination_style or "pagination"
        if style == "mixed":
            style = PAGINATION_STYLES[p.index % 3]
        return self.world.memory_page(p, page, self.knobs.memory_page_size, style)

    def _chat(self, p: Personality, query: dict) -> list:
        limit = min(_int(query, "limit", CHAT_MAX, low=1), CHAT_MAX)
        if _one(query, "shape_id") != p.id:
            raise BadRequest("shape_id must be the personality id")
        before = _one(query, "before_ts")
        before_ts = None
        if before not in (None, "") and not self.knobs.ignore_before_ts:
            try:
                before_ts = float(before)
            except ValueError:
                before_ts = math.nan
            if not math.isfinite(before_ts):
                raise BadRequest("before_ts must be a finite number")
        return self.world.chat_history(p, before_ts, limit)

    # -- browser pages --------------------------------------------------------------------------
    def _login_page(self, query: dict, headers: Mapping[str, str], body: bytes) -> Response:
        return html_response(200, "Log in", f"<h1>Log in</h1>{LOGIN_FORM}")

    def _login(self, query: dict, headers: Mapping[str, str], body: bytes) -> Response:
        form = parse_qs(body.decode("utf-8", "replace"))
        if _one(form, "email") == self.config.email and _one(form, "password") == self.config.password:
            token = self.mint_cookie()
            return redirect("/", [("Set-Cookie", line) for line in self.sessions.set_cookie_lines(token)])
        return html_response(200, "Log in", f"<p class='error'>Wrong email or password.</p>{LOGIN_FORM}")

    def _home(self, query: dict, headers: Mapping[str, str], body: bytes) -> Response:
        if not self._authenticate(headers, count_use=False)[0]:
            return redirect("/login")
        return html_response(200, "Home", "<h1>Your personalities</h1><p>Welcome back.</p>")

    # -- control surface ------------------------------------------------------------------------
    def _control(self, method: str, name: str, body: bytes) -> Response:
        post = method == "POST"
        if name == "stats" and not post:
            return json_response(200, self.stats())
        if name == "stats/reset" and post:
            self.reset_stats()
            return json_response(200, {"ok": True})
        if name == "knobs":
            if post:
                try:
                    return json_response(200, self.set_knobs(**_json_object(body)))
                except ValueError as exc:
                    raise BadRequest(str(exc)) from None
            return json_response(200, self.knobs_dict())
        if name == "totals" and not post:
            return json_response(200, self.world.totals())
        if name == "expire-cookie" and post:
            return json_response(200, {"expired": self.expire_cookies()})
        if name == "cookie" and post:
            token = self.mint_cookie()
            return json_response(200, {"cookie": token, "cookie_header": self.sessions.header(token)})
        if name == "clearance" and not post:
            return json_response(200, self.clearance_pair())
        if name == "add" and post:
            request = _json_object(body)
            p = self.world.find(request.get("personality"))
            if p is None:
                return error(404, "no such personality")
            try:
                memories, messages = int(request.get("memories", 0)), int(request.get("messages", 0))
            except (TypeError, ValueError):
                raise BadRequest("memories and messages must be integers") from None
            if memories < 0 or messages < 0:
                raise BadRequest("memories and messages must be >= 0")
            self.world.add(p, memories, messages)
            return json_response(200, {"ok": True, "memories": len(p.memories), "messages": len(p.messages)})
        if name.startswith("export/") and not post:
            p = self.world.find(unquote(name[len("export/") :]))
            return error(404, "no such personality") if p is None else json_response(200, self.world.export(p))
        return error(404, "unknown control route")


def _one(query: dict, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _int(query: dict, name: str, default: int, low: int) -> int:
    raw = _one(query, name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < low:
        raise BadRequest(f"{name} must be >= {low}")
    return value


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise BadRequest("body must be JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value
