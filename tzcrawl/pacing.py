"""How long to wait: pure policies for retries and for learning a service's rate limit.

Scrapy retries a 429 ~0.2 s later and AutoThrottle reacts to latency, not to 429s. These two
functions fill the gap: ``retry_wait`` honours Retry-After (else exponential backoff), and
``learn_interval`` is an AIMD rule that settles just above the server's limit: back off on a 429,
creep closer on each success, so 429s stay rare while the achieved rate stays near the limit.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 600.0   # a hostile or broken Retry-After cannot park the crawl for hours
MIN_INTERVAL = 0.05       # the first 429 means at most 20 requests/s
CREEP = 0.9995            # per success: ~190 requests to close a 10 % gap
NEAR = 1.10               # back-off when the limit was already close (many successes since the last 429)
FAR = 1.5                 # back-off while still searching for the limit


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


def learn_interval(interval: float, *, limited: bool, successes_since_limit: int) -> float:
    """The next minimum interval between requests after one answer (429 = ``limited``)."""
    if limited:
        factor = NEAR if successes_since_limit >= 20 else FAR
        return max(interval * factor, MIN_INTERVAL)
    return interval * CREEP
