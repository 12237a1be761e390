"""Streaming merge: the saved collection (sorted) + the fetched journal (any order) -> new file.

Memory stays bounded whatever the history's size. The service sends newest first, so a journal
read backward is usually oldest first already: a first pass indexes the fetched ids and checks that
order, and the merge then streams the saved file and the backward journal side by side. When the
order does not hold (or the records come from a plain iterable), the journal is sorted in chunks
into run files (an external sort) and those are merged instead. The ids of the fetched records sit
in a dict that spills to SQLite past a limit. Output is oldest first, one record per id; a fetched
record replaces the saved one with the same id, wherever its timestamp puts it; records without an
id are deduplicated by content. Nothing saved is ever dropped.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from tzcrawl import jsonio
from tzcrawl.registry import first_present

from .jsonarray import ArrayWriter, read_array
from .timestamps import MILLISECONDS_ABOVE, SortKey, id_text, sort_key, to_epoch

OLD, NEW = 0, 1  # on equal keys the saved copy comes first; dedupe keeps the fetched one anyway
NOT_FETCHED_LISTED = 10_000


class History:
    """Where the merge puts the saved copy of a record the service changed (``add(line)``); a list
    by default, a file for a real commit. ``reset`` when the merge starts over."""

    def __init__(self):
        self.lines: list[bytes] = []

    def add(self, line: bytes) -> None:
        self.lines.append(line)

    def reset(self) -> None:
        self.lines.clear()


def same_record(old: bytes, new: bytes) -> bool:
    """The same record, however the saved line was spelled (older versions wrote spaces, 1e-07)."""
    if old == new:
        return True
    try:
        return jsonio.loads(old) == jsonio.loads(new)
    except ValueError:
        return False

# (key, source, seq, dedupe id, characters, line): (key, source, seq) is unique, so heapq never
# compares further. The line is the record's JSON text (UTF-8 bytes; str where a caller gave str).
Entry = tuple[SortKey, int, int, str, int, bytes]


def dedupe_id(value, id_field: str = "id") -> str:
    """Identity of a record: its id, or a digest of its whole content when it has none."""
    if isinstance(value, dict) and value.get(id_field) is not None:
        return "i:" + id_text(value, id_field)
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "c:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def conversation_chars(value) -> int:
    """Characters of conversation in a message: the user's ``message`` plus the ``reply``."""
    if not isinstance(value, dict):
        return 0
    return sum(len(value[k]) for k in ("message", "reply") if isinstance(value.get(k), str))


def describe(value, time_field, chars: bool = True, id_field: str = "id") -> tuple[SortKey, str, int]:
    """(sort key, dedupe id, conversation characters) of a record: ``sort_key``, ``dedupe_id`` and
    ``conversation_chars`` in one pass, with fast paths for what the service sends (every record of
    a large history goes through here, sometimes twice)."""
    if type(value) is dict:
        raw = value.get(id_field)
        ident = raw if type(raw) is str else id_text(value, id_field)
        stamp = value.get(time_field) if type(time_field) is str else first_present(value, time_field)
        # Unix seconds as a float (what the service sends): used as is; anything else is read.
        seconds = stamp if type(stamp) is float and -MILLISECONDS_ABOVE <= stamp <= MILLISECONDS_ABOVE else to_epoch(stamp)
        key = (0, 0.0, ident) if seconds is None else (1, seconds, ident)
        did = dedupe_id(value, id_field) if raw is None else "i:" + ident
        count = 0
        if chars:
            message, reply = value.get("message"), value.get("reply")
            count = (len(message) if type(message) is str else 0) + (len(reply) if type(reply) is str else 0)
        return key, did, count
    return sort_key(value, time_field, id_field), dedupe_id(value, id_field), conversation_chars(value) if chars else 0


@dataclass(frozen=True)
class Fields:
    """Which fields of a collection's records matter to the merge (from the resource registry)."""

    time: str | tuple[str, ...]  # a top-level key, or the registry's paths (Resource.when)
    id: str = "id"
    chars: bool = True  # count conversation characters (messages)

    def entry(self, line, value, source: int, seq: int) -> Entry:
        key, did, count = describe(value, self.time, self.chars, self.id)
        return (key, source, seq, did, count, line)


