"""A personality's last committed state, as one consistent set of files, for readers beside a crawl.

A crawl holds the personality's lock for its whole walk and commits resource by resource: the data
file is renamed into place, then the metadata records its sha256. ``scrapy verify`` and ``scrapy
export`` read through ``committed``: it hard-links the personality's committed files (metadata, data
files, media manifest, media) into a private folder under ``BACKUP_DIR/.locks/views/``, so a later
commit (a rename) cannot change what they read, and no copy is made. When the lock is free (or
freed within ``wait`` seconds) the links are made holding it, and are consistent by construction;
when a crawl holds it, each linked data file is checked against the sha256 the linked metadata
recorded, and a commit that fell between two links (a mismatch) means linking again. The views are
removed when the reader is done (a killed reader's at the next one's start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tzcrawl import registry
from tzcrawl.fsutil import ensure_private_dir, sha256_file

from . import metadata as meta
from .backup import MEDIA_DIR, BackupView
from .lock import LOCKS_DIR, BackupLocked, Locks

VIEWS = "views"
ATTEMPTS = 20
PAUSE = 0.2


class BackupBusy(RuntimeError):
    """Commits kept landing while the committed state was being linked: no consistent set was had."""


@dataclass(frozen=True)
class Committed:
    """What a reader reads: ``view`` holds one consistent state of the personality; ``live``: a crawl
    (process ``holder``) was backing it up, so this is its last committed state."""

    view: BackupView
    live: bool
    holder: int | None = None


@contextlib.contextmanager
def committed(view: BackupView, username: str, wait: float = 0.0, attempts: int = ATTEMPTS,
              waiting=None) -> Iterator[Committed]:
    """The last committed state of ``username`` (see the module's text); BackupBusy when none could be had.
    A backup that cannot be written (a read-only mount, a restored copy) has no running crawl to fear:
    it is read as it is. ``waiting(pid)`` is called once when a crawl holds it and ``wait`` is given."""
    try:
        views = ensure_private_dir(view.root / LOCKS_DIR / VIEWS)
    except OSError:
        yield Committed(view, False)
        return
    _remove_stale(views)
    locks = Locks(view.root)
    name = view.dir_name(username)
    holder = None
    for attempt in range(max(attempts, 1)):
        folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=views))
        try:
            try:
                try:
                    locks.acquire(name, 0)
                except BackupLocked as exc:
                    if not (wait and attempt == 0):
                        raise
                    if waiting is not None:
                        waiting(exc.pid)
                    locks.acquire(name, wait)
            except BackupLocked as exc:
                holder = exc.pid
                consistent = link(view, username, folder, check=True)
            else:
                try:
                    consistent = link(view, username, folder, check=False)
                finally:
                    locks.release(name)
                holder = None
            if consistent:
                yield Committed(BackupView(folder), holder is not None, holder)
                return
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        time.sleep(PAUSE)
    raise BackupBusy(f"{username}: the running backup kept committing while its files were being read "
                     f"({attempts} tries); try again, or wait for it")


def link(view: BackupView, username: str, folder: Path, check: bool) -> bool:
    """Hard-link the personality's committed files into ``folder``; with ``check``, True only when
    every linked data file has the sha256 the linked metadata recorded for it."""
    source = view.directory(username)
    target = ensure_private_dir(folder / source.name)
    _link(view.metadata_path(username), target)
    metadata = meta.load(target / meta.METADATA_NAME)
    linked = {}
    for resource in registry.REGISTRY:
        path = _link(view.path(username, resource.name), target)
        if path is not None:
            linked[resource.name] = path
    _link(view.media_manifest_path(username), target)
    media = view.media_dir(username)
    if media.is_dir():
        media_target = ensure_private_dir(target / MEDIA_DIR)
        for file in media.iterdir():
            if not file.name.startswith("."):
                _link(file, media_target)
    if not check:
        return True
    resources = metadata.get("resources") if isinstance(metadata.get("resources"), dict) else {}
    for resource, path in linked.items():
        recorded = (resources.get(resource) or {}).get("sha256")
        if recorded and sha256_file(path) != recorded:
            return False
    return True


def _link(path: Path, folder: Path) -> Path | None:
    """``path`` linked into ``folder`` under its own name (copied where the filesystem has no hard
    links: FAT, exFAT, some network shares); None when it does not exist (not saved yet)."""
    target = folder / path.name
    try:
        os.link(path, target)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            shutil.copyfile(path, target)
        except FileNotFoundError:
            return None
    return target


def _remove_stale(views: Path) -> None:
    """Views of readers that are gone (killed): ``<pid>-...`` folders whose process no longer runs."""
    for folder in views.iterdir():
        pid = folder.name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass


__all__ = ["BackupBusy", "Committed", "committed", "link"]
