"""The sandbox serving a backup as the service: ``scrapy sandbox --from-backup DIR``.

Once the service is gone, a tool written against it (a bot, a migration script) can still run, and a
backup can be proven complete: a crawl of a backup served this way gives back the same files. Every
endpoint the crawler uses answers from the backup, read-only: the current user, the list, profiles
and documents exactly as saved, memories newest first with the service's paging, the chat history
newest first before ``before_ts``. A collection is never loaded whole: an index of each record's byte
offset and time (``SavedCollection``) is built once, and a page reads only its own lines. The saved
media files are served by the sandbox's file host under their original URLs' paths. A personality
the backup records as someone else's (``owned: false``) is served as the service serves it to a user
who is not its owner: in the ``recent`` list only, its owner-only resources refused.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from tzcrawl import registry
from tzcrawl.media import manifest
from tzcrawl.store import BackupView
from tzcrawl.store.jsonarray import read_array
from tzcrawl.verify import backed_up


class SavedCollection:
    """A saved collection, oldest first on disk, served by position: ``times`` and byte offsets only."""

    def __init__(self, path: Path, time_field: str | None):
        """``time_field``: the field ``before_ts`` is compared with (messages: ``ts``); None: not needed."""
        self.path = path
        self.offsets, self.lengths, self.times = array("q"), array("q"), []
        self._lines: list[bytes] | None = None  # a file not one record a line (hand-made) is held whole
        self.time_field = time_field
        if not path.exists():
            return
        with open(path, "rb") as fh:
            offset = 0
            for raw in fh:
                line = raw.rstrip(b"\r\n")
                body = line[:-1] if line.endswith(b",") else line
                if body.startswith(b"{"):
                    self.offsets.append(offset)
                    self.lengths.append(len(body))
                    self.times.append(_time(orjson.loads(body), time_field) if time_field else 0.0)
                elif body not in (b"[", b"]", b""):
                    self._whole()
                    return
                offset += len(raw)

    def _whole(self) -> None:
        self._lines = [line for line, _value in read_array(self.path)]
        self.times = [_time(orjson.loads(line), self.time_field) if self.time_field else 0.0 for line in self._lines]

    def __len__(self) -> int:
        return len(self.times)

    def newest_first(self, hi: int, lo: int) -> list[dict]:
        """Records ``lo`` .. ``hi - 1`` (oldest-first positions), newest first."""
        if self._lines is not None:
            return [orjson.loads(line) for line in reversed(self._lines[lo:hi])]
        out = []
        with open(self.path, "rb") as fh:
            for i in range(hi - 1, lo - 1, -1):
                fh.seek(self.offsets[i])
                out.append(orjson.loads(fh.read(self.lengths[i])))
        return out


def _time(record: Any, field: str) -> float:
    """The record's ``field`` as the service compares it (a number), 0 when it has none."""
    try:
        return float(record.get(field)) if isinstance(record, dict) else 0.0
    except (TypeError, ValueError):
        return 0.0


class SavedPersonality:
    """One backed-up personality, as the world of the sandbox serves it."""

    def __init__(self, view: BackupView, username: str, index: int):
        self.view, self.username, self.index = view, username, index
        self.profile = view.read_document(username, "profile") or {}
        metadata = view.metadata(username).get("personality", {})
        self.id = str(self.profile.get("id") or metadata.get("id") or username)
        self.name = self.profile.get("name") or metadata.get("name") or username
        self.owned = metadata.get("owned") is not False
        self.pagination = None
        self.memories = SavedCollection(view.path(username, "memories"), None)  # paged by position
        self.messages = SavedCollection(view.path(username, "messages"), "ts")

    @property
    def user(self) -> Any:
        return self.view.read_document(self.username, "user_data") or {}

    def document(self, resource: str) -> Any:
        saved = self.view.read_document(self.username, resource)
        return saved if saved is not None else []


