"""The exit status cron and scrapyd rely on, and the closing summary table (tzcrawl.extensions)."""

from __future__ import annotations

import pytest

from tzcrawl.extensions import exit_status, summary_table


# -- exit_status ------------------------------------------------------------------------------------

def test_exit_zero_only_when_everything_requested_was_backed_up():
    assert exit_status("finished", requested=12, complete=12, failed=0, errors=0) == 0
    assert exit_status("finished", requested=1, complete=1, failed=0, errors=0) == 0


@pytest.mark.parametrize("reason", ["auth_failed", "shutdown", "cancelled", "closespider_errorcount",
                                    "closespider_timeout", "Finished", ""])
def test_exit_non_zero_when_the_crawl_did_not_finish(reason):
    assert exit_status(reason, requested=3, complete=3, failed=0, errors=0) == 1


@pytest.mark.parametrize("figures", [
    dict(requested=3, complete=2, failed=1, errors=0),   # a failed resource
    dict(requested=3, complete=3, failed=1, errors=0),   # failed even if the counts add up oddly
    dict(requested=3, complete=2, failed=0, errors=0),   # fewer complete than requested, silently
    dict(requested=3, complete=0, failed=0, errors=0),
    dict(requested=3, complete=3, failed=0, errors=1),   # an error outside any resource (e.g. the list)
    dict(requested=3, complete=3, failed=0, errors=7),
])
def test_exit_non_zero_on_any_shortfall(figures):
    assert exit_status("finished", **figures) == 1


def test_exit_non_zero_for_a_shutdown_with_a_failure():
    assert exit_status("shutdown", requested=3, complete=1, failed=1, errors=2) == 1


# -- summary_table ----------------------------------------------------------------------------------

ROWS = {
    "alice": {
        "messages": {"ok": True, "total": 120, "new": 0, "characters": 5400, "error": None},
        "profile": {"ok": True, "total": 1, "error": None},
        "memories": {"ok": True, "total": 45, "new": 5, "error": None},
    },
    "bob-the-long-name": {
        "profile": {"ok": True, "total": 1, "error": None},
        "memories": {"ok": False, "error": "HTTP 500 from https://s/api/memory/b?page=3"},
    },
}


def test_summary_table_exact():
    # columns in RESOURCES order whatever order the rows were filled in; "-" where nothing was done
    assert summary_table(ROWS) == "\n".join([
        "personality        profile  memories  messages  characters",
        "alice              1        45 (+5)   120 (+0)  5400",
        "bob-the-long-name  1        FAILED    -         -",
    ])


def test_summary_table_columns_are_aligned():
    lines = summary_table(ROWS).splitlines()
    header = lines[0]
    for name in ("profile", "memories", "messages", "characters"):
        start = header.index(name)
        for line in lines[1:]:
            if len(line) > start:
                assert line[start - 2:start] == "  " and line[start] != " ", (name, line)


def test_summary_table_failed_cells_and_document_totals():
    rows = {
        "c": {
            "knowledge": {"ok": True, "total": 14, "error": None},
            "training": {"ok": False, "error": "HTTP 503"},
            "user_data": {"ok": True, "total": 0, "error": None},
            "messages": {"ok": False, "error": "not authenticated"},
        },
    }
    assert summary_table(rows).splitlines() == [
        "personality  messages  knowledge  training  user_data  characters",
        "c            FAILED    14         FAILED    0          -",
    ]


def test_summary_table_missing_figures_count_as_zero():
    rows = {"d": {"memories": {"ok": True, "error": None}, "profile": {"ok": True, "error": None}}}
    assert summary_table(rows).splitlines() == [
        "personality  profile  memories  characters",
        "d            0        0 (+0)    -",
    ]


def test_summary_table_of_no_rows_is_just_a_header():
    assert summary_table({}) == "personality  characters"
