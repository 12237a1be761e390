"""Streaming merge and the line-shaped JSON array: order, dedupe, new count, reader fallback."""

from __future__ import annotations

import io
import json
import random

import pytest

from tzcrawl import jsonio
from tzcrawl.store.journal import Journal, read_journal
from tzcrawl.store.jsonarray import (ArrayWriter, CorruptCollectionError, Spans, dump_line, read_array, read_bodies,
                                    read_stretch)
from tzcrawl.store.merge import conversation_chars, dedupe_id, merge_collection


def pairs(records):
    return [(dump_line(r), r) for r in records]


def write_array(path, records):
    with open(path, "wb") as fh:
        writer = ArrayWriter(fh)
        for r in records:
            writer.write_line(dump_line(r))
        writer.close()


def merged(tmp_path, saved_records, fetched, *, field="ts", chunk_size=10_000, index_limit=100_000):
    saved = None
    if saved_records is not None:
        saved = tmp_path / "saved.json"
        write_array(saved, saved_records)
    out = io.BytesIO()
    stats = merge_collection(saved, pairs(fetched), out, time_field=field, workdir=tmp_path,
                             chunk_size=chunk_size, index_limit=index_limit)
    text = out.getvalue().decode("utf-8")
    return json.loads(text), stats, text


def test_writer_shape_is_one_record_per_line():
    out = io.BytesIO()
    writer = ArrayWriter(out)
    writer.write_line(dump_line({"a": "é"}))
    writer.write_line(dump_line([1, 2]).encode())
    writer.close()
    assert out.getvalue().decode() == '[\n{"a": "é"},\n[1, 2]\n]\n'
    empty = io.BytesIO()
    ArrayWriter(empty).close()
    assert json.loads(empty.getvalue()) == []


def test_first_run_sorts_oldest_first_and_dedupes(tmp_path):
    fetched = [{"id": "c", "ts": 3}, {"id": "b", "ts": 2}, {"id": "c", "ts": 3, "v": 2}, {"id": "a", "ts": 1}]
    records, stats, _ = merged(tmp_path, None, fetched)
    assert records == [{"id": "a", "ts": 1}, {"id": "b", "ts": 2}, {"id": "c", "ts": 3, "v": 2}]
    assert (stats.total, stats.new) == (3, 3)
    assert stats.newest_key == 3 and stats.newest_ids == ["c"] and stats.oldest_key == 1


def test_saved_records_the_service_dropped_are_kept(tmp_path):
    saved = [{"id": "gone", "ts": 1}, {"id": "b", "ts": 2, "v": "old"}]
    fetched = [{"id": "d", "ts": 4}, {"id": "b", "ts": 2, "v": "new"}]
    records, stats, _ = merged(tmp_path, saved, fetched)
    assert records == [{"id": "gone", "ts": 1}, {"id": "b", "ts": 2, "v": "new"}, {"id": "d", "ts": 4}]
    assert (stats.total, stats.new) == (3, 1)


def test_fetched_copy_replaces_saved_one_even_when_its_timestamp_moved(tmp_path):
    saved = [{"id": "x", "ts": 1}, {"id": "y", "ts": 2}]
    fetched = [{"id": "x", "ts": "1970-01-01T00:00:05Z"}]
    records, stats, _ = merged(tmp_path, saved, fetched)
    assert records == [{"id": "y", "ts": 2}, {"id": "x", "ts": "1970-01-01T00:00:05Z"}]
    assert (stats.total, stats.new) == (2, 0)


def test_records_without_id_dedupe_by_content(tmp_path):
    saved = [{"ts": 1, "t": "a"}]
    fetched = [{"t": "a", "ts": 1}, {"ts": 1, "t": "b"}, {"ts": 1, "t": "b"}]
    records, stats, _ = merged(tmp_path, saved, fetched)
    assert sorted(r["t"] for r in records) == ["a", "b"]
    assert stats.new == 1


def test_unreadable_timestamps_are_kept_and_sorted_first(tmp_path):
    fetched = [{"id": "2", "ts": 5}, {"id": "1", "ts": "garbage"}, {"id": "0"}, {"id": "n", "ts": None}]
    records, stats, _ = merged(tmp_path, [], fetched)
    assert [r["id"] for r in records] == ["0", "1", "n", "2"]
    assert stats.oldest_key == 5 and stats.newest_key == 5 and stats.total == 4


