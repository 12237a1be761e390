"""What spiders hand to the pipeline: whole documents, pages of a collection, one ``ResourceDone``
per resource with its ``Outcome``, and a ``PersonalityEnd`` once a personality's walk is over.

Items hold private conversations: their ``repr`` (what Scrapy logs for a refused item) names the
personality, the resource and counts, never the records themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMPLETE, FAILED, SKIPPED, BLOCKED = "complete", "failed", "skipped", "blocked"
NOT_THEIRS = "not_theirs"


@dataclass(frozen=True)
class Outcome:
    """How one resource ended this run: complete, failed (it was tried), skipped (it was not), blocked
    (the site's bot protection stopped the crawl before it was done) or not theirs (only the
    personality's owner may read it, and the user is not its owner: nothing to back up, nothing wrong)."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Saved: the resource's data is in the backup as the service has it."""
        return self.status == COMPLETE

    @property
    def settled(self) -> bool:
        """Nothing left to do for it: saved, or not the user's to read (the exit status counts both)."""
        return self.status in (COMPLETE, NOT_THEIRS)

    @classmethod
    def complete(cls, note: str = "") -> "Outcome":
        return cls(COMPLETE, note)

    @classmethod
    def failed(cls, reason: str) -> "Outcome":
        return cls(FAILED, reason)

    @classmethod
    def skipped(cls, reason: str) -> "Outcome":
        return cls(SKIPPED, reason)

    @classmethod
    def blocked(cls, reason: str) -> "Outcome":
        return cls(BLOCKED, reason)

    @classmethod
    def not_theirs(cls, reason: str) -> "Outcome":
        return cls(NOT_THEIRS, reason)


def _who(personality: dict) -> str:
    return str(personality.get("username"))


@dataclass
class Document:
    """A whole resource (profile, knowledge, training, user_data), exactly as the service sent it."""

    personality: dict
    resource: str
    payload: object = field(repr=False)
    count: int

    def __repr__(self) -> str:
        return f"Document({_who(self.personality)}, {self.resource}, {self.count} entries)"


@dataclass
class Page:
    """One page of a collection (memories, messages), records exactly as the service sent them."""

    personality: dict
    resource: str
    records: list = field(default_factory=list)
    pages: int | None = None  # the service's page count, where it says (memories): for the progress display

    def __repr__(self) -> str:
        return f"Page({_who(self.personality)}, {self.resource}, {len(self.records)} records)"


@dataclass
class ResourceDone:
    """The end of one resource and the ``requests`` it took; ``full_read``: the walk read the whole
    collection (not stopping at what the backup held); ``service_total``: the records the service
    said it had (memories), to check the backup against."""

    personality: dict
    resource: str
    outcome: Outcome
    requests: int = 0
    full_read: bool = False
    service_total: int | None = None
    drift: tuple[str, ...] = ()  # expected keys the service's first answer lacked this run
    # Pages or documents the spider yielded for it: the store fails the resource when fewer arrived
    # (an item pipeline before it raised and dropped one), instead of committing a hole.
    items: int = field(default=0, compare=False)
    # Set by the media pipeline: its manifest, saved, lists every media URL of this resource's records.
    media_listed: bool = field(default=False, compare=False)


@dataclass
class PersonalityEnd:
    personality: dict
