"""Pure pieces of the sandbox: the token bucket (fake clock), the fault dice, knob validation."""

from __future__ import annotations

import pytest

from tzcrawl.sandbox import Knobs, TokenBucket
from tzcrawl.sandbox.app import cookie_from_header
from tzcrawl.sandbox.config import coerce_knobs
from tzcrawl.sandbox.faults import FaultDice, is_loopback

# The 2025 service these tests were written for (appSession over plain http, 2025 record shapes); today's
# default has tests of its own (test_sandbox_sessions.py, test_sandbox_records.py).
pytestmark = [pytest.mark.sandbox_session("appsession"), pytest.mark.sandbox_records("2025")]


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refuses_with_honest_retry_after():
    clock = FakeClock()
    bucket = TokenBucket(rate=0.5, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    # empty: one token needs 2 s at 0.5/s
    assert bucket.take() == 2
    clock.now += 1.0
    assert bucket.take() == 1  # half a token there, one more second needed
    clock.now += 1.0
    assert bucket.take() == 0
    assert bucket.take() == 2


def test_bucket_retry_after_rounds_up_and_is_at_least_one():
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=1, clock=clock)
    assert bucket.take() == 0
    assert bucket.take() == 1  # 0.1 s needed, but Retry-After is whole seconds, at least 1
    slow = TokenBucket(rate=0.3, burst=1, clock=clock)
    assert slow.take() == 0
    assert slow.take() == 4  # 3.33 s rounds up


def test_bucket_refills_only_up_to_burst_and_refusals_cost_nothing():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    clock.now += 3600
    assert [bucket.take() for _ in range(3)] == [0, 0, 1]
    for _ in range(5):
        assert bucket.take() == 1  # refused requests do not push the next token further away
    clock.now += 1.0
    assert bucket.take() == 0


def test_bucket_rejects_nonsense():
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, clock=FakeClock())
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0, clock=FakeClock())


def test_dice_are_off_by_default_and_follow_fractions():
    dice = FaultDice(seed=1)
    assert all(dice.roll(Knobs()) == dice.roll(Knobs()) for _ in range(50))
    assert dice.roll(Knobs()).status is None and not dice.roll(Knobs()).drop
    knobs = Knobs(error_rate=0.3, drop_rate=0.2, latency=0.5, latency_rate=0.5)
    rolls = [dice.roll(knobs) for _ in range(2000)]
    errors = [r.status for r in rolls if r.status]
    assert 450 < len(errors) < 750 and set(errors) == {500, 502, 503}
    assert 300 < sum(r.drop for r in rolls) < 500
    assert {r.delay for r in rolls} == {0.0, 0.5}
    always = FaultDice(seed=1).roll(Knobs(error_rate=1.0, drop_rate=1.0))
    assert always.drop and always.status


def test_dice_are_deterministic_per_seed():
    knobs = Knobs(error_rate=0.5)
    a, b, other = FaultDice(seed=3), FaultDice(seed=3), FaultDice(seed=4)
    runs = [[dice.roll(knobs).status for _ in range(100)] for dice in (a, b, other)]
    assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.1", False), ("192.168.1.2", False), ("::ffff:10.0.0.1", False), ("localhost", False), ("", False)],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_coerce_knobs_converts_and_refuses():
    assert coerce_knobs({"rate_limit": "2.5", "ts_ties": "true", "grow_every": "3"}) == {
        "rate_limit": 2.5, "ts_ties": True, "grow_every": 3}
    assert coerce_knobs({"rate_limit": None, "cookie_max_requests": None}) == {"rate_limit": None, "cookie_max_requests": None}
    for bad in ({"nope": 1}, {"error_rate": 1.5}, {"drop_rate": -0.1}, {"rate_limit": 0}, {"grow_every": 0},
                {"auth_failure": "teapot"}, {"ts_ties": "maybe"}, {"memory_page_size": None}, {"latency": "slow"}):
        with pytest.raises(ValueError):
            coerce_knobs(bad)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("appSession=abc", "abc"), ("theme=dark; appSession=a.b-c_d; x=1", "a.b-c_d"), ('appSession="q"', "q"),
     ("xappSession=no", None), ("", None), (None, None), ("appSession", None)],
)
def test_cookie_from_header(header, expected):
    assert cookie_from_header(header) == expected
