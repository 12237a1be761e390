"""A local imitation of the personality service's internal API, for tests, the demo and benchmarks.

    from tzcrawl.sandbox import Sandbox, SandboxConfig
    with Sandbox(SandboxConfig(seed=7, personalities=3), port=0) as sb:
        sb.base_url, sb.cookie, sb.totals(), sb.set_knobs(rate_limit=5.0)
"""

from .config import KNOB_NAMES, Knobs, SandboxConfig
from .data import UNSAFE_USERNAMES
from .faults import TokenBucket
from .server import Sandbox

__all__ = ["KNOB_NAMES", "Knobs", "Sandbox", "SandboxConfig", "TokenBucket", "UNSAFE_USERNAMES"]
