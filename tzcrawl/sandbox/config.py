"""What the sandbox serves and how it misbehaves.

``Knobs`` are the fault and shape switches that can change while the server runs (through
``Sandbox.set_knobs`` or ``POST /_sandbox/knobs``); ``SandboxConfig`` adds what is fixed at start
(seed, data sizes, paths, credentials). One field list feeds the Python API, the control surface and
the ``scrapy sandbox`` command flags, so a knob is declared exactly once, here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tzcrawl.config import ConfigError, flag

AUTH_FAILURE_MODES = ("401", "html", "redirect")
PAGINATION_STYLES = ("pagination", "meta", "camel", "mixed")
KNOWLEDGE_SHAPES = ("single", "items", "array", "story", "knowledge")
TRAINING_SHAPES = ("array", "single", "training", "items")
ERROR_CODES = (500, 502, 503)
SESSION_MODES = ("better-auth", "auth0", "appsession")
RECORD_ERAS = ("2026", "2025")
DEEP_ROUTES = ("story", "training", "user", "profile", "memory", "chat_history")
BOT_CHECKS = ("none", "cloudflare", "datadome")
MEDIA_FAULTS = ("none", "404", "410", "500", "flaky", "429", "huge", "html", "redirect")


def _knob(default: Any, help: str, **choices: Any) -> Any:
    return field(default=default, metadata={"help": help, **choices})


@dataclass
class Knobs:
    """Runtime-changeable behaviour; every fault is off by default."""

    rate_limit: float | None = _knob(None, "token-bucket rate in requests/s answering 429 + Retry-After")
    rate_burst: int = _knob(5, "token-bucket capacity")
    error_rate: float = _knob(0.0, "fraction of requests answered 500/502/503", fraction=True)
    drop_rate: float = _knob(0.0, "fraction of requests whose connection is closed without an answer", fraction=True)
    latency: float = _knob(0.0, "seconds to wait before answering")
    latency_rate: float = _knob(1.0, "fraction of requests that get the latency", fraction=True)
    iso_dates: float = _knob(0.0, "fraction of memories whose created_at is an ISO 8601 string", fraction=True)
    ts_ties: bool = _knob(False, "groups of messages share one ts across the 50-message batch edges")
    unsafe_usernames: bool = _knob(False, "first personalities get usernames unsafe as paths")
    cookie_max_requests: int | None = _knob(None, "a cookie expires after this many API requests")
    grow_every: int | None = _knob(None, "every N API requests add one memory and one message to each personality")
    delete_memories_after: int | None = _knob(None, "after this many API requests, delete_memories_count newest "
                                                     "memories of every personality are deleted (once per setting)")
    delete_memories_count: int = _knob(5, "how many memories delete_memories_after deletes")
    delete_memories_repeat: bool = _knob(False, "delete again every delete_memories_after requests, not once")
    ignore_before_ts: bool = _knob(False, "chat history ignores before_ts and repeats the newest batch")
    auth_failure: str = _knob("401", "answer to a bad cookie: 401 | html | redirect", choices=AUTH_FAILURE_MODES)
    pagination_style: str | None = _knob(
        None, "memory pagination spelling for all: pagination | meta | camel | mixed", choices=PAGINATION_STYLES
    )
    memory_page_size: int = _knob(20, "memories per page")
    media_fault: str = _knob(
        "none", "file host fault: none | 404 | 410 | 500 (always 503) | flaky (503 twice, then the file) | 429 (twice, "
        "Retry-After: 0, then the file) | huge "
        "(media_huge_kb) | html (a 200 HTML page) | redirect (302 to the mirror host)", choices=MEDIA_FAULTS)
    media_fault_share: float = _knob(1.0, "fraction of files (chosen by path) that get media_fault", fraction=True)
    media_huge_kb: int = _knob(4096, "size of a file answered by the huge fault, in KB")
    media_latency: float = _knob(0.0, "seconds the file host waits before answering")
    hostile_media_urls: bool = _knob(False, "the first personality's screenshots include file:, javascript:, "
                                            "relative and data: URLs")
    hold_chat_after: int | None = _knob(None, "chat-history requests after this many wait until the knob is "
                                              "cleared (at most HOLD_MAX seconds): a crawl held mid-walk, by order")
    extra_media_urls: str = _knob("", "comma-separated URLs the first personality's screenshots also point at "
                                      "(this machine's other services, the API's own origin...)")
    rotate_every: int | None = _knob(200, "better-auth session: a new cookie value every N authenticated answers "
                                          "(auth0 rotates on every answer; appsession never)")
    rotate_values: bool = _knob(False, "better-auth rotation sends a new value (the old one superseded) instead of "
                                       "the same value with a later expiry")
    superseded_grace: int = _knob(3, "requests a value replaced by a rotation keeps working, then 401")
    bot_check: str = _knob("none", "bot protection in front of the site: none | cloudflare (403 + cf-mitigated "
                                   "challenge page) | datadome (200 HTML + x-datadome)", choices=BOT_CHECKS)
    bot_check_from: int = _knob(1, "the bot check answers from this service request on (counted from when set); "
                                   "the clearance cookie with its User-Agent passes")
    deep_json: str | None = _knob(None, "this API route (story, training, user, profile, memory, chat_history) "
                                        "answers JSON nested 100,000 levels deep", choices=DEEP_ROUTES)
    drift: bool = _knob(False, "profiles change without notice: ltm_enabled is gone and user_prompt is called "
                               "user_prompt_v2 (2026 records)")
    forbidden_route: str | None = _knob(None, "this API route (story, training, user, profile, memory, chat_history) "
                                              "answers 403 (JSON) for every personality, the owner's too, while the "
                                              "session itself is accepted", choices=DEEP_ROUTES)
    hostile_text: bool = _knob(False, "every personality's oldest message and memory hold HTML, script and "
                                      "javascript: links (for exporters: text is data, never markup)")


@dataclass
class SandboxConfig(Knobs):
    """Everything a sandbox is built from; data is generated deterministically from ``seed``.

    ``overrides`` maps a personality index to per-personality settings: ``memories``, ``messages``,
    ``knowledge`` (entry count), ``training``, ``knowledge_shape``, ``training_shape``,
    ``pagination`` (style), ``user_empty``, ``username``, ``name``.
    """

    seed: int = _knob(7, "seed of the generated data and of the fault dice")
    personalities: int = _knob(3, "number of the owner's personalities")
    others: int = _knob(2, "personalities of other owners the user talked to (the recent list, after two of the "
                           "owner's): their memories (404), knowledge and training (403) and a private profile "
                           "path refuse this user")
    memories: int = _knob(45, "memories per personality")
    messages: int = _knob(120, "chat messages per personality")
    empty_last: bool = _knob(True, "with 2+ personalities, the last one has no memories/messages/knowledge/user data")
    jargon: str = _knob("personalities", "the site's word for a personality in paths")
    profile_path: str | None = _knob(None, "PROFILE_INFO_PRIVATE_PATH (default: {jargon}/username)")
    email: str = _knob("owner@example.com", "login e-mail")
    password: str = _knob("sandbox-password", "login password")
    records: str = _knob("2026", "record shapes: 2026 (memories with metadata.created_at and result, 20 a page "
                                 "with has_next; ~173-field profiles) | 2025 (the older clients' guess)",
                         choices=RECORD_ERAS)
    session: str = _knob("better-auth", "the session cookie: better-auth (2026, HTTPS only) | auth0 (appSession.N "
                                        "chunks rotated on every answer) | appsession (2025)", choices=SESSION_MODES)
    chunks: int = _knob(2, "auth0 session: parts the cookie is split into")
    tls: bool | None = _knob(None, "serve HTTPS with a certificate of the sandbox's own CA (default: yes, but no "
                                   "for --session appsession, as in 2025)")
    cookie_ttl: float = _knob(86400.0, "seconds a minted cookie stays valid")
    voice_replies: float = _knob(0.15, "fraction of messages with a voice reply (mp3) on the file host", fraction=True)
    attachments: float = _knob(0.1, "fraction of messages with an attachment (png, jpeg or mp3)", fraction=True)
    media_min_kb: int = _knob(1, "smallest media file, in KB")
    media_max_kb: int = _knob(8, "largest media file, in KB")
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def https(self) -> bool:
        return self.session != "appsession" if self.tls is None else bool(self.tls)

    @property
    def profile_prefix(self) -> str:
        return (self.profile_path or f"{self.jargon}/username").strip("/")

    def knobs(self) -> Knobs:
        return Knobs(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Knobs)})


KNOB_NAMES = tuple(f.name for f in dataclasses.fields(Knobs))


def coerce_knobs(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate ``changes`` (from JSON or keyword arguments); raise ValueError naming the bad knob."""
    hints = {f.name: f for f in dataclasses.fields(Knobs)}
    out: dict[str, Any] = {}
    for name, value in changes.items():
        f = hints.get(name)
        if f is None:
            raise ValueError(f"unknown knob {name!r}; known: {', '.join(KNOB_NAMES)}")
        out[name] = _coerce(f, value)
    return out


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = str(f.type)
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise ValueError(f"knob {f.name!r} cannot be null")
    try:
        if kind.startswith("bool"):
            if isinstance(value, str):
                try:
                    return flag(value, f.name)
                except ConfigError:
                    raise ValueError(value) from None
            return bool(value)
        if kind.startswith("float"):
            number = float(value)
            if number < 0 or (f.metadata.get("fraction") and number > 1) or (f.name == "rate_limit" and number == 0):
                raise ValueError(value)
            return number
        if kind.startswith("int"):
            number = int(value)
            if number < 1:
                raise ValueError(value)
            return number
        value = str(value)
    except (TypeError, ValueError):
        raise ValueError(f"bad value {value!r} for knob {f.name!r}") from None
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"knob {f.name!r} must be one of {', '.join(choices)}")
    return value
