"""Deduplicated snapshots: build one, verify it, say what it needs and adds, turn it back into the
plain files (``codex-brain.db`` and ``codex-code.tar.gz``), and free what no snapshot needs.

A snapshot folder holds its manifest and two small lists (``db.chunks``, ``code.tree``); the data is
in ``DEST/.store`` (``chunks``). Order of a build: chunks first (their packs committed), then the
lists and the manifest in the build folder, then the rename that makes the snapshot exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from ..fsutil import atomic_write_bytes, ensure_private_dir, fsync_dir, sha256_file
from . import CODE_NAME, DB_LIST, DB_NAME, TREE_LIST, SnapshotError, archive, codetree, dbcopy
from .beside import Beside
from .chunks import STORE_DIR, WORK_PREFIX, ChunkError, Store
from .dedup import (check_tree, dump_tree, load_tree, page_digests, store_pages, store_tree, tar_filler,
                    tree_chunks, unpack_list, write_pages)
from .manifest import DEDUP, is_dedup, members, read_manifest
from .retention import GOOD

SCRATCH_DB = ".db-copy"


def _record(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def previous_tree(snaps, code: str) -> dict[str, dict]:
    """The file records of the newest good deduplicated snapshot of this code folder (the files
    cache: a file whose size, times and inode match is not read again)."""
    for snap in snaps:
        if snap.status != GOOD or not is_dedup(snap.manifest):
            continue
        if snap.manifest.get("sources", {}).get("code") != code:
            continue
        try:
            data = (snap.path / TREE_LIST).read_bytes()
            if hashlib.sha256(data).hexdigest() != snap.manifest["files"][TREE_LIST]["sha256"]:
                return {}
            return {r["p"]: r for r in load_tree(data) if r.get("t") == "f" and r.get("k")}
        except (OSError, SnapshotError):
            return {}
    return {}


def build(cfg, snapshots: Callable[[], list], name: str, tmp: Path, should_stop: Callable[[], bool]) -> dict:
    """Store the database pages and the code tree; write the lists into ``tmp``. Returns the
    manifest's ``files``, ``db``, ``code``, ``store`` and ``timings`` parts.

    The database copy starts first (it needs nothing else and is the longest wait); the existing
    ``snapshots()``, the store's index and the walk load meanwhile. Once copied, the pages are hashed and stored while another
    thread runs ``integrity_check``. No whole-file hash is taken: the ordered list of page digests
    already names the file exactly, and a second pass over the copy cost 0.15 s of a 0.8 s snapshot
    (204 MB). Export checks the page count and size instead."""
    started = time.monotonic()
    scratch = tmp / SCRATCH_DB
    copied = Beside(lambda: dbcopy.copy_database(cfg.db, scratch, durable=False, check=False), "snapshot-copy")
    writers: list = []
    db_side = None
    try:
        with Store(cfg.dest, create=True) as store:
            store.sweep()
            previous = previous_tree(snapshots(), str(cfg.code))
            tag = f"{name}.{os.getpid()}"
            db_writer, code_writer = store.writer(f"{tag}-db"), store.writer(f"{tag}-code")
            writers += [db_writer, code_writer]

            def database() -> tuple[dict, list[bytes]]:
                info = copied.result()
                t = time.monotonic()
                check = Beside(lambda: dbcopy.integrity_or_fail(scratch), "snapshot-check")
                try:
                    pieces = store_pages(scratch, info["page_size"], db_writer)
                finally:
                    check.join()
                info.update(integrity_check=check.result(), pieces=len(pieces),
                            pages_s=round(time.monotonic() - t, 3))
                return info, pieces

            db_side = Beside(database, "snapshot-db")
            try:
                t0 = time.monotonic()
                sel = codetree.select_for(cfg)
                t1 = time.monotonic()
                records, counts = store_tree(sel.entries, code_writer, previous,
                                             should_stop=lambda: should_stop() or db_side.failed)
                t2 = time.monotonic()
                atomic_write_bytes(tmp / TREE_LIST, dump_tree(records))  # while the pages are hashed
            finally:
                db_side.join()
            info, pieces = db_side.result()
            db_writer.commit()
            code_writer.commit()
    except BaseException:
        for writer in writers:
            writer.abort()
        if db_side is not None and db_side.failed:  # the tree stopped because the database side failed
            raise db_side.error from None
        raise
    finally:
        copied.join()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
    atomic_write_bytes(tmp / DB_LIST, b"".join(pieces))
    warnings = [f"special file left out: {p}" for p in sel.skipped_special]
    if counts["vanished"]:
        warnings.append(f"{counts['vanished']} file(s) vanished while the tree was stored")
    if sel.vanished:
        warnings.append(f"{sel.vanished} folder(s) vanished while the tree was walked")
    new_chunks = len(db_writer.entries) + len(code_writer.entries)
    return {
        "files": {DB_LIST: _record(tmp / DB_LIST), TREE_LIST: _record(tmp / TREE_LIST)},
        "db": info,
        "code": {**{k: counts[k] for k in ("members", "files", "dirs", "symlinks", "hardlinks", "bytes")},
                 "files_read": counts["read"], "excluded_entries": sel.excluded,
                 "matcher": "pathspec gitignore (nested .gitignore files) + always-excluded patterns",
                 "warnings": warnings},
        "store": {"new_chunks": new_chunks, "new_bytes": db_writer.new_bytes + code_writer.new_bytes,
                  "db_new_chunks": len(db_writer.entries), "code_new_chunks": len(code_writer.entries)},
        "timings": {"total_s": round(time.monotonic() - started, 3), "walk_s": round(t1 - t0, 3),
                    "tree_s": round(t2 - t1, 3), "db_s": db_side.took, "db_copy_s": info.get("copy_s"),
                    "db_pages_s": info.get("pages_s")},
    }


def read_lists(path: Path, manifest: dict) -> tuple[list[bytes], list[dict]]:
    """The snapshot's page-list pieces and tree records, after checking both files' sha256."""
    data = {}
    for member in members(manifest):
        try:
            data[member] = (path / member).read_bytes()
        except OSError as exc:
            raise SnapshotError(f"{member} unreadable ({exc.strerror or exc})") from None
        if hashlib.sha256(data[member]).hexdigest() != manifest["files"][member]["sha256"]:
            raise SnapshotError(f"{member} sha256 differs from the manifest")
    return unpack_list(data[DB_LIST]), load_tree(data[TREE_LIST])


def needed_chunks(path: Path, manifest: dict, store: Store) -> set[bytes]:
    """Every chunk the snapshot needs: list pieces, pages, file pieces."""
    pieces, records = read_lists(path, manifest)
    return set(pieces) | set(page_digests(store, pieces)) | tree_chunks(records)


def verify(path: Path, manifest: dict, seen: set[bytes] | None = None) -> list[str]:
    """Read and re-hash every chunk the snapshot needs (those in ``seen`` were already, in this run).
    The database is not integrity-checked again: its pages are, byte for byte, the ones checked when
    the snapshot was taken."""
    seen = set() if seen is None else seen
    try:
        pieces, records = read_lists(path, manifest)
    except SnapshotError as exc:
        return [str(exc)]
    problems = check_tree(records)
    with Store(path.parent) as store:
        missing = []
        try:
            pages = 0
            for digest in page_digests(store, pieces):
                pages += 1
                if digest not in seen:
                    store.read(digest)
                    seen.add(digest)
            want = manifest.get("db", {}).get("page_count")
            if isinstance(want, int) and pages != want:
                problems.append(f"{DB_NAME} has {pages} pages in its list, manifest says {want}")
        except ChunkError as exc:
            missing.append(f"{DB_NAME}: {exc}")
        for digest in tree_chunks(records) - seen:
            try:
                store.read(digest)
                seen.add(digest)
            except ChunkError as exc:
                missing.append(f"code: {exc}")
        if missing and store.broken:
            missing.append("unreadable pack index: " + "; ".join(store.broken))
    want = manifest.get("code", {}).get("members")
    if isinstance(want, int) and len(records) != want:
        problems.append(f"{TREE_LIST} holds {len(records)} entries, manifest says {want}")
    return problems + missing[:5] + ([f"and {len(missing) - 5} more chunks"] if len(missing) > 5 else [])


def space_added(snaps) -> dict[str, int]:
    """Bytes each deduplicated snapshot adds: its own folder, and the compressed chunks no older
    snapshot needs."""
    seen: set[bytes] = set()
    added: dict[str, int] = {}
    dedups = [s for s in snaps if is_dedup(s.manifest)]
    if not dedups:
        return added
    with Store(dedups[0].path.parent) as store:
        for snap in sorted(dedups, key=lambda s: (s.time, s.name)):
            try:
                need = needed_chunks(snap.path, snap.manifest, store)
            except SnapshotError:
                continue
            new = need - seen
            seen |= new
            own = sum(os.lstat(snap.path / n).st_size for n in os.listdir(snap.path))
            added[snap.name] = own + sum(store.index[d].clen for d in new if d in store.index)
    return added


def live_chunks(snaps, store: Store) -> set[bytes]:
    """What the snapshots that stay need; refuses when one's needs cannot be read (then nothing
    may be freed: its chunks could be among them)."""
    live: set[bytes] = set()
    for snap in snaps:
        if is_dedup(snap.manifest):
            try:
                live |= needed_chunks(snap.path, snap.manifest, store)
            except SnapshotError as exc:
                raise SnapshotError(f"cannot tell which chunks {snap.name} needs ({exc}); nothing was freed") from None
    return live


def free(dest: Path, staying, *, dry_run: bool, name: str) -> int:
    """Free the store's space no staying snapshot needs; returns the bytes (that would be) freed."""
    if not (dest / STORE_DIR).is_dir():
        return 0
    with Store(dest) as store:
        live = live_chunks(staying, store)
        if dry_run:
            return store.plan(live)[2]
        store.sweep()
        return store.collect(live, name)


def _export_folder(folder: Path, names=(DB_NAME, CODE_NAME)) -> Path:
    """``folder`` (created 0700), refused when a file to write is already there: nothing is written then."""
    folder = ensure_private_dir(folder)
    for name in names:
        if os.path.lexists(folder / name):
            raise SnapshotError(f"{folder / name} exists; export never overwrites")
    return folder


def export(path: Path, manifest: dict, folder: Path, *, compressor, level: int, code: bool = True) -> None:
    """Write ``codex-brain.db`` and ``codex-code.tar.gz`` (``code=False``: the database only) into
    ``folder``, each under a temp name first; existing files are never overwritten."""
    written = (DB_NAME, CODE_NAME) if code else (DB_NAME,)
    folder = _export_folder(folder, written)
    pieces, records = read_lists(path, manifest)
    db = manifest.get("db", {})
    problems = check_tree(records)
    if problems:
        raise SnapshotError("the snapshot's tree cannot be exported safely: " + "; ".join(problems[:5]))
    tmp_db, tmp_code = folder / f".{DB_NAME}.{os.getpid()}.tmp", folder / f".{CODE_NAME}.{os.getpid()}.tmp"
    try:
        with Store(path.parent) as store:
            fd = os.open(tmp_db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                pages, sha = write_pages(store, pieces, out, db.get("page_size"))
                out.flush()
                os.fsync(out.fileno())
            if pages != db.get("page_count") or sha != db.get("sha256", sha):  # older snapshots have a sha256
                raise SnapshotError(f"{DB_NAME} put together from its pages differs from the one snapshotted")
            if code:
                archive.write_tarball_with(str(tmp_code), tar_filler(store, records), compressor=compressor,
                                           level=level)
        for tmp, final in [(tmp_db, DB_NAME)] + ([(tmp_code, CODE_NAME)] if code else []):
            os.link(tmp, folder / final)  # fails rather than replace a file that appeared meanwhile
            os.unlink(tmp)
        fsync_dir(folder)
    except FileExistsError as exc:
        raise SnapshotError(f"{exc.filename} appeared during the export; export never overwrites") from None
    except OSError as exc:
        raise SnapshotError(f"exporting into {folder} failed: {exc.strerror or exc}") from None
    finally:
        for tmp in (tmp_db, tmp_code):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def copy_plain(path: Path, folder: Path) -> None:
    """A plain snapshot's two files copied into ``folder``, never over existing files."""
    folder = _export_folder(folder)
    for name in (DB_NAME, CODE_NAME):
        target = folder / name
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SnapshotError(f"{target} appeared during the export; export never overwrites") from None
        try:
            with open(path / name, "rb") as src, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(target)
            raise
    fsync_dir(folder)


@contextlib.contextmanager
def plain_files(path: Path, *, compressor=None, level: int = 6, code: bool = True):
    """A folder holding the snapshot's ``codex-brain.db`` and ``codex-code.tar.gz``: the snapshot
    itself when it is plain, else a scratch folder in the store (removed afterwards) with the
    database only when ``code`` is False (a database-only restore does not wait for the tarball)."""
    manifest = read_manifest(path)
    if not is_dedup(manifest):
        yield path
        return
    work = path.parent / STORE_DIR / f"{WORK_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    try:
        export(path, manifest, work, compressor=compressor, level=level, code=code)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["build", "verify", "space_added", "free", "export", "plain_files", "needed_chunks", "DEDUP"]
