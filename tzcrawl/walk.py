"""One personality's walk through its resources, and the pure decisions that end a resource.

    claim the personality's lock ─► profile ─► each planned resource, in registry order, page by page
    until the paging decision says stop ─► PersonalityEnd ─► the next personality

``Walk`` is the state the spider's callbacks share: the current resource is ``planned[index]``,
moved on only by ``end``. ``after_error`` decides, in one place, what an error does to the current
resource and the ones after it. No Scrapy, no disk: unit-tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tzcrawl import paging
from tzcrawl.items import Outcome, ResourceDone
from tzcrawl.registry import Resource

AUTH, ANSWER, LOCKED, BLOCKED = "auth", "answer", "locked", "blocked"  # the kinds of error a walk can meet


@dataclass
class Walk:
    personality: dict                      # {"username"} until the profile adds "id" and "name"
    planned: tuple[Resource, ...]
    index: int = 0                         # the current resource is planned[index]
    requests: int = 0                      # requests made for the current resource
    seen_ids: set = field(default_factory=set)           # memory ids seen (repeated pages)
    held: paging.Held = field(default_factory=paging.Held)  # what the backup held at its start
    deferred: bool = False                 # already sent behind the others once (lock held elsewhere)
    service_total: int | None = None       # the service's latest total for the current collection
    least_total: int | None = None         # its smallest during the walk: records that were there throughout
    total_by_pages: bool = False           # that total counts pages (the service gave no record count)
    page_len: int = 0                      # the largest page seen
    rewalks: int = 0                       # walks again from an earlier page (paging.rewalk_from)

    @property
    def username(self) -> str:
        return self.personality["username"]

    @property
    def identified(self) -> bool:
        """The profile has given the id every other resource's path needs."""
        return "id" in self.personality

    @property
    def current(self) -> Resource | None:
        return self.planned[self.index] if self.index < len(self.planned) else None

    def saw_total(self, total: int | None, by_pages: bool) -> None:
        if total is not None:
            self.service_total, self.total_by_pages = total, by_pages
            self.least_total = total if self.least_total is None else min(self.least_total, total)

    def identify(self, profile: dict) -> None:
        self.personality = {"id": profile["id"], "username": self.username,
                            "name": profile.get("name", self.personality.get("name"))}

    def begin(self, held: paging.Held) -> None:
        """Start the current resource afresh."""
        self.requests, self.held = 0, held
        self.seen_ids.clear()
        self.service_total, self.least_total, self.total_by_pages, self.page_len, self.rewalks = None, None, False, 0, 0

    def end(self, outcome: Outcome) -> ResourceDone:
        """The current resource's outcome; the walk moves on to the next one."""
        resource = self.current
        done = ResourceDone(self.personality, resource.name, outcome, self.requests,
                            full_read=outcome.ok and resource.collection and self.held.empty,
                            # memories added during the walk are the next run's: not counted as missing
                            service_total=None if self.total_by_pages else self.least_total)
        self.index += 1
        self.requests = 0
        return done

    def end_all(self, current: Outcome, rest: Outcome) -> list[ResourceDone]:
        """The current resource ends with ``current``, every later one with ``rest``."""
        done = [self.end(current)] if self.current else []
        while self.current:
            done.append(self.end(rest))
        return done


@dataclass(frozen=True)
class Ending:
    """What an error does: these resources end, and the personality (or the whole crawl) stops."""

    done: list[ResourceDone]
    personality_over: bool
    stop_crawl: bool = False


def after_error(walk: Walk, kind: str, reason: str) -> Ending:
    """The one decision for errors: ``kind`` is AUTH, BLOCKED (the site's bot protection answered),
    ANSWER (a bad answer, a request that failed for good, a paging failure) or LOCKED (another run
    holds the personality)."""
    if kind == BLOCKED:  # the crawl stops: this resource and every one not done are BLOCKED, nothing saved changes
        blocked = Outcome.blocked(f"stopped by the site's bot protection: {reason}")
        return Ending(walk.end_all(blocked, blocked), True, True)
    if kind == LOCKED:
        return Ending(walk.end_all(Outcome.skipped(reason), Outcome.skipped(reason)), True)
    # Before the profile has answered, only the profile itself (when planned) was being fetched.
    fetching = walk.identified or (walk.current is not None and walk.current.name == "profile")
    if kind == AUTH:
        current = Outcome.failed(f"not authenticated: {reason}")
        if not fetching:
            current = Outcome.skipped("not attempted: not authenticated")
        return Ending(walk.end_all(current, Outcome.skipped("not attempted: not authenticated")), True, True)
    if walk.identified:
        return Ending([walk.end(Outcome.failed(reason))], walk.current is None)
    rest = Outcome.skipped(f"not attempted: profile unavailable: {reason}")
    return Ending(walk.end_all(Outcome.failed(reason) if fetching else rest, rest), True)


def outcome_of(decision) -> Outcome | None:
    """A paging decision's outcome for the resource: None while there is a next page."""
    if isinstance(decision, paging.Stop):
        return Outcome.complete(decision.reason)
    if isinstance(decision, paging.Fail):
        return Outcome.failed(decision.reason)
    return None
