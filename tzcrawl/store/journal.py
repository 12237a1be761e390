"""The staging journal: pages of a collection appended as JSON lines while a crawl runs.

The final file is only rewritten at commit, so a crash mid-crawl costs nothing already saved; the
journal is private to one run and the next run discards it. One line holds one page (a JSON array
of its records, exactly as received), written and flushed at once, so at most a torn last line can
exist, and only in a journal nobody will read again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import jsonlines

from tzcrawl import jsonio
from tzcrawl.fsutil import FILE_MODE


class Journal:
    """Append-only JSON-lines file of fetched pages (records in any order, duplicates allowed)."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, FILE_MODE)
        self._fh = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self._writer = jsonlines.Writer(self._fh, dumps=jsonio.dumps)

    def add(self, records: list) -> int:
        """Append one page of records; returns how many were written."""
        if records:
            self._writer.write(records)
            self._fh.flush()
            self.count += len(records)
        return len(records)

    def close(self) -> None:
        self._writer.close()
        if not self._fh.closed:
            self._fh.close()


class JournalReader:
    """The records of a journal, as many times as needed: forward (the order fetched) or
    ``backward`` (last page first, each page reversed). The service sends newest first, so read
    backward a journal is already oldest first, and the merge needs no sort."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator[tuple[str, object]]:
        for page in self._pages():
            yield from _lines(page)

    def values(self) -> Iterator[object]:
        for page in self._pages():
            yield from page

    def backward(self) -> Iterator[object]:
        ends = _line_ends(self.path)
        with open(self.path, "rb") as fh:
            for end, start in zip(reversed(ends), reversed([0] + [e + 1 for e in ends[:-1]])):
                fh.seek(start)
                page = jsonio.loads(fh.read(end - start))
                yield from reversed(page)

    def _pages(self) -> Iterator[list]:
        with open(self.path, encoding="utf-8", newline="\n") as fh, jsonlines.Reader(fh, loads=jsonio.loads) as reader:
            try:
                yield from reader.iter(type=list)
            except jsonlines.InvalidLineError as exc:
                raise ValueError(f"{self.path}:{exc.lineno}: {exc}; the journal is incomplete") from None


def read_journal(path: Path) -> JournalReader:
    """``(line, value)`` for each record, in the order they were appended (iterable again and again)."""
    return JournalReader(path)


def _lines(page: Iterable) -> Iterator[tuple[str, object]]:
    for record in page:
        yield jsonio.dumps(record), record


def _line_ends(path: Path, block: int = 1 << 20) -> list[int]:
    """Offsets of every newline in the file (the journal is read forward first, so it is whole)."""
    ends, offset = [], 0
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            at = chunk.find(b"\n")
            while at >= 0:
                ends.append(offset + at)
                at = chunk.find(b"\n", at + 1)
            offset += len(chunk)
    return ends