class IdIndex:
    """Dedupe id -> seq of its last fetched copy; a dict that spills to SQLite past ``limit``."""

    def __init__(self, workdir: Path, limit: int):
        self.limit = limit  # ids kept in a dict; more spill to SQLite
        self._path = workdir / "ids.sqlite"
        self._mem: dict[str, int] = {}
        self._marked: set[str] = set()
        self._pending: list[tuple[str, int]] = []
        self._db: sqlite3.Connection | None = None
        self.marked = 0  # distinct fetched ids that were already in the saved file

    @property
    def spilled(self) -> bool:
        return self._db is not None

    def put(self, did: str, seq: int) -> None:
        if self._db is None:
            self._mem[did] = seq
            if len(self._mem) > self.limit:
                self._spill()
        else:
            self._pending.append((did, seq))
            if len(self._pending) >= self.limit:
                self._flush()

    def _spill(self) -> None:
        self._db = sqlite3.connect(self._path)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8000", "temp_store=FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE ids (did TEXT PRIMARY KEY, seq INTEGER, old INTEGER DEFAULT 0) WITHOUT ROWID")
        self._pending = list(self._mem.items())
        self._mem = {}
        self._flush()

    def _flush(self) -> None:
        self._db.executemany(
            "INSERT INTO ids (did, seq) VALUES (?, ?) ON CONFLICT (did) DO UPDATE SET seq = excluded.seq",
            self._pending,
        )
        self._pending = []

    def freeze(self) -> None:
        """End of the puts: make every id visible to lookups."""
        if self._db is not None and self._pending:
            self._flush()

    def seq(self, did: str) -> int | None:
        if self._db is None:
            return self._mem.get(did)
        row = self._db.execute("SELECT seq FROM ids WHERE did = ?", (did,)).fetchone()
        return row[0] if row else None

    def claim_old(self, did: str) -> bool:
        """True when ``did`` was fetched again (the saved copy is superseded); counts it once."""
        if self._db is None:
            if did not in self._mem:
                return False
            if did not in self._marked:
                self._marked.add(did)
                self.marked += 1
            return True
        if self._db.execute("UPDATE ids SET old = 1 WHERE did = ? AND old = 0", (did,)).rowcount:
            self.marked += 1
            return True
        return self._db.execute("SELECT 1 FROM ids WHERE did = ?", (did,)).fetchone() is not None

    def unclaim(self) -> None:
        """Forget which saved copies were superseded (the merge starts over)."""
        self.marked = 0
        self._marked.clear()
        if self._db is not None:
            self._db.execute("UPDATE ids SET old = 0")

    def __len__(self) -> int:
        if self._db is None:
            return len(self._mem)
        self.freeze()
        return self._db.execute("SELECT count(*) FROM ids").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._path.unlink(missing_ok=True)


class Runs:
    """Sorted runs of entries: in memory when they fit one chunk, else run files in ``workdir``."""

    def __init__(self, workdir: Path, prefix: str, chunk_size: int):
        self.workdir, self.prefix, self.chunk_size = workdir, prefix, chunk_size
        self.files: list[Path] = []
        self.memory: list[Entry] = []

    def fill(self, entries: Iterable[Entry]) -> "Runs":
        chunk: list[Entry] = []
        for entry in entries:
            chunk.append(entry)
            if len(chunk) >= self.chunk_size:
                self._write(chunk)
                chunk = []
        chunk.sort()
        if self.files and chunk:
            self._write(chunk)
        else:
            self.memory = chunk
        return self

    def _write(self, chunk: list[Entry]) -> None:
        chunk.sort()
        path = self.workdir / f"{self.prefix}-{len(self.files):05d}.run"
        with open(path, "wb") as fh:
            for key, source, seq, did, chars, line in chunk:
                # The header is JSON (no raw tab inside), the record line follows the tab as is.
                header = jsonio.dumps_bytes([key[0], key[1], key[2], source, seq, did, chars])
                fh.write(header + b"\t" + (line if type(line) is bytes else line.encode("utf-8")) + b"\n")
        self.files.append(path)

    def streams(self) -> list[Iterable[Entry]]:
        return [self.memory] + [_read_run(path) for path in self.files]

    def remove(self) -> None:
        for path in self.files:
            path.unlink(missing_ok=True)


def _read_run(path: Path) -> Iterator[Entry]:
    with open(path, "rb") as fh:
        for raw in fh:
            header, line = raw[:-1].split(b"\t", 1)
            flag, seconds, ident, source, seq, did, chars = jsonio.loads(header)
            yield ((flag, seconds, ident), source, seq, did, chars, line)


class SavedFileUnsorted(Exception):
    """The saved file is not in timeline order (hand-edited, or an older sort rule): sort it too."""


def _checked_order(entries: Iterable[Entry]) -> Iterator[Entry]:
    previous = None
    for entry in entries:
        if previous is not None and entry[0] < previous:
            raise SavedFileUnsorted
        previous = entry[0]
        yield entry


def saved_entries(path: Path | None, fields: Fields) -> Iterator[Entry]:
    if path is None or not path.exists():
        return iter(())
    return (fields.entry(line, value, OLD, seq) for seq, (line, value) in enumerate(read_array(path)))


