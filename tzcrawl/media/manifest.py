"""The media manifest ``<name>/<name>_media.json``: one entry per URL, and the pure decisions on it.

An entry is ``{"url", "path", "sha256", "size", "content_type", "status", "first_seen", "source"}``
(plus ``error`` when not ``ok``). ``status`` is ``ok`` (the file is in ``media/``), ``gone`` (the
service answered 404/410: retried only by a full run), ``refused`` (its host is not a public address:
``refused_under`` records BACKUP_MEDIA_PRIVATE_HOSTS then, and it is tried again only once that
changes) or ``failed`` (anything else, retried every run). A URL is entered as ``failed`` ("not downloaded yet") as soon as a saved record refers to it, so
a run killed before its downloads finished leaves a manifest the next run completes; an entry only
says ``ok`` after its file was written whole.
"""

from __future__ import annotations

from pathlib import Path

from tzcrawl import jsonio
from tzcrawl.fsutil import atomic_write_bytes, sha256_file
from tzcrawl.store.backup import MEDIA_DIR

OK, GONE, FAILED, REFUSED = "ok", "gone", "failed", "refused"
NOT_YET = "not downloaded yet"


def load(path: Path) -> dict[str, dict]:
    """The manifest's entries by URL; empty when there is none yet. A damaged one raises ValueError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    entries = jsonio.loads(data)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("url"), str)
                                                for e in entries):
        raise ValueError(f"{path} is not a media manifest (a JSON array of entries with a url)")
    return {e["url"]: e for e in entries}


def dumps(entries: dict[str, dict]) -> bytes:
    """The manifest file's bytes: an array in a stable order (first seen, then URL), one entry a line."""
    ordered = sorted(entries.values(), key=lambda e: (str(e.get("first_seen", "")), e["url"]))
    if not ordered:
        return b"[]\n"
    return b"[\n" + b",\n".join(jsonio.dumps_bytes(e) for e in ordered) + b"\n]\n"


def save(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def note(entries: dict[str, dict], url: str, resource: str, source_id: str | None, now: str) -> dict:
    """The entry for ``url``, created (``failed``: not downloaded yet) when first referred to."""
    entry = entries.get(url)
    if entry is None:
        entry = entries[url] = {"url": url, "path": None, "sha256": None, "size": None, "content_type": None,
                                "status": FAILED, "error": NOT_YET, "first_seen": now,
                                "source": {"resource": resource, "id": source_id}}
    return entry


def wanted(entry: dict, *, full: bool, file_ok: bool, allowed: str = "") -> bool:
    """Fetch this URL now? ``ok`` only when its file is missing or damaged; ``gone`` only on a full run;
    ``refused`` only when the allowed private hosts (``allowed``) are not those it was refused under."""
    status = entry.get("status")
    if status == OK:
        return not file_ok
    if status == GONE:
        return full
    if status == REFUSED:
        return entry.get("refused_under", "") != allowed
    return True


def file_ok(directory: Path, entry: dict) -> bool:
    """The entry's file is in ``directory`` with the recorded size and sha256 (read whole, in chunks)."""
    relative = entry.get("path")
    prefix = MEDIA_DIR + "/"
    if not isinstance(relative, str) or not relative.startswith(prefix) or "/" in relative[len(prefix):] \
            or relative in (prefix, prefix + ".", prefix + ".."):
        return False
    path = directory / relative
    try:
        if path.stat().st_size != entry.get("size"):
            return False
        return sha256_file(path) == entry.get("sha256")
    except OSError:
        return False


def counts(entries: dict[str, dict]) -> dict[str, int]:
    """How many entries are ok (held), gone, refused and failed."""
    out = {"held": 0, GONE: 0, REFUSED: 0, FAILED: 0}
    for entry in entries.values():
        status = entry.get("status")
        out["held" if status == OK else status if status in (GONE, REFUSED) else FAILED] += 1
    return out


def resolved(entry: dict, result: dict) -> None:
    """Record a download (or check) result on the entry: ``result`` has status and, when ok, the file."""
    status = result["status"]
    entry["status"] = status
    if status == OK:
        entry.update(path=result["path"], sha256=result["sha256"], size=result["size"],
                     content_type=result.get("content_type"))
        entry.pop("error", None)
    else:
        entry["error"] = result.get("error") or status
    if status == REFUSED:
        entry["refused_under"] = result.get("refused_under", "")
    else:
        entry.pop("refused_under", None)


__all__ = ["OK", "GONE", "FAILED", "REFUSED", "NOT_YET", "load", "dumps", "save", "note", "wanted", "file_ok", "counts",
           "resolved"]
