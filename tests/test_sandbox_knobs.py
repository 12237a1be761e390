"""Fault knobs and the control surface of the sandbox, over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import math
import socket
from datetime import datetime

import pytest

from tzcrawl.sandbox import UNSAFE_USERNAMES
from tzcrawl.sandbox.app import App
from tzcrawl.sandbox.client import call, post_json
from tzcrawl.sandbox.config import SandboxConfig

# The 2025 service these tests were written for (appSession over plain http, 2025 record shapes); today's
# default has tests of its own (test_sandbox_sessions.py, test_sandbox_records.py).
pytestmark = [pytest.mark.sandbox_session("appsession"), pytest.mark.sandbox_records("2025")]


def _history(sb, pid, before=None):
    query = f"limit=50&shape_id={pid}" + ("" if before is None else f"&before_ts={before!r}")
    return call(sb.base_url, f"/api/personalities/{pid}/chat/history?{query}", sb.cookie)


def test_rate_limit_answers_429_with_retry_after(sandbox_factory):
    sb = sandbox_factory(rate_limit=0.2, rate_burst=3)
    statuses = [call(sb.base_url, "/api/users/me", sb.cookie) for _ in range(5)]
    assert [a.status for a in statuses] == [200, 200, 200, 429, 429]
    retry_after = int(statuses[3].headers["Retry-After"])
    assert 1 <= retry_after <= 5
    assert sb.stats()["status"] == {"200": 3, "429": 2}
    sb.set_knobs(rate_limit=None)
    assert call(sb.base_url, "/api/users/me", sb.cookie).status == 200


def test_error_rate_gives_5xx(sandbox_factory):
    sb = sandbox_factory(error_rate=0.5, seed=3)
    statuses = [call(sb.base_url, "/api/users/me", sb.cookie).status for _ in range(40)]
    assert set(statuses) - {200} <= {500, 502, 503} and 5 < statuses.count(200) < 35
    sb.set_knobs(error_rate=1.0)
    failed = call(sb.base_url, "/api/users/me", sb.cookie)
    assert failed.status in (500, 502, 503) and failed.json()["status"] == failed.status


def test_drop_rate_closes_connection_without_answer(sandbox_factory):
    sb = sandbox_factory(drop_rate=1.0)
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=5)
    conn.request("GET", "/api/users/me", headers={"Cookie": f"appSession={sb.cookie}"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()
    assert sb.stats()["dropped"] == 1 and sb.stats()["status"] == {}
    sb.set_knobs(drop_rate=0.0)
    assert call(sb.base_url, "/api/users/me", sb.cookie).status == 200


def test_latency_knob_still_answers(sandbox_factory):
    sb = sandbox_factory(latency=0.05)
    assert call(sb.base_url, "/api/users/me", sb.cookie).status == 200
    assert sb.knobs()["latency"] == 0.05


def test_iso_created_at_on_some_memories(sandbox_factory):
    sb = sandbox_factory(personalities=1, memories=60, iso_dates=0.3, memory_page_size=60)
    items = call(sb.base_url, f"/api/memory/{sb.personalities[0]['id']}?page=1", sb.cookie).json()["items"]
    strings = [m["created_at"] for m in items if isinstance(m["created_at"], str)]
    assert 5 < len(strings) < 40
    assert any(s.endswith("Z") for s in strings) and any(s.endswith("+00:00") for s in strings)
    parsed = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if isinstance(s, str) else s
              for s in (m["created_at"] for m in items)]
    assert parsed == sorted(parsed, reverse=True)


def test_ts_ties_straddle_batch_edges_and_naive_client_loses_messages(sandbox_factory):
    sb = sandbox_factory(personalities=1, messages=230, ts_ties=True)
    pid = sb.personalities[0]["id"]
    truth = sb.export(pid)["messages"]
    assert len({m["id"] for m in truth}) == 230
    naive, before, calls = [], None, 0
    while calls < 20:
        calls += 1
        batch = _history(sb, pid, before).json()
        if not batch:
            break
        if calls == 1:  # the first batch edge sits inside a group of equal ts
            assert batch[-1]["ts"] == truth[50]["ts"] and batch[-1]["id"] != truth[50]["id"]
        naive += batch
        before = min(m["ts"] for m in batch)
    assert len(naive) < 230  # strict before_ts drops the rest of each tie group
    # a careful client (before_ts just above the smallest ts, dedupe by id) gets everything
    careful, before = {}, None
    for _ in range(40):
        batch = _history(sb, pid, before).json()
        new = [m for m in batch if m["id"] not in careful]
        if not new:
            break
        careful.update((m["id"], m) for m in new)
        before = math.nextafter(min(m["ts"] for m in batch), math.inf)
    assert len(careful) == 230
    sb.set_knobs(ts_ties=False)
    assert len({m["ts"] for m in sb.export(pid)["messages"]}) == 230


def test_unsafe_usernames_are_served_percent_decoded(sandbox_factory):
    from urllib.parse import quote
    sb = sandbox_factory(personalities=9, unsafe_usernames=True, memories=1, messages=1)
    names = [p["username"] for p in sb.personalities]
    assert names[:8] == list(UNSAFE_USERNAMES) and len(names[3]) == 300
    assert {"Sam", "sam"} <= set(names) and "CON" in names and ".hidden" in names
    for p in sb.personalities:
        profile = call(sb.base_url, "/api/personalities/username/" + quote(p["username"], safe=""), sb.cookie)
        assert profile.status == 200 and profile.json()["id"] == p["id"], p["username"]
    # a raw (unencoded) UTF-8 username in the request line works too
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as sock:
        sock.sendall(f"GET /api/personalities/username/名前 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     f"Cookie: appSession={sb.cookie}\r\n\r\n".encode())
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    assert raw.startswith(b"HTTP/1.1 200") and json.loads(raw.split(b"\r\n\r\n", 1)[1])["username"] == "名前"
    sb.set_knobs(unsafe_usernames=False)
    assert "../x" not in [p["username"] for p in sb.personalities]


def test_cookie_expires_after_n_requests_and_login_gives_a_new_one(sandbox_factory):
    sb = sandbox_factory(cookie_max_requests=3)
    assert [call(sb.base_url, "/api/users/me", sb.cookie).status for _ in range(5)] == [200, 200, 200, 401, 401]
    fresh = sb.new_cookie()
    assert call(sb.base_url, "/api/users/me", fresh).status == 200
    sb.expire_cookie()
    assert call(sb.base_url, "/api/users/me", fresh).status == 401


def test_grow_every_adds_newest_items_during_a_crawl(sandbox_factory):
    sb = sandbox_factory(personalities=1, memories=10, messages=10, memory_page_size=5, grow_every=2)
    pid = sb.personalities[0]["id"]
    first = call(sb.base_url, f"/api/memory/{pid}?page=1", sb.cookie).json()["items"]
    second = call(sb.base_url, f"/api/memory/{pid}?page=2", sb.cookie).json()["items"]  # growth after this one
    assert sb.totals()["sum"]["memories"] == 11 and sb.totals()["sum"]["messages"] == 11
    again = call(sb.base_url, f"/api/memory/{pid}?page=1", sb.cookie).json()["items"]
    assert again[1:] == first[:4] and again[0]["created_at"] > first[0]["created_at"]
    assert [m["id"] for m in second] == [m["id"] for m in sb.export(pid)["memories"][6:11]]
    newest = _history(sb, pid).json()[0]  # the 4th API request: growth comes after its answer
    truth = sb.export(pid)["messages"]
    assert len(truth) == 12 and newest == truth[1]


def test_ignore_before_ts_repeats_the_newest_batch(sandbox_factory):
    sb = sandbox_factory(personalities=1, messages=120, ignore_before_ts=True)
    pid = sb.personalities[0]["id"]
    first = _history(sb, pid).json()
    assert _history(sb, pid, min(m["ts"] for m in first)).json() == first


def test_control_surface_over_http(sandbox):
    base = sandbox.base_url
    call(base, "/api/users/me", sandbox.cookie)
    stats = call(base, "/_sandbox/stats").json()
    assert stats["routes"] == {"users_me": 1} and stats["status"] == {"200": 1}
    assert post_json(base, "/_sandbox/stats/reset", {}).status == 200
    assert call(base, "/_sandbox/stats").json()["requests"] == 0
    first = sandbox.personalities[0]
    added = post_json(base, "/_sandbox/add", {"personality": first["username"], "memories": 3, "messages": 4}).json()
    assert (added["memories"], added["messages"]) == (48, 124)
    post_json(base, "/_sandbox/add", {"personality": first["id"], "memories": 1})
    totals = call(base, "/_sandbox/totals").json()
    assert totals["personalities"][0]["memories"] == 49 and totals["sum"]["messages"] == 244
    assert post_json(base, "/_sandbox/add", {"personality": "nobody"}).status == 404
    assert post_json(base, "/_sandbox/add", {"personality": first["id"], "memories": -1}).status == 400
    knobs = post_json(base, "/_sandbox/knobs", {"rate_limit": 100, "auth_failure": "redirect"}).json()
    assert knobs["rate_limit"] == 100.0 and call(base, "/_sandbox/knobs").json()["auth_failure"] == "redirect"
    assert post_json(base, "/_sandbox/knobs", {"bogus": 1}).status == 400
    assert call(base, "/_sandbox/knobs", method="POST", data=b"not json").status == 400
    export = call(base, f"/_sandbox/export/{first['id']}").json()
    assert len(export["messages"]) == 124 and export == sandbox.export(first["id"])
    assert call(base, "/_sandbox/export/nobody").status == 404
    fresh = post_json(base, "/_sandbox/cookie", {}).json()["cookie"]
    assert post_json(base, "/_sandbox/expire-cookie", {}).json()["expired"] == 2
    assert call(base, "/api/users/me", fresh).status == 302  # the redirect knob set above
    assert call(base, "/_sandbox/nothing").status == 404
    final = call(base, "/_sandbox/stats").json()  # control calls are not counted
    assert final["routes"] == {"users_me": 1} and final["requests"] == 1


def test_control_surface_refuses_non_loopback_peers():
    app = App(SandboxConfig(personalities=1))
    refused = app.handle("GET", "/_sandbox/totals", {}, b"", "192.0.2.7")
    assert refused.status == 403
    assert app.handle("GET", "/_sandbox/totals", {}, b"", "127.0.0.1").status == 200


def test_per_personality_override_for_big_histories(sandbox_factory):
    sb = sandbox_factory(personalities=2, memories=3, messages=5, overrides={0: {"messages": 5000, "memories": 1000}})
    rows = sb.totals()["personalities"]
    assert (rows[0]["messages"], rows[0]["memories"], rows[1]["messages"]) == (5000, 1000, 0)
    pid = rows[0]["id"]
    last_page = call(sb.base_url, f"/api/memory/{pid}?page=50", sb.cookie).json()
    assert len(last_page["items"]) == 20 and last_page["pagination"]["total_pages"] == 50
    oldest = sb.export(pid)["messages"][-1]
    assert _history(sb, pid, oldest["ts"]).json() == []
    assert _history(sb, pid, oldest["ts"] + 1e-3).json() == [oldest]


def test_knobs_at_construction_match_runtime_defaults(sandbox):
    knobs = sandbox.knobs()
    assert knobs["rate_limit"] is None and knobs["error_rate"] == 0 and knobs["auth_failure"] == "401"
    with pytest.raises(ValueError):
        sandbox.set_knobs(error_rate=2)
    assert json.dumps(knobs)
