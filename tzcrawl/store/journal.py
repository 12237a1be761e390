"""The staging journal: records of a collection appended as JSON lines while a crawl runs.

The final file is only rewritten at commit, so a crash mid-crawl costs nothing already saved; the
journal is private to one run and the next run discards it. A page of records is written with
``jsonlines``, one record per line, and flushed at once, so at most a torn last line can exist,
and only in a journal nobody will read again. Each line is the record exactly as the saved file
will hold it: the merge copies lines, it never writes a record again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import jsonlines
import orjson

from tzcrawl import jsonio
from tzcrawl.fsutil import FILE_MODE


class Journal:
    """Append-only JSON-lines file of fetched records (any order, duplicates allowed)."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, FILE_MODE)
        self._fh = os.fdopen(fd, "wb")
        self._writer = jsonlines.Writer(self._fh, dumps=jsonio.dumps_bytes)

    def add(self, records: list) -> int:
        """Append one page of records; returns how many were written."""
        if records:
            self._writer.write_all(records)
            self._fh.flush()
            self.count += len(records)
        return len(records)

    def close(self) -> None:
        self._writer.close()
        if not self._fh.closed:
            self._fh.close()


class JournalReader:
    """The records of a journal, as many times as needed: forward (the order fetched) or
    ``backward``. The service sends newest first, so read backward a journal is usually oldest
    first already, and the merge needs no sort."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator[tuple[bytes, object]]:
        """``(line, record)`` in the order fetched; the line is the record's JSON (UTF-8 bytes)."""
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                yield self._record(raw, lineno)

    def values(self) -> Iterator[object]:
        """The records in the order fetched (the first pass of a merge: no line kept)."""
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.endswith(b"\n"):
                    self._record(raw, lineno)  # raises: torn last line
                try:
                    yield orjson.loads(raw)  # the fast path of jsonio.loads, inlined: once per record
                except orjson.JSONDecodeError:
                    yield self._record(raw, lineno)[1]

    def backward(self) -> Iterator[tuple[bytes, object]]:
        """``(line, record)`` from the last fetched to the first."""
        for line in self.backward_lines():
            yield line, jsonio.loads(line)

    def backward_lines(self) -> Iterator[bytes]:
        """The lines from the last to the first, read in large blocks from the end of the file."""
        with open(self.path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            tail = b""
            while end > 0:
                start = max(0, end - (1 << 20))
                fh.seek(start)
                lines = (fh.read(end - start) + tail).split(b"\n")
                tail = lines.pop(0) if start > 0 else b""  # may continue in the block before
                for raw in reversed(lines):
                    if raw:
                        yield raw
                end = start
            if tail:
                yield tail

    def _record(self, raw: bytes, lineno: int) -> tuple[bytes, object]:
        if not raw.endswith(b"\n"):
            raise ValueError(f"{self.path}:{lineno}: torn last line; the journal is incomplete")
        try:
            return raw[:-1], jsonio.loads(raw[:-1])
        except ValueError as exc:
            raise ValueError(f"{self.path}:{lineno}: not a JSON record ({exc})") from None


def read_journal(path: Path) -> JournalReader:
    """``(line, record)`` for each record, in the order appended (iterable again and again)."""
    return JournalReader(path)
