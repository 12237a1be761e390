"""``.backup-metadata.json``: what was saved, when, and what the next incremental run starts from.

The updates are pure (dict in, dict out) so the rules are easy to test: a failed run records the
failure but never erases the figures of the last good sync, because the data file still holds them.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import tzcrawl
from tzcrawl import jsonio
from tzcrawl.fsutil import atomic_write_text

METADATA_NAME = ".backup-metadata.json"
FORMAT = 1
ERROR_MAX_CHARS = 2000

logger = logging.getLogger(__name__)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def load(path: Path) -> dict:
    """The metadata in ``path``; ``{}`` when missing or unreadable (the next run is then a full one)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable backup metadata %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def save(path: Path, metadata: dict) -> None:
    # readable(): a lone surrogate in a name (valid JSON from the API, not UTF-8) stays an escape
    atomic_write_text(path, jsonio.readable(metadata, indent=2, sort_keys=True) + "\n")


def personality_block(personality: dict, dir_name: str, previous: dict | None = None) -> dict:
    """Who the backup is of; ``owned`` (and, for someone else's, ``owner`` when the profile names one) as
    this run learnt it, else as recorded before (a run naming the personality does not know)."""
    block = {
        "id": personality.get("id"),
        "username": personality.get("username"),
        "name": personality.get("name"),
        "dir_name": dir_name,
    }
    earlier = previous if isinstance(previous, dict) else {}
    owned = personality["owned"] if isinstance(personality.get("owned"), bool) else earlier.get("owned")
    if isinstance(owned, bool):
        block["owned"] = owned
    owner = personality.get("owner") or earlier.get("owner")
    if owned is False and owner:
        block["owner"] = owner
    return block


def _base(metadata: dict, personality: dict, dir_name: str) -> dict:
    updated = copy.deepcopy(metadata)
    updated["format"] = FORMAT
    updated["tool"] = "tzcrawl"
    updated["tool_version"] = tzcrawl.__version__
    updated["personality"] = personality_block(personality, dir_name, metadata.get("personality"))
    updated.setdefault("resources", {})
    return updated


def record_success(
    metadata: dict, personality: dict, dir_name: str, resource: str, figures: dict, requests: int, now: datetime
) -> dict:
    """Metadata after ``resource`` was saved completely; ``figures`` are total/new/newest_... ."""
    updated = _base(metadata, personality, dir_name)
    previous = updated["resources"].get(resource, {})
    # a failure's record, and what only a full read can say, outlive later incremental runs
    entry = {k: previous[k] for k in ("last_error", "last_error_at", "last_full_read", "deleted_upstream")
             if k in previous}
    entry.update(figures)
    entry.update(outcome="complete", last_sync=iso(now), last_attempt=iso(now), requests=requests)
    updated["resources"][resource] = entry
    updated["last_backup"] = iso(now)
    return updated


def record_failure(
    metadata: dict, personality: dict, dir_name: str, resource: str, error: str, requests: int, now: datetime
) -> dict:
    """Metadata after ``resource`` failed: the last good figures stay, the failure is added."""
    updated = _base(metadata, personality, dir_name)
    entry = dict(updated["resources"].get(resource, {}))
    text = str(error)[:ERROR_MAX_CHARS]
    entry.update(
        outcome="failed",
        error=text,
        last_error=text,
        last_error_at=iso(now),
        last_attempt=iso(now),
        last_attempt_requests=requests,
    )
    updated["resources"][resource] = entry
    return updated


def record_not_theirs(
    metadata: dict, personality: dict, dir_name: str, resource: str, reason: str, requests: int, now: datetime
) -> dict:
    """Metadata after the service refused ``resource`` because the personality is someone else's: not a
    failure; figures of an earlier save (when it was the user's to read) stay with their file."""
    updated = _base(metadata, personality, dir_name)
    entry = {k: v for k, v in updated["resources"].get(resource, {}).items() if k not in ("error",)}
    entry.update(outcome="not_theirs", reason=str(reason)[:ERROR_MAX_CHARS], last_attempt=iso(now),
                 last_attempt_requests=requests)
    updated["resources"][resource] = entry
    return updated


def record_media_listed(metadata: dict, personality: dict, dir_name: str, resource: str, now: datetime) -> dict:
    """Metadata after the media manifest was found to list every media URL of the saved ``resource``
    (read back by a run with media): it is not read back again until a run without media changes it."""
    updated = _base(metadata, personality, dir_name)
    entry = updated["resources"].get(resource)
    if isinstance(entry, dict):
        entry["media_listed"] = True
    return updated


def record_shortfall(
    metadata: dict, personality: dict, dir_name: str, resource: str, missing: int, service_total: int, now: datetime
) -> dict:
    """Metadata after a saved ``resource`` turned out to lack ``missing`` records the service counts:
    the resource is incomplete, and ``shortfall`` makes the next run read it in full."""
    updated = _base(metadata, personality, dir_name)
    entry = updated["resources"].setdefault(resource, {})
    text = f"{missing} records on the service are not in the backup (the service counts {service_total})"
    entry.update(outcome="failed", error=text, last_error=text, last_error_at=iso(now), shortfall=missing,
                 service_total=service_total)
    return updated
