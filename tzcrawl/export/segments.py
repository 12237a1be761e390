"""Exports that redo only what changed.

A collection is cut into segments of ``SEGMENT`` records, oldest first: a page of the archive, a
stretch of a transcript. A segment's *key* is the sha256 of its records as saved (their JSON text,
not parsed) and of what else its output depends on (the personality's name, the page number, the
day the stretch starts after...). A segment whose key, and every media look-up it made, are those of
the last export is not rendered again: its page is kept, or its bytes are copied from the old file.
Rendering is a function of exactly these inputs, so the result is byte for byte a fresh export's.

An incremental backup appends records: every segment but the last is reused, and records are parsed
(``orjson``) only for the segments that are rendered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Iterator

import orjson

from tzcrawl import jsonio
from tzcrawl.fsutil import atomic_writer
from tzcrawl.store.jsonarray import CorruptCollectionError, read_stretch

SEGMENT = 1000  # records a segment: a page of the archive


@dataclass
class Segment:
    number: int                      # 1, 2, ...
    bodies: Sequence[bytes]          # each record's JSON text, as saved (``Stretch``: read when needed)
    more: bool = False               # another segment follows
    torn: str | None = None          # set by ``records``: a record that is not JSON (what came before it is kept)
    _records: list | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = hashlib.sha256(b"\n".join(self.bodies)).hexdigest()
        return self._digest

    @property
    def records(self) -> list[dict]:
        """The records (objects), parsed on first use (a reused segment never is); a torn file's
        records up to the first that does not parse, with ``torn`` saying why."""
        if self._records is None:
            self._records = []
            for body in self.bodies:
                try:
                    value = orjson.loads(body)
                except orjson.JSONDecodeError:
                    try:
                        value = jsonio.loads(body)
                    except ValueError as exc:
                        self.torn = str(CorruptCollectionError(f"not valid JSON after {len(self._records)} records "
                                                               f"of page {self.number} ({exc})"))
                        self.more = False
                        break
                if isinstance(value, dict):
                    self._records.append(value)
        return self._records


class Stretch(Sequence):
    """A segment's bodies not read yet: the file and byte range a first read of it noted (the next
    format of the same export renders only its changed segments, and reads only those)."""

    def __init__(self, path: Path, start: int, end: int, count: int, stat: tuple, digest: str):
        self.path, self.start, self.end, self.count, self.stat, self.digest = path, start, end, count, stat, digest
        self._bodies: list[bytes] | None = None

    def _load(self) -> list[bytes]:
        if self._bodies is None:
            bodies = read_stretch(self.path, self.start, self.end, self.count, self.stat)
            if hashlib.sha256(b"\n".join(bodies)).hexdigest() != self.digest:
                raise CorruptCollectionError(f"{self.path} changed while it was being exported")
            self._bodies = bodies
        return self._bodies

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        return self._load()[index]

    def __iter__(self):
        return iter(self._load())


def again(path: Path, stat: tuple, noted) -> Iterator[Segment]:
    """Segments where a read of this file noted them (``number, more, digest, count, start, end``):
    their bodies are read only if a format renders them."""
    for number, more, digest, count, start, end in noted:
        yield Segment(number, Stretch(path, start, end, count, stat, digest), more, _digest=digest)


def cut(bodies: Iterator[bytes], size: int = SEGMENT, first: int = 1) -> Iterator[Segment]:
    """Segments of ``size`` records, numbered from ``first``, each knowing whether another follows
    (one read ahead); an empty collection is one empty segment (its page says so)."""
    number, current = first - 1, []
    for body in bodies:
        if len(current) == size:
            number += 1
            yield Segment(number, current, True)
            current = []
        current.append(body)
    yield Segment(number + 1, current, False)


def unchanged_start(path: Path, noted) -> tuple[list[tuple], tuple | None]:
    """The segments a last export noted (``[number, more, digest, count, start, end]`` each) that
    begin the file ``path`` again, where they were: an incremental backup appends records, so all but
    the last one usually do. Each is read again by its byte range and checked by its digest (no walk
    through every line of the file) and must end with the separator, so the reading can resume right
    after it. Returns them and the file's identity (for ``Stretch``)."""
    try:
        st = os.stat(path)
    except OSError:
        return [], None
    stat = (st.st_ino, st.st_size, st.st_mtime_ns)
    kept: list[tuple] = []
    try:
        with open(path, "rb") as fh:
            for number, more, digest, count, start, end in noted if isinstance(noted, list) else ():
                at = kept[-1][5] if kept else None
                if (more is not True or number != len(kept) + 1 or not isinstance(digest, str)
                        or not all(type(v) is int for v in (count, start, end))
                        or not 0 < start <= end <= st.st_size or (at is not None and start != at)):
                    break
                if at is None and fh.read(start).strip() != b"[":
                    break
                bodies = read_stretch(path, start, end, count, stat)
                fh.seek(max(start, end - 64))
                if hashlib.sha256(b"\n".join(bodies)).hexdigest() != digest \
                        or not fh.read(end - fh.tell()).rstrip().endswith(b","):
                    break
                kept.append((number, True, digest, count, start, end))
    except (OSError, ValueError, TypeError):  # a file changed meanwhile, a state not of this tool's making
        pass
    return kept, stat


def key(segment: Segment, *context) -> str:
    """What a segment's output depends on: its records as saved, and ``context`` (JSON-able)."""
    return hashlib.sha256(jsonio.dumps_bytes([segment.digest, list(context)])).hexdigest()


class Looked:
    """The media map (URL → the export's local path) as a render sees it, remembering each look-up:
    a later export may reuse the output only while every URL looked up maps as it did."""

    def __init__(self, media: dict[str, str]):
        self.media = media
        self.used: dict[str, str | None] = {}

    def get(self, url, default=None):
        value = self.media.get(url) if isinstance(url, str) else None
        if isinstance(url, str):
            self.used[url] = value
        return default if value is None else value

    def __contains__(self, url) -> bool:
        return self.get(url) is not None


