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


def read_journal(path: Path) -> Iterator[tuple[str, object]]:
    """Yield ``(line, value)`` for each record, in the order they were appended."""
    with open(path, encoding="utf-8", newline="\n") as fh, jsonlines.Reader(fh, loads=jsonio.loads) as reader:
        try:
            for page in reader.iter(type=list):
                yield from _lines(page)
        except jsonlines.InvalidLineError as exc:
            raise ValueError(f"{path}:{exc.lineno}: {exc}; the journal is incomplete") from None


def _lines(page: Iterable) -> Iterator[tuple[str, object]]:
    for record in page:
        yield jsonio.dumps(record), record
