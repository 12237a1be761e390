"""The staging journal: pages of a collection appended as JSON lines while a crawl runs.

The final file is only rewritten at commit, so a crash mid-crawl costs nothing already saved; the
journal is private to one run and the next run discards it. Each page is written with one call and
flushed, so at most a torn last line can exist, and only in a journal nobody will read again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from tzcrawl.fsutil import FILE_MODE

from .jsonarray import dump_line


class Journal:
    """Append-only JSON-lines file of fetched records (any order, duplicates allowed)."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, FILE_MODE)
        self._fh = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def add(self, records: Iterable) -> int:
        """Append one page of records; returns how many were written."""
        lines = [dump_line(record) + "\n" for record in records]
        if lines:
            self._fh.write("".join(lines))
            self._fh.flush()
            self.count += len(lines)
        return len(lines)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_journal(path: Path) -> Iterator[tuple[str, object]]:
    """Yield ``(line, value)`` for each record, in the order they were appended."""
    with open(path, encoding="utf-8", newline="\n") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.endswith("\n"):
                raise ValueError(f"{path}:{lineno}: torn last line; the journal is incomplete")
            line = raw[:-1]
            if line:
                try:
                    value = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{lineno}: not a JSON record ({exc})") from None
                yield line, value
