"""One run at a time per personality: an ``flock`` on ``<dir>/.lock``.

A scheduled run overlapping a manual one must not interleave writes. ``flock`` is released by the
kernel when the holder dies, so a killed run never leaves a stale lock; the holder's pid is written
into the file only to tell the waiting user who holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tzcrawl.fsutil import LockHeld, lock_file

POLL_SECONDS = 0.1


class BackupLocked(RuntimeError):
    """Another process is backing up this personality right now."""

    def __init__(self, name: str, pid: int | None, path: Path):
        self.name, self.pid, self.path = name, pid, path
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"backup of {name!r} is locked by {holder} ({path}); try again when it has finished")


class PersonalityLock:
    """Exclusive lock on one personality directory; use as a context manager or acquire/release."""

    def __init__(self, directory: Path, name: str):
        self.path = directory / ".lock"
        self.name = name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = 0) -> "PersonalityLock":
        """Wait up to ``timeout`` seconds (0: do not wait); raise BackupLocked naming the holder."""
        try:
            self._fd = lock_file(self.path, timeout=timeout, poll=POLL_SECONDS)
        except LockHeld as exc:
            raise BackupLocked(self.name, exc.pid, self.path) from None
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> "PersonalityLock":
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