def test_newest_ids_hold_every_id_at_the_newest_timestamp(tmp_path):
    fetched = [{"id": "b", "ts": 9.5}, {"id": "a", "ts": "9.5"}, {"id": "z", "ts": 1}]
    _, stats, _ = merged(tmp_path, [{"id": "c", "ts": 9500}], fetched)  # 9500 is seconds, not ms
    assert stats.newest_key == 9500 and stats.newest_ids == ["c"]
    _, stats, _ = merged(tmp_path, [{"id": "c", "ts": 9.5}], fetched)
    assert stats.newest_key == 9.5 and stats.newest_ids == ["a", "b", "c"]
    assert stats.field_of("newest", "ts") in (9.5, "9.5")


def test_unknown_fields_and_values_are_kept_exactly(tmp_path):
    # "\ud800": a lone surrogate, which JSON text can carry as an escape (json.loads gives it)
    odd = {"id": "m", "ts": 1.10, "unknown": {"deep": [None, True, 1.5e300, "\u2028", "😀", "\ud800", "名"]},
           "regenerated_replies": [], "big": 12345678901234567890, "neg0": -0.0}
    records, _, text = merged(tmp_path, [], [odd])
    assert records == [odd]
    assert "名" in text  # readable, not \u-escaped
    assert json.loads(text)[0]["big"] == 12345678901234567890


def test_messages_characters():
    assert conversation_chars({"message": "héllo", "reply": "ok"}) == 7
    assert conversation_chars({"message": None, "reply": 5}) == 0
    assert conversation_chars("x") == 0


def test_dedupe_id_int_and_string_ids_agree_and_content_is_key_order_free():
    assert dedupe_id({"id": 5}) == dedupe_id({"id": "5"})
    assert dedupe_id({"a": 1, "b": 2}) == dedupe_id({"b": 2, "a": 1})
    assert dedupe_id({"id": None, "a": 1}) != dedupe_id({"id": None, "a": 2})


def test_chunked_external_sort_and_spilled_index_give_the_same_result(tmp_path):
    rng = random.Random(3)
    saved = [{"id": f"s{i}", "ts": i * 2} for i in range(300)]
    fetched = [{"id": f"s{rng.randrange(300)}", "ts": rng.randrange(600), "v": i} for i in range(200)]
    fetched += [{"id": f"n{i}", "ts": rng.choice([rng.random() * 600, "bad", None])} for i in range(250)]
    rng.shuffle(fetched)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small, s_stats, _ = merged(tmp_path / "a", saved, fetched, chunk_size=7, index_limit=5)
    big, b_stats, _ = merged(tmp_path / "b", saved, fetched)
    assert s_stats.runs > 10 and s_stats.index_spilled and b_stats.runs == 0 and not b_stats.index_spilled
    assert small == big
    assert (s_stats.total, s_stats.new) == (b_stats.total, b_stats.new) == (550, 250)
    last = {}
    for r in fetched:
        last[r["id"]] = r
    assert {r["id"]: r for r in big if r["id"] in last} == last
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["saved.json"]  # runs and index removed


def test_unsorted_saved_file_is_resorted_not_mangled(tmp_path):
    saved = [{"id": "c", "ts": 3}, {"id": "a", "ts": 1}, {"id": "b", "ts": 2}]
    records, stats, text = merged(tmp_path, saved, [{"id": "d", "ts": 0}], chunk_size=2)
    assert [r["id"] for r in records] == ["d", "a", "b", "c"]
    assert stats.saved_resorted and text.count("\n") == 6  # "[", 4 records, "]"


# -- reading --------------------------------------------------------------------------------

def test_reader_streams_our_shape(tmp_path):
    path = tmp_path / "a.json"
    write_array(path, [{"id": 1}, "s", [1, {"x": ","}], None])
    assert [v for _, v in read_array(path)] == [{"id": 1}, "s", [1, {"x": ","}], None]
    write_array(path, [])
    assert list(read_array(path)) == []


