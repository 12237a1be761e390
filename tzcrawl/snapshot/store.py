"""Snapshot folders on disk: create (build in a hidden folder, then rename), scan, verify, delete, restore.

A snapshot exists only once complete: everything is written into ``DEST/.tmp-<name>.<pid>/`` and the
folder is renamed to its final name as the very last step. Anything left under a ``.tmp-`` name is
an interrupted build that nobody calls good and ``prune`` removes.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..fsutil import atomic_write_text, ensure_private_dir, fsync_dir, sha256_file
from . import CODE_NAME, DB_NAME, MANIFEST_NAME, SnapshotError, UsageError, archive, codetree, dbcopy, deduped
from .beside import Beside
from .config import Config, require
from .lock import dest_lock
from .manifest import DEDUP, ManifestError, build_manifest, dumps, is_dedup, quick_problems, read_manifest
from .naming import BUILD_MARKER, PREFIX, TMP_PREFIX, is_temp_name, parse_snapshot_name, snapshot_name
from .retention import BAD, GOOD, INCOMPLETE, LEGACY, Entry

REASONS = ("manual", "boot", "growth")


@dataclass
class Snapshot:
    name: str
    path: Path
    time: datetime
    status: str
    detail: str = ""
    manifest: dict | None = None

    def entry(self) -> Entry:
        return Entry(self.name, self.time, self.status, self.detail)


def _file_record(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _os_error(exc: OSError, where: Path) -> SnapshotError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SnapshotError(f"no space left on the device holding {where}")
    if exc.errno == errno.EFBIG:
        return SnapshotError(f"file too large to write in {where}")
    name = f" ({exc.filename})" if exc.filename else ""
    return SnapshotError(f"writing the snapshot failed: {exc.strerror or exc}{name}")


def create(cfg: Config, reason: str = "manual", *, should_stop: Callable[[], bool] = lambda: False,
           lock_wait: float | None = None, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
           log: Callable[[str], None] = print) -> Path:
    """Take one snapshot; return its folder. Raises SnapshotError; leaves nothing behind on failure."""
    require(cfg, "db", "code", "dest")
    if reason not in REASONS:
        raise SnapshotError(f"reason must be one of {', '.join(REASONS)}")
    dbcopy.open_readonly(cfg.db).close()  # fail fast: missing or unreadable database
    if not cfg.code.is_dir():
        raise SnapshotError(f"code folder not found: {cfg.code}")
    try:  # created 0700 when missing; a folder the user already had keeps its mode
        dest = ensure_private_dir(cfg.dest)
    except OSError as exc:
        raise UsageError(f"the snapshot folder {cfg.dest} cannot be used: {exc.strerror or exc}") from None
    wait = cfg.lock_wait.total_seconds() if lock_wait is None else lock_wait
    with dest_lock(dest, wait=wait):
        when = clock()
        name = snapshot_name(when)
        while (dest / name).exists():
            when += timedelta(milliseconds=1)
            name = snapshot_name(when)
        tmp = dest / f".tmp-{name}.{os.getpid()}"
        tmp.mkdir(mode=0o700)
        try:
            (tmp / BUILD_MARKER).touch(mode=0o600)
            build = _build_dedup if cfg.layout == "dedup" else _build
            manifest = build(cfg, reason, name, when, tmp, should_stop, log)
            atomic_write_text(tmp / "manifest.json", dumps(manifest))
            (tmp / BUILD_MARKER).unlink()
            fsync_dir(tmp)
            os.rename(tmp, dest / name)
            fsync_dir(dest)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _os_error(exc, dest) from None
            raise
    return dest / name


def _build(cfg: Config, reason: str, name: str, when: datetime, tmp: Path,
           should_stop: Callable[[], bool], log: Callable[[str], None]) -> dict:
    started = time.monotonic()

    def copy_db():
        info = dbcopy.copy_database(cfg.db, tmp / DB_NAME)
        t = time.monotonic()
        info["record"] = _file_record(tmp / DB_NAME)
        info["hash_s"] = round(time.monotonic() - t, 3)
        return info

    db_side = Beside(copy_db, "snapshot-db")
    try:
        t0 = time.monotonic()
        sel = codetree.select_for(cfg)
        print_ = codetree.fingerprint(sel, {"always": list(codetree.ALWAYS_EXCLUDED), "extra": list(cfg.exclude),
                                            "format": archive.FORMAT_VERSION})
        t1 = time.monotonic()
        reuse = _same_tree(cfg, print_)
        shared = None
        if reuse is not None:
            shared = _share(reuse.path / CODE_NAME, tmp / CODE_NAME)
            code = dict(reuse.manifest["code"])
            code_record = dict(reuse.manifest["files"][CODE_NAME])
            log(f"code tree unchanged since {reuse.name}: its archive is {'linked' if shared == 'hardlink' else 'copied'}")
        else:
            compressor = archive.resolve_compressor(cfg.compressor)
            stats = archive.write_tarball(str(tmp / CODE_NAME), sel.entries, compressor=compressor,
                                          level=cfg.compresslevel,
                                          should_stop=lambda: should_stop() or db_side.failed)
        t2 = time.monotonic()
        if reuse is None:
            code_record = _file_record(tmp / CODE_NAME)
        t3 = time.monotonic()
    except BaseException:
        db_side.join()
        if db_side.failed:  # the tarball stopped because the copy failed: that is the news
            raise db_side.error from None
        raise
    db_info = db_side.result()
    files = {DB_NAME: db_info.pop("record"), CODE_NAME: code_record}
    if reuse is None:
        warnings = [f"special file left out: {p}" for p in sel.skipped_special]
        if stats.vanished:
            warnings.append(f"{stats.vanished} file(s) vanished while the tarball was written")
        if sel.vanished:
            warnings.append(f"{sel.vanished} folder(s) vanished while the tree was walked")
        code = {"members": stats.members, "files": stats.files, "dirs": stats.dirs, "symlinks": stats.symlinks,
                "hardlinks": stats.hardlinks, "bytes": stats.bytes_in, "excluded_entries": sel.excluded,
                "matcher": "pathspec gitignore (nested .gitignore files) + always-excluded patterns",
                "compressor": archive.describe(compressor, cfg.compresslevel), "warnings": warnings}
    code["fingerprint"] = print_
    code["archive"] = {"from": reuse.name, "shared": shared} if reuse is not None else {"from": None, "shared": None}
    return build_manifest(
        name=name,
        created_at=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        reason=reason,
        tool_version=__version__,
        sources={"db": str(cfg.db), "code": str(cfg.code), "host": os.uname().nodename},
        files=files,
        db=db_info,
        code=code,
        timings={"total_s": round(time.monotonic() - started, 3), "walk_s": round(t1 - t0, 3),
                 "tar_s": round(t2 - t1, 3), "tar_hash_s": round(t3 - t2, 3), "db_s": db_side.took,
                 "db_copy_s": db_info.get("copy_s"), "db_check_s": db_info.get("check_s")},
    )


def _build_dedup(cfg: Config, reason: str, name: str, when: datetime, tmp: Path,
                 should_stop: Callable[[], bool], log: Callable[[str], None]) -> dict:
    parts = deduped.build(cfg, lambda: scan(cfg.dest), name, tmp, should_stop)
    return build_manifest(
        fmt=DEDUP, name=name, created_at=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        reason=reason, tool_version=__version__,
        sources={"db": str(cfg.db), "code": str(cfg.code), "host": os.uname().nodename}, **parts)


def _same_tree(cfg: Config, fingerprint: str) -> "Snapshot | None":
    """The newest good snapshot of this code folder, if its tree had this fingerprint and its archive
    still has the sha256 its manifest recorded: that archive is shared instead of written again (a
    damaged one is not: the tree is archived anew)."""
    for snap in scan(cfg.dest):
        if snap.status != GOOD or snap.manifest.get("sources", {}).get("code") != str(cfg.code):
            continue
        if snap.manifest.get("code", {}).get("fingerprint") != fingerprint:
            return None
        try:
            whole = sha256_file(snap.path / CODE_NAME) == snap.manifest["files"][CODE_NAME]["sha256"]
        except OSError:
            whole = False
        return snap if whole else None
    return None


def _share(source: Path, target: Path) -> str:
    """``target`` becomes ``source``'s archive: a hard link (no bytes written), else a copy."""
    try:
        os.link(source, target)
        return "hardlink"
    except OSError:
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
        return "copy"


