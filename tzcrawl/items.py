"""What spiders hand to the pipeline: a personality's start and end, whole documents, pages of a
collection, and one ``ResourceDone`` per resource saying whether it is complete."""

from __future__ import annotations

from dataclasses import dataclass, field

RESOURCES = ("profile", "memories", "messages", "knowledge", "training", "user_data")
COLLECTIONS = ("memories", "messages")


@dataclass
class PersonalityStart:
    personality: dict


@dataclass
class PersonalityEnd:
    personality: dict


@dataclass
class Document:
    """A whole resource (profile, knowledge, training, user_data), exactly as the service sent it."""

    personality: dict
    resource: str
    payload: object
    count: int


@dataclass
class Page:
    """One page of a collection (memories, messages), records exactly as the service sent them."""

    personality: dict
    resource: str
    records: list = field(default_factory=list)


@dataclass
class ResourceDone:
    """The end of one resource: complete (``ok``) or failed with ``error``; ``requests`` it took."""

    personality: dict
    resource: str
    ok: bool
    requests: int = 0
    error: str | None = None
    note: str = ""
