"""When to ask for the next page, and when to stop: pure decisions, unit-tested without a network.

Memories are paged by number, newest first; chat history by ``before_ts``, newest first, with the
service returning only ``ts < before_ts``. Both stop early on incremental runs once they reach what
the backup already holds, and neither can loop forever on a server that repeats itself.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable, Iterable

MAX_PAGES = 1_000_000  # a bound no real history reaches: 50M messages


@dataclass(frozen=True)
class Held:
    """What the backup already has of a collection: its newest timestamp and the ids at it."""

    newest_key: float | None = None
    newest_ids: frozenset = frozenset()

    @property
    def empty(self) -> bool:
        return self.newest_key is None


@dataclass(frozen=True)
class Next:
    """Ask for this page number / before_ts next."""

    value: object


@dataclass(frozen=True)
class Stop:
    """The collection is complete for this run; ``reason`` is for the log."""

    reason: str


@dataclass(frozen=True)
class Fail:
    """The service misbehaved; the collection cannot be called complete."""

    reason: str


def reached_held(keyed: Iterable[tuple[float | None, str]], held: Held) -> bool:
    """True when a batch holds something the backup already had, so everything older is held too."""
    if held.empty:
        return False
    for key, ident in keyed:
        if key is None:
            continue  # an item without a usable timestamp says nothing about where we are
        if key < held.newest_key or (key == held.newest_key and ident in held.newest_ids):
            return True
    return False


def next_memory_page(page: int, items: list, total_pages: int | None, *, new_ids: int,
                     held: Held, full: bool, key: Callable[[dict], float | None],
                     ident: Callable[[dict], str] = lambda m: str(m.get("id")),
                     has_next: bool | None = None) -> Next | Stop | Fail:
    """Decide after receiving memory page ``page`` (from 1) with ``new_ids`` ids unseen this run;
    ``key`` and ``ident`` read an item's time (seconds) and id; ``has_next`` is the service's word,
    where it gives one (it wins over ``total_pages``)."""
    if not items:
        return Stop("empty page")
    if not full and reached_held(((key(m), ident(m)) for m in items), held):
        return Stop("reached the memories already backed up")
    if has_next is False or (has_next is None and total_pages is not None and page >= total_pages):
        return Stop("last page")
    if new_ids == 0 and total_pages is None:
        return Fail(f"memory page {page} repeated earlier pages and the service gives no page count")
    if page >= MAX_PAGES:
        return Fail(f"more than {MAX_PAGES} memory pages")
    return Next(page + 1)


MAX_REWALKS = 2  # walks again from an earlier page, per resource and run, before giving up


def rewalk_from(page: int, page_len: int, seen: int | None, now: int | None, by_pages: bool) -> int | None:
    """The page to walk again from when the service's total dropped between two pages (memories were
    deleted during the walk: every later one moved up, and those that crossed into pages already
    read would be skipped), else None. ``seen``/``now`` are the totals (records, or pages when
    ``by_pages``) reported before and with page ``page``; ``page_len`` is the page size seen."""
    if seen is None or now is None or now >= seen:
        return None
    moved = (seen - now) * (page_len if by_pages else 1)  # how far every later record moved up
    return max(1, page - math.ceil(moved / max(page_len, 1)))


def next_before_ts(batch_ts: list[float], *, limit: int, before_ts: float | None, held: Held,
                   full: bool) -> Next | Stop | Fail:
    """Decide the next ``before_ts`` after a chat-history batch (``batch_ts`` are the batch's ts).

    Messages sharing a ts can straddle a batch edge, and ``ts < before_ts`` would skip the rest of
    that group. So when the batch may have been cut (it is full), the next ``before_ts`` is the
    batch's second-smallest distinct ts: the whole smallest group comes again (deduplicated by id)
    and nothing is lost. It always decreases, so the walk ends. A short batch is whole: the
    service's cap is the limit asked for.
    """
    if not batch_ts:
        return Stop("empty batch")
    if before_ts is not None and max(batch_ts) >= before_ts:
        return Fail(f"the service ignored before_ts={before_ts!r} (sent messages at or after it)")
    oldest = min(batch_ts)
    # Reaching below the newest held ts means that ts's whole group is in this batch, and all
    # older messages were taken by the last complete run.
    if not full and not held.empty and oldest < held.newest_key:
        return Stop("reached the messages already backed up")
    if len(batch_ts) < limit:
        return Next(oldest)
    distinct = sorted(set(batch_ts))
    if len(distinct) == 1:
        return Fail(f"{len(batch_ts)} messages share ts {oldest!r}: the service cannot page inside them")
    return Next(distinct[1])


# -- pagers: one small object per walk of a collection -------------------------------------------------
# A pager reads each decoded answer and says what it holds and where to go next, keeping what the walk
# needs between pages (ids seen, totals, rewalks). The registry names each collection's paging kind;
# ``pager_for`` makes its pager; the spider only decodes, asks the pager and follows.


@dataclass(frozen=True)
class Step:
    """What one answer held and what comes next. ``rewalk``: the next request goes back to an earlier
    page because records moved while the walk read (said in the log, counted in the stats)."""

    records: list
    decision: object  # Next | Stop | Fail
    pages: int | None = None  # the service's page count, where it says (progress display)
    rewalk: str = ""


def _kept_moving() -> Fail:
    return Fail(f"memories kept being deleted on the service while they were read ({MAX_REWALKS} walks again did "
                f"not settle); run again later")


class MemoryPager:
    """Numbered pages, newest first (memories): ``has_next`` or ``total_pages``, repeated pages, and a
    walk again from an earlier page when the service's total drops (memories deleted mid-walk move the
    later ones up, into pages already read). Today's service gives no record count: a walk of several
    pages then ends with one look at page 1 again; ids first read further down showing up there mean
    memories were deleted above them while the walk went on, and the walk is made again."""

    first = 1

    def __init__(self, resource, held: Held, full: bool, key: Callable[[dict], float | None]):
        self.resource, self.held, self.full, self.key = resource, held, full, key
        self.seen: set[str] = set()
        self.first_page: set[str] = set()   # ids of page 1 as this pass read it
        self.service_total: int | None = None
        self.least_total: int | None = None
        self.by_pages = False
        self.page_len = 0
        self.rewalks = 0
        self.counted = False                # the service gave a record count (``total``)
        self.settling: Stop | None = None   # the end reached, waiting for page 1's second look

    @staticmethod
    def read(payload):
        from tzcrawl import api

        return api.memory_page(payload)

    def _ident(self, record) -> str:
        return str(record.get(self.resource.id_field)) if isinstance(record, dict) else "None"

    def _again(self, items: list, page: int, pages, why: str) -> Step:
        self.rewalks += 1
        if self.rewalks > MAX_REWALKS:
            return Step(items, _kept_moving(), pages)
        self.seen.clear()
        self.first_page.clear()
        return Step(items, Next(page), pages, rewalk=why)

    def step(self, answer, position: int) -> Step:
        items, pages = answer.items, answer.total_pages
        ids = {self._ident(m) for m in items}
        if self.settling is not None:  # the second look at page 1
            ended, self.settling = self.settling, None
            if ids & (self.seen - self.first_page):
                return self._again(items, 1, pages, "memories moved up while the walk read (deleted on the "
                                                    "service): walking again from page 1")
            return Step(items, ended, pages)
        self.page_len = max(self.page_len, len(items))
        total, by_pages = (answer.total, False) if answer.total is not None else (pages, True)
        self.counted = self.counted or answer.total is not None
        restart = rewalk_from(position, self.page_len, self.service_total, total, by_pages)
        if total is not None:
            self.service_total, self.by_pages = total, by_pages
            self.least_total = total if self.least_total is None else min(self.least_total, total)
        if restart is not None:
            return self._again(items, restart, pages, f"the service's total dropped while reading (memories "
                                                      f"deleted): walking again from page {restart}")
        if position == 1:
            self.first_page = set(ids)
        new_ids = len(ids - self.seen)
        self.seen |= ids
        decision = next_memory_page(position, items, pages, new_ids=new_ids, held=self.held, full=self.full,
                                    key=self.key, ident=self._ident, has_next=answer.has_next)
        if isinstance(decision, Stop) and position > 1 and not self.counted:
            self.settling = decision
            return Step(items, Next(1), pages)
        return Step(items, decision, pages)

    def total(self) -> int | None:
        """Records the service had throughout the walk, where it counted them (for the shortfall check)."""
        return None if self.by_pages else self.least_total


class HistoryPager:
    """By time, newest first (chat history): ``before_ts`` with ties kept whole (``next_before_ts``); the
    next position is the ts exactly as the service spelled it."""

    first = None

    def __init__(self, resource, held: Held, full: bool, key: Callable[[object], float | None]):
        self.resource, self.held, self.full, self.seconds = resource, held, full, key

    @staticmethod
    def read(payload):
        from tzcrawl import api

        return api.history_batch(payload)

    def step(self, batch: list, position) -> Step:
        from tzcrawl import api

        spelled: dict[float, str] = {}
        for message in batch:
            seconds = self.seconds(self.resource.time_of(message))
            if seconds is None:
                raise api.BadAnswer(f"a message without a usable ts: {self.resource.time_of(message)!r}")
            spelled.setdefault(seconds, str(self.resource.time_of(message)))
        decision = next_before_ts([self.seconds(self.resource.time_of(m)) for m in batch], limit=api.HISTORY_LIMIT,
                                  before_ts=self.seconds(position), held=self.held, full=self.full)
        if isinstance(decision, Next):  # the next before_ts is sent exactly as the service spelled that ts
            decision = Next(spelled[decision.value])
        return Step(batch, decision)

    def total(self) -> int | None:
        return None


PAGERS = {"page": MemoryPager, "before_ts": HistoryPager}


def pager_for(resource, held: Held, full: bool, seconds: Callable[[object], float | None]):
    """The pager of ``resource``'s paging kind; ``seconds`` turns a time as spelled into Unix seconds."""
    if resource.paging == "page":
        return MemoryPager(resource, held, full, lambda m: seconds(resource.time_of(m)))
    return PAGERS[resource.paging](resource, held, full, seconds)
