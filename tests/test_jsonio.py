"""Fast JSON (tzcrawl.jsonio): exact where orjson is, the standard library where orjson refuses."""

from __future__ import annotations

import json

import pytest

from tzcrawl import jsonio
from tzcrawl.api import BadAnswer, decode
from tzcrawl.store.journal import Journal, read_journal

ODD = [
    {"id": "big", "n": 2 ** 70, "neg": -(2 ** 65)},         # beyond 64 bits: orjson refuses, json keeps it
    {"id": "sur", "text": "\ud800 lone surrogate"},         # valid JSON text (an escape), not valid UTF-8
    {"id": "uni", "text": "名前 😀 \u2028 \"quoted\"", "ts": 1721828935.24231, "f": 1e-7},
    [1, None, True, {"nested": [{}]}],
]


@pytest.mark.parametrize("value", ODD)
def test_values_round_trip_exactly(value):
    line = jsonio.dumps(value)
    assert "\n" not in line
    assert jsonio.loads(line) == value and json.loads(line) == value


def test_decoding_a_service_answer_keeps_odd_values():
    body = json.dumps(ODD).encode()
    assert decode(200, "application/json", body, "u") == ODD


@pytest.mark.parametrize("body", [b"[NaN]", b'{"ts": Infinity}', b"[-Infinity]"])
def test_non_json_constants_are_a_bad_answer_not_silently_changed(body):
    with pytest.raises(BadAnswer, match="invalid JSON from u: .*is not a JSON value"):
        decode(200, "application/json", body, "u")


def test_the_journal_keeps_records_in_order_with_odd_values_forward_and_backward(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    assert journal.add(ODD[:2]) == 2 and journal.add([]) == 0 and journal.add(ODD[2:]) == 2
    journal.close()
    assert (tmp_path / "j.jsonl").read_text().count("\n") == 4  # one line per record
    reader = read_journal(tmp_path / "j.jsonl")
    assert [value for _line, value in reader] == ODD == list(reader.values())
    assert [json.loads(line) for line, _value in reader] == ODD
    assert list(reader.backward()) == list(reader)[::-1]


@pytest.mark.parametrize("records", [1, 3, 5000])
def test_reading_backward_across_block_edges(tmp_path, records):
    journal = Journal(tmp_path / "j.jsonl")
    page = [{"id": i, "text": "x" * (i % 997) + "名"} for i in range(records)]
    journal.add(page)
    journal.close()  # 5000 records of up to 1 KB: several 1 MiB blocks, lines cut at their edges
    assert [value for _line, value in read_journal(tmp_path / "j.jsonl").backward()] == page[::-1]


def test_a_torn_journal_says_where(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"id": 1}\n{"id"')
    with pytest.raises(ValueError, match=r"j\.jsonl:2: .*the journal is incomplete"):
        list(read_journal(path).values())
    with pytest.raises(ValueError, match=r"j\.jsonl:2: torn last line"):
        list(read_journal(path))


@pytest.mark.parametrize("data", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
                                  "[" * 3000 + "]" * 3000])
def test_json_nested_too_deep_is_a_value_error_not_a_recursion_error(data):
    with pytest.raises(ValueError, match="nested deeper than 1024 levels"):
        jsonio.loads(data)
    assert jsonio.loads(b"[" * 500 + b"]" * 500) is not None  # deep but reasonable answers still decode
