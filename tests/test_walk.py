"""The walk's decisions without a network: how each resource of a personality ends (tzcrawl.walk)."""

from __future__ import annotations

import pytest

from tzcrawl import api, paging, registry
from tzcrawl.items import Document, Outcome, Page, ResourceDone
from tzcrawl.walk import ANSWER, AUTH, LOCKED, NOT_THEIRS, Walk, after_error, gather, not_theirs, outcome_of

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


# -- someone else's personality (issue 24) ----------------------------------------------------------
THEIRS = {"id": "t1", "username": "bob", "owned": False}


def test_gather_backs_each_personality_up_once_and_marks_whose_it_is():
    mine = [{"id": "p1", "username": "alice"}, {"id": "p2", "username": "ann"}]
    recent = [{"id": "p2", "username": "ann"}, {"id": "t1", "username": "bob"}, {"id": "t1", "username": "bob"}]
    lists = {"self": mine, "recent": recent}
    assert [(p["username"], p["owned"]) for p in gather(lists, ("self", "recent"))] == [
        ("alice", True), ("ann", True), ("bob", False)]
    assert [(p["username"], p["owned"]) for p in gather(lists, ("recent",))] == [("ann", True), ("bob", False)]
    assert [p["username"] for p in gather(lists, ("self",))] == ["alice", "ann"]
    unread = gather({"self": None, "recent": recent}, ("recent",))  # the owned list failed: whose is unknown
    assert [p["username"] for p in unread] == ["ann", "bob"] and all("owned" not in p for p in unread)
    assert gather({"self": mine, "recent": None}, ("self", "recent")) == [dict(p, owned=True) for p in mine]


@pytest.mark.parametrize("exc", [api.Forbidden("HTTP 403 from x"), api.NotFound("HTTP 404 from x")])
def test_a_refused_owner_only_resource_of_someone_elses_personality_is_not_theirs(exc):
    walk = Walk(dict(THEIRS), ALL, index=NAMES.index("memories"))
    why = not_theirs(walk, walk.current, exc)
    assert why and str(exc) in why
    ending = after_error(walk, NOT_THEIRS, why)
    assert [d.outcome for d in ending.done] == [Outcome.not_theirs(why)]
    assert walk.current.name == "messages" and not ending.personality_over and not ending.stop_crawl
    assert Outcome.not_theirs(why).settled and not Outcome.not_theirs(why).ok


@pytest.mark.parametrize("owned, resource, exc", [
    (True, "memories", api.Forbidden("403")),        # the user's own: a failure (or a lost session)
    (None, "memories", api.NotFound("404")),         # nobody said whose: as before
    (False, "messages", api.Forbidden("403")),       # anyone may read a chat history: not about ownership
    (False, "user_data", api.NotFound("404")),
    (False, "memories", api.NotAuthenticated("401")),  # a lost session stays a lost session
    (False, "memories", api.Blocked("Cloudflare")),    # a bot check stays a bot check
    (False, "memories", api.BadAnswer("HTTP 500")),
])
def test_other_refusals_keep_their_meaning(owned, resource, exc):
    person = {"id": "x", "username": "x"} if owned is None else {"id": "x", "username": "x", "owned": owned}
    walk = Walk(person, ALL, index=NAMES.index(resource))
    assert not_theirs(walk, walk.current, exc) is None


def test_identify_keeps_whose_it_is_and_names_another_owner():
    walk = Walk(dict(THEIRS, avatar_url="a.png"), ALL)
    walk.identify({"id": "t1", "name": "Bob", "created_by": "owner-2", "user_id": "owner-2"})
    assert walk.personality == {"id": "t1", "username": "bob", "name": "Bob", "owned": False, "owner": "owner-2"}
    mine = Walk({"id": "p1", "username": "alice", "owned": True}, ALL)
    mine.identify({"id": "p1", "name": "Alice", "created_by": "me"})
    assert mine.personality == {"id": "p1", "username": "alice", "name": "Alice", "owned": True}
    named = Walk({"username": "alice"}, ALL)
    named.identify({"id": "p1", "name": "Alice", "created_by": "me"})
    assert "owned" not in named.personality and named.owned is None
