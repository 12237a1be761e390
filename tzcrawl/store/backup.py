"""``BackupView`` reads the seed's on-disk layout under BACKUP_DIR; ``BackupStore``, the only code
that writes it, adds staging, merging, metadata and the locks.

    BACKUP_DIR/<name>/<name>.json               profile, exactly as received
    BACKUP_DIR/<name>/<name>_memories.json      memories, oldest first, one per id
    BACKUP_DIR/<name>/<name>_messages.json      chat history, oldest first, one per id
    BACKUP_DIR/<name>/<name>_knowledge.json     knowledge, exactly as received
    BACKUP_DIR/<name>/<name>_training.json      training, exactly as received
    BACKUP_DIR/<name>/<name>_user_data.json     user personalization, exactly as received
    BACKUP_DIR/<name>/<name>_media.json         media manifest: one entry per media URL (tzcrawl.media)
    BACKUP_DIR/<name>/media/<sha1 of URL>.<ext> the media files themselves
    BACKUP_DIR/<name>/history/<resource>/<UTC>.json  a document's previous version, kept when it changed
    BACKUP_DIR/<name>/history/<collection>.jsonl     a record's previous copy, when the service changed it
    BACKUP_DIR/<name>/.backup-metadata.json     tracking info for incremental sync
    BACKUP_DIR/.locks/<name>.lock               held while a run writes this personality

File names come from the resource registry (``tzcrawl.registry``: ``suffix``).

Collections are staged in a journal while the crawl runs and merged into the saved file at commit;
documents are replaced whole. Every write is atomic (fsutil), under the personality's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from tzcrawl import jsonio, paging, registry
from tzcrawl.fsutil import append_lines, atomic_write_bytes, atomic_writer, ensure_private_dir

from . import metadata as meta
from .journal import Journal, read_journal
from .jsonarray import read_array, read_bodies
from .lock import BackupLocked, Locks
from .merge import History, merge_collection
from .names import child_path, safe_dir_name

STAGING = ".staging"
MEDIA_DIR = "media"
HISTORY_DIR = "history"


class BackupOwnerMismatch(ValueError):
    """The directory already holds another personality's backup: refuse to mix them."""


@dataclass(frozen=True)
class HeldState:
    """What the backup already holds for one resource, for the spider's incremental stop."""

    exists: bool  # the data file is on disk (a killed first run leaves none: do a full run)
    total: int = 0
    newest_key: float | None = None  # normalized seconds (timestamps.to_epoch) of the newest record
    newest_ids: list[str] = field(default_factory=list)  # ids at newest_key (ties across pages)
    oldest_key: float | None = None
    last_sync: str | None = None
    outcome: str | None = None
    last_full_read: str | None = None  # when the collection was last read whole
    shortfall: int = 0  # records the last run found missing (the service counted more): read in full next

    @property
    def incremental(self) -> bool:
        """True when an incremental run can stop at ``newest_key``; else fetch everything."""
        return self.exists and self.newest_key is not None

    def stop_at(self, full_every: float, now: datetime | None = None) -> tuple[paging.Held, str | None]:
        """Where an incremental walk may stop (the pager's ``Held``), and why it must read in full
        instead when the backup holds the collection: the last run found records missing, or the last
        full read is older than ``full_every`` days (BACKUP_FULL_EVERY)."""
        if not self.incremental:
            return paging.Held(), None
        if self.shortfall:
            return paging.Held(), "the last run found records missing"
        if full_read_due(self.last_full_read, full_every, now):
            return paging.Held(), f"no full read in the last {full_every:g} days (BACKUP_FULL_EVERY)"
        return paging.Held(self.newest_key, frozenset(self.newest_ids)), None


def full_read_due(last_full_read: str | None, every_days: float, now: datetime | None = None) -> bool:
    """A collection is read in full again when its last full read is older than ``every_days``
    (0: never forced) or unknown."""
    if not every_days:
        return False
    try:
        last = datetime.fromisoformat(str(last_full_read).replace("Z", "+00:00"))
    except ValueError:
        return True
    if last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    return (now or datetime.now(timezone.utc)) - last > timedelta(days=every_days)


