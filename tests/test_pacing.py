"""Retry-After parsing, retry waits and the learned request interval (tzcrawl.pacing, pure)."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from tzcrawl.pacing import (FAR, FAST_CREEP, MAX_CREEP, MAX_RETRY_AFTER, MIN_INTERVAL, MIN_SAMPLE, creep,
                            learn_interval, parse_retry_after, retry_wait)

NOW = datetime(2024, 7, 24, 12, 0, 0, tzinfo=timezone.utc)


# -- parse_retry_after ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("120", 120.0),
    (" 7 ", 7.0),
    (b"3", 3.0),
    ("1.5", 1.5),
    ("0", 0.0),
])
def test_retry_after_seconds(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_http_date():
    assert parse_retry_after("Wed, 24 Jul 2024 12:00:30 GMT", now=NOW) == 30.0
    assert parse_retry_after(b"Wed, 24 Jul 2024 12:05:00 GMT", now=NOW) == 300.0


def test_retry_after_http_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 24 Jul 2024 11:59:00 GMT", now=NOW) == 0.0


def test_retry_after_http_date_far_ahead_is_capped():
    assert parse_retry_after("Thu, 25 Jul 2024 12:00:00 GMT", now=NOW) == MAX_RETRY_AFTER


def test_retry_after_http_date_uses_the_real_clock_without_now():
    soon = datetime.now(timezone.utc) + timedelta(seconds=100)
    value = soon.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 90.0 <= parse_retry_after(value) <= 100.0


@pytest.mark.parametrize("value", [None, "", "soon", "later please", "12 seconds", "Wed, 99 Foo 2024", b"\xff\xfe"])
def test_retry_after_garbage_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_retry_after_nan_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["-5", "-0.1", "-inf"])
def test_retry_after_negative_is_zero(value):
    assert parse_retry_after(value, now=NOW) == 0.0


@pytest.mark.parametrize("value", ["601", "86400", "1e300", "inf"])
def test_retry_after_huge_is_capped(value):
    assert parse_retry_after(value, now=NOW) == MAX_RETRY_AFTER == 600.0


# -- retry_wait -------------------------------------------------------------------------------------

def test_retry_wait_prefers_retry_after():
    assert retry_wait(42.0, 1, base=1.0, cap=10.0) == 42.0
    assert retry_wait(0.0, 5, base=1.0, cap=10.0) == 0.0  # "retry now" is an answer, not absence


def test_retry_wait_exponential_backoff_capped():
    waits = [retry_wait(None, n, base=0.5, cap=6.0) for n in range(1, 7)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]


def test_retry_wait_zeroth_retry_is_base():
    assert retry_wait(None, 0, base=2.0, cap=60.0) == 2.0


# -- learn_interval ---------------------------------------------------------------------------------

def test_first_429_with_nothing_to_estimate_from_sets_the_minimum_interval():
    assert learn_interval(0.0, limited=True, successes_since_limit=0) == MIN_INTERVAL == 0.05
    assert learn_interval(0.0, limited=True, successes_since_limit=MIN_SAMPLE - 1, seconds_since_limit=9) == 0.05


def test_429_after_few_successes_backs_off_far():
    assert learn_interval(0.2, limited=True, successes_since_limit=0) == pytest.approx(0.2 * FAR) == 0.4
    assert learn_interval(0.2, limited=True, successes_since_limit=4, seconds_since_limit=10) == pytest.approx(0.4)


def test_429_estimates_the_servers_rate_from_what_got_through_since_the_last():
    # 50 successes in 10 s between two 429s: the bucket refills 5/s, one token coarse: aim at the
    # low end of the estimate (it can only err slow).
    assert learn_interval(0.01, limited=True, successes_since_limit=50, seconds_since_limit=10) == \
        pytest.approx(0.2 * (1 - 1 / 50)) == pytest.approx(0.196)
    # The estimate replaces the old interval in both directions (never below the floor).
    assert learn_interval(5.0, limited=True, successes_since_limit=100, seconds_since_limit=10) == pytest.approx(0.099)
    assert learn_interval(0.2, limited=True, successes_since_limit=10_000, seconds_since_limit=1) == MIN_INTERVAL


def test_success_creeps_closer_the_slower_the_less_sure_the_estimate():
    assert learn_interval(0.2, limited=False, successes_since_limit=3, cycle=50) == pytest.approx(0.2 * (1 - 0.5 / 2500))
    assert learn_interval(0.2, limited=False, successes_since_limit=3, cycle=10_000) == pytest.approx(0.2 * MAX_CREEP)
    # before any cycle was measured (the first 429 follows a slow start): fast
    assert learn_interval(0.2, limited=False, successes_since_limit=3, cycle=0) == pytest.approx(0.2 * FAST_CREEP)
    assert creep(0) == FAST_CREEP and creep(10) > FAST_CREEP and creep(100) > creep(10)
    assert learn_interval(0.0, limited=False, successes_since_limit=0) == 0.0


class TokenBucket:
    """A server's rate limit on a fake clock: ``rate`` tokens/s, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def simulate(requests: int, rate: float = 5.0, burst: float = 5.0, retry_after: float = 1.0,
             jitter: float = 0.1, seed: int = 0, slow_start: float = 1.0):
    """Drive requests the way the crawl does: AutoThrottle's delay starting at ``slow_start`` and
    halving on each answer, raised to the learned interval (Scrapy's jitter around it, a few ms of
    overhead), waiting Retry-After after each 429, learning as AdaptivePacingMiddleware."""
    rnd = random.Random(seed)
    bucket, now, interval, successes, ok, limited = TokenBucket(rate, burst), 0.0, 0.0, 0, 0, 0
    since, throttle, cycle = 0.0, slow_start, 0
    for _ in range(requests):
        was_limited = not bucket.take(now)
        if was_limited or interval:
            interval = learn_interval(interval, limited=was_limited, successes_since_limit=successes,
                                      seconds_since_limit=now - since, cycle=cycle)
        limited += was_limited
        ok += not was_limited
        if was_limited:
            cycle = successes if successes >= MIN_SAMPLE else 0
            successes, since = 0, now
        else:
            successes += 1
            throttle /= 2  # AutoThrottle lowers its delay towards the (tiny) latency on a 200
        delay = max(interval, throttle)
        now += max(delay * rnd.uniform(1 - jitter, 1 + jitter), 0.003) + (retry_after if was_limited else 0)
    return ok, now, limited / requests, interval


@pytest.mark.parametrize("slow_start", [0.0, 1.0], ids=["flat-out start", "AutoThrottle's 1 s start"])
@pytest.mark.parametrize("requests", [466, 2000])
def test_learned_interval_settles_near_a_token_bucket_limit(requests, slow_start):
    ok, elapsed, limited_share, interval = simulate(requests, slow_start=slow_start)
    share = (ok - 5) / 5.0 / elapsed  # of the limit: the burst of 5 is free
    print(f"pacing simulation: {share:.3f} of the limit, {limited_share:.2%} answered 429, "
          f"final interval {interval * 1000:.1f} ms")
    assert share >= 0.95, f"{share:.3f} of a 5/s limit"
    assert limited_share <= 0.01, f"{limited_share:.2%} of requests answered 429"
    assert ok <= 5.0 + 5.0 * elapsed  # sanity: the simulated bucket cannot be beaten
    assert not math.isnan(interval) and interval >= 0.18
