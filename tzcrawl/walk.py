"""One personality's walk through its resources, and the pure decisions that end a resource.

    claim the personality's lock ─► profile ─► each planned resource, in registry order, page by page
    until the paging decision says stop ─► PersonalityEnd ─► the next personality

``Walk`` is the state the spider's callbacks share: the current resource is ``planned[index]``,
moved on only by ``end``. ``after_error`` decides, in one place, what an error does to the current
resource and the ones after it. No Scrapy, no disk: unit-tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tzcrawl import api, paging
from tzcrawl.items import Document, Outcome, Page, ResourceDone
from tzcrawl.registry import Resource
from tzcrawl.store.timestamps import to_epoch

# the kinds of error a walk can meet
AUTH, ANSWER, LOCKED, BLOCKED, NOT_THEIRS = "auth", "answer", "locked", "blocked", "not_theirs"
OWNER_KEYS = ("created_by", "user_id", "owner_id")  # where a profile names its owner


@dataclass
class Walk:
    personality: dict                      # {"username"} until the profile adds "id" and "name"
    planned: tuple[Resource, ...]
    index: int = 0                         # the current resource is planned[index]
    requests: int = 0                      # requests made for the current resource
    held: paging.Held = field(default_factory=paging.Held)  # what the backup held at its start
    deferred: bool = False                 # already sent behind the others once (lock held elsewhere)
    pager: object = None                   # the current collection's pager (paging.pager_for)
    drift: tuple[str, ...] = ()            # expected keys the current resource's first answer lacked
    items: int = 0                         # pages or documents yielded for the current resource
    stops: dict = field(default_factory=dict)  # resource → (paging.Held, why it reads in full): the store's, at the claim

    @property
    def username(self) -> str:
        return self.personality["username"]

    @property
    def owned(self) -> bool | None:
        """Does the user own it? True or False as the lists said (``self`` / only ``recent``), or as the
        last backup recorded; None when nobody said (a named personality never listed)."""
        return self.personality.get("owned")

    @property
    def identified(self) -> bool:
        """The profile has given the id every other resource's path needs."""
        return "id" in self.personality

    @property
    def current(self) -> Resource | None:
        return self.planned[self.index] if self.index < len(self.planned) else None

    def identify(self, profile: dict) -> None:
        """The profile's id and name; whose it is stays as the lists said, with the owner the profile names."""
        identity = {"id": profile["id"], "username": self.username,
                    "name": profile.get("name", self.personality.get("name"))}
        if self.owned is not None:
            identity["owned"] = self.owned
        owner = next((profile[k] for k in OWNER_KEYS if isinstance(profile.get(k), str) and profile[k]), None)
        if self.owned is False and owner:
            identity["owner"] = owner
        self.personality = identity

    def begin(self, held: paging.Held, full: bool = False) -> None:
        """Start the current resource afresh (a collection gets a new pager)."""
        self.requests, self.items, self.held = 0, 0, held
        resource = self.current
        self.pager = paging.pager_for(resource, held, full, to_epoch) if resource.collection else None

    def pager_of(self, full: bool):
        """The current collection's pager, made now when ``begin`` was not called (a walk built by hand)."""
        if self.pager is None or self.pager.resource != self.current:
            self.pager = paging.pager_for(self.current, self.held, full, to_epoch)
        return self.pager

    def end(self, outcome: Outcome) -> ResourceDone:
        """The current resource's outcome; the walk moves on to the next one."""
        resource = self.current
        done = ResourceDone(self.personality, resource.name, outcome, self.requests,
                            full_read=outcome.ok and resource.collection and self.held.empty,
                            # memories added during the walk are the next run's: not counted as missing
                            service_total=self.pager.total() if self.pager is not None else None, drift=self.drift,
                            items=self.items)
        self.index += 1
        self.requests, self.items, self.drift, self.pager = 0, 0, (), None
        return done

    def page(self, records: list, pages: int | None) -> Page:
        """A page of the current collection, counted (``ResourceDone.items``)."""
        self.items += 1
        return Page(self.personality, self.current.name, records, pages)

    def document(self, payload, count: int) -> Document:
        """The current resource's document, counted (``ResourceDone.items``)."""
        self.items += 1
        return Document(self.personality, self.current.name, payload, count)

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
    ANSWER (a bad answer, a request that failed for good, a paging failure), LOCKED (another run
    holds the personality) or NOT_THEIRS (an owner-only resource of someone else's personality)."""
    if kind == BLOCKED:  # the crawl stops: this resource and every one not done are BLOCKED, nothing saved changes
        blocked = Outcome.blocked(f"stopped by the site's bot protection: {reason}")
        return Ending(walk.end_all(blocked, blocked), True, True)
    if kind == LOCKED:
        return Ending(walk.end_all(Outcome.skipped(reason), Outcome.skipped(reason)), True)
    if kind == NOT_THEIRS:  # nothing wrong: the next resource, as after a success
        return Ending([walk.end(Outcome.not_theirs(reason))], walk.current is None)
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


def not_theirs(walk: Walk, resource: Resource | None, exc: Exception) -> str | None:
    """Why a refusal is "not theirs" (an owner-only resource of a personality the user does not own
    answered 403 or 404), or None: a refusal of the user's own, or of a resource anyone may read, is an
    error as before."""
    if walk.owned is False and resource is not None and resource.owner_only \
            and isinstance(exc, (api.Forbidden, api.NotFound)):
        return f"only its owner may read it (the service refused: {exc})"
    return None


def outcome_of(decision) -> Outcome | None:
    """A paging decision's outcome for the resource: None while there is a next page."""
    if isinstance(decision, paging.Stop):
        return Outcome.complete(decision.reason)
    if isinstance(decision, paging.Fail):
        return Outcome.failed(decision.reason)
    return None


def gather(lists: dict, categories: tuple[str, ...]) -> list[dict]:
    """The personalities to back up from the lists read (``{"self": [...], "recent": [...]}``; None for
    a list that could not be read): those of ``categories`` in that order, each once (by id), marked
    ``owned`` when the ``self`` list holds it (left unmarked when that list could not be read)."""
    owned = lists.get("self")
    owned_ids = None if owned is None else {str(p.get("id")) for p in owned}
    plan, seen = [], set()
    for category in categories:
        for entry in lists.get(category) or ():
            key = str(entry.get("id"))
            if key in seen:
                continue
            seen.add(key)
            plan.append(dict(entry) if owned_ids is None else {**entry, "owned": key in owned_ids})
    return plan
