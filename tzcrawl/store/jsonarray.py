"""Collections on disk: a JSON array with exactly one record per line.

``[\\n{...},\\n{...}\\n]\\n`` is plain JSON any tool can open, and it can also be read back one
line at a time, so a history of millions of messages never has to be held in memory. A file not in
that shape (hand-edited, pretty-printed) is still read, with ``json.load``.
"""

from __future__ import annotations

import itertools
import json
import os
from array import array
from pathlib import Path
from typing import IO, Iterator

import orjson

from tzcrawl import jsonio


class CorruptCollectionError(ValueError):
    """A backup file that is not a JSON array: never overwritten, reported to the user."""


class _NotLineShaped(Exception):
    pass


def dump_line(value) -> str:
    """One record as one line: the value exactly as received, non-ASCII text kept readable."""
    return jsonio.readable(value)


class ArrayWriter:
    """Writes records, one per line, as a JSON array to a file opened in binary mode, in batches.

    Lines are UTF-8 bytes (``str`` lines are encoded): the merge copies lines it read, it does not
    decode and encode them again."""

    BATCH = 256

    def __init__(self, fh: IO[bytes]):
        self.fh = fh
        self.count = 0
        self._pending: list[bytes] = []
        fh.write(b"[")

    def write_line(self, line: bytes | str) -> None:
        self._pending.append(line if type(line) is bytes else line.encode("utf-8"))
        self.count += 1
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            first = self.count == len(self._pending)  # the array's first lines: no comma before
            self.fh.write((b"\n" if first else b",\n") + b",\n".join(self._pending))
            self._pending = []

    def close(self) -> None:
        self._flush()
        self.fh.write(b"\n]\n" if self.count else b"]\n")


def read_array(path: str | Path) -> Iterator[tuple[bytes, object]]:
    """Yield ``(line, value)`` for every element of the JSON array in ``path``, streaming if it can;
    ``line`` is the element's JSON text as UTF-8 bytes."""
    yielded = 0
    try:
        for item in _read_line_shaped(path):
            yield item
            yielded += 1
        return
    except _NotLineShaped:
        pass
    # The lines streamed so far were whole elements in order, so the full parse repeats them first.
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except ValueError as exc:
        raise CorruptCollectionError(f"{path} is not valid JSON ({exc}); it was left untouched") from exc
    if not isinstance(data, list):
        raise CorruptCollectionError(f"{path} holds a JSON {type(data).__name__}, not an array; left untouched")
    for value in itertools.islice(data, yielded, None):
        yield dump_line(value).encode("utf-8"), value


class Spans:
    """Where each record of a one-record-a-line file ends (byte offsets), noted while ``read_bodies``
    reads it: a stretch of records can then be read again (``read_stretch``) without the rest."""

    def __init__(self):
        self.header_end = 0
        self.ends = array("q")
        self.whole = False  # the file was read to its closing line in that shape
        self.stat: tuple | None = None

    def stretch(self, first: int, count: int) -> tuple[int, int]:
        """Byte range of records ``first`` .. ``first + count - 1`` (0-based)."""
        start = self.ends[first - 1] if first else self.header_end
        return start, (self.ends[first + count - 1] if count else start)


def read_stretch(path, start: int, end: int, count: int, stat: tuple) -> list[bytes]:
    """The bodies of ``count`` records between byte offsets ``start`` and ``end`` of a file that
    ``Spans`` described; CorruptCollectionError if the file changed since."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if (st.st_ino, st.st_size, st.st_mtime_ns) != stat:
            raise CorruptCollectionError(f"{path} changed while it was being exported")
        fh.seek(start)
        data = fh.read(end - start)
    bodies = []
    for raw in data.split(b"\n"):
        text = raw.strip()
        if text:
            bodies.append(text[:-1] if text.endswith(b",") else text)
    if len(bodies) != count:
        raise CorruptCollectionError(f"{path} changed while it was being exported")
    return bodies


def read_bodies(path: str | Path, spans: Spans | None = None, resume: tuple | None = None) -> Iterator[bytes]:
    """Each element's JSON text (UTF-8), not parsed: a file in the one-record-a-line shape is split
    into lines only (what an export needs to tell whether records changed); any other file is parsed
    whole (``read_array``) and its elements written back as lines. A file whose closing ``]`` is
    missing (torn) ends with an empty body, which no parser takes: the reader says it is torn.
    ``spans``: filled with where each record ends, when the file has the one-record-a-line shape.
    ``resume``: ``(start, before, identity)``: from byte ``start``, where a record line begins, after
    ``before`` records (the last one's line ending with the separator) read already from this very
    file (``identity``: inode, size, mtime; another one is CorruptCollectionError)."""
    yielded = 0
    before = resume[1] if resume else 0
    try:
        for body, _value in _read_line_shaped(path, parse=False, spans=spans, resume=resume):
            yield body
            yielded += 1
        return
    except _NotLineShaped:
        if spans is not None:
            spans.whole = False
    for line, _value in itertools.islice(read_array(path), before + yielded, None):
        yield line


VALUE_STARTS = b'{["-0123456789tfn'  # how a JSON value's text can begin


def _read_line_shaped(path, parse: bool = True, spans: Spans | None = None,
                      resume: tuple | None = None) -> Iterator[tuple[bytes, object]]:
    """``(body, value)`` per line of a one-record-a-line file; ``parse=False``: value None, not parsed;
    ``resume``: see ``read_bodies``."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if spans is not None:
            spans.stat = (st.st_ino, st.st_size, st.st_mtime_ns)
        if resume:
            if (st.st_ino, st.st_size, st.st_mtime_ns) != tuple(resume[2]):
                raise CorruptCollectionError(f"{path} changed while it was being exported")
            pos = resume[0]
            fh.seek(pos)
        else:
            first = fh.readline()
            pos = len(first)
            first = first.strip()
            if first == b"[]":
                if fh.read().strip():
                    raise _NotLineShaped
                if spans is not None:
                    spans.header_end, spans.whole = pos, True
                return
            if first != b"[":
                raise _NotLineShaped
        if spans is not None:
            spans.header_end = pos
            ends = spans.ends
        comma = True  # whether the previous element line ended with the separator
        closed = False
        for raw in fh:
            pos += len(raw)
            text = raw.strip()  # JSON's whitespace is ASCII: bytes.strip takes exactly that
            if closed or not text:
                if text:
                    raise _NotLineShaped
                continue
            if text == b"]":
                if comma:  # "[\n]" or a trailing comma: let json.load judge it
                    raise _NotLineShaped
                closed = True
                continue
            if not comma or (not parse and text[:1] not in VALUE_STARTS):
                raise _NotLineShaped
            comma = text.endswith(b",")
            body = text[:-1] if comma else text
            value = None
            if parse:
                try:
                    value = orjson.loads(body)  # jsonio.loads' fast path, inlined: once per saved record
                except orjson.JSONDecodeError:
                    try:
                        value = jsonio.loads(body)
                    except ValueError:
                        raise _NotLineShaped from None
            if spans is not None:
                ends.append(pos)
            yield body, value
        if not closed:
            if parse:
                raise _NotLineShaped
            yield b"", None
        elif spans is not None:
            spans.whole = True
