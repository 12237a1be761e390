"""How long to wait: pure policies for retries and for learning a service's rate limit.

Scrapy retries a 429 ~0.2 s later and AutoThrottle reacts to latency, not to 429s. These two
functions fill the gap: ``retry_wait`` honours Retry-After (else exponential backoff), and
``learn_interval`` settles at the server's limit. A 429 means the server's token bucket is empty;
between two 429s it went from empty to empty, so what got through is what it refilled:
``seconds / successes`` estimates its interval. The estimate can only err slow (time the bucket sat
full is lost to it) and is one token coarse, so aim at its low end, ``(1 - 1/n)`` of it for ``n``
successes, and creep closer on each success by ``1/(2 n²)``: the bucket's saved-up burst absorbs
the difference, 429s stay rare, and each one gives a sharper estimate. Until a cycle has been
measured (the first 429 comes after a slow start with a full bucket) the pace creeps closer fast.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 600.0   # a hostile or broken Retry-After cannot park the crawl for hours
MIN_INTERVAL = 0.05       # after any 429: at most 20 requests/s
MIN_SAMPLE = 5            # successes between two 429s needed for an estimate
MAX_CREEP = 0.9999        # per success, at the least, however long the last cycle
FAST_CREEP = 0.99         # per success before any cycle was measured
FAR = 2.0                 # back-off when there is too little to estimate from


def parse_retry_after(value: str | bytes | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/garbled."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retry_wait(retry_after: float | None, retries: int, *, base: float, cap: float) -> float:
    """Wait before retry number ``retries`` (1 = first): Retry-After if the server gave one, else backoff."""
    if retry_after is not None:
        return retry_after
    return min(cap, base * 2 ** max(retries - 1, 0))


def learn_interval(interval: float, *, limited: bool, successes_since_limit: int,
                   seconds_since_limit: float = 0.0, cycle: int = 0) -> float:
    """The next minimum interval between requests after one answer (429 = ``limited``).

    ``successes_since_limit`` and ``seconds_since_limit`` count from the previous 429 (or from the
    first request, before any); ``cycle`` is the number of successes the last estimate came from
    (0: none yet).
    """
    if not limited:
        return interval * creep(cycle)
    n = successes_since_limit
    if n >= MIN_SAMPLE and seconds_since_limit > 0:
        return max(seconds_since_limit / n * (1 - 1 / n), MIN_INTERVAL)
    return max(interval * FAR, MIN_INTERVAL)


def creep(cycle: int) -> float:
    """How much closer to pace after a success, given the successes the estimate came from."""
    if cycle < MIN_SAMPLE:
        return FAST_CREEP
    return min(1 - 0.5 / cycle ** 2, MAX_CREEP)
