"""Where the next export's first read starts: the segments the last export noted that begin the file
again, byte for byte, are checked by their digest and reused; the reading resumes after them. And the
staged folder's big files, made durable in the background: all of them before the swap, or no swap."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tzcrawl.export.output import Output
from tzcrawl.export.segments import Stretch, cut, unchanged_start
from tzcrawl.fsutil import Syncer, atomic_writer
from tzcrawl.store.jsonarray import ArrayWriter, CorruptCollectionError, Spans, read_bodies


def write(path: Path, records: list[dict]) -> None:
    with open(path, "wb") as fh:
        writer = ArrayWriter(fh)
        for record in records:
            writer.write_line(json.dumps(record, separators=(",", ":")))
        writer.close()


def noted(path: Path, size: int) -> list[list]:
    """What an export's first read notes: number, more, digest, count, byte range of each segment."""
    spans, out, first = Spans(), [], 0
    for segment in cut(read_bodies(path, spans), size):
        n = len(segment.bodies)
        out.append([segment.number, segment.more, segment.digest, n, *spans.stretch(first, n)])
        first += n
    assert spans.whole
    return out


def records(n: int, start: int = 0) -> list[dict]:
    return [{"id": i, "text": f"message {i} \u2028 é"} for i in range(start, start + n)]


def test_appended_records_keep_every_segment_but_the_last_and_reading_resumes_after_them(tmp_path):
    path = tmp_path / "messages.json"
    write(path, records(25))
    last = noted(path, 10)  # 10, 10, 5
    write(path, records(32))  # 7 appended: segment 3 grows, a fourth begins
    kept, stat = unchanged_start(path, last)
    assert [k[0] for k in kept] == [1, 2] and [k[2] for k in kept] == [n[2] for n in last[:2]]
    assert stat[1] == path.stat().st_size
    fresh = noted(path, 10)
    assert [list(k) for k in kept] == fresh[:2]  # same digests and byte ranges as a full read finds
    # the rest, read from where the kept ones end, is what a full read gives after them
    spans = Spans()
    rest = list(cut(read_bodies(path, spans, (kept[-1][5], 20, stat)), 10, first=3))
    assert [(s.number, s.more, s.digest) for s in rest] == [(n[0], n[1], n[2]) for n in fresh[2:]]
    assert spans.whole and [spans.stretch(0, 10), spans.stretch(10, 2)] == [tuple(n[4:]) for n in fresh[2:]]
    # a Stretch of a kept segment reads back its bodies, checked by the digest
    assert list(Stretch(path, *kept[0][4:], 10, stat, kept[0][2]))[0] == json.dumps(records(1)[0], separators=(",", ":")).encode()


def test_a_change_stops_the_reuse_at_the_segment_it_is_in(tmp_path):
    path = tmp_path / "messages.json"
    write(path, records(35))
    last = noted(path, 10)
    changed = records(35)
    changed[14]["text"] = "edited"
    write(path, changed)
    assert [k[0] for k in unchanged_start(path, last)[0]] == [1]
    changed[3]["text"] = "a longer text than it was"  # every range after it moves
    write(path, changed)
    assert unchanged_start(path, last)[0] == []


def test_resuming_in_another_file_than_the_one_checked_is_an_error(tmp_path):
    path = tmp_path / "messages.json"
    write(path, records(25))
    last = noted(path, 10)
    write(path, records(27))
    kept, stat = unchanged_start(path, last)
    write(path, records(28))  # replaced between the check and the reading
    with pytest.raises(CorruptCollectionError, match="changed while it was being exported"):
        list(read_bodies(path, Spans(), (kept[-1][5], 20, stat)))


def test_a_file_torn_after_the_kept_segments_says_so_where_reading_resumes(tmp_path):
    """Cut short (a crash of something that copied it): the reading after the kept segments ends with
    the empty body that tells the reader the file is torn, as a reading from the start does."""
    path = tmp_path / "messages.json"
    write(path, records(25))
    last = noted(path, 10)
    write(path, records(27))
    path.write_bytes(path.read_bytes()[:-20])
    kept, stat = unchanged_start(path, last)
    assert [k[0] for k in kept] == [1, 2]
    resumed = list(read_bodies(path, Spans(), (kept[-1][5], 20, stat)))
    assert resumed[-1] == b"" and resumed[:-1] == list(read_bodies(path))[20:-1]