@dataclass
class MergeStats:
    total: int = 0
    new: int = 0
    characters: int = 0
    runs: int = 0  # run files written by the external sort (0: streamed, or the journal fit one chunk)
    streamed: bool = False  # the journal was merged read backward, without sorting
    index_spilled: bool = False
    saved_resorted: bool = False
    oldest_key: float | None = None
    oldest_line: str | None = None
    newest_key: float | None = None
    newest_line: str | None = None
    newest_ids: list[str] = field(default_factory=list)
    changed: int = 0  # saved records fetched again with different content (the old copy went to history)
    not_fetched: int = 0  # saved records this run did not fetch again (on a full read: deleted upstream)
    not_fetched_ids: list[str] = field(default_factory=list)  # their ids, at most NOT_FETCHED_LISTED

    def count(self, entry: Entry) -> None:
        (flag, seconds, ident), _source, _seq, _did, chars, line = entry
        self.total += 1
        self.characters += chars
        if not flag:
            return
        if self.oldest_key is None:
            self.oldest_key, self.oldest_line = seconds, line
        if self.newest_key is None or seconds > self.newest_key:
            self.newest_key, self.newest_line, self.newest_ids = seconds, line, []
        if ident:
            self.newest_ids.append(ident)

    def field_of(self, which: str, time_field: str | tuple[str, ...]):
        """The timestamp as received (``oldest``/``newest`` record's ``time_field``)."""
        line = self.oldest_line if which == "oldest" else self.newest_line
        return None if line is None else first_present(json.loads(line), time_field)


def merge_collection(
    saved: Path | None,
    fetched: Iterable[tuple[str, object]],
    out: IO[bytes],
    *,
    time_field: str | tuple[str, ...],
    workdir: Path,
    chunk_size: int = 10_000,
    index_limit: int = 100_000,
    chars: bool = True,
    id_field: str = "id",
    history: History | None = None,
) -> MergeStats:
    """Write ``saved`` merged with ``fetched`` to ``out`` (binary) as a line-shaped JSON array.

    ``fetched`` yields ``(line, record)`` in the order fetched; a ``JournalReader`` (which can also
    read ``backward``) lets a newest-first journal be merged without sorting it. Records are placed
    by ``time_field`` (a top-level key, or the registry's paths: ``Resource.when``) and identified by
    ``id_field``; ``chars`` counts conversation characters. The
    saved copy of a record fetched again with other content goes to ``history``.
    """
    history = history if history is not None else History()
    fields = Fields(time_field, id_field, chars)
    journal = fetched if hasattr(fetched, "backward") else None
    index = IdIndex(workdir, index_limit)
    fetched_runs = Runs(workdir, "fetched", chunk_size)
    saved_runs = Runs(workdir, "saved", chunk_size)
    start = out.tell()
    try:
        if journal is not None and (saved is None or not saved.exists()):
            stats = _first_backup(journal, out, fields, index_limit)  # one pass, no index
            if stats is not None:
                return stats
            out.seek(start)
            out.truncate()
        described = _index_newest_first(journal, index, fields) if journal is not None else None
        if described is not None:
            fetched_streams = [_backward_entries(journal, described, fields)]
        else:

            def entries():
                for seq, (line, value) in enumerate(fetched):
                    entry = fields.entry(line, value, NEW, seq)
                    if journal is None:  # a journal's first pass has indexed every id already
                        index.put(entry[3], seq)
                    yield entry

            fetched_streams = fetched_runs.fill(entries()).streams()
        index.freeze()
        try:
            stats = _merge_streams(_checked_order(saved_entries(saved, fields)), fetched_streams, index, out, history)
        except SavedFileUnsorted:
            out.seek(start)
            out.truncate()
            history.reset()
            index.unclaim()
            if described is not None:  # the backward stream was used up: read it again
                fetched_streams = [_backward_entries(journal, described, fields)]
            saved_runs.fill(saved_entries(saved, fields))
            stats = _merge_streams(heapq.merge(*saved_runs.streams()), fetched_streams, index, out, history)
            stats.saved_resorted = True
        stats.runs = len(fetched_runs.files)
        stats.streamed = described is not None
        stats.index_spilled = index.spilled
        stats.new = len(index) - index.marked
        return stats
    finally:
        index.close()
        fetched_runs.remove()
        saved_runs.remove()


class _Described(list):
    """Pass one's (key, dedupe id, characters) of every fetched record, by seq; ``complete`` is False
    past the memory limit (pass two then reads the records again)."""

    complete = True
    count = 0  # records in the journal