class BackupWorld:
    """What ``App`` asks its world, answered from a backup (``World``'s reading half, read-only)."""

    def __init__(self, root: str | Path):
        self.view = BackupView(root)
        if not self.view.root.is_dir():
            raise FileNotFoundError(f"no backup at {self.view.root}")
        self.lock = threading.RLock()
        self.personalities = [SavedPersonality(self.view, name, i) for i, name in enumerate(backed_up(self.view))]
        self.owner_id = "backup-" + hashlib.sha1(str(self.view.root).encode()).hexdigest()[:12]
        self.files_base = ""
        self.media = self._media_files()
        # knobs the app sets on a generated world; a saved one ignores them
        self.iso_share = 0.0
        self.hostile_media = self.hostile_text = self.drift = False
        self.extra_media: list[str] = []

    def _media_files(self) -> dict[str, tuple[Path, str | None]]:
        """Each saved media file by its original URL's path: (file, content type)."""
        out = {}
        for p in self.personalities:
            try:
                entries = manifest.load(self.view.media_manifest_path(p.username))
            except (OSError, ValueError):
                continue
            directory = self.view.directory(p.username)
            for url, entry in entries.items():
                if entry.get("status") == manifest.OK and manifest.file_ok(directory, entry):
                    out.setdefault(urlsplit(url).path, (directory / entry["path"], entry.get("content_type")))
        return out

    def media_origins(self) -> set[str]:
        """The origins (scheme://host:port) the saved media URLs point at."""
        origins = set()
        for p in self.personalities:
            try:
                for url in manifest.load(self.view.media_manifest_path(p.username)):
                    parts = urlsplit(url)
                    origins.add(f"{parts.scheme}://{parts.netloc}")
            except (OSError, ValueError):
                continue
        return origins

    # -- what App asks --------------------------------------------------------------------------
    def set_ties(self, on: bool) -> None:
        pass

    def set_unsafe_usernames(self, on: bool) -> None:
        pass

    @property
    def everyone(self) -> list[SavedPersonality]:
        return self.personalities

    def owns(self, p: SavedPersonality) -> bool:
        return p.owned

    def by_id(self, pid: str) -> SavedPersonality | None:
        return next((p for p in self.personalities if p.id == pid), None)

    def by_username(self, username: str) -> SavedPersonality | None:
        return next((p for p in self.personalities if p.username == username), None)

    def find(self, key: Any) -> SavedPersonality | None:
        if isinstance(key, int) and not isinstance(key, bool):
            return self.personalities[key] if 0 <= key < len(self.personalities) else None
        return self.by_id(str(key)) or self.by_username(str(key))

    def list_entry(self, p: SavedPersonality) -> dict:
        return {"id": p.id, "name": p.name, "username": p.username, "avatar_url": p.profile.get("avatar_url"),
                "created_at": p.profile.get("created_at"), "x_badges": ["owner"] if p.owned else []}

    def listing(self, category: str | None) -> list[dict]:
        """``self``: the personalities the backup holds as the user's own; ``recent``: every one of them,
        the user's own first (a crawl of either list, or both, gives back what it saved)."""
        if category in (None, "", "self"):
            return [self.list_entry(p) for p in self.personalities if p.owned]
        if category == "recent":
            return [self.list_entry(p) for p in sorted(self.personalities, key=lambda p: not p.owned)]
        return []

    def profile(self, p: SavedPersonality) -> Any:
        return p.profile

    def memory_page(self, p: SavedPersonality, page: int, per_page: int, style: str) -> dict:
        per_page = min(per_page, 20)  # today's service: 20 a page whatever limit asks
        total = len(p.memories)
        hi = max(0, total - (page - 1) * per_page)
        pages = -(-total // per_page)
        return {"items": p.memories.newest_first(hi, max(0, hi - per_page)),
                "pagination": {"page": page, "total_pages": pages, "has_next": page < pages}}

    def chat_history(self, p: SavedPersonality, before_ts: float | None, limit: int) -> list[dict]:
        times = p.messages.times
        hi = len(times) if before_ts is None else bisect.bisect_left(times, before_ts)
        return p.messages.newest_first(hi, max(0, hi - limit))

    def knowledge(self, p: SavedPersonality) -> Any:
        return p.document("knowledge")

    def training(self, p: SavedPersonality) -> Any:
        return p.document("training")

    def totals(self) -> dict:
        rows = [{"id": p.id, "username": p.username, "name": p.name, "memories": len(p.memories),
                 "messages": len(p.messages)} for p in self.personalities]
        return {"personalities": rows, "sum": {"personalities": len(rows), "memories": sum(r["memories"] for r in rows),
                                               "messages": sum(r["messages"] for r in rows)}}

    def export(self, p: SavedPersonality) -> dict:
        return {"profile": p.profile, "memories": p.memories.newest_first(len(p.memories), 0),
                "messages": p.messages.newest_first(len(p.messages), 0), "knowledge": p.document("knowledge"),
                "training": p.document("training"), "user": p.user}

    def _read_only(self, *args, **kwargs):
        raise ValueError("a backup served as the service is read-only")

    add = grow = delete_memories = _read_only


def first_difference(a: Path, b: Path) -> str | None:
    """None when the files hold the same bytes; else where they first differ (a record is a line).
    Read a line at a time: a 150 MB history is never held whole."""
    if a.stat().st_size == b.stat().st_size and _same_bytes(a, b):
        return None
    with open(a, "rb") as left, open(b, "rb") as right:
        for n, (x, y) in enumerate(zip(left, right), 1):
            if x != y:
                return f"{a.name} line {n}: {x.rstrip()[:160]!r} != {y.rstrip()[:160]!r}"
    return f"{a.name}: one is longer ({a.stat().st_size} vs {b.stat().st_size} bytes)"


def _same_bytes(a: Path, b: Path, block: int = 1 << 20) -> bool:
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            x, y = left.read(block), right.read(block)
            if x != y:
                return False
            if not x:
                return True


def round_trip_difference(original: str | Path, again: str | Path) -> tuple[int, str | None]:
    """Compare a backup with the crawl of it served as the service: every data file and media file of
    every personality, byte for byte (metadata and manifests aside, they say when). Returns how many
    files were compared and the first difference (None: the same)."""
    view, other = BackupView(original), BackupView(again)
    names = backed_up(view)
    if sorted(backed_up(other)) != sorted(names):
        return 0, f"personalities {sorted(names)} != {sorted(backed_up(other))}"
    files = 0
    for name in names:
        whose = [v.metadata(name).get("personality", {}).get("owned") is not False for v in (view, other)]
        if whose[0] != whose[1]:
            return files, f"{name}: {'owned' if whose[0] else 'not owned'} in the backup, not in its crawl"
        there = other.directory(name)
        for resource in registry.REGISTRY:
            path = view.path(name, resource.name)
            if not path.exists():
                continue
            if not (there / path.name).exists():
                return files, f"{name}: {path.name} is missing"
            difference = first_difference(path, there / path.name)
            if difference:
                return files, f"{name}: {difference}"
            files += 1
        media = view.media_dir(name)
        for file in sorted(media.iterdir()) if media.is_dir() else []:
            twin = other.media_dir(name) / file.name
            if not twin.exists() or first_difference(file, twin) is not None:
                return files, f"{name}: media/{file.name} is {'missing' if not twin.exists() else 'other bytes'}"
            files += 1
        extra = other.media_dir(name)
        if extra.is_dir() and len(list(extra.iterdir())) != (len(list(media.iterdir())) if media.is_dir() else 0):
            return files, f"{name}: media/ holds other files"
    return files, None


def files_port(world: BackupWorld, host: str) -> int:
    """The port the saved media URLs name on ``host`` (the sandbox's file host address), so the file
    host can listen there and every URL works unchanged; 0 when they name none, or several."""
    ports = {urlsplit(origin).port for origin in world.media_origins() if urlsplit(origin).hostname == host}
    return ports.pop() if len(ports) == 1 and None not in ports else 0


__all__ = ["BackupWorld", "SavedCollection", "SavedPersonality", "files_port", "first_difference",
           "round_trip_difference"]