def still(used: dict, media: dict[str, str]) -> bool:
    """Every URL an earlier render looked up maps to the same local file (or to none) today."""
    return isinstance(used, dict) and all(media.get(url) == local for url, local in used.items())


def reusable(earlier: dict | None, segment_key: str, media: dict[str, str]) -> bool:
    """The state an earlier export kept of a segment (``{"key", "used", ...}``) fits this one."""
    return isinstance(earlier, dict) and earlier.get("key") == segment_key and still(earlier.get("used"), media)


def _copy_range(src: int, dst, start: int, length: int) -> None:
    """``length`` bytes of file ``src`` from ``start`` appended to the open file ``dst``: in the kernel
    (copy_file_range) where it can, else read and written."""
    dst.flush()
    out = dst.fileno()
    while length > 0:
        try:
            done = os.copy_file_range(src, out, length, start)
        except (AttributeError, OSError):  # not Linux, another file system, an old kernel
            done = 0
        if done <= 0:
            data = os.pread(src, min(length, 1 << 20), start)
            if not data:
                raise OSError(f"the last export's file ended early at byte {start}")
            os.write(out, data)
            done = len(data)
        start += done
        length -= done


class _File:
    """One output file. While it is made only of the last export's bytes in their old places it is not
    touched at all; from the first byte that differs it is written anew (atomically), the unchanged
    stretch before it copied over."""

    def __init__(self, stream: "Stream", name: str, stack: contextlib.ExitStack):
        self.stream, self.name, self.stack = stream, name, stack
        self.size = 0
        self.fh = None

    def reuse(self, start: int, length: int) -> None:
        if self.fh is None and start == self.size:
            self.size += length
            return
        self._open()
        _copy_range(self.stream.previous(self.name).fileno(), self.fh, start, length)
        self.size += length

    def write(self, data: bytes) -> None:
        self._open()
        self.fh.write(data)
        self.size += len(data)

    def _open(self) -> None:
        if self.fh is None:
            self.fh = self.stack.enter_context(atomic_writer(self.stream.folder / self.name, binary=True,
                                                             sync=self.stream.sync))
            if self.size:
                _copy_range(self.stream.previous(self.name).fileno(), self.fh, 0, self.size)

    def finish(self) -> bool:
        """Whether the file was written (else it is the last export's, byte for byte)."""
        if self.fh is None and self.size != self.stream.old_files.get(self.name):
            self._open()  # shorter than before: the old bytes up to here, in a new file
        return self.fh is not None


class Stream:
    """Files made of the segments' output in order (a transcript, a chat file). ``render(segment,
    carry, looked)`` gives a segment's ``[(file name, bytes), ...]`` and the carry for the next one
    (what a segment's output depends on from before it: the day of the last message...). A segment
    whose key (records, ``context``, carry) and media look-ups are the last export's is not rendered:
    its bytes are the old file's, copied in the kernel, and a file made only of such bytes in their
    old places is left as it is. ``state`` is what the next export starts from."""

    def __init__(self, folder: Path, earlier: dict | None, media: dict[str, str], sync=None):
        self.folder, self.media, self.sync = folder, media, sync
        earlier = earlier if isinstance(earlier, dict) else {}
        self.old_segments = earlier.get("segments") if isinstance(earlier.get("segments"), list) else []
        self.old_files = earlier.get("files") if isinstance(earlier.get("files"), dict) else {}
        self.segments: list[dict] = []
        self.sizes: dict[str, int] = {}
        self.rendered = self.reused = self.untouched = 0
        self._old: dict[str, object] = {}

    @property
    def state(self) -> dict:
        return {"segments": self.segments, "files": dict(self.sizes)}

    def previous(self, name: str):
        """The last export's file, opened before a new one replaces it; None when it is not the file
        the last export wrote (another size)."""
        if name not in self._old:
            try:
                fh = self._stack.enter_context(open(self.folder / name, "rb"))
                self._old[name] = fh if os.fstat(fh.fileno()).st_size == self.old_files.get(name) else None
            except OSError:
                self._old[name] = None
        return self._old[name]

    def write(self, segments: Iterator[Segment], render, context: list) -> int:
        """Write every file that changed; returns how many records they hold."""
        count, carry = 0, None
        with contextlib.ExitStack() as stack:
            self._stack = stack
            files: dict[str, _File] = {}
            for index, segment in enumerate(segments):
                segment_key = key(segment, *context, carry)
                before = self.old_segments[index] if index < len(self.old_segments) else None
                if reusable(before, segment_key, self.media) and before.get("parts") \
                        and all(self.previous(name) is not None for name, _, _ in before["parts"]):
                    parts = [(name, (start, length)) for name, start, length in before["parts"]]
                    carry_out, used, records = before.get("carry"), before.get("used", {}), before.get("count", 0)
                    self.reused += 1
                else:
                    looked = Looked(self.media)
                    parts, carry_out = render(segment, carry, looked)
                    used, records = looked.used, len(segment.records)
                    self.rendered += 1
                placed = []
                for name, data in parts:
                    out = files.get(name) or files.setdefault(name, _File(self, name, stack))
                    at = out.size
                    if isinstance(data, tuple):
                        out.reuse(*data)
                    else:
                        out.write(data)
                    placed.append([name, at, out.size - at])
                self.segments.append({"key": segment_key, "used": used, "parts": placed, "carry": carry_out,
                                      "count": records})
                carry, count = carry_out, count + records
            for name, out in files.items():
                self.sizes[name] = out.size
                self.untouched += not out.finish()
        return count
