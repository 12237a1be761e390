"""The sort key: every timestamp spelling on one timeline, unreadable ones first, never a crash."""

from __future__ import annotations

import math
import random

import pytest

from tzcrawl.store.timestamps import id_text, sort_key, to_epoch

T = 1721828935.242  # 2024-07-24T13:48:55.242Z


@pytest.mark.parametrize(
    "value, expected",
    [
        (1721828935.24231, 1721828935.24231),
        (1721828935, 1721828935.0),
        ("1721828935.24231", 1721828935.24231),
        (" 1721828935 ", 1721828935.0),
        (1721828935242, T),  # milliseconds
        ("1721828935242", T),
        ("2024-07-24T13:48:55.242Z", T),
        ("2024-07-24T15:48:55.242+02:00", T),
        ("2024-07-24T08:48:55.242-05:00", T),
        ("2024-07-24T13:48:55.242", T),  # naive = UTC
        ("2024-07-24 13:48:55.242", T),
        ("2024-07-24", 1721779200.0),
        (0, 0.0),
        (-5, -5.0),
        ("-86400", -86400.0),
    ],
)
def test_readable_timestamps(value, expected):
    assert to_epoch(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value", [None, "", "   ", "garbage", "2024-13-45T99:00:00Z", "nan", "inf", "-Infinity", float("nan"),
              float("inf"), "1e400", 10**400, True, False, [], {}, {"t": 1}, b"1"],
)
def test_unreadable_timestamps_are_none(value):
    assert to_epoch(value) is None


def test_mixed_spellings_sort_on_one_timeline():
    records = [
        {"id": "iso-z", "created_at": "2024-07-24T13:48:57Z"},          # T+2
        {"id": "float", "created_at": 1721828935.242},                  # T
        {"id": "ms", "created_at": 1721828936242},                      # T+1
        {"id": "offset", "created_at": "2024-07-24T15:48:58.242+02:00"},  # T+3
        {"id": "numstr", "created_at": "1721828934.242"},               # T-1
        {"id": "naive", "created_at": "2024-07-24T13:48:59.242"},       # T+4
        {"id": "bad", "created_at": "garbage"},
        {"id": "none", "created_at": None},
        {"id": "missing"},
        {"id": "old-negative", "created_at": -100},
    ]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    ordered = [r["id"] for r in sorted(shuffled, key=lambda r: sort_key(r, "created_at"))]
    assert ordered == ["bad", "missing", "none", "old-negative", "numstr", "float", "ms", "iso-z", "offset", "naive"]


def test_ties_are_broken_by_id_as_string_so_order_is_total():
    records = [{"id": 10, "ts": 5}, {"id": "9", "ts": 5.0}, {"id": "a", "ts": "5"}, {"ts": 5}]
    keys = sorted(sort_key(r, "ts") for r in records)
    assert [k[2] for k in keys] == ["", "10", "9", "a"]
    assert len(set(keys)) == 4


def test_non_dict_records_do_not_crash():
    assert sort_key("just a string", "ts") == (0, 0.0, "")
    assert sort_key(None, "ts") == (0, 0.0, "")
    assert id_text({"id": {"b": 1, "a": 2}}) == '{"a": 2, "b": 1}'


def test_keys_are_finite():
    for value in [1e308, -1e308, "9" * 30]:
        seconds = to_epoch(value)
        assert seconds is None or math.isfinite(seconds)
