"""When ``watch`` takes a snapshot: cheap readings of the database's files and a pure decision.

The seed snapshots when the database has grown by more than 50 KB. Comparing with the last
snapshot's size misses growth after a VACUUM shrank the file, and never sees rows changed in place.
So each check measures what changed since the previous check, and the changes add up until they
pass the threshold: the growth of the database's content, or the pages written, whichever is
larger. Pages written are those of the database file whose checksum changed (one CRC-32 per page,
the file read once per check) or, in WAL mode, the frames appended to the WAL since the last check
(committed pages wait there until a checkpoint copies them into the file).
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from dataclasses import dataclass, field

WAL_HEADER, FRAME_HEADER = 32, 24
WAL_MAGIC = (0x377F0682, 0x377F0683)


@dataclass(frozen=True)
class Reading:
    size: int                 # bytes of content (page_size × page_count, committed WAL frames included)
    page_size: int
    sums: array = field(default_factory=lambda: array("I"), repr=False)  # CRC-32 of each page of the file
    wal_salt: bytes | None = None  # the WAL header's salts: new ones mean the WAL started over
    wal_frames: int = 0       # frames of the current WAL generation


def read(db: str | os.PathLike, size: int) -> Reading:
    """Checksum the database file page by page and read its WAL's frame headers; ``size`` as SQLite
    reports it."""
    sums = array("I")
    with open(db, "rb") as fh:
        header = fh.read(100)
        page_size = struct.unpack(">H", header[16:18])[0] if len(header) >= 18 else 4096
        page_size = 65536 if page_size == 1 else (page_size or 4096)
        fh.seek(0)
        while chunk := fh.read(page_size * 256):
            view = memoryview(chunk)
            sums.extend(zlib.crc32(view[at:at + page_size]) for at in range(0, len(chunk), page_size))
    salt, frames = _wal(f"{os.fspath(db)}-wal")
    return Reading(size, page_size, sums, salt, frames)


def _wal(path: str) -> tuple[bytes | None, int]:
    try:
        with open(path, "rb") as fh:
            header = fh.read(WAL_HEADER)
            if len(header) < WAL_HEADER or struct.unpack(">I", header[:4])[0] not in WAL_MAGIC:
                return None, 0
            page_size = struct.unpack(">I", header[8:12])[0]
            salt = header[16:24]
            frames = 0
            while True:  # frames of this generation carry its salts; the first that does not ends it
                fh.seek(WAL_HEADER + frames * (FRAME_HEADER + page_size))
                frame = fh.read(FRAME_HEADER)
                if len(frame) < FRAME_HEADER or frame[8:16] != salt:
                    return salt, frames
                frames += 1
    except FileNotFoundError:
        return None, 0


def changed_bytes(before: Reading, now: Reading) -> int:
    """What changed between two readings: growth, or pages written, whichever is larger."""
    growth = max(0, now.size - before.size)
    rewritten = sum(1 for old, new in zip(before.sums, now.sums) if old != new)
    frames = 0
    if now.wal_salt is not None:
        same_generation = now.wal_salt == before.wal_salt
        frames = max(0, now.wal_frames - before.wal_frames) if same_generation else now.wal_frames
    return max(growth, max(rewritten, frames) * now.page_size)
