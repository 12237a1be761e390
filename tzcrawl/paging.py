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
                     ident: Callable[[dict], str] = lambda m: str(m.get("id"))) -> Next | Stop | Fail:
    """Decide after receiving memory page ``page`` (from 1) with ``new_ids`` ids unseen this run;
    ``key`` and ``ident`` read an item's time (seconds) and id."""
    if not items:
        return Stop("empty page")
    if not full and reached_held(((key(m), ident(m)) for m in items), held):
        return Stop("reached the memories already backed up")
    if total_pages is not None and page >= total_pages:
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
