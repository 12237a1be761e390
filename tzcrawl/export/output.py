"""Where exports go: private files (0600 in 0700 folders, like the backup: they hold the same
conversations), written atomically and only when their bytes changed, plus the export state that
lets an unchanged backup be skipped without rendering anything.

A personality's folder is written anew beside the old one (``staged``: the old files hard-linked
into ``.<name>.new``, changed ones replaced there) and swapped in only when every format succeeded:
a failed export (a full disk, a bug) leaves the previous export whole, and the index keeps listing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from tzcrawl import jsonio
from tzcrawl.fsutil import Syncer, atomic_write_bytes, atomic_writer, ensure_private_dir

STATE_NAME = ".tzcrawl-export.json"
CUTS = "cuts"  # beside the formats in a personality's state: where its collections' segments were
EXPORT_VERSION = 2  # bump when the output of a format changes: every export is then redone


class Output:
    def __init__(self, root: Path):
        self.root = ensure_private_dir(root, tighten=True)
        self.state_path = self.root / STATE_NAME
        try:
            self.state = jsonio.loads(self.state_path.read_bytes())
            if not isinstance(self.state, dict):
                self.state = {}
        except (OSError, ValueError):
            self.state = {}
        self._stages: dict[str, Path] = {}
        self._syncers: dict[str, Syncer] = {}

    def folder(self, *parts: str) -> Path:
        """A folder of the export; a personality's folder being staged (``staged``) is its new copy."""
        stage = self._stages.get(parts[0]) if parts else None
        if stage is not None:
            return ensure_private_dir(stage.joinpath(*parts[1:]))
        return ensure_private_dir(self.root.joinpath(*parts))

    @contextlib.contextmanager
    def staged(self, dir_name: str) -> Iterator["Stage"]:
        """Write ``dir_name``'s folder anew beside the old one; ``Stage.keep()`` swaps it in at the end,
        else (a failure, an exception) the new copy is dropped and the old folder and its state stay."""
        final, stage = self.root / dir_name, self.root / f".{dir_name}.new"
        old = self.root / f".{dir_name}.old"
        if old.is_dir() and not final.exists():  # a swap a crash interrupted: the old one comes back
            os.rename(old, final)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)
        link_tree(final, stage) if final.is_dir() else ensure_private_dir(stage)
        before = json.loads(json.dumps(self.state.get(dir_name))) if dir_name in self.state else None
        handle = Stage()
        self._stages[dir_name] = stage
        self._syncers[dir_name] = handle.sync
        try:
            yield handle
        except BaseException:
            handle.kept = False
            raise
        finally:
            del self._stages[dir_name], self._syncers[dir_name]
            unsettled = None
            try:
                handle.sync.settle()  # every file handed over is on disk before the folder is swapped in
            except OSError as exc:
                unsettled, handle.kept = (exc if handle.kept else None), False
            if handle.kept:
                if final.exists():
                    os.rename(final, old)
                os.rename(stage, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                shutil.rmtree(stage, ignore_errors=True)
                if before is None:
                    self.state.pop(dir_name, None)
                else:
                    self.state[dir_name] = before
            if unsettled is not None:
                raise unsettled

    def sync_for(self, dir_name: str) -> Syncer | None:
        """What makes the big files of a personality's staged folder durable in the background (its
        transcripts and chat file, fsynced while the next format renders); None when not staged."""
        return self._syncers.get(dir_name)

    def write(self, path: Path, data: bytes | str) -> bool:
        """Replace ``path`` atomically when its bytes differ; True when it was written."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return False
        except OSError:
            pass
        ensure_private_dir(path.parent)
        atomic_write_bytes(path, data)
        return True

    def link(self, source: Path, target: Path) -> None:
        """``target`` holds ``source``'s bytes: a hard link (no extra space), a copy across filesystems;
        either is made under a temporary name and renamed over ``target`` (never a torn copy)."""
        if target.exists() and os.path.samefile(source, target):
            return
        ensure_private_dir(target.parent)
        temp = target.with_name(f".{target.name[:40]}.{os.getpid()}.link.tmp")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        try:
            os.link(source, temp)
        except OSError:  # another filesystem: a copy, written whole
            with open(source, "rb") as src, atomic_writer(target, binary=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return
        try:
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    # -- what was exported from what ------------------------------------------------------------
    @staticmethod
    def fingerprint(fmt: str, inputs: list) -> str:
        return hashlib.sha256(jsonio.dumps_bytes([EXPORT_VERSION, fmt, inputs])).hexdigest()

    def unchanged(self, dir_name: str, fmt: str, fingerprint: str) -> bool:
        return self.state.get(dir_name, {}).get(fmt, {}).get("fingerprint") == fingerprint

    def earlier(self, dir_name: str, fmt: str) -> dict:
        """What the last export of ``fmt`` kept to start from (``state``: its segments), or ``{}``."""
        state = self.state.get(dir_name, {}).get(fmt, {}).get("state")
        return state if isinstance(state, dict) else {}

    def record(self, dir_name: str, fmt: str, fingerprint: str, summary: dict) -> None:
        self.state.setdefault(dir_name, {})[fmt] = {"fingerprint": fingerprint, **summary}

    def cuts(self, dir_name: str) -> dict:
        """Where the last export found each collection's segments (``Personality.noted``)."""
        value = self.state.get(dir_name, {}).get(CUTS)
        return value if isinstance(value, dict) else {}

    def note_cuts(self, dir_name: str, cuts: dict) -> None:
        """Keep what this export's first reads found; a collection not read this time keeps its entry."""
        if cuts:
            entry = self.state.setdefault(dir_name, {})
            entry[CUTS] = {**(entry.get(CUTS) if isinstance(entry.get(CUTS), dict) else {}), **cuts}

    def forget(self, dir_name: str, fmt: str) -> None:
        self.state.get(dir_name, {}).pop(fmt, None)

    def save_state(self) -> None:
        """One compact line (orjson: the state keeps each segment's media look-ups, megabytes for a long
        history), written only when it changed."""
        self.write(self.state_path, jsonio.dumps_bytes(self.state) + b"\n")


class Stage:
    """A personality's folder being written anew: ``keep()`` once every format succeeded. Files
    handed to ``sync`` are made durable before the swap (``settle``: done again at the swap, a no-op
    then)."""

    def __init__(self):
        self.kept = False
        self.sync = Syncer()

    def keep(self) -> None:
        self.kept = True


def link_tree(source: Path, target: Path) -> None:
    """``target`` a copy of the folder ``source`` made of hard links (0700 folders; no bytes copied)."""
    ensure_private_dir(target)
    for root, dirs, files in os.walk(source):
        here = target / Path(root).relative_to(source)
        for name in dirs:
            ensure_private_dir(here / name)
        for name in files:
            if not name.endswith(".tmp"):
                try:
                    os.link(Path(root) / name, here / name)
                except OSError:  # no hard links on this filesystem: a copy (0600)
                    shutil.copyfile(Path(root) / name, here / name)
                    (here / name).chmod(0o600)
