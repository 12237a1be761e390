"""The resource registry: every kind of thing a personality has, described once.

The spider walks it, ``tzcrawl.api`` builds each resource's URL from ``path``, the store names its
file with ``suffix`` and sorts collections on ``time_field``, the report orders its columns by it.
Adding a resource type is one entry in ``REGISTRY``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    """One resource of a personality.

    ``path`` is under ``/api`` with ``{jargon}``, ``{profile_path}``, ``{id}`` and ``{username}``
    filled in by ``api.Endpoints``. ``paging`` says how a collection is walked: ``"page"`` (numbered
    pages, newest first) or ``"before_ts"`` (by time); ``None`` for a document, which is stored whole
    exactly as received. A collection's records are placed on the timeline by ``time_field`` and
    identified by ``id_field`` (dedupe, incremental stops). ``entry_keys`` are the keys under which a
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

    @property
    def collection(self) -> bool:
        return self.paging is not None


REGISTRY: tuple[Resource, ...] = (
    # The profile comes first: it gives the id every other path needs.
    Resource("profile", "{profile_path}/{username}", ""),
    Resource("memories", "memory/{id}", "_memories", paging="page", time_field="created_at"),
    Resource("messages", "{jargon}/{id}/chat/history", "_messages", paging="before_ts", time_field="ts"),
    Resource("knowledge", "{jargon}/{id}/story", "_knowledge", entry_keys=("items", "story", "knowledge")),
    Resource("training", "{jargon}/{id}/training", "_training", entry_keys=("items", "training")),
    Resource("user_data", "{jargon}/{id}/user", "_user_data", counts_keys=True),
)

BY_NAME: dict[str, Resource] = {r.name: r for r in REGISTRY}
RESOURCES: tuple[str, ...] = tuple(BY_NAME)
COLLECTIONS: tuple[str, ...] = tuple(r.name for r in REGISTRY if r.collection)
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
