"""The walk's decisions without a network: how each resource of a personality ends (tzcrawl.walk)."""

from __future__ import annotations

import pytest

from tzcrawl import paging, registry
from tzcrawl.items import Document, Outcome, Page, ResourceDone
from tzcrawl.walk import ANSWER, AUTH, LOCKED, Walk, after_error, outcome_of

ALL = registry.REGISTRY
NAMES = [r.name for r in ALL]
WHO = {"username": "alice"}
ME = {"id": "p1", "username": "alice", "name": "Alice"}
NOT_ATTEMPTED = Outcome.skipped("not attempted: not authenticated")


def walk_at(resource: str, requests: int = 3) -> Walk:
    """A walk of every resource, identified by its profile, now fetching ``resource``."""
    walk = Walk(dict(WHO), ALL)
    walk.identify({"id": "p1", "name": "Alice", "bio": "..."})
    walk.index = NAMES.index(resource)
    walk.requests = requests
    return walk


def test_success_ends_the_current_resource_and_moves_to_the_next():
    walk = walk_at("memories")
    done = walk.end(outcome_of(paging.Stop("last page")))
    assert done == ResourceDone(ME, "memories", Outcome.complete("last page"), 3, full_read=True)
    assert walk.current.name == "messages" and walk.requests == 0
    assert outcome_of(paging.Next(4)) is None  # a next page is no outcome yet


def test_a_paging_failure_fails_the_resource_only():
    walk = walk_at("memories")
    assert walk.end(outcome_of(paging.Fail("page 3 repeated"))).outcome == Outcome.failed("page 3 repeated")
    assert walk.current.name == "messages"


@pytest.mark.parametrize("reason", [
    "invalid JSON from https://s/api/memory/p1?page=2: unexpected end of data",  # a bad answer
    "HTTP 503 from https://s/api/memory/p1?page=2",                              # 5xx, retries exhausted
    "TCP connection timed out: 110: Connection timed out.",                      # the network, for good
])
def test_a_bad_answer_or_a_request_failed_for_good_fails_the_current_resource_only(reason):
    walk = walk_at("memories")
    ending = after_error(walk, ANSWER, reason)
    assert ending.done == [ResourceDone(ME, "memories", Outcome.failed(reason), 3)]
    assert not ending.personality_over and not ending.stop_crawl
    assert walk.current.name == "messages"


def test_a_failure_in_the_last_resource_ends_the_personality():
    walk = walk_at("user_data", requests=1)
    ending = after_error(walk, ANSWER, "HTTP 500")
    assert [d.resource for d in ending.done] == ["user_data"] and ending.personality_over


def test_auth_failure_mid_resource_fails_it_skips_the_rest_and_stops_the_crawl():
    walk = walk_at("messages", requests=7)
    ending = after_error(walk, AUTH, "HTTP 401 from https://s/api/x")
    assert ending.stop_crawl and ending.personality_over
    assert ending.done[0] == ResourceDone(ME, "messages", Outcome.failed("not authenticated: HTTP 401 from https://s/api/x"), 7)
    assert ending.done[1:] == [ResourceDone(ME, r, NOT_ATTEMPTED) for r in ("knowledge", "training", "user_data")]
    assert walk.current is None


def test_auth_failure_on_the_profile_request():
    walk = Walk(dict(WHO), ALL, requests=1)
    ending = after_error(walk, AUTH, "HTTP 401")
    assert ending.done == [ResourceDone(WHO, "profile", Outcome.failed("not authenticated: HTTP 401"), 1)] + [
        ResourceDone(WHO, r, NOT_ATTEMPTED) for r in NAMES[1:]]
    assert ending.stop_crawl


def test_auth_failure_before_any_planned_resource_skips_them_all():
    walk = Walk(dict(WHO), (registry.get("memories"),), requests=1)  # the profile is asked for, not saved
    ending = after_error(walk, AUTH, "HTTP 401")
    assert ending.done == [ResourceDone(WHO, "memories", NOT_ATTEMPTED, 1)] and ending.stop_crawl


def test_profile_unavailable_fails_the_profile_and_skips_the_rest_but_the_crawl_goes_on():
    walk = Walk(dict(WHO), ALL, requests=1)
    ending = after_error(walk, ANSWER, "HTTP 404 from https://s/api/personalities/username/alice")
    rest = Outcome.skipped("not attempted: profile unavailable: HTTP 404 from https://s/api/personalities/username/alice")
    assert ending.done[0].outcome == Outcome.failed("HTTP 404 from https://s/api/personalities/username/alice")
    assert [d.outcome for d in ending.done[1:]] == [rest] * (len(ALL) - 1)
    assert ending.personality_over and not ending.stop_crawl


def test_personality_locked_elsewhere_skips_every_resource():
    walk = Walk(dict(WHO), ALL)
    reason = "not backed up: backup of 'alice' is locked by process 42 (/b/.locks/alice.lock)"
    ending = after_error(walk, LOCKED, reason)
    assert ending.done == [ResourceDone(WHO, r, Outcome.skipped(reason)) for r in NAMES]
    assert ending.personality_over and not ending.stop_crawl
    assert not any(d.outcome.ok for d in ending.done)


@pytest.mark.parametrize("kind", [ANSWER, AUTH, LOCKED])
@pytest.mark.parametrize("position", range(len(ALL)))
def test_every_planned_resource_gets_exactly_one_outcome_in_order(kind, position):
    """Whatever error meets the walk at whichever resource, each resource ends once, in order."""
    walk = walk_at(NAMES[0])
    done = [walk.end(Outcome.complete()) for _ in range(position)]
    while walk.current is not None:
        ending = after_error(walk, kind, "x")
        done += ending.done
        if ending.personality_over:
            break
    assert [d.resource for d in done] == NAMES and walk.current is None


def test_items_never_show_private_records_in_logs():
    """Scrapy logs an item it could not process (and every item at DEBUG) with its repr."""
    secret = [{"id": "m1", "message": "my private diary", "reply": "kept between us"}] * 3
    page = Page(ME, "messages", secret)
    document = Document(ME, "profile", {"user_prompt": "my private prompt"}, 1)
    assert repr(page) == "Page(alice, messages, 3 records)" == str(page)
    assert repr(document) == "Document(alice, profile, 1 entries)"
    for item in (page, document):
        assert "private" not in repr(item) and "between us" not in repr(item)