class BackupView:
    """Read-only access to a backup root: the layout and what it holds. Creates and changes nothing."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    # -- layout -----------------------------------------------------------------------------
    def dir_name(self, username: str) -> str:
        return safe_dir_name(username)

    def directory(self, username: str) -> Path:
        return child_path(self.root, self.dir_name(username))

    def path(self, username: str, resource: str) -> Path:
        name = self.dir_name(username)
        return self.directory(username) / f"{name}{registry.get(resource).suffix}.json"

    def media_manifest_path(self, username: str) -> Path:
        return self.directory(username) / f"{self.dir_name(username)}_media.json"

    def media_dir(self, username: str) -> Path:
        return self.directory(username) / MEDIA_DIR

    def history_dir(self, username: str) -> Path:
        return self.directory(username) / HISTORY_DIR

    def metadata_path(self, username: str) -> Path:
        return self.directory(username) / meta.METADATA_NAME

    def metadata(self, username: str) -> dict:
        return meta.load(self.metadata_path(username))

    # -- reading ----------------------------------------------------------------------------
    def held(self, username: str, resource: str) -> HeldState:
        if not self.path(username, resource).exists():
            return HeldState(exists=False)
        entry = self.metadata(username).get("resources", {}).get(resource, {})
        return HeldState(
            exists=True,
            total=entry.get("total", 0),
            newest_key=entry.get("newest_key"),
            newest_ids=list(entry.get("newest_ids", [])),
            oldest_key=entry.get("oldest_key"),
            last_sync=entry.get("last_sync"),
            outcome=entry.get("outcome"),
            last_full_read=entry.get("last_full_read"),
            shortfall=entry.get("shortfall") or 0,
        )

    def read_collection(self, username: str, resource: str) -> Iterator:
        """The saved records of a collection, oldest first, read line by line."""
        path = self.path(username, registry.collection(resource).name)
        if path.exists():
            for _line, value in read_array(path):
                yield value

    def read_bodies(self, username: str, resource: str, spans=None, resume=None) -> Iterator[bytes]:
        """The saved records of a collection as their JSON text, oldest first, not parsed (``spans``,
        ``resume``: see ``jsonarray.read_bodies``)."""
        path = self.path(username, registry.collection(resource).name)
        if path.exists():
            yield from read_bodies(path, spans, resume)

    def read_document(self, username: str, resource: str):
        """The saved document (any JSON value), or None when there is none."""
        try:
            with open(self.path(username, registry.document(resource).name), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None


class BackupStore(BackupView):
    """The only writer of a backup root; one per crawl. Every write happens under the personality's lock."""

    def __init__(
        self,
        root: str | Path,
        *,
        chunk_size: int = 10_000,
        index_limit: int = 400_000,  # fetched ids held in a dict (~130 bytes each) before it spills to SQLite
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ):
        super().__init__(ensure_private_dir(Path(root).expanduser(), tighten=True))
        self.chunk_size = chunk_size
        self.index_limit = index_limit
        self.clock = clock
        self.locks = Locks(self.root)
        self._runs: set[tuple[str, str]] = set()
        self._guard = threading.Lock()
        self._metadata_guard = threading.Lock()

    # -- lock -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, username: str, timeout: float = 0.0) -> Iterator[Path]:
        """Hold the personality's lock (re-entrant within this store) for a block; yields its directory."""
        self.claim(username, timeout)
        try:
            yield self.directory(username)
        finally:
            self.release(username)

    def claim(self, username: str, timeout: float = 0.0) -> None:
        """Take the personality's lock (waiting up to ``timeout`` s); BackupLocked names the holder."""
        name = self.dir_name(username)
        first = not self.locks.holds(name)
        self.locks.acquire(name, timeout)
        if first:
            self._discard_stale(username)

    def try_claim(self, username: str) -> bool:
        """``claim`` without waiting: False when another run holds the personality."""
        try:
            self.claim(username)
        except BackupLocked:
            return False
        return True

    async def claim_async(self, username: str, timeout: float) -> None:
        """``claim`` for the event loop: waits for another run without blocking downloads; the
        leftovers of a stopped run are removed in a worker thread."""
        name = self.dir_name(username)
        first = not self.locks.holds(name)
        await self.locks.wait_acquire(name, timeout)
        if first:
            await asyncio.to_thread(self._discard_stale, username)

    async def try_claim_async(self, username: str) -> bool:
        """``try_claim`` in a worker thread (it may create the lock folder and remove leftovers)."""
        return await asyncio.to_thread(self.try_claim, username)

    async def stop_points(self, username: str, resources, full: bool, full_every: float
                          ) -> dict[str, tuple[paging.Held, str | None]]:
        """For each collection in ``resources``: where its incremental walk may stop, and why it reads in
        full when it must (``HeldState.stop_at``); read once, at the claim, in a worker thread."""
        def read() -> dict[str, tuple[paging.Held, str | None]]:
            out = {}
            for name in resources:
                out[name] = (paging.Held(), None) if full else self.held(username, name).stop_at(full_every)
            return out

        return await asyncio.to_thread(read)

    def recorded_owned(self, username: str) -> bool | None:
        """Whether the last backup recorded the personality as the user's own (None: never said)."""
        owned = self.metadata(username).get("personality", {}).get("owned")
        return owned if isinstance(owned, bool) else None

    def holds(self, username: str) -> bool:
        return self.locks.holds(self.dir_name(username))

    def release(self, username: str) -> None:
        self.locks.release(self.dir_name(username))

    def release_all(self) -> None:
        self.locks.release_all()

    def _discard_stale(self, username: str) -> None:
        """We are the only writer now: what a killed run left (journals, temp files) goes."""
        directory = self.directory(username)
        if directory.is_dir():
            shutil.rmtree(directory / STAGING, ignore_errors=True)
            for leftover in [*directory.glob(".*.tmp"), *(directory / MEDIA_DIR).glob(".*.tmp")]:
                leftover.unlink(missing_ok=True)

    # -- writing ----------------------------------------------------------------------------
    def save_document(self, personality: dict, resource: str, payload, count: int, requests: int,
                      drift: tuple[str, ...] = (), media_listed: bool = False) -> dict:
        """Replace a document (profile, knowledge, training, user_data) whole, atomically. When the new
        answer differs from the saved one, the saved one is kept first under history/<resource>/.
        ``drift``: the keys today's service sends that this answer lacked (recorded in the metadata);
        ``media_listed``: the media manifest lists every media URL in it (else the next run with media
        reads it back for them)."""
        registry.document(resource)
        with self._writing(personality) as username:
            path = self.path(username, resource)
            data = (jsonio.readable(payload, indent=2) + "\n").encode("utf-8")  # lone surrogates stay escapes
            figures = {"file": path.name, "total": count, "sha256": hashlib.sha256(data).hexdigest(),
                       "media_listed": bool(media_listed)}
            if drift:
                figures["drift"] = list(drift)
            kept = self._keep_previous(username, resource, path, payload)
            if kept is not None:
                figures["previous_version"] = str(kept.relative_to(self.directory(username)))
                held = self.metadata(username).get("resources", {}).get(resource, {}).get("total") or 0
                if count == 0 and held and registry.get(resource).entry_keys:
                    figures["warning"] = (f"the service sent {resource} with no entries; the {held} saved before are "
                                          f"kept in {figures['previous_version']}")
            atomic_write_bytes(path, data)
            self._record(personality, resource, meta.record_success, figures, requests)
            return {"resource": resource, "requests": requests, **figures}

    def _keep_previous(self, username: str, resource: str, path: Path, payload) -> Path | None:
        """Copy the saved document to history/<resource>/<UTC>.json when ``payload`` differs from it."""
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            if jsonio.loads(old) == payload:
                return None
        except ValueError:
            pass  # an unreadable saved copy is kept too: it may be all there is
        folder = ensure_private_dir(self.history_dir(username) / resource)
        stamp = self.clock().astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target, n = folder / f"{stamp}.json", 1
        while target.exists():
            n += 1
            target = folder / f"{stamp}-{n}.json"
        atomic_write_bytes(target, old)
        return target

    def record_failure(self, personality: dict, resource: str, error: str, requests: int) -> None:
        """Note that ``resource`` failed this run; its saved data and last good figures stay.

        Nothing is written for a personality that has no backup folder yet (a name that does not
        exist on the service must not leave a folder behind).
        """
        if not self.path(_username(personality), resource).parent.is_dir():
            return
        with self._writing(personality):
            self._record(personality, resource, meta.record_failure, error, requests)

    def record_not_theirs(self, personality: dict, resource: str, reason: str, requests: int) -> None:
        """Note that only the personality's owner may read ``resource`` (the user talked to it, another
        person owns it): its folder is made, as for a saved resource, since the lists named it."""
        with self._writing(personality):
            self._record(personality, resource, meta.record_not_theirs, reason, requests)

    def mark_media_listed(self, personality: dict, resources: list[str]) -> None:
        """The media manifest lists every media URL of these saved resources (``media_listed``)."""
        with self._writing(personality):
            for resource in resources:
                self._record(personality, resource, meta.record_media_listed)

    def record_shortfall(self, personality: dict, resource: str, missing: int, service_total: int) -> None:
        """Note that the service counted ``missing`` more records than the backup holds: the next run
        reads this collection in full."""
        with self._writing(personality):
            self._record(personality, resource, meta.record_shortfall, missing, service_total)

    def begin(self, personality: dict, resource: str) -> "CollectionRun":
        """Start staging a collection (memories or messages); holds the lock until commit/abort."""
        registry.collection(resource)
        username = _username(personality)
        name = self.dir_name(username)
        self.claim(username)
        try:
            self._check_owner(personality)
            with self._guard:
                if (name, resource) in self._runs:
                    raise RuntimeError(f"a {resource} run for {name!r} is already open; commit or abort it first")
                self._runs.add((name, resource))
            directory = ensure_private_dir(self.directory(username), tighten=True)
            workdir = ensure_private_dir(directory / STAGING) / resource
            shutil.rmtree(workdir, ignore_errors=True)
            ensure_private_dir(workdir)
            return CollectionRun(self, personality, resource, name, workdir)
        except BaseException:
            with self._guard:
                self._runs.discard((name, resource))
            self.release(username)
            raise

    @contextlib.contextmanager
    def _writing(self, personality: dict) -> Iterator[str]:
        """Hold the lock (taking it if this store does not hold it yet) and check the owner."""
        username = _username(personality)
        self.claim(username)
        try:
            ensure_private_dir(self.directory(username), tighten=True)
            self._check_owner(personality)
            yield username
        finally:
            self.release(username)

    def _finish(self, run: "CollectionRun") -> None:
        shutil.rmtree(run.workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.workdir.parent.rmdir()  # .staging, once no other resource is staged
        with self._guard:
            self._runs.discard((run.name, run.resource))
        self.release(run.personality["username"])

    def _check_owner(self, personality: dict) -> None:
        username = _username(personality)
        recorded = self.metadata(username).get("personality", {}).get("username")
        if recorded is not None and recorded != username:
            raise BackupOwnerMismatch(
                f"{self.directory(username)} holds the backup of {recorded!r}, not {username!r}; nothing written"
            )

    def _record(self, personality: dict, resource: str, update, *args) -> None:
        username = _username(personality)
        path = self.metadata_path(username)
        with self._metadata_guard:  # commits may run in worker threads: no lost updates
            updated = update(meta.load(path), personality, self.dir_name(username), resource, *args, self.clock())
            meta.save(path, updated)


class CollectionRun:
    """One crawl of a collection: ``add`` pages, then ``commit`` or ``abort`` exactly once."""

    def __init__(self, store: BackupStore, personality: dict, resource: str, name: str, workdir: Path):
        self.store, self.personality, self.resource, self.name, self.workdir = (
            store, dict(personality), resource, name, workdir)
        described = registry.collection(resource)
        self.time_field, self.id_field, self.when = described.time_field, described.id_field, described.when
        self.flag_field, self.counts_chars = described.flag_field, described.counts_chars
        self.journal = Journal(workdir / "journal.jsonl")
        self.closed = False

    def add(self, records: list) -> int:
        """Stage one page of records (flushed); returns how many."""
        if self.closed:
            raise RuntimeError(f"the {self.resource} run for {self.name!r} is already closed")
        if isinstance(records, (dict, str, bytes)):
            raise TypeError(f"add() takes a page (a list of records), not a {type(records).__name__}")
        return self.journal.add(records)

    def commit(self, requests: int, full: bool = False, drift: tuple[str, ...] = (), media_listed: bool = False) -> dict:
        """Merge the staged records into the saved file and record the sync; returns the figures.

        ``full``: the walk read the whole collection, so saved records it did not fetch are gone from
        the service (``deleted_upstream``; they stay in the backup). The saved copy of a record the
        service changed is appended to history/<resource>.jsonl before the file is replaced.
        ``media_listed``: the media manifest lists every media URL of the records (see save_document)."""
        if self.closed:
            raise RuntimeError(f"the {self.resource} run for {self.name!r} is already closed")
        self.journal.close()
        store = self.store
        username = _username(self.personality)
        path = store.path(username, self.resource)
        history = History()
        try:
            with atomic_writer(path, binary=True) as raw:
                out = HashingWriter(raw)
                stats = merge_collection(
                    path if path.exists() else None,
                    read_journal(self.journal.path),
                    out,
                    time_field=self.when,
                    id_field=self.id_field,
                    workdir=self.workdir,
                    chunk_size=store.chunk_size,
                    index_limit=store.index_limit,
                    chars=self.counts_chars,
                    history=history,
                )
                if history.lines:  # before the rename: a crash leaves a copy twice, never none
                    stamp = jsonio.dumps_bytes(meta.iso(store.clock()))
                    ensure_private_dir(store.history_dir(username))
                    append_lines(store.history_dir(username) / f"{self.resource}.jsonl",
                                 [b'{"replaced_at":' + stamp + b',"record":' + line + b"}" for line in history.lines])
        except Exception as exc:
            self.abort(f"saving {self.resource} failed: {exc}", requests)
            raise
        figures = {
            "file": path.name,
            "sha256": out.hexdigest(),
            "total": stats.total,
            "new": stats.new,
            "fetched": self.journal.count,
            "newest_key": stats.newest_key,
            "newest_ids": stats.newest_ids,
            "oldest_key": stats.oldest_key,
            f"newest_{self.time_field}": stats.field_of("newest", self.when),
            f"oldest_{self.time_field}": stats.field_of("oldest", self.when),
            "media_listed": bool(media_listed),
        }
        if self.counts_chars:
            figures["characters"] = stats.characters
        if self.flag_field:  # records the service flags as deleted: kept (they are data) and counted
            figures[self.flag_field] = count_flagged(path, self.flag_field)
        if drift:
            figures["drift"] = list(drift)
        if stats.changed:
            figures["changed"] = stats.changed
        if full:
            figures["last_full_read"] = meta.iso(store.clock())
            figures["deleted_upstream"] = {"count": stats.not_fetched, "ids": stats.not_fetched_ids}
        try:
            store._record(self.personality, self.resource, meta.record_success, figures, requests)
        finally:
            self.closed = True
            store._finish(self)
        return {"resource": self.resource, "requests": requests, "runs": stats.runs, "streamed": stats.streamed,
                "index_spilled": stats.index_spilled, "resorted": stats.saved_resorted, **figures}

    def abort(self, error: str, requests: int) -> None:
        """Drop the staged records, keep the saved file as it is, record the failure."""
        if self.closed:
            return
        self.closed = True
        self.journal.close()
        try:
            self.store._record(self.personality, self.resource, meta.record_failure, error, requests)
        finally:
            self.store._finish(self)


class HashingWriter:
    """A binary file that also computes the sha256 of what is written (recorded in the metadata, so
    an export or a check can tell a changed file without reading it)."""

    def __init__(self, fh):
        self.fh = fh
        self.start = fh.tell()
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.fh.tell()

    def seek(self, position: int) -> int:
        """Only back to the start (the merge starts over when the saved file is out of order)."""
        if position != self.start:
            raise ValueError("HashingWriter can only seek back to where it started")
        self.digest = hashlib.sha256()
        return self.fh.seek(position)

    def truncate(self) -> int:
        return self.fh.truncate()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _username(personality: dict) -> str:
    username = personality.get("username") if isinstance(personality, dict) else None
    if not isinstance(username, str):
        raise ValueError(f"a personality needs a string 'username', got {username!r}")
    return username


__all__ = ["BackupStore", "BackupView", "BackupLocked", "BackupOwnerMismatch", "CollectionRun", "HeldState"]


def count_flagged(path: Path, flag: str) -> int:
    """Records of a saved collection whose ``flag`` is true (memories ``deleted`` on the service)."""
    marker = f'"{flag}"'.encode()
    return sum(1 for line, value in read_array(path)
               if marker in line and isinstance(value, dict) and value.get(flag) is True)