def test_spans_say_where_each_record_ends_and_a_stretch_reads_the_same_bodies_back(tmp_path):
    path = tmp_path / "a.json"
    write_array(path, [{"id": i, "text": "é,\n" * (i % 7), "n": [i, ","]} for i in range(50)])
    spans = Spans()
    bodies = list(read_bodies(path, spans))
    assert spans.whole and len(spans.ends) == 50
    for first, count in ((0, 50), (0, 1), (13, 20), (49, 1), (10, 0)):
        start, end = spans.stretch(first, count)
        assert read_stretch(path, start, end, count, spans.stat) == bodies[first:first + count]
    write_array(path, [{"id": i} for i in range(50)])  # changed since: refused, not misread
    with pytest.raises(CorruptCollectionError, match="changed while"):
        read_stretch(path, *spans.stretch(0, 5), 5, spans.stat)
    path.write_text(json.dumps([{"id": 1}, {"id": 2}], indent=2))  # not one record a line: no spans
    spans = Spans()
    assert len(list(read_bodies(path, spans))) == 2 and not spans.whole


@pytest.mark.parametrize(
    "text",
    [
        json.dumps([{"id": 1, "ts": 2}, {"id": 2, "t": [1, 2]}], indent=2),  # pretty-printed by hand
        '[{"id": 1, "ts": 2}, {"id": 2, "t": [1, 2]}]',                          # one line
        '[\n{"id": 1, "ts": 2},\n{"id": 2,\n "t": [1, 2]}\n]\n',                 # one record split late
        '[\n{"id": 1, "ts": 2}\n,{"id": 2, "t": [1, 2]}\n]',                     # leading commas
        '\n[\n{"id": 1, "ts": 2},\n\n{"id": 2, "t": [1, 2]}\n]\n\n',             # blank lines
        '[\r\n{"id": 1, "ts": 2},\r\n{"id": 2, "t": [1, 2]}\r\n]\r\n',           # CRLF
    ],
)
def test_reader_falls_back_to_json_load(tmp_path, text):
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    assert [v for _, v in read_array(path)] == [{"id": 1, "ts": 2}, {"id": 2, "t": [1, 2]}]


@pytest.mark.parametrize(
    "text", ['[\n{"id": 1},\n{"id": 2}\n', '[\n{"id": 1},\n]\n', '{"id": 1}\n', "", '[\n{"id": 1}\n{"id": 2}\n]\n'],
)
def test_reader_refuses_broken_files_clearly(tmp_path, text):
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CorruptCollectionError, match="untouched"):
        list(read_array(path))


# -- a journal read backward: merged without sorting when it came newest first ---------------------

def journal_of(path, pages):
    journal = Journal(path)
    for page in pages:
        journal.add(page)
    journal.close()
    return read_journal(path)


def both_ways(tmp_path, saved_records, pages, **kwargs):
    """Merge the same pages from a journal (streamed when it can) and as a plain list (sorted)."""
    (tmp_path / "j").mkdir()
    (tmp_path / "l").mkdir()
    reader = journal_of(tmp_path / "j" / "journal.jsonl", pages)
    results = []
    for where, fetched in ((tmp_path / "j", reader), (tmp_path / "l", [r for page in pages for r in page])):
        saved = None
        if saved_records is not None:
            saved = where / "saved.json"
            write_array(saved, saved_records)
        out = io.BytesIO()
        source = fetched if where.name == "j" else [(jsonio.dumps_bytes(r), r) for r in fetched]
        stats = merge_collection(saved, source, out, time_field="ts", workdir=where, **kwargs)
        results.append((out.getvalue().decode("utf-8"), stats))
    (streamed_text, streamed), (sorted_text, by_sorting) = results
    assert not by_sorting.streamed
    assert streamed_text == sorted_text  # byte for byte the same file either way
    assert (streamed.total, streamed.new, streamed.characters, streamed.newest_ids) == \
        (by_sorting.total, by_sorting.new, by_sorting.characters, by_sorting.newest_ids)
    return streamed, json.loads(streamed_text)


def history_pages(count, size=50, refetch=True, seed=1):
    """Messages newest first in batches, each full batch's oldest message fetched again at the top
    of the next one (what the chat history's tie rule does)."""
    rng = random.Random(seed)
    messages = [{"id": f"c{i}", "ts": 1.7e9 + i + rng.random() / 2, "message": "m" * (i % 7), "reply": "r"}
                for i in range(count)]
    newest_first = messages[::-1]
    pages, at = [], 0
    while at < len(newest_first):
        page = newest_first[at:at + size]
        pages.append(page)
        at += size - 1 if refetch and len(page) == size else size
    return messages, pages


def test_a_first_backup_is_one_backward_pass(tmp_path):
    messages, pages = history_pages(777)
    stats, records = both_ways(tmp_path, None, pages)
    assert stats.streamed and stats.runs == 0 and not stats.index_spilled
    assert [r["id"] for r in records] == [m["id"] for m in messages] and stats.new == 777


