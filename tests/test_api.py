"""The service's URLs and answer shapes (tzcrawl.api, pure)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tzcrawl import registry
from tzcrawl.api import (HISTORY_LIMIT, BadAnswer, Blocked, Endpoints, MemoryPage, NotAuthenticated, decode, entry_count,
                         history_batch, memory_page, personality_list, profile)
from tzcrawl.config import ServiceConfig

SITE = "https://service.example.com"
E = Endpoints(ServiceConfig(SITE))
R = registry.get


def url(resource: str, pid="p1", position=None, endpoints=E, username="alice") -> str:
    return endpoints.resource(R(resource), {"id": pid, "username": username}, position)


# -- URLs -------------------------------------------------------------------------------------------

def test_default_urls():
    assert E.personalities() == f"{SITE}/api/personalities?category=self"
    assert E.personalities("recent") == f"{SITE}/api/personalities?category=recent"
    assert url("profile") == f"{SITE}/api/personalities/username/alice"
    assert url("memories", position=1) == f"{SITE}/api/memory/p1?page=1"
    assert url("memories", position=12) == f"{SITE}/api/memory/p1?page=12"
    assert url("knowledge") == f"{SITE}/api/personalities/p1/story"
    assert url("training") == f"{SITE}/api/personalities/p1/training"
    assert url("user_data") == f"{SITE}/api/personalities/p1/user"
    assert url("messages") == f"{SITE}/api/personalities/p1/chat/history?limit=50&shape_id=p1"
    assert HISTORY_LIMIT == 50


def test_the_profile_needs_only_the_username():
    assert E.resource(R("profile"), {"username": "bob"}) == f"{SITE}/api/personalities/username/bob"


def test_jargon_and_profile_path_variants():
    e = Endpoints(ServiceConfig("http://127.0.0.1:8080/base", jargon="shapes", profile_path="shapes/username"))
    assert e.personalities() == "http://127.0.0.1:8080/base/api/shapes?category=self"
    assert url("profile", endpoints=e, username="bob") == "http://127.0.0.1:8080/base/api/shapes/username/bob"
    assert url("knowledge", 7, endpoints=e) == "http://127.0.0.1:8080/base/api/shapes/7/story"
    assert url("training", 7, endpoints=e) == "http://127.0.0.1:8080/base/api/shapes/7/training"
    assert url("user_data", 7, endpoints=e) == "http://127.0.0.1:8080/base/api/shapes/7/user"
    assert url("messages", 7, "1721828935.24231", endpoints=e) == (
        "http://127.0.0.1:8080/base/api/shapes/7/chat/history?limit=50&shape_id=7&before_ts=1721828935.24231")
    # memories are not under the jargon word
    assert url("memories", 7, 2, endpoints=e) == "http://127.0.0.1:8080/base/api/memory/7?page=2"
    agents = Endpoints(ServiceConfig(SITE, jargon="agents", profile_path="agents/private/by-name"))
    assert url("profile", endpoints=agents, username="c") == f"{SITE}/api/agents/private/by-name/c"


def test_every_registered_resource_has_a_url():
    for resource in registry.REGISTRY:
        assert url(resource.name).startswith(f"{SITE}/api/")


@pytest.mark.parametrize("username, encoded", [
    ("../x", "..%2Fx"),
    ("a/b", "a%2Fb"),
    ("名前", "%E5%90%8D%E5%89%8D"),
    ("a?b#c", "a%3Fb%23c"),
    ("a b&c=d", "a%20b%26c%3Dd"),
    ("%2F", "%252F"),
])
def test_profile_url_encodes_hostile_usernames_into_one_segment(username, encoded):
    address = url("profile", username=username)
    assert address == f"{SITE}/api/personalities/username/{encoded}"
    parts = urlsplit(address)
    assert parts.query == "" and parts.fragment == ""
    assert parts.path.split("/")[-1] == encoded


@pytest.mark.parametrize("pid", ["../x", "a/b", "名前", "a?b#c"])
def test_ids_are_encoded_in_paths_and_queries(pid):
    for address in (url("memories", pid, 3), url("knowledge", pid), url("training", pid), url("user_data", pid),
                    url("messages", pid, "5.5")):
        parts = urlsplit(address)
        assert parts.fragment == ""
        assert "/" not in pid or pid not in parts.path
    memories = urlsplit(url("memories", pid, 3))
    assert memories.path.count("/") == 3 and parse_qs(memories.query) == {"page": ["3"]}
    history = urlsplit(url("messages", pid, "5.5"))
    assert history.path.count("/") == 5  # /api/personalities/{pid}/chat/history
    assert parse_qs(history.query) == {"limit": ["50"], "shape_id": [pid], "before_ts": ["5.5"]}


@pytest.mark.parametrize("ts", [1721828935.24231, 1700000000.1, 0.30000000000000004, 1721828935.0])
def test_before_ts_round_trips_exactly(ts):
    query = parse_qs(urlsplit(url("messages", "p", ts)).query)
    assert float(query["before_ts"][0]) == ts


# -- decode -----------------------------------------------------------------------------------------

URL = f"{SITE}/api/users/me"


@pytest.mark.parametrize("status", [401, 403])
def test_decode_auth_refusals(status):
    with pytest.raises(NotAuthenticated, match=f"HTTP {status}"):
        decode(status, "application/json", b'{"error": "unauthorized"}', URL)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_decode_redirects_are_not_authenticated(status):
    with pytest.raises(NotAuthenticated, match=f"HTTP {status}"):
        decode(status, "text/html", b"", URL)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_decode_server_errors_are_bad_answers_even_with_html(status):
    with pytest.raises(BadAnswer, match=f"HTTP {status}"):
        decode(status, "text/html; charset=utf-8", b"<html><body>Bad gateway</body></html>", URL)


@pytest.mark.parametrize("status", [404, 429, 400])
def test_decode_other_client_errors_are_bad_answers(status):
    with pytest.raises(BadAnswer):
        decode(status, "application/json", b"{}", URL)


@pytest.mark.parametrize("content_type, body", [
    ("text/html", b"<!doctype html><form action=/login>"),
    ("text/html; charset=utf-8", b'{"looks": "like json"}'),
    ("TEXT/HTML", b"[]"),
    ("application/json", b"<!DOCTYPE html><html>login</html>"),
    ("application/json", b"  \n\t<html>"),
    ("", b"<html>"),
    (None, b"<html>"),
])
def test_decode_html_on_200_without_a_login_form_is_the_bot_check(content_type, body):
    with pytest.raises(Blocked, match="HTML page where JSON was asked for"):
        decode(200, content_type, body, URL)


@pytest.mark.parametrize("body", [
    b"<!doctype html><form action=/login><input type='password' name='password'></form>",
    b'<html><body><input name="p" TYPE="password"></body></html>',
])
def test_decode_a_login_page_is_not_authenticated(body):
    with pytest.raises(NotAuthenticated, match="login page"):
        decode(200, "text/html", body, URL)


@pytest.mark.parametrize("status, headers, body, seen", [
    (403, {"cf-mitigated": "challenge", "Server": "cloudflare"}, b"<html>Just a moment...</html>", "Cloudflare"),
    (403, [(b"Cf-Mitigated", [b"challenge"])], b"<html></html>", "Cloudflare"),
    (200, {"X-DataDome": "protected"}, b"<html></html>", "DataDome"),
    (403, {"x-datadome-cid": "abc"}, b'{"url": "https://geo.captcha-delivery.com/..."}', "DataDome"),
    (200, {"X-PX-Block": "1"}, b"{}", "PerimeterX"),
    (403, {}, b"<!doctype html><title>Attention Required</title>", "HTML page"),
])
def test_decode_bot_protection_is_blocked_not_a_login(status, headers, body, seen):
    with pytest.raises(Blocked, match=seen):
        decode(status, "text/html" if body[:1] == b"<" else "application/json", body, URL, headers)


def test_a_plain_401_or_403_is_still_not_authenticated():
    for status in (401, 403):
        with pytest.raises(NotAuthenticated):
            decode(status, "application/json", b'{"error": "unauthorized"}', URL, {"Server": "cloudflare"})


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"{'single': 'quotes'}", b"\xff\xfe"])
def test_decode_invalid_json_is_a_bad_answer(body):
    with pytest.raises(BadAnswer, match="invalid JSON") as info:
        decode(200, "application/json", body, URL)
    assert URL in str(info.value)


def test_decode_returns_the_data():
    assert decode(200, "application/json; charset=utf-8", b' {"id": 1, "x": [1.5, null]} ', URL) == {
        "id": 1, "x": [1.5, None]}
    assert decode(200, "application/json", "[\"名前\"]".encode(), URL) == ["名前"]
    assert decode(200, "", b"[]", URL) == []


# -- personality list and profile -------------------------------------------------------------------

PEOPLE = [{"id": "1", "name": "A", "username": "a"}, {"id": 2, "name": "B", "username": "b", "extra": True}]


def test_personality_list_array_and_wrapped():
    assert personality_list(PEOPLE) == PEOPLE
    for wrapper in ("items", "data", "results"):
        assert personality_list({wrapper: PEOPLE, "total": 2}) == PEOPLE
    assert personality_list([]) == []


@pytest.mark.parametrize("payload", [
    None, "x", 3, {"people": PEOPLE}, {"items": "nope"}, [1, 2], [PEOPLE[0], "b"],
    [{"id": "1", "name": "no username"}], [{"username": "noid"}], [{"id": "", "username": "x"}],
    [{"id": "1", "username": ""}],
])
def test_personality_list_bad_shapes(payload):
    with pytest.raises(BadAnswer):
        personality_list(payload)


def test_profile_keeps_every_field():
    payload = {"id": "p", "name": "A", "username": "a", "user_id": "u", "unknown_new_field": {"x": 1}}
    assert profile(payload, "a") is payload


@pytest.mark.parametrize("payload", [None, [], ["p"], {"name": "no id"}, {"id": None}, {"id": ""}])
def test_profile_without_id_is_a_bad_answer(payload):
    with pytest.raises(BadAnswer, match="'alice'"):
        profile(payload, "alice")


# -- memories ---------------------------------------------------------------------------------------

ITEMS = [{"id": "m2", "created_at": 2.0}, {"id": "m1", "created_at": 1.0}]


@pytest.mark.parametrize("payload, expected", [
    ({"items": ITEMS, "pagination": {"page": 2, "total_pages": 5}}, MemoryPage(ITEMS, 5)),
    ({"items": ITEMS, "pagination": {"page": "2", "total_pages": "5", "total": 100}}, MemoryPage(ITEMS, 5, 100)),
    ({"items": ITEMS, "pagination": {"total_pages": 5, "total_items": "98"}}, MemoryPage(ITEMS, 5, 98)),
    ({"items": ITEMS, "pagination": {"totalPages": 5, "totalItems": 97}}, MemoryPage(ITEMS, 5, 97)),
    ({"items": ITEMS, "pagination": {"page": 1, "totalPages": 3}}, MemoryPage(ITEMS, 3)),
    ({"items": ITEMS, "meta": {"pagination": {"page": 4, "total_pages": 4}}}, MemoryPage(ITEMS, 4)),
    ({"items": ITEMS, "meta": {"pagination": {"page": 4, "totalPages": 9}}}, MemoryPage(ITEMS, 9)),
    ({"items": ITEMS, "page": 3, "totalPages": 7}, MemoryPage(ITEMS, 7)),
    ({"items": ITEMS, "page": 3, "total_pages": 7}, MemoryPage(ITEMS, 7)),
    ({"items": ITEMS}, MemoryPage(ITEMS, None)),
    ({"items": ITEMS, "pagination": {"page": 1, "total_pages": None}}, MemoryPage(ITEMS, None)),
    ({"items": ITEMS, "pagination": {"page": 1, "total_pages": "many"}}, MemoryPage(ITEMS, None)),
    ({"items": ITEMS, "meta": "x"}, MemoryPage(ITEMS, None)),
    (ITEMS, MemoryPage(ITEMS, None)),
    ({}, MemoryPage([], None)),
    ({"items": [], "pagination": {"page": 6, "total_pages": 5}}, MemoryPage([], 5)),
])
def test_memory_page_shapes(payload, expected):
    assert memory_page(payload) == expected


@pytest.mark.parametrize("payload", [None, "items", 5, {"items": {"m1": {}}}, {"items": "x"}, {"items": None}])
def test_memory_page_bad_shapes(payload):
    with pytest.raises(BadAnswer, match=r"items \(or memories\) array"):
        memory_page(payload)


@pytest.mark.parametrize("payload, expected", [
    ({"memories": ITEMS, "pagination": {"page": 1, "total_pages": 3, "has_next": True}},
     MemoryPage(ITEMS, 3, None, True)),
    ({"items": ITEMS, "pagination": {"page": 3, "has_next": False}}, MemoryPage(ITEMS, None, None, False)),
    ({"items": ITEMS, "pagination": {"page": 3, "hasNext": "yes"}}, MemoryPage(ITEMS, None, None, None)),
])
def test_memory_pages_as_the_service_sends_them_now(payload, expected):
    assert memory_page(payload) == expected


# -- whole documents --------------------------------------------------------------------------------

@pytest.mark.parametrize("resource, payload, count", [
    ("knowledge", [{"a": 1}, {"b": 2}, {"c": 3}], 3),
    ("knowledge", {"items": [1, 2]}, 2),
    ("knowledge", {"story": [1, 2, 3, 4]}, 4),
    ("knowledge", {"knowledge": [1]}, 1),
    ("knowledge", {"title": "one story", "text": "..."}, 1),
    ("knowledge", {}, 0),
    ("knowledge", [], 0),
    ("knowledge", None, 0),
    ("knowledge", {"training": [1, 2, 3]}, 1),  # not a knowledge key: one single object
    ("knowledge", {"story": "text", "items": [1, 2]}, 2),
    ("training", [{"q": 1}, {"q": 2}], 2),
    ("training", {"items": [1, 2, 3]}, 3),
    ("training", {"training": [1, 2, 3, 4, 5]}, 5),
    ("training", {"question": "q", "answer": "a"}, 1),
    ("training", {}, 0),
    ("training", None, 0),
    ("training", {"story": [1, 2]}, 1),  # not a training key
    ("user_data", {"nickname": "x", "notes": "y", "tone": "z"}, 3),
    ("user_data", {}, 0),
    ("user_data", None, 0),
    ("user_data", [{"a": 1}], 1),
])
def test_entry_count(resource, payload, count):
    assert entry_count(R(resource), payload) == count


@pytest.mark.parametrize("payload", ["text", 5, 1.5, True])
def test_entry_count_of_a_scalar_is_a_bad_answer(payload):
    with pytest.raises(BadAnswer, match="knowledge"):
        entry_count(R("knowledge"), payload)


# -- chat history -----------------------------------------------------------------------------------

MESSAGES = [{"id": "b", "ts": 2.5, "message": "hi", "reply": "hello"}, {"id": "a", "ts": 1.0}]


def test_history_batch_shapes():
    assert history_batch(MESSAGES) == MESSAGES
    assert history_batch([]) == []
    assert history_batch({"items": MESSAGES}) == MESSAGES
    assert history_batch({"messages": MESSAGES, "next": None}) == MESSAGES


@pytest.mark.parametrize("payload", [None, {}, {"history": MESSAGES}, "x", [1], [MESSAGES[0], None],
                                     {"items": "x"}])
def test_history_batch_bad_shapes(payload):
    with pytest.raises(BadAnswer, match="array of messages"):
        history_batch(payload)


def test_decoded_payloads_round_trip_through_the_shapes():
    body = json.dumps({"items": ITEMS, "meta": {"pagination": {"page": 1, "totalPages": 1}}}).encode()
    assert memory_page(decode(200, "application/json", body, URL)) == MemoryPage(ITEMS, 1)
