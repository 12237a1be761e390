"""One timeline for every timestamp spelling the service uses, and the total order of records.

Memories carry ``created_at``, messages ``ts``: Unix floats, numeric strings, milliseconds, ISO 8601
with ``Z``, an offset or none (naive means UTC). A value we cannot read must never crash a backup
or lose a record: it sorts first, and ties are broken by id so the order is total and repeatable.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from tzcrawl.registry import first_present

# Seconds since 1970 pass 1e11 only in the year 5138; a number that large is milliseconds.
MILLISECONDS_ABOVE = 1e11

# (has_timestamp, seconds, id): records without a readable timestamp (0, 0.0, id) come first.
SortKey = tuple[int, float, str]


def to_epoch(value) -> float | None:
    """Seconds since the epoch (UTC) for ``value``, or None when it is not a readable timestamp."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return _from_number(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return _from_number(float(text))
        except ValueError:
            pass
        return _from_iso(text)
    return None


def _from_number(number: float) -> float | None:
    try:
        seconds = float(number)
    except OverflowError:
        return None
    if not math.isfinite(seconds):
        return None
    if abs(seconds) > MILLISECONDS_ABOVE:
        seconds /= 1000.0
    return seconds


def _from_iso(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def id_text(record, id_field: str = "id") -> str:
    """The record's id as a string ("" when it has none), the tie-breaker of the sort."""
    if not isinstance(record, dict):
        return ""
    value = record.get(id_field)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def sort_key(record, field, id_field: str = "id") -> SortKey:
    """Where ``record`` goes on the timeline of ``field``: a top-level key (``ts``) or the registry's
    paths (``Resource.when``: ``metadata.created_at``, then ``created_at``)."""
    seconds = to_epoch(first_present(record, field)) if isinstance(record, dict) else None
    if seconds is None:
        return (0, 0.0, id_text(record, id_field))
    return (1, seconds, id_text(record, id_field))
