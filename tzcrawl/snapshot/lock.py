"""One snapshot operation at a time per destination: ``flock`` on ``DEST/.snapshot.lock``.

The kernel drops the lock when its holder dies, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from . import LOCK_NAME, SnapshotError


class LockBusy(SnapshotError):
    pass


@contextlib.contextmanager
def dest_lock(dest: str | os.PathLike, *, wait: float = 0.0, poll: float = 0.25) -> Iterator[None]:
    """Hold the destination's lock; wait up to ``wait`` seconds for it, then raise LockBusy."""
    path = Path(dest) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"another snapshot operation holds {path} (waited {wait:g}s)") from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock
