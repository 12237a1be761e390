"""How long to wait: pure policies for retries and for learning a service's rate limit.

Scrapy retries a 429 ~0.2 s later and AutoThrottle reacts to latency, not to 429s. These two
functions fill the gap: ``retry_wait`` honours Retry-After (else exponential backoff), and
``learn_interval`` settles just above the server's limit. A 429 means the server's token bucket is
empty; between two 429s it went from empty to empty, so what got through is what it refilled:
``successes / seconds`` estimates its rate. Pace 5 % slower than that, creep closer on each success,
and 429s stay rare while the achieved rate stays near the limit.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 600.0   # a hostile or broken Retry-After cannot park the crawl for hours
MIN_INTERVAL = 0.05       # after any 429: at most 20 requests/s
MARGIN = 1.05             # pace this much slower than the estimated limit
MIN_SAMPLE = 5            # successes between two 429s needed for an estimate
CREEP = 0.9995            # per success: ~100 requests to close the 5 % margin
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
                   seconds_since_limit: float = 0.0) -> float:
    """The next minimum interval between requests after one answer (429 = ``limited``).

    ``successes_since_limit`` and ``seconds_since_limit`` count from the previous 429 (or from the
    first request, before any).
    """
    if not limited:
        return interval * CREEP
    if successes_since_limit >= MIN_SAMPLE and seconds_since_limit > 0:
        return max(MARGIN * seconds_since_limit / successes_since_limit, MIN_INTERVAL)
    return max(interval * FAR, MIN_INTERVAL)
