"""The chunk store shared by every deduplicated snapshot of a destination: ``DEST/.store/``.

Each chunk (a database page, a piece of a file, a piece of a list) is kept once, zstd-compressed,
named by the SHA-256 of its bytes. Chunks live in append-only packs: ``<name>.pack`` holds the
compressed chunks back to back, ``<name>.idx`` says where each one is and ends with the SHA-256 of
what precedes it. A pack counts only once its index exists, and the index is written (temp file,
fsync, rename) only after the pack is on disk: a crash leaves a pack without an index, which nobody
references and ``sweep`` removes. Packs are never changed in place; ``collect`` copies the live
chunks of a mostly dead pack into a new pack before the old one goes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import NamedTuple

if sys.version_info >= (3, 14):  # zstd in the standard library; before, its backport (Scrapy needs it too)
    from compression import zstd
else:  # pragma: no cover - depends on the Python version
    import backports.zstd as zstd

from ..fsutil import atomic_write_bytes, fsync_dir
from . import SnapshotError

STORE_DIR = ".store"
WORK_PREFIX = "work-"  # scratch folders (a restore's plain files); sweep removes them
LEVEL = 3  # zstd level: near gzip -6's ratio on code, several times its speed
_MAGIC = b"TZIDX1\n"
_REC = struct.Struct(">32sQII")  # digest, offset in the pack, compressed length, raw length
REPACK_AT = 0.10  # a pack is rewritten once this share of its bytes is dead


class ChunkError(SnapshotError):
    """A chunk is missing, unreadable or does not hash to its name."""


class Loc(NamedTuple):  # a tuple: 58k of them load in 0.05-0.06 s against 0.07-0.09 s as a frozen dataclass
    pack: str
    offset: int
    clen: int
    rlen: int


def digest_of(data) -> bytes:
    return hashlib.sha256(data).digest()


def parse_index(data: bytes, pack: str) -> dict[bytes, Loc]:
    """An index file's entries; ValueError when it is not one this tool wrote whole."""
    body, trailer = data[:-32], data[-32:]
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 32 or hashlib.sha256(body).digest() != trailer:
        raise ValueError("not a complete pack index")
    records = body[len(_MAGIC):]
    if len(records) % _REC.size:
        raise ValueError("pack index has a torn record")
    return {d: Loc(pack, off, clen, rlen) for d, off, clen, rlen in _REC.iter_unpack(records)}


def build_index(entries: list[tuple[bytes, int, int, int]]) -> bytes:
    body = _MAGIC + b"".join(_REC.pack(*e) for e in entries)
    return body + hashlib.sha256(body).digest()


