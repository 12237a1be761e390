"""One run at a time per personality: an ``flock`` on ``<dir>/.lock``.

A scheduled run overlapping a manual one must not interleave writes. ``flock`` is released by the
kernel when the holder dies, so a killed run never leaves a stale lock; the holder's pid is written
into the file only to tell the waiting user who holds it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tzcrawl.fsutil import FILE_MODE

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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        deadline = time.monotonic() + max(timeout, 0)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise BackupLocked(self.name, _read_pid(fd), self.path) from None
                    time.sleep(min(POLL_SECONDS, remaining))
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
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


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (ValueError, OSError):
        return None
