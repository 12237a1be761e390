"""The resource registry: every kind of thing a personality has, described once.

The spider walks it, ``tzcrawl.api`` builds each resource's URL from ``path``, the store names its
file with ``suffix`` and sorts collections on ``time_field``, the report orders its columns by it.
Adding a resource type is one entry in ``REGISTRY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=64)
def _keys(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def first_present(record, paths: str | tuple[str, ...]):
    """The value at the first of ``paths`` a record has (dotted for nested: ``metadata.created_at``);
    None when none holds a value. A plain string is one top-level key (the fast, common case)."""
    if not isinstance(record, dict):
        return None
    if type(paths) is str:
        return record.get(paths)
    for path in paths:
        value = record
        for key in _keys(path):
            if type(value) is not dict or key not in value:
                break
            value = value[key]
        else:
            if value not in (None, ""):
                return value
    return None


@dataclass(frozen=True)
class Resource:
    """One resource of a personality.

    ``path`` is under ``/api`` with ``{jargon}``, ``{profile_path}``, ``{id}`` and ``{username}``
    filled in by ``api.Endpoints``. ``paging`` says how a collection is walked: ``"page"`` (numbered
    pages, newest first) or ``"before_ts"`` (by time); ``None`` for a document, which is stored whole
    exactly as received. A collection's records are placed on the timeline by the first of
    ``time_paths`` they have (the service moved a memory's time to ``metadata.created_at`` in 2026) and
    identified by ``id_field`` (dedupe, incremental stops); ``time_field`` names that time in the
    metadata (``newest_created_at``). ``text_paths`` are where a record's text is (a memory's ``result``,
    in 2025 ``content``), for every exporter and check. ``expected_keys`` are the top-level keys today's
    service sends (its answers are checked for drift). ``entry_keys`` are the keys under which a
    document may wrap its list of entries (for the counts only); ``counts_keys`` counts an object's
    keys instead.
    """

    name: str
    path: str
    suffix: str
    paging: str | None = None
    time_field: str | None = None
    id_field: str = "id"
    entry_keys: tuple[str, ...] = ()
    counts_keys: bool = False
    time_paths: tuple[str, ...] = ()
    text_paths: tuple[str, ...] = ()
    expected_keys: tuple[str, ...] = ()
    flag_field: str | None = None  # a record's "deleted on the service" flag: such records are kept and counted
    counts_chars: bool = False     # the summary counts its characters of conversation (message + reply)
    # Only the personality's owner may read it: for a personality the user talked to but does not own,
    # a 403 or 404 is "not theirs", not a failure (the profile has its own rule: the public path).
    owner_only: bool = False

    @property
    def collection(self) -> bool:
        return self.paging is not None

    @property
    def by_time(self) -> bool:
        """Walked back in time (``before_ts``): progress is a date reached, not a page of a count."""
        return self.paging == "before_ts"

    @property
    def when(self) -> str | tuple[str, ...]:
        """What ``first_present`` reads a record's time from: the one top-level key (fast) or the paths."""
        paths = self.time_paths or ((self.time_field,) if self.time_field else ())
        return paths[0] if len(paths) == 1 and "." not in paths[0] else paths

    def time_of(self, record):
        """A record's time as the service spelled it (Unix seconds or ISO 8601), or None."""
        return first_present(record, self.when)

    def text_of(self, record) -> str:
        value = first_present(record, self.text_paths)
        return value if isinstance(value, str) else ""

    def missing_keys(self, answer) -> tuple[str, ...]:
        """Which of ``expected_keys`` an answer's top level lacks (``a|b``: either will do): drift."""
        if not self.expected_keys or not isinstance(answer, dict):
            return ()
        return tuple(k for k in self.expected_keys if not any(alt in answer for alt in k.split("|")))


# What today's service sends in a profile, at least (shared/service-api.md, "Schema drift").
PROFILE_KEYS = ("id", "name", "username", "avatar", "jailbreak", "user_prompt", "personality_traits", "engine_model",
                "engine_temperature", "stm_window", "ltm_enabled", "ltm_threshold", "ltm_max_retrieved_summaries")

REGISTRY: tuple[Resource, ...] = (
    # The profile comes first: it gives the id every other path needs.
    Resource("profile", "{profile_path}/{username}", "", expected_keys=PROFILE_KEYS),
    Resource("memories", "memory/{id}", "_memories", paging="page", time_field="created_at",
             time_paths=("metadata.created_at", "created_at"), text_paths=("result", "content"),
             expected_keys=("items|memories", "pagination|meta"), flag_field="deleted", owner_only=True),
    Resource("messages", "{jargon}/{id}/chat/history", "_messages", paging="before_ts", time_field="ts",
             time_paths=("ts",), text_paths=("reply", "message"), counts_chars=True),
    Resource("knowledge", "{jargon}/{id}/story", "_knowledge", entry_keys=("items", "story", "knowledge"),
             text_paths=("content", "text"), owner_only=True),
    Resource("training", "{jargon}/{id}/training", "_training", entry_keys=("items", "training"), owner_only=True),
    Resource("user_data", "{jargon}/{id}/user", "_user_data", counts_keys=True),
)

BY_NAME: dict[str, Resource] = {r.name: r for r in REGISTRY}
RESOURCES: tuple[str, ...] = tuple(BY_NAME)
COLLECTIONS: tuple[str, ...] = tuple(r.name for r in REGISTRY if r.collection)
CONVERSATION: str = next(r.name for r in REGISTRY if r.counts_chars)  # whose characters the summary counts
DOCUMENTS: tuple[str, ...] = tuple(r.name for r in REGISTRY if not r.collection)


def get(name: str) -> Resource:
    """The resource called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown resource {name!r}; expected one of {', '.join(RESOURCES)}") from None


def collection(name: str) -> Resource:
    resource = get(name)
    if not resource.collection:
        raise ValueError(f"{name!r} is not a collection; expected one of {', '.join(COLLECTIONS)}")
    return resource


def document(name: str) -> Resource:
    resource = get(name)
    if resource.collection:
        raise ValueError(f"{name!r} is not a document; expected one of {', '.join(DOCUMENTS)}")
    return resource
