"""Pure fault policies: the rate limiter and the seeded dice for 5xx, drops and latency.

They take a clock or an RNG so tests drive them without sleeping.
"""

from __future__ import annotations

import ipaddress
import math
import random
import threading
from dataclasses import dataclass
from typing import Callable

from .config import ERROR_CODES, Knobs


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; one request takes one token.

    ``take()`` returns 0 when the request may go, else the honest ``Retry-After``: the whole
    number of seconds (at least 1) after which a token will be available.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0
            wait = (1.0 - self._tokens) / self.rate
            return max(1, math.ceil(wait - 1e-9))


@dataclass(frozen=True)
class Fault:
    """What to do to one request before (or instead of) answering it."""

    delay: float = 0.0
    drop: bool = False
    status: int | None = None  # a 5xx to answer instead of the real thing


class FaultDice:
    """Seeded dice deciding drops, 5xx answers and latency from the current knobs."""

    def __init__(self, seed: int):
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()

    def roll(self, knobs: Knobs) -> Fault:
        with self._lock:
            slow = knobs.latency > 0 and self._rng.random() < knobs.latency_rate
            drop = knobs.drop_rate > 0 and self._rng.random() < knobs.drop_rate
            error = knobs.error_rate > 0 and self._rng.random() < knobs.error_rate
            status = self._rng.choice(ERROR_CODES) if error else None
        return Fault(delay=knobs.latency if slow else 0.0, drop=drop, status=status)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; the control surface trusts nobody else."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
