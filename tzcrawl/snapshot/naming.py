"""Snapshot folder names: ``codex-backup-YYYY-MM-DDTHH-MM-SS-mmmZ`` (UTC), as the original tool made them.

The name carries the time, so listing and retention work even for folders without a manifest
(those the old tool left behind).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

PREFIX = "codex-backup-"
TMP_PREFIX = ".tmp-" + PREFIX
_NAME_RE = re.compile(r"^codex-backup-(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})-(\d{3})Z$")


def snapshot_name(when: datetime) -> str:
    """Name for a snapshot taken at ``when`` (any timezone; written as UTC, milliseconds)."""
    when = when.astimezone(timezone.utc)
    return f"{PREFIX}{when:%Y-%m-%dT%H-%M-%S}-{when.microsecond // 1000:03d}Z"


def parse_snapshot_name(name: str) -> datetime | None:
    """The UTC time in a snapshot name, or None when ``name`` is not one."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups())
    try:
        return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=timezone.utc)
    except ValueError:
        return None


BUILD_MARKER = ".tzcrawl-snapshot-build"  # written first into every build folder: proof it is ours


def is_temp_name(name: str) -> bool:
    """A build directory of a snapshot in progress (or of one a crash interrupted)."""
    return name.startswith(TMP_PREFIX)
