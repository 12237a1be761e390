"""Which snapshots to keep: a pure policy in the style of borg's prune, one reason per snapshot.

A snapshot is kept when any rule keeps it (``--keep-last N`` or ``--max-age``), and the newest
good snapshot is kept whatever the rules say. Only what the policy can classify is ever deleted:
folders without a manifest are kept and reported, build folders of interrupted snapshots are removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

GOOD = "good"  # manifest present, files as the manifest says
BAD = "bad"  # manifest present, files missing, truncated or failing verification
LEGACY = "legacy"  # snapshot-named folder without a manifest (old tool, or damaged): never deleted
INCOMPLETE = "incomplete"  # build folder of a snapshot that never finished


@dataclass(frozen=True)
class Entry:
    name: str
    time: datetime
    status: str
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    name: str
    keep: bool
    reason: str


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_duration(text: str) -> timedelta:
    """``"7d"``, ``"12h"``, ``"1d12h"``, ``"2w"``, ``"90m"``, ``"30s"``; a unit is required."""
    s = str(text).strip().lower()
    pos, total = 0, 0
    for m in _DURATION_RE.finditer(s):
        if s[pos:m.start()].strip():
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos == 0 or s[pos:].strip():
        raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 12h, 1d12h, 90m)")
    return timedelta(seconds=total)


def parse_size(text: str | int) -> int:
    """``"50KB"`` → 51200 (K/M/G are powers of 1024, as the original watcher's KB were)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 50KB, 2MB, 51200)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_age(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs < 0:
        return "in the future"
    d, rest = divmod(secs, 86400)
    h, rest = divmod(rest, 3600)
    m = rest // 60
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    return f"{m}m{rest % 60}s"


def format_duration(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    for unit, size in (("d", _UNITS["d"]), ("h", 3600), ("m", 60)):
        if secs and secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def plan_prune(entries: list[Entry], now: datetime, keep_last: int | None,
               max_age: timedelta | None) -> list[Decision]:
    """One decision per entry, newest first. Raises ValueError when no rule is given."""
    if keep_last is None and max_age is None:
        raise ValueError("give --keep-last and/or --max-age; pruning with no rule would delete everything")
    if keep_last is not None and keep_last < 0:
        raise ValueError("--keep-last must be 0 or more")
    ordered = sorted(entries, key=lambda e: (e.time, e.name), reverse=True)
    age_text = format_duration(max_age) if max_age is not None else ""
    good_seen = 0
    decisions = []
    for e in ordered:
        age = now - e.time
        within = max_age is not None and age <= max_age
        if e.status == INCOMPLETE:
            decisions.append(Decision(e.name, False, "unfinished build folder of an interrupted snapshot"))
        elif e.status == LEGACY:
            decisions.append(Decision(e.name, True, f"not classified ({e.detail or 'no manifest'}): left alone, "
                                                    "delete it by hand if unwanted"))
        elif e.status == BAD:
            why = f"bad ({e.detail})" if e.detail else "bad"
            if max_age is not None and not within:
                decisions.append(Decision(e.name, False, f"{why}, older than max-age {age_text} "
                                                         f"(age {format_age(age)})"))
            else:
                decisions.append(Decision(e.name, True, f"{why}, not counted; kept until older than max-age"
                                                        + (f" {age_text}" if age_text else " (none given)")))
        else:
            good_seen += 1
            if good_seen == 1:
                decisions.append(Decision(e.name, True, "newest good snapshot (always kept)"))
            elif keep_last is not None and good_seen <= keep_last:
                decisions.append(Decision(e.name, True, f"keep-last {keep_last}: #{good_seen}"))
            elif within:
                decisions.append(Decision(e.name, True, f"within max-age {age_text} (age {format_age(age)})"))
            else:
                parts = []
                if keep_last is not None:
                    parts.append(f"beyond the last {keep_last} good")
                if max_age is not None:
                    parts.append(f"older than max-age {age_text} (age {format_age(age)})")
                decisions.append(Decision(e.name, False, " and ".join(parts)))
    return decisions