def _ours(path: Path) -> bool:
    """A build or deletion folder of this tool: a real folder holding its marker or a manifest."""
    return (not path.is_symlink() and path.is_dir()
            and ((path / BUILD_MARKER).exists() or (path / MANIFEST_NAME).exists()))


def scan(dest: str | os.PathLike) -> list[Snapshot]:
    """Every snapshot-like folder in ``dest`` with a cheap status, newest first."""
    dest = Path(dest)
    found = []
    try:
        names = os.listdir(dest)
    except FileNotFoundError:
        return []
    for name in names:
        path = dest / name
        if is_temp_name(name):
            if not _ours(path):
                continue  # a file, a link, or a folder of the user's that merely has the name
            base = name[len(".tmp-"):].split(".")[0]
            when = parse_snapshot_name(base) or datetime.fromtimestamp(path.lstat().st_mtime, timezone.utc)
            found.append(Snapshot(name, path, when, INCOMPLETE, "interrupted or in progress"))
            continue
        when = parse_snapshot_name(name)
        if when is None or not path.is_dir() or path.is_symlink():
            continue
        try:
            manifest = read_manifest(path)
        except ManifestError as exc:
            found.append(Snapshot(name, path, when, LEGACY, str(exc)))
            continue
        problems = quick_problems(path, manifest)
        status = BAD if problems else GOOD
        found.append(Snapshot(name, path, when, status, "; ".join(problems), manifest))
    found.sort(key=lambda s: (s.time, s.name), reverse=True)
    return found