class Store:
    """The index of every committed pack, loaded once; ``read`` re-hashes what it returns."""

    def __init__(self, dest: str | os.PathLike, *, create: bool = False):
        self.root = Path(dest) / STORE_DIR
        if create and not self.root.is_dir():
            self.root.mkdir(mode=0o700)
            fsync_dir(self.root.parent)
        self.index: dict[bytes, Loc] = {}
        self.pack_sizes: dict[str, int] = {}
        self.broken: list[str] = []  # index files that could not be read
        self.loaded: frozenset[str] = frozenset()  # the index files the index was read from
        self._fds: dict[str, int] = {}
        self.load()

    def load(self) -> None:
        self.index.clear()
        self.pack_sizes.clear()
        self.broken.clear()
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            names = []
        self.loaded = frozenset(n for n in names if n.endswith(".idx"))
        for name in names:
            if not name.endswith(".idx"):
                continue
            pack = name[:-4]
            try:
                entries = parse_index((self.root / name).read_bytes(), pack)
                self.pack_sizes[pack] = os.stat(self.root / f"{pack}.pack").st_size
            except (OSError, ValueError) as exc:
                self.broken.append(f"{name}: {getattr(exc, 'strerror', None) or exc}")
                continue
            self.index.update(entries)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, digest: bytes) -> bytes:
        """The chunk's bytes, re-hashed. A chunk not found where the index said is looked up once
        more in the index as it is now: ``verify`` and ``list`` read without the destination's lock,
        and a prune may have moved a live chunk into a new pack (committed before the old one went)."""
        try:
            return self._read(digest)
        except ChunkError:
            before = self.index.get(digest)
            if self._indexes() == self.loaded:  # no pack came or went: damage, or truly missing
                raise
            self.load()
            if self.index.get(digest) in (None, before):
                raise
            return self._read(digest)

    def _indexes(self) -> frozenset[str]:
        try:
            return frozenset(n for n in os.listdir(self.root) if n.endswith(".idx"))
        except FileNotFoundError:
            return frozenset()

    def _read(self, digest: bytes) -> bytes:
        loc = self.index.get(digest)
        if loc is None:
            raise ChunkError(f"chunk {digest.hex()[:16]} is not in the store")
        try:
            fd = self._fds.get(loc.pack)
            if fd is None:
                fd = self._fds[loc.pack] = os.open(self.root / f"{loc.pack}.pack", os.O_RDONLY)
            raw = os.pread(fd, loc.clen, loc.offset)
            data = zstd.decompress(raw)
        except (OSError, zstd.ZstdError) as exc:
            raise ChunkError(f"chunk {digest.hex()[:16]} in pack {loc.pack} cannot be read: {exc}") from None
        if len(data) != loc.rlen or digest_of(data) != digest:
            raise ChunkError(f"chunk {digest.hex()[:16]} in pack {loc.pack} is damaged (its hash differs)")
        return data

    def writer(self, name: str) -> "PackWriter":
        return PackWriter(self, name)

    def sweep(self) -> list[str]:
        """Remove what a crash left: packs without an index, temp files, scratch folders. Call it
        under the destination's lock only (a running build's pack has no index yet)."""
        removed = []
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return removed
        have = set(names)
        for name in names:
            path = self.root / name
            if name.startswith(WORK_PREFIX) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif (name.endswith(".pack") and f"{name[:-5]}.idx" not in have) or name.endswith(".tmp"):
                path.unlink()
            else:
                continue
            removed.append(name)
        if removed:
            fsync_dir(self.root)
        return removed

    def dead(self, live: set[bytes]) -> dict[str, int]:
        """Compressed bytes in each pack that no live chunk needs (a chunk kept in two packs counts
        as live only in the one the index points at)."""
        dead = dict.fromkeys(self.pack_sizes, 0)
        indexed = dict.fromkeys(self.pack_sizes, 0)
        for digest, loc in self.index.items():
            indexed[loc.pack] += loc.clen
            if digest not in live:
                dead[loc.pack] += loc.clen
        for pack, size in self.pack_sizes.items():
            dead[pack] += max(0, size - indexed[pack])  # duplicates the index does not point at
        return dead

    def plan(self, live: set[bytes]) -> tuple[list[str], list[str], int]:
        """Packs to delete (nothing live), packs to rewrite (dead share ≥ REPACK_AT), bytes freed."""
        dead = self.dead(live)
        holds_live = {loc.pack for d, loc in self.index.items() if d in live}
        drop = [p for p in sorted(dead) if p not in holds_live]
        rewrite = [p for p in sorted(dead) if p in holds_live and dead[p] >= REPACK_AT * max(1, self.pack_sizes[p])]
        return drop, rewrite, sum(self.pack_sizes[p] for p in drop) + sum(dead[p] for p in rewrite)

    def collect(self, live: set[bytes], name: str) -> int:
        """Free what no live chunk needs: whole packs go, mostly dead ones are rewritten first. New
        data is committed before anything is deleted, so a crash loses nothing live."""
        drop, rewrite, freed = self.plan(live)
        if rewrite:
            writer = self.writer(name)
            try:
                for digest, loc in sorted(self.index.items(), key=lambda kv: (kv[1].pack, kv[1].offset)):
                    if loc.pack in rewrite and digest in live:
                        writer.copy(digest, loc)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
        self.close()
        for pack in drop + rewrite:
            (self.root / f"{pack}.idx").unlink()  # the index first: a pack without one is garbage
            (self.root / f"{pack}.pack").unlink()
        fsync_dir(self.root)
        self.load()
        return freed


class PackWriter:
    """Appends new chunks to one new pack; ``commit`` makes them part of the store."""

    def __init__(self, store: Store, name: str):
        self.store, self.name = store, name
        self.path = store.root / f"{name}.pack"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self.entries: list[tuple[bytes, int, int, int]] = []
        self.pending: set[bytes] = set()
        self.pos = 0
        self.new_bytes = 0
        self.committed = False

    def add(self, data, digest: bytes | None = None) -> bytes:
        """Store ``data`` unless the store or this pack has it already; return its digest."""
        if digest is None:
            digest = digest_of(data)
        if digest in self.store.index or digest in self.pending:
            return digest
        self._append(digest, zstd.compress(data, LEVEL), len(data))
        return digest

    def copy(self, digest: bytes, loc: Loc) -> None:
        """A chunk of another pack, as it is stored (re-hashed on the way: damage is not copied)."""
        if digest in self.pending:
            return
        data = self.store.read(digest)
        self._append(digest, os.pread(self.store._fds[loc.pack], loc.clen, loc.offset), len(data))

    def _append(self, digest: bytes, blob: bytes, rlen: int) -> None:
        self.fh.write(blob)
        self.entries.append((digest, self.pos, len(blob), rlen))
        self.pending.add(digest)
        self.pos += len(blob)
        self.new_bytes += len(blob)

    def commit(self) -> None:
        """Pack on disk first, then its index (atomically): from then on its chunks are the store's."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.committed = True
        if not self.entries:
            self.path.unlink()
            return
        atomic_write_bytes(self.store.root / f"{self.name}.idx", build_index(self.entries))
        fsync_dir(self.store.root)
        for digest, off, clen, rlen in self.entries:
            self.store.index.setdefault(digest, Loc(self.name, off, clen, rlen))
        self.store.pack_sizes[self.name] = self.pos
        self.store.loaded |= {f"{self.name}.idx"}

    def abort(self) -> None:
        """Drop an uncommitted pack (a committed one stays: unreferenced chunks are collect's)."""
        if self.committed:
            return
        try:
            self.fh.close()  # flushes what is buffered: may fail again on a full disk
        except OSError:
            pass
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
