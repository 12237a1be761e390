"""One run at a time per personality: an ``flock`` on ``BACKUP_DIR/.locks/<name>.lock``.

A scheduled run overlapping a manual one must not interleave writes. ``flock`` is released by the
kernel when the holder dies, so a killed run never leaves a stale lock; the holder's pid is written
into the file only to tell the waiting user who holds it. The lock files live apart from the
personality folders, so asking about a personality that turns out not to exist leaves no folder.

``Locks`` is one crawl's set of held locks: re-entrant (counted) within the process, safe across
threads, and with an ``async`` wait that polls without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from tzcrawl.fsutil import LockHeld, ensure_private_dir, lock_file

POLL_SECONDS = 0.1
LOCKS_DIR = ".locks"


class BackupLocked(RuntimeError):
    """Another process is backing up this personality right now."""

    def __init__(self, name: str, pid: int | None, path: Path):
        self.name, self.pid, self.path = name, pid, path
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"backup of {name!r} is locked by {holder} ({path}); try again when it has finished")


class Locks:
    """The personality locks this process holds under one backup root, by directory name."""

    def __init__(self, root: Path):
        self.dir = root / LOCKS_DIR
        self._held: dict[str, list[int]] = {}  # name -> [descriptor, holds]
        self._guard = threading.Lock()

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.lock"

    def holds(self, name: str) -> bool:
        with self._guard:
            return name in self._held

    def acquire(self, name: str, timeout: float = 0) -> None:
        """Take (or count once more) the lock, waiting up to ``timeout`` seconds (blocking)."""
        for pause in self._attempts(name, timeout):
            time.sleep(pause)

    async def wait_acquire(self, name: str, timeout: float) -> None:
        """``acquire`` for the event loop: waits with ``asyncio.sleep``, never blocks it."""
        for pause in self._attempts(name, timeout):
            await asyncio.sleep(pause)

    def _attempts(self, name: str, timeout: float) -> Iterator[float]:
        """Try until the lock is ours, yielding the pause before each next try; BackupLocked at the deadline."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                return self._attempt(name)
            except BackupLocked:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
            yield min(POLL_SECONDS, remaining)

    def _attempt(self, name: str) -> None:
        with self._guard:
            if name in self._held:
                self._held[name][1] += 1
                return
            ensure_private_dir(self.dir)
            try:
                fd = lock_file(self.path(name))
            except LockHeld as exc:
                raise BackupLocked(name, exc.pid, self.path(name)) from None
            self._held[name] = [fd, 1]

    def release(self, name: str) -> None:
        """Count one hold off; the last one closes the descriptor, which drops the flock."""
        with self._guard:
            held = self._held.get(name)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                del self._held[name]
                os.close(held[0])

    def release_all(self) -> None:
        with self._guard:
            held, self._held = self._held, {}
        for fd, _count in held.values():
            os.close(fd)