def test_a_newest_first_journal_is_streamed_and_equals_the_sorted_merge(tmp_path):
    messages, pages = history_pages(1234)
    saved = [m for m in messages if m["id"] in {"c3", "c500", "c1233"}] + [{"id": "gone", "ts": 5.0}]
    stats, records = both_ways(tmp_path, sorted(saved, key=lambda m: m["ts"]), pages, chunk_size=100)
    assert stats.streamed and stats.runs == 0
    assert [r["id"] for r in records] == ["gone"] + [m["id"] for m in messages]
    assert stats.new == 1234 - 3


@pytest.mark.parametrize("with_saved", [False, True], ids=["first backup", "over a saved file"])
@pytest.mark.parametrize("disorder", ["a page out of place", "same id, new ts", "no usable ts",
                                      "id-less twins at one ts", "equal ts, ids out of order"])
def test_any_other_order_falls_back_to_sorting_with_the_same_result(tmp_path, disorder, with_saved):
    messages, pages = history_pages(300, refetch=False)
    if disorder == "a page out of place":
        pages[1], pages[3] = pages[3], pages[1]
    elif disorder == "same id, new ts":
        pages[2].insert(5, {"id": "c0", "ts": 2e9, "message": "edited"})  # moved to the future
    elif disorder == "no usable ts":
        pages[2].insert(10, {"id": "x", "ts": "soon"})
    elif disorder == "id-less twins at one ts":
        pages[0][:0] = [{"ts": 2e9, "message": "a"}, {"ts": 2e9, "message": "b"}]
    else:
        pages[0][:0] = [{"id": "a", "ts": 2e9}, {"id": "b", "ts": 2e9}]
    saved = [{"id": "c7", "ts": 3.0, "message": "old"}, {"id": "kept", "ts": 4.0}] if with_saved else None
    stats, records = both_ways(tmp_path, saved, pages, chunk_size=64)
    assert not stats.streamed and stats.runs > 0
    assert ("kept" in {r.get("id") for r in records}) == with_saved
    assert len(records) == len({json.dumps(r, sort_keys=True) for r in records})


def test_streaming_keeps_the_last_copy_of_a_record_fetched_twice(tmp_path):
    pages = [[{"id": "b", "ts": 2.0, "reply": "new"}, {"id": "a", "ts": 1.0}],
             [{"id": "a", "ts": 1.0, "reply": "a again"}]]
    stats, records = both_ways(tmp_path, [{"id": "a", "ts": 1.0, "reply": "saved"}], pages)
    assert stats.streamed
    assert records == [{"id": "a", "ts": 1.0, "reply": "a again"}, {"id": "b", "ts": 2.0, "reply": "new"}]
    assert stats.new == 1


def test_a_saved_file_out_of_order_is_resorted_after_streaming(tmp_path):
    messages, pages = history_pages(120)
    saved = [{"id": "z", "ts": 9e9}, {"id": "y", "ts": 1.0}]  # hand-edited: not in time order
    stats, records = both_ways(tmp_path, saved, pages)
    assert stats.streamed and stats.saved_resorted
    assert [r["id"] for r in records] == ["y"] + [m["id"] for m in messages] + ["z"]


def test_records_are_identified_by_the_resources_id_field(tmp_path):
    """A resource whose records carry their identity elsewhere (``id_field``): dedupe and ties use it."""
    saved = tmp_path / "saved.json"
    write_array(saved, [{"uuid": "a", "ts": 1.0, "v": "old"}, {"uuid": "b", "ts": 2.0}])
    fetched = [{"uuid": "a", "ts": 1.0, "v": "new"}, {"uuid": "c", "ts": 2.0}, {"uuid": "c", "ts": 2.0, "v": 2}]
    out = io.BytesIO()
    stats = merge_collection(saved, pairs(fetched), out, time_field="ts", workdir=tmp_path, id_field="uuid")
    assert json.loads(out.getvalue()) == [{"uuid": "a", "ts": 1.0, "v": "new"}, {"uuid": "b", "ts": 2.0},
                                          {"uuid": "c", "ts": 2.0, "v": 2}]
    assert (stats.total, stats.new, stats.newest_ids) == (3, 1, ["b", "c"])
    # with the default "id" the same records have no id: every distinct content is kept
    out = io.BytesIO()
    assert merge_collection(saved, pairs(fetched), out, time_field="ts", workdir=tmp_path).total == 5
