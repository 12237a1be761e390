"""The manifest written last into every snapshot: what is in it, where it came from, how it was made.

Without a readable manifest of a known format a folder is not a snapshot of this tool, so ``list``
never calls it good and ``prune`` never deletes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import CODE_NAME, DB_LIST, DB_NAME, MANIFEST_NAME, TREE_LIST

PLAIN = "tzcrawl-snapshot/1"  # the database file and a code tarball in the folder
DEDUP = "tzcrawl-snapshot/2"  # lists of chunks in the folder, the chunks in DEST/.store
FORMAT = DEDUP
MEMBERS_OF = {PLAIN: (DB_NAME, CODE_NAME), DEDUP: (DB_LIST, TREE_LIST)}


class ManifestError(ValueError):
    pass


def members(manifest: dict) -> tuple[str, ...]:
    return MEMBERS_OF[manifest["format"]]


def is_dedup(manifest: dict | None) -> bool:
    return bool(manifest) and manifest.get("format") == DEDUP


def build_manifest(*, fmt: str = PLAIN, name: str, created_at: str, reason: str, tool_version: str, sources: dict,
                   files: dict, db: dict, code: dict, timings: dict, store: dict | None = None) -> dict:
    extra = {"store": store} if store is not None else {}
    return {
        "format": fmt,
        "name": name,
        "created_at": created_at,
        "reason": reason,
        "tool": {"name": "tzcrawl-snapshot", "version": tool_version},
        "sources": sources,
        "files": files,
        "db": db,
        "code": code,
        **extra,
        "timings": timings,
    }


def parse_manifest(text: str) -> dict:
    """Validate the shape we rely on; raise ManifestError saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"manifest is not JSON ({exc})") from None
    except RecursionError:
        raise ManifestError("manifest is not JSON this tool wrote (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") not in MEMBERS_OF:
        raise ManifestError(f"manifest format is not {PLAIN} or {DEDUP}")
    files = data.get("files")
    if not isinstance(files, dict):
        raise ManifestError("manifest has no files table")
    for member in MEMBERS_OF[data["format"]]:
        info = files.get(member)
        if not (isinstance(info, dict) and isinstance(info.get("size"), int)
                and isinstance(info.get("sha256"), str) and len(info["sha256"]) == 64):
            raise ManifestError(f"manifest lacks size/sha256 for {member}")
    return data


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError("no manifest") from None
    except OSError as exc:
        raise ManifestError(f"manifest unreadable ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path} is not UTF-8 text (byte {exc.start})") from None
    return parse_manifest(text)


def quick_problems(folder: str | os.PathLike, manifest: dict) -> list[str]:
    """Cheap checks (presence, sizes); full verification also hashes and reads everything."""
    problems = []
    for member in members(manifest):
        path = Path(folder) / member
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{member} missing")
            continue
        want = manifest["files"][member]["size"]
        if size != want:
            problems.append(f"{member} is {size} bytes, manifest says {want}")
    return problems


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=False) + "\n"