def _index_newest_first(fetched, index: "IdIndex", fields: Fields) -> _Described | None:
    """First pass over a journal: index every fetched id (seq: the order fetched). When each record
    came at or before the one fetched just before it on the timeline (a record fetched twice in a
    row aside), the journal read backward is in order: returns what was learned of each record;
    else None."""
    described = _Described()
    previous_key = previous_did = None
    ordered, seq = True, -1
    time, chars, id_field = fields.time, fields.chars, fields.id  # locals: once per record
    for seq, value in enumerate(fetched.values()):
        key, did, characters = describe(value, time, chars, id_field)
        index.put(did, seq)  # every id, whatever the order: the external sort relies on it
        if not ordered:
            continue
        if previous_key is not None and (key > previous_key or (key == previous_key and did != previous_did)):
            ordered = False
            described.clear()
            continue
        previous_key, previous_did = key, did
        if described.complete:
            if len(described) < index.limit:
                described.append((key, did, characters))
            else:
                described.complete = False
                described.clear()
    described.count = seq + 1
    return described if ordered else None


def _backward_entries(fetched, described: _Described, fields: Fields) -> Iterator[Entry]:
    seq = described.count
    if described.complete:
        for line in fetched.backward_lines():
            seq -= 1
            key, did, characters = described[seq]
            yield (key, NEW, seq, did, characters, line)
        return
    for line, value in fetched.backward():
        seq -= 1
        yield fields.entry(line, value, NEW, seq)


def _first_backup(fetched, out: IO[bytes], fields: Fields, limit: int) -> MergeStats | None:
    """No saved file: read the journal backward once, oldest first, keeping the first copy seen of
    each record (the last one fetched). None (nothing usable written) when the order does not hold
    or more than ``limit`` ids would have to be remembered."""
    stats = MergeStats(streamed=True)
    writer = ArrayWriter(out)
    seen: set[str] = set()
    previous_key = previous_did = None
    time, chars, id_field = fields.time, fields.chars, fields.id  # locals: once per record
    for line, value in fetched.backward():
        key, did, characters = describe(value, time, chars, id_field)
        if previous_key is not None and (key < previous_key or (key == previous_key and did != previous_did)):
            return None
        previous_key, previous_did = key, did
        if did in seen:
            continue
        if len(seen) >= limit:
            return None
        seen.add(did)
        writer.write_line(line)
        stats.count((key, NEW, 0, did, characters, line))
    writer.close()
    stats.new = len(seen)
    return stats


def _merge_two(first: Iterable[Entry], second: Iterable[Entry]) -> Iterator[Entry]:
    """``heapq.merge`` of two sorted streams, without its heap: the common case (the saved file and
    a journal read backward) goes through here once per record."""
    first, second = iter(first), iter(second)
    a, b = next(first, None), next(second, None)
    while a is not None and b is not None:
        if b < a:
            yield b
            b = next(second, None)
        else:
            yield a
            a = next(first, None)
    if a is not None:
        yield a
        yield from first
    if b is not None:
        yield b
        yield from second


def _merge_streams(saved: Iterable[Entry], fetched_streams: list, index: IdIndex, out: IO[bytes],
                   history: History) -> MergeStats:
    """One pass over everything in timeline order. A saved record fetched again with the same key is
    immediately followed by its fetched copies (same key, saved first): their lines are compared there.
    A saved record whose fetched copy is not next to it was fetched with another timestamp: changed."""
    stats = MergeStats()
    writer = ArrayWriter(out)
    streams = [saved, *fetched_streams]
    replaced: tuple[str, bytes] | None = None  # (dedupe id, line) of the saved copy just superseded
    for entry in (_merge_two(*streams) if len(streams) == 2 else heapq.merge(*streams)):
        _key, source, seq, did, _chars, line = entry
        if replaced is not None and replaced[0] != did:
            history.add(replaced[1])  # its fetched copy is elsewhere on the timeline: it changed
            stats.changed += 1
            replaced = None
        if source == OLD:
            if index.claim_old(did):
                replaced = (did, line)
                continue  # superseded by the copy fetched now
            stats.not_fetched += 1
            if len(stats.not_fetched_ids) < NOT_FETCHED_LISTED:
                stats.not_fetched_ids.append(did[2:] if did.startswith("i:") else did)
        elif index.seq(did) != seq:
            continue  # fetched twice in this run (pages shift): keep the last copy
        elif replaced is not None:
            if not same_record(replaced[1], line):
                history.add(replaced[1])
                stats.changed += 1
            replaced = None
        writer.write_line(line)
        stats.count(entry)
    if replaced is not None:
        history.add(replaced[1])
        stats.changed += 1
    writer.close()
    return stats
