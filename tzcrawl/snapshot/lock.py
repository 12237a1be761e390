"""One snapshot operation at a time per destination: ``flock`` on ``DEST/.snapshot.lock``.

The kernel drops the lock when its holder dies, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..fsutil import LockHeld, lock_file
from . import LOCK_NAME, SnapshotError


class LockBusy(SnapshotError):
    pass


@contextlib.contextmanager
def dest_lock(dest: str | os.PathLike, *, wait: float = 0.0, poll: float = 0.25) -> Iterator[None]:
    """Hold the destination's lock; wait up to ``wait`` seconds for it, then raise LockBusy."""
    path = Path(dest) / LOCK_NAME
    try:
        fd = lock_file(path, timeout=wait, poll=poll)
    except LockHeld:
        raise LockBusy(f"another snapshot operation holds {path} (waited {wait:g}s)") from None
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock
