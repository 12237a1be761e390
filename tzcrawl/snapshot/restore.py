"""Putting a snapshot back: verify it, move the current database aside, swap the copy in atomically,
extract the code. Replaces the original tool's manual ``cp``/``tar -xzf`` steps."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..fsutil import fsync_dir
from . import CODE_NAME, DB_NAME, SnapshotError, archive, codetree, dbcopy
from .deduped import plain_files
from .manifest import is_dedup, read_manifest
from .store import verify

COMPANIONS = codetree.COMPANION_SUFFIXES


def aside_name(target: Path) -> Path:
    """``X.backup`` as in the original instructions; ``X.backup.<UTC time>`` if that is taken."""
    first = target.with_name(target.name + ".backup")
    if not os.path.lexists(first):
        return first
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S-%fZ")
    return target.with_name(f"{target.name}.backup.{stamp}")


def check_not_in_use(db: Path) -> None:
    """Refuse when a process writes to ``db`` or has it open; the caller skips this for ``--force``."""
    why = dbcopy.writer_holding(db)
    pids = sorted({pid for p in [db, *(Path(f"{db}{s}") for s in COMPANIONS)] for pid in dbcopy.open_by_others(p)})
    if pids:
        opened = f"open in process(es) {', '.join(map(str, pids))}"
        why = f"{why}; {opened}" if why else opened
    if why:
        raise SnapshotError(f"database {db} is in use: {why}. Stop the app first, or pass --force")


def restore_db(files: Path, manifest: dict, db: Path, *, force: bool, log: Callable[[str], None]) -> Path | None:
    """Swap the snapshot's database (``files/codex-brain.db``) in at ``db``; return where the previous
    one was moved."""
    if not force:
        check_not_in_use(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.restore-{os.getpid()}.tmp")
    journal_mode = manifest.get("db", {}).get("source_journal_mode")
    try:
        dbcopy.prepare_restore_copy(str(files / DB_NAME), str(tmp), journal_mode)
        if dbcopy.integrity(tmp) != "ok":
            raise SnapshotError("the copy written for the restore fails integrity_check; nothing changed")
        aside = None
        if os.path.lexists(db):
            aside = aside_name(db)
            try:
                os.link(db, aside)  # the old database stays reachable under its .backup name
            except OSError:
                os.rename(db, aside)  # file systems without hard links: a brief gap, no loss
            for suffix in COMPANIONS:  # a stale WAL/journal must not be applied to the restored file
                if os.path.lexists(f"{db}{suffix}"):
                    os.rename(f"{db}{suffix}", f"{aside}{suffix}")
        os.replace(tmp, db)
        fsync_dir(db.parent)
    except OSError as exc:
        raise SnapshotError(f"restoring the database to {db} failed: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if aside:
        log(f"previous database moved aside: {aside}")
    log(f"database restored: {db}")
    return aside


def restore(snapshot: Path, *, db: Path | None, code: Path | None, force: bool,
            log: Callable[[str], None] = print) -> None:
    """Verify ``snapshot`` then restore the parts asked for (``db`` and/or ``code`` not None)."""
    problems = verify(snapshot)
    if problems:
        raise SnapshotError(f"{snapshot.name} does not verify, refusing to restore it: " + "; ".join(problems))
    log(f"verified {snapshot.name}")
    manifest = read_manifest(snapshot)
    if is_dedup(manifest):
        log("putting its files together from the store")
    with plain_files(snapshot, compressor=archive.resolve_compressor("auto"), code=code is not None) as files:
        _restore_from(files, manifest, db=db, code=code, force=force, log=log)


def _restore_from(files: Path, manifest: dict, *, db: Path | None, code: Path | None, force: bool,
                  log: Callable[[str], None]) -> None:
    skip = None
    if code is not None:
        # The database's own files (itself, -wal/-shm/-journal, copies moved aside) are never
        # extracted: where the snapshot had them, and where the database is being restored now.
        sources = manifest.get("sources", {})
        names = {codetree.relative_inside(sources.get("db"), sources["code"]) if sources.get("code") else None,
                 codetree.relative_inside(db, code)} - {None}

        def is_db_file(name: str) -> bool:
            return any(codetree.is_db_file(name, rel) for rel in names)

        skip = is_db_file
        problems = archive.check_extract(str(files / CODE_NAME), str(code), skip)
        if problems:  # found before the database or any file was touched: no half restore
            raise SnapshotError("nothing was restored: " + "; ".join(problems[:5])
                                + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    if db is not None:
        restore_db(files, manifest, db, force=force, log=log)
    if code is not None:
        count = archive.extract(str(files / CODE_NAME), str(code), skip=skip)
        log(f"code restored: {count} entries extracted into {code}")
