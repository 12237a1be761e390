"""Private, crash-safe file writing shared by the backup store, the cookie file and snapshots.

Backups hold private conversations and the cookie is a password, so everything written here is
0600 inside 0700 directories, and a file is only ever replaced whole: temp file in the same
directory, fsync, rename, fsync the directory. A crash leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Iterator

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_private_dir(path: str | os.PathLike, *, tighten: bool = False) -> Path:
    """Create ``path`` and its missing parents as 0700 (whatever the umask).

    Existing directories are left as they are (the parent of a cookie file may be the user's
    home) unless ``tighten``: then ``path`` itself, a directory dedicated to backups, becomes 0700.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
            directory.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    if tighten and path.stat().st_mode & 0o777 != DIR_MODE:
        with contextlib.suppress(PermissionError):
            path.chmod(DIR_MODE)
    return path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, binary: bool = False, mode: int = FILE_MODE,
                  sync: "Syncer | None" = None) -> Iterator[IO]:
    """Yield a file to write; on clean exit it atomically replaces ``path``, on error it vanishes.
    ``sync``: the file is handed to it to be made durable in the background instead of before the
    rename. Only for a folder nobody relies on until ``sync.settle()`` (an export's staged copy)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            if sync is None:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync is None:
        fsync_dir(path.parent)
    else:
        sync(path)


class Syncer:
    """Makes files durable in a thread while the caller goes on (fsync waits on the disk, not the
    CPU); ``settle()`` waits for every file handed over and their folders, then raises the first
    error (a full disk can surface only here, at fsync)."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._folders: set[Path] = set()
        self.error: OSError | None = None

    def __call__(self, path: Path) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fsync", daemon=True)
            self._thread.start()
        self._queue.put(Path(path))

    def _run(self) -> None:
        while (path := self._queue.get()) is not None:
            if self.error is None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    self._folders.add(path.parent)
                except OSError as exc:
                    self.error = exc

    def settle(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self.error is None:
            try:
                for folder in sorted(self._folders):
                    fsync_dir(folder)
            except OSError as exc:
                self.error = exc
        self._folders.clear()
        if self.error is not None:
            raise self.error


def atomic_write_text(path: str | os.PathLike, text: str, *, mode: int = FILE_MODE) -> None:
    with atomic_writer(path, mode=mode) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = FILE_MODE) -> None:
    with atomic_writer(path, binary=True, mode=mode) as fh:
        fh.write(data)


def sha256_file(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex), read in 1 MiB blocks: snapshots, media files and backup checks use it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def append_lines(path: str | os.PathLike, lines: list[bytes]) -> None:
    """Append whole lines to a JSON-lines file (0600), durably. A torn last line (a crash mid-append)
    is cut off first, so every line stays one JSON value."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            tail = b""
            start = max(0, size - (1 << 16))
            while True:  # the end of the last whole line
                tail = os.pread(fd, size - start, start)
                cut = tail.rfind(b"\n")
                if cut >= 0 or start == 0:
                    break
                start = max(0, start - (1 << 16))
            os.ftruncate(fd, start + cut + 1 if cut >= 0 else 0)
        os.lseek(fd, 0, os.SEEK_END)
        data = memoryview(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


class LockHeld(Exception):
    """Another process holds the lock file; ``pid`` is what it wrote there (None if unreadable)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is held by {'process %d' % pid if pid else 'another process'}")
        self.path, self.pid = path, pid


def lock_file(path: str | os.PathLike, *, timeout: float = 0.0, poll: float = 0.1) -> int:
    """Take an exclusive ``flock`` on ``path`` (created 0600), waiting up to ``timeout`` seconds.

    Returns the descriptor; closing it releases the lock, and the kernel releases it when the holder
    dies, so a killed run never leaves a stale lock. Our pid is written in only to name the holder.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    deadline = time.monotonic() + max(timeout, 0.0)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockHeld(path, _read_pid(fd)) from None
                time.sleep(min(poll, remaining))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (ValueError, OSError):
        return None