def space_added(snaps: list[Snapshot]) -> dict[str, int]:
    """Bytes each snapshot really adds on disk: a plain one its files, less those it shares (hard
    links) with an older snapshot; a deduplicated one its lists and the chunks no older one needs."""
    seen: set[tuple[int, int]] = set()
    added: dict[str, int] = deduped.space_added(snaps)
    for snap in sorted(snaps, key=lambda s: (s.time, s.name)):
        if is_dedup(snap.manifest):
            continue
        total = 0
        try:
            names = os.listdir(snap.path)
        except OSError:
            continue
        for name in names:
            try:
                st = os.lstat(snap.path / name)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512 if st.st_blocks else st.st_size
        added[snap.name] = total
    return added


def archive_origin(snap: Snapshot) -> str:
    """``new``, or ``shared with <snapshot>`` (``copied from`` when hard links were not possible)."""
    if is_dedup(snap.manifest):
        new = snap.manifest.get("store", {}).get("new_chunks")
        return f"chunks: {new} new" if isinstance(new, int) else "chunks"
    source = (snap.manifest or {}).get("code", {}).get("archive") or {}
    if not source.get("from"):
        return "new"
    return f"{'shared with' if source.get('shared') == 'hardlink' else 'copied from'} {source['from']}"


def verify(path: str | os.PathLike, seen: set[bytes] | None = None) -> list[str]:
    """Full check of one snapshot; an empty list means it is good. ``seen``: chunks already
    re-hashed in this run (checking many deduplicated snapshots reads each shared chunk once)."""
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        return [str(exc)]
    problems = quick_problems(path, manifest)
    if problems:
        return problems
    if is_dedup(manifest):
        return deduped.verify(path, manifest, seen)
    db = path / DB_NAME
    if sha256_file(db) != manifest["files"][DB_NAME]["sha256"]:
        problems.append(f"{DB_NAME} sha256 differs from the manifest")
    check = dbcopy.integrity(db)
    if check != "ok":
        problems.append(f"{DB_NAME} integrity_check: {check}")
    try:
        read = archive.read_through(str(path / CODE_NAME))
    except SnapshotError as exc:
        problems.append(str(exc))
    else:
        if read["sha256"] != manifest["files"][CODE_NAME]["sha256"]:
            problems.append(f"{CODE_NAME} sha256 differs from the manifest")
        want = manifest.get("code", {}).get("members")
        if isinstance(want, int) and read["members"] != want:
            problems.append(f"{CODE_NAME} holds {read['members']} entries, manifest says {want}")
    return problems


def resolve(dest: Path | None, ref: str) -> Path:
    """A snapshot folder from a path, a name under ``dest``, or ``latest`` (newest good one)."""
    if ref == "latest":
        if dest is None:
            raise SnapshotError("'latest' needs --dest")
        for snap in scan(dest):
            if snap.status == GOOD:
                return snap.path
        raise SnapshotError(f"no good snapshot in {dest}")
    path = Path(ref).expanduser()
    if not path.is_dir() and dest is not None and "/" not in ref:
        path = dest / ref
    if not path.is_dir():
        raise SnapshotError(f"snapshot not found: {ref}")
    return path.absolute()


def delete(snap: Snapshot) -> None:
    """Remove a snapshot; renamed to a build name first, so a crash halfway leaves nothing called good."""
    doomed = snap.path
    if not is_temp_name(snap.name):
        doomed = snap.path.with_name(f".tmp-{snap.name}.deleting")
        os.rename(snap.path, doomed)
    shutil.rmtree(doomed)
    fsync_dir(snap.path.parent)


def latest_db_size(dest: Path, db: Path) -> int | None:
    """Database size recorded by the newest good snapshot of ``db`` (the watch baseline)."""
    for snap in scan(dest):
        if snap.status == GOOD and snap.manifest.get("sources", {}).get("db") == str(db):
            size = snap.manifest.get("db", {}).get("logical_size")
            if isinstance(size, int):
                return size
    return None


__all__ = ["Snapshot", "create", "scan", "verify", "space_added", "archive_origin", "resolve", "delete", "latest_db_size", "REASONS",
           "PREFIX", "TMP_PREFIX", "dest_lock"]
