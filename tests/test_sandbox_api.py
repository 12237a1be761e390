"""The sandbox's service endpoints over real HTTP on loopback."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tzcrawl.sandbox.client import call

# The 2025 service these tests were written for (appSession over plain http, 2025 record shapes); today's
# default has tests of its own (test_sandbox_sessions.py, test_sandbox_records.py).
pytestmark = [pytest.mark.sandbox_session("appsession"), pytest.mark.sandbox_records("2025")]


def test_users_me_and_listing(sandbox):
    me = call(sandbox.base_url, "/api/users/me", sandbox.cookie)
    assert me.status == 200 and me.headers["Content-Type"].startswith("application/json")
    owner = me.json()["id"]
    listing = call(sandbox.base_url, "/api/personalities?category=self", sandbox.cookie).json()
    assert [p["username"] for p in listing] == [r["username"] for r in sandbox.totals()["personalities"]]
    for entry in listing:
        assert {"id", "name", "username"} <= set(entry)
        profile = call(sandbox.base_url, "/api/personalities/username/" + quote(entry["username"], safe=""), sandbox.cookie)
        assert profile.status == 200
        body = profile.json()
        assert (body["id"], body["username"], body["user_id"]) == (entry["id"], entry["username"], owner)
        assert body["settings"]["behaviour"]["nested"]["deep"]["list"][2] == {"k": "ünïcödé"}
    recent = call(sandbox.base_url, "/api/personalities?category=recent", sandbox.cookie).json()
    # two of the owner's, then the others' (default 2): listed without the owner badge
    assert [p["username"] for p in recent[:2]] == [p["username"] for p in listing[:2]]
    others = recent[2:]
    assert len(others) == 2 and all(p["x_badges"] == [] for p in others)
    assert not {p["id"] for p in others} & {p["id"] for p in listing}
    foreign = call(sandbox.base_url, "/api/personalities/username/no-such-bot", sandbox.cookie)
    assert foreign.status == 404


@pytest.mark.sandbox_session("better-auth")
@pytest.mark.sandbox_records("2026")
def test_others_personalities_refuse_what_only_their_owner_may_read(sandbox_factory):
    """The recent list's other-owned personalities: profile (public part), chat history and the user's
    personalization answer; memories 404, knowledge and training 403 (JSON, the session still holds)."""
    sb = sandbox_factory(personalities=2, others=3)
    cookie = sb.cookie_header
    other = sb.others[0]
    assert len(sb.others) == 3 and other["id"] not in {p["id"] for p in sb.personalities}
    profile = call(sb.base_url, f"/api/personalities/username/{other['username']}", cookie).json()
    assert profile["id"] == other["id"] and profile["created_by"] != sb.app.world.owner_id
    assert "jailbreak" not in profile and "engine_model" not in profile  # the owner's settings stay private
    base = f"/api/personalities/{other['id']}"
    assert call(sb.base_url, f"/api/memory/{other['id']}?page=1", cookie).status == 404
    for path in (f"{base}/story", f"{base}/training"):
        refused = call(sb.base_url, path, cookie)
        assert refused.status == 403 and refused.json()["status"] == 403
    assert call(sb.base_url, f"{base}/user", cookie).json()
    history = call(sb.base_url, f"{base}/chat/history?limit=50&shape_id={other['id']}", cookie).json()
    assert len(history) == 50
    assert call(sb.base_url, "/api/users/info", cookie).status == 200  # refusals are not a lost session
    mine = sb.personalities[0]
    assert "jailbreak" in call(sb.base_url, f"/api/personalities/username/{mine['username']}", cookie).json()
    assert call(sb.base_url, f"/api/personalities/{mine['id']}/story", cookie).status == 200
    private = sandbox_factory(personalities=1, others=1, profile_path="personalities/private")
    theirs = private.others[0]["username"]
    assert call(private.base_url, f"/api/personalities/private/{theirs}", private.cookie_header).status == 403
    assert call(private.base_url, f"/api/personalities/username/{theirs}", private.cookie_header).status == 200


def _first(sb):
    return sb.personalities[0]


def test_memory_pages_newest_first_then_empty(sandbox_factory):
    sb = sandbox_factory(personalities=1, memories=45, memory_page_size=20)
    pid = _first(sb)["id"]
    pages = [call(sb.base_url, f"/api/memory/{pid}?page={n}", sb.cookie).json() for n in (1, 2, 3, 4)]
    assert [len(p["items"]) for p in pages] == [20, 20, 5, 0]
    assert pages[0]["pagination"] == {"page": 1, "total_pages": 3, "total": 45, "per_page": 20}
    items = [m for p in pages for m in p["items"]]
    stamps = [m["created_at"] for m in items]
    assert stamps == sorted(stamps, reverse=True) and all(isinstance(t, float) for t in stamps)
    assert items == sb.export(pid)["memories"]
    assert {"id", "created_at", "content", "x_embedding"} <= set(items[0])
    assert call(sb.base_url, f"/api/memory/{pid}", sb.cookie).json()["items"] == pages[0]["items"]
    for bad in ("page=0", "page=-1", "page=abc"):
        assert call(sb.base_url, f"/api/memory/{pid}?{bad}", sb.cookie).status == 400
    assert call(sb.base_url, "/api/memory/no-such-id?page=1", sb.cookie).status == 404


@pytest.mark.parametrize(
    ("style", "where"),
    [("pagination", ("pagination", "total_pages")), ("meta", ("meta", "pagination", "total_pages")),
     ("camel", ("pagination", "totalPages"))],
)
def test_pagination_spellings_global_and_per_personality(sandbox_factory, style, where):
    sb = sandbox_factory(personalities=2, memories=7, memory_page_size=3, empty_last=False, pagination_style=style,
                         overrides={1: {"pagination": "meta" if style != "meta" else "camel"}})
    pid0, pid1 = (p["id"] for p in sb.personalities)
    node = call(sb.base_url, f"/api/memory/{pid0}?page=1", sb.cookie).json()
    for key in where:
        node = node[key]
    assert node == 3
    other = call(sb.base_url, f"/api/memory/{pid1}?page=1", sb.cookie).json()
    assert ("meta" in other) is (style != "meta")


def test_mixed_pagination_style_cycles(sandbox_factory):
    sb = sandbox_factory(personalities=3, memories=4, empty_last=False, pagination_style="mixed")
    keys = [sorted(call(sb.base_url, f"/api/memory/{p['id']}?page=1", sb.cookie).json()) for p in sb.personalities]
    assert keys == [["items", "pagination"], ["items", "meta"], ["items", "pagination"]]
    camel = call(sb.base_url, f"/api/memory/{sb.personalities[2]['id']}?page=1", sb.cookie).json()
    assert "totalPages" in camel["pagination"]


def test_knowledge_training_user_shapes(sandbox_factory):
    sb = sandbox_factory(personalities=6, memories=1, messages=1)
    seen_knowledge, seen_training = set(), set()
    for p, row in zip(sb.personalities, sb.totals()["personalities"]):
        truth = sb.export(p["id"])
        for resource, seen in (("story", seen_knowledge), ("training", seen_training)):
            answer = call(sb.base_url, f"/api/personalities/{p['id']}/{resource}", sb.cookie).json()
            key = "knowledge" if resource == "story" else "training"
            assert answer == truth[key]
            entries = truth[f"{key}_entries"]
            if isinstance(answer, list):
                seen.add("array")
                assert answer == entries
            elif "id" in answer:
                seen.add("single")
                assert [answer] == entries
            else:
                (wrapper,) = [k for k in ("items", "story", "knowledge", "training") if k in answer]
                seen.add(wrapper)
                assert answer[wrapper] == entries
            assert len(entries) == row[key]
        user = call(sb.base_url, f"/api/personalities/{p['id']}/user", sb.cookie).json()
        assert isinstance(user, dict) and len(user) == row["user_keys"]
    assert seen_knowledge == {"array", "single", "items", "story", "knowledge"}
    assert seen_training == {"array", "single", "items", "training"}
    empty = sb.personalities[-1]["id"]
    assert call(sb.base_url, f"/api/personalities/{empty}/user", sb.cookie).json() == {}
    assert call(sb.base_url, f"/api/memory/{empty}?page=1", sb.cookie).json()["items"] == []
    history = f"/api/personalities/{empty}/chat/history?limit=50&shape_id={empty}"
    assert call(sb.base_url, history, sb.cookie).json() == []


def _history(sb, pid, before=None, limit=50):
    query = f"limit={limit}&shape_id={pid}" + ("" if before is None else f"&before_ts={before!r}")
    return call(sb.base_url, f"/api/personalities/{pid}/chat/history?{query}", sb.cookie)


def test_chat_history_pages_by_before_ts(sandbox_factory):
    sb = sandbox_factory(personalities=1, messages=120)
    pid = _first(sb)["id"]
    batches, before = [], None
    for _ in range(10):
        batch = _history(sb, pid, before).json()
        if not batch:
            break
        batches.append(batch)
        before = min(m["ts"] for m in batch)
    assert [len(b) for b in batches] == [50, 50, 20]
    messages = [m for b in batches for m in b]
    assert messages == sb.export(pid)["messages"]
    stamps = [m["ts"] for m in messages]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 120
    assert {"id", "message", "reply", "ts", "voice_reply_url", "attachment_url", "attachment_type",
            "regenerated_replies", "fallback_model_used", "x_meta"} <= set(messages[0])
    # strictly older than before_ts
    pivot = messages[10]["ts"]
    assert _history(sb, pid, pivot, limit=5).json() == messages[11:16]
    assert len(_history(sb, pid, limit=500).json()) == 50  # the server's maximum
    assert _history(sb, pid, messages[-1]["ts"]).json() == []


def test_chat_history_rejects_bad_queries(sandbox):
    pid = _first(sandbox)["id"]
    base = f"/api/personalities/{pid}/chat/history"
    for query in ("?limit=50", f"?limit=50&shape_id=other", f"?limit=0&shape_id={pid}", f"?limit=x&shape_id={pid}",
                  f"?limit=50&shape_id={pid}&before_ts=yesterday", f"?limit=50&shape_id={pid}&before_ts=nan",
                  f"?limit=50&shape_id={pid}&before_ts=inf"):
        answer = call(sandbox.base_url, base + query, sandbox.cookie)
        assert answer.status == 400 and "error" in answer.json()


def test_generated_text_is_unicode_and_sized(sandbox_factory):
    sb = sandbox_factory(personalities=1, messages=300, memories=10)
    messages = sb.export(_first(sb)["id"])["messages"]
    sizes = [len(json.dumps(m, ensure_ascii=False).encode()) for m in messages]
    assert min(sizes) >= 200 and max(sizes) > 1500
    text = "".join(m["reply"] for m in messages)
    for sample in ("é", "日", "🚀"):
        assert sample in text
    assert any(m["voice_reply_url"] for m in messages) and any(m["attachment_url"] for m in messages)
    assert any(m["regenerated_replies"] for m in messages)


def test_data_is_deterministic_per_seed(sandbox_factory):
    a, b, c = (sandbox_factory(seed=s, personalities=2, messages=30, memories=5) for s in (11, 11, 12))

    def export(sb):  # media URLs name the file host's port, which differs per sandbox
        return json.loads(json.dumps(sb.export(0)).replace(sb.files_url, "FILES"))

    assert export(a) == export(b)
    assert a.export(0)["messages"] != c.export(0)["messages"]
    assert a.totals() == b.totals()


def test_jargon_and_profile_path_are_configurable(sandbox_factory):
    sb = sandbox_factory(jargon="shapes", profile_path="shapes/private/by-name", personalities=2)
    p = _first(sb)
    assert call(sb.base_url, "/api/shapes?category=self", sb.cookie).json()[0]["id"] == p["id"]
    assert call(sb.base_url, "/api/personalities?category=self", sb.cookie).status == 404
    assert call(sb.base_url, f"/api/shapes/private/by-name/{p['username']}", sb.cookie).json()["id"] == p["id"]
    public = call(sb.base_url, f"/api/shapes/username/{p['username']}", sb.cookie)  # anyone's profile, public path
    assert public.json()["id"] == p["id"]
    assert call(sb.base_url, f"/api/shapes/{p['id']}/chat/history?limit=50&shape_id={p['id']}", sb.cookie).status == 200
    agents = sandbox_factory(jargon="agents")
    assert call(agents.base_url, f"/api/agents/username/{_first(agents)['username']}", agents.cookie).status == 200


def test_unknown_routes_and_methods(sandbox):
    for path in ("/api/nothing", "/api/personalities/x/y/z", "/favicon.ico", "/api/", "/api/personalities/username/"):
        answer = call(sandbox.base_url, path, sandbox.cookie)
        assert answer.status == 404 and answer.json()["status"] == 404
    assert call(sandbox.base_url, "/api/users/me", sandbox.cookie, method="POST", data=b"").status == 405
    assert sandbox.stats()["routes"]["not_found"] == 5


@pytest.mark.parametrize("cookie", [None, "", "wrong-value"])
def test_missing_or_wrong_cookie_is_401_json(sandbox, cookie):
    answer = call(sandbox.base_url, "/api/users/me", cookie)
    assert answer.status == 401 and answer.json()["error"]
    assert call(sandbox.base_url, "/api/users/me", headers={"Authorization": f"Bearer {sandbox.cookie}"}).status == 401


def test_auth_failure_modes(sandbox):
    sandbox.set_knobs(auth_failure="html")
    page = call(sandbox.base_url, "/api/users/me", "bad")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html") and "password" in page.text
    sandbox.set_knobs(auth_failure="redirect")
    moved = call(sandbox.base_url, "/api/users/me", "bad")
    assert moved.status == 302 and moved.headers["Location"] == "/login"
    assert call(sandbox.base_url, "/api/users/me", sandbox.cookie).status == 200


def test_login_flow(sandbox_factory):
    sb = sandbox_factory(email="me@example.org", password="s3cret ü")
    form = call(sb.base_url, "/login")
    assert form.status == 200
    for needle in ("name='email'", "name='password'", "type='submit'", "action='/login'", "method='post'"):
        assert needle in form.text
    from urllib.parse import urlencode
    wrong = call(sb.base_url, "/login", method="POST", data=urlencode({"email": "me@example.org", "password": "no"}).encode())
    assert wrong.status == 200 and "Set-Cookie" not in wrong.headers and "Wrong" in wrong.text
    right = call(sb.base_url, "/login", method="POST", data=urlencode({"email": "me@example.org", "password": "s3cret ü"}).encode(),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert right.status in (302, 303) and right.headers["Location"] == "/"
    set_cookie = right.headers["Set-Cookie"]
    assert set_cookie.startswith("appSession=") and "Path=/" in set_cookie and "HttpOnly" in set_cookie and "Expires=" in set_cookie
    value = set_cookie.split(";")[0].split("=", 1)[1]
    assert value != sb.cookie
    assert call(sb.base_url, "/api/users/me", value).status == 200
    assert call(sb.base_url, "/", value).status == 200
    assert call(sb.base_url, "/").headers["Location"] == "/login"
    assert sb.stats()["routes"]["login"] == 2