def test_the_last_record_of_the_file_is_never_where_reading_resumes(tmp_path):
    """A noted segment whose last line no longer ends with the separator (the records after it were
    removed) is not kept: resuming after it would start at the closing bracket."""
    path = tmp_path / "messages.json"
    write(path, records(30))
    last = noted(path, 10)
    write(path, records(20))
    assert [k[0] for k in unchanged_start(path, last)[0]] == [1]


@pytest.mark.parametrize("damage, keeps", [
    (lambda n: [[1, True, n[0][2], 10, -5, n[0][5]]], 0),            # a negative offset
    (lambda n: [[1, True, n[0][2], 10, n[0][4], 10**12]], 0),        # past the end of the file
    (lambda n: [[2, True, n[1][2], 10, n[1][4], n[1][5]]], 0),       # not from the first segment
    (lambda n: [n[0], [3, True, n[2][2], 10, n[2][4], n[2][5]]], 1),  # a gap after the first
    (lambda n: [[1, True, "0" * 64, 10, n[0][4], n[0][5]]], 0),      # another digest
    (lambda n: [[1, True, n[0][2], 11, n[0][4], n[0][5]]], 0),       # another count
    (lambda n: [[1, "yes", n[0][2], 10, n[0][4], n[0][5]]], 0),
    (lambda n: [["1", True, n[0][2], 10, n[0][4], n[0][5]]], 0),
    (lambda n: [n[0], [2, True]], 1),
    (lambda n: "not a list", 0),
    (lambda n: [n[0], None], 1),
])
def test_a_noted_state_not_of_this_tools_making_keeps_what_checks_out_and_raises_nothing(tmp_path, damage, keeps):
    path = tmp_path / "messages.json"
    write(path, records(35))
    last = noted(path, 10)
    assert len(unchanged_start(path, last)[0]) == 3  # undamaged: all but the last
    assert len(unchanged_start(path, damage(last))[0]) == keeps


def test_a_file_whose_head_changed_keeps_nothing(tmp_path):
    path = tmp_path / "messages.json"
    write(path, records(25))
    last = noted(path, 10)
    path.write_bytes(b" " + path.read_bytes()[1:])  # "[" replaced: same length, not an array any more
    assert unchanged_start(path, last)[0] == []
    assert unchanged_start(tmp_path / "missing.json", last) == ([], None)


def test_digests_are_of_the_records_as_saved(tmp_path):
    path = tmp_path / "messages.json"
    write(path, records(3))
    (segment,) = noted(path, 10)
    bodies = [json.dumps(r, separators=(",", ":")).encode() for r in records(3)]
    assert segment[2] == hashlib.sha256(b"\n".join(bodies)).hexdigest() and segment[1] is False


def test_a_file_handed_to_the_syncer_is_in_place_at_once_and_its_failure_said_at_settle(tmp_path):
    sync = Syncer()
    with atomic_writer(tmp_path / "chat.jsonl", binary=True, sync=sync) as fh:
        fh.write(b"x" * 100_000)
    assert (tmp_path / "chat.jsonl").read_bytes() == b"x" * 100_000  # renamed before it is synced
    sync.settle()
    sync.settle()  # again: nothing left, no error
    sync(tmp_path / "vanished.jsonl")  # gone before its fsync: the error waits for settle
    with pytest.raises(FileNotFoundError):
        sync.settle()


def test_a_staged_folder_whose_background_writes_fail_is_not_swapped_in(tmp_path):
    out = Output(tmp_path / "out")
    with out.staged("p") as stage:
        with atomic_writer(out.folder("p") / "chat.md", sync=out.sync_for("p")) as fh:
            fh.write("the last export")
        stage.keep()
    assert (tmp_path / "out" / "p" / "chat.md").read_text() == "the last export"
    assert out.sync_for("p") is None  # only while staged
    out.state["p"] = {"md": {"fingerprint": "old"}}
    with pytest.raises(FileNotFoundError):
        with out.staged("p") as stage:
            with atomic_writer(out.folder("p") / "chat.md", sync=out.sync_for("p")) as fh:
                fh.write("a new one")
            out.state["p"]["md"] = {"fingerprint": "new"}
            out.sync_for("p")(tmp_path / "vanished")
            stage.keep()
    assert (tmp_path / "out" / "p" / "chat.md").read_text() == "the last export"
    assert sorted(os.listdir(tmp_path / "out")) == ["p"] and out.state["p"]["md"] == {"fingerprint": "old"}
