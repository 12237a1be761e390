"""The exit status cron and scrapyd rely on (tzcrawl.outcome), and the closing summary table (tzcrawl.extensions)."""

from __future__ import annotations

import pytest

from tzcrawl.extensions import summary_table
from tzcrawl.items import Outcome
from tzcrawl.outcome import exit_status, outcome_line, read_outcome

OK = Outcome.complete()


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
        "messages": {"outcome": OK, "total": 120, "new": 0, "characters": 5400},
        "profile": {"outcome": OK, "total": 1},
        "memories": {"outcome": OK, "total": 45, "new": 5},
    },
    "bob-the-long-name": {
        "profile": {"outcome": OK, "total": 1},
        "memories": {"outcome": Outcome.failed("HTTP 500 from https://s/api/memory/b?page=3")},
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
            "knowledge": {"outcome": OK, "total": 14},
            "training": {"outcome": Outcome.failed("HTTP 503")},
            "user_data": {"outcome": OK, "total": 0},
            "messages": {"outcome": Outcome.skipped("not attempted: not authenticated")},
        },
    }
    assert summary_table(rows).splitlines() == [
        "personality  messages  knowledge  training  user_data  characters",
        "c            SKIPPED   14         FAILED    0          -",
    ]


def test_summary_table_missing_figures_count_as_zero():
    rows = {"d": {"memories": {"outcome": OK}, "profile": {"outcome": OK}}}
    assert summary_table(rows).splitlines() == [
        "personality  profile  memories  characters",
        "d            0        0 (+0)    -",
    ]


def test_summary_table_of_no_rows_is_just_a_header():
    assert summary_table({}) == "personality  characters"


# -- the outcome line a job log ends with -----------------------------------------------------------

def test_the_outcome_line_round_trips_and_the_last_one_wins():
    first = outcome_line(1, "auth_failed", "Authentication failed (HTTP 401): 0 of 2 personalities")
    last = outcome_line(0, "finished", "Backup complete: 2 of 2 personalities.")
    log = f"2026 [x] INFO: {first}\nnoise\n2026 [tzcrawl.extensions] INFO: {last}\n {{'finish_reason': 'x'}}\n"
    assert read_outcome(log) == {"exit": 0, "finish_reason": "finished",
                                 "summary": "Backup complete: 2 of 2 personalities."}
    assert read_outcome(f"x {first}") == {"exit": 1, "finish_reason": "auth_failed",
                                          "summary": "Authentication failed (HTTP 401): 0 of 2 personalities"}


@pytest.mark.parametrize("log", ["", "Scrapy started\n", "tzcrawl outcome: {torn", 'tzcrawl outcome: {"exit": "0"}',
                                 "tzcrawl outcome: []"])
def test_no_outcome_line_is_none(log):
    assert read_outcome(log) is None


def test_not_theirs_is_shown_as_not_yours():
    """Someone else's owner-only resources: "not yours" in the table, never FAILED (the exit status
    counts them with the complete ones: test_crawl_others.py)."""
    rows = {"bob": {"memories": {"outcome": Outcome.not_theirs("only its owner may read it")},
                    "messages": {"outcome": OK, "total": 3, "new": 3, "characters": 42}}}
    assert summary_table(rows).splitlines() == [
        "personality  memories   messages  characters",
        "bob          not yours  3 (+3)    42",
    ]
