"""The sandbox's service endpoints over real HTTP on loopback."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tzcrawl.sandbox.client import call


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
    assert recent and any(p["username"] == "public-bot" for p in recent)
    foreign = call(sandbox.base_url, "/api/personalities/username/public-bot", sandbox.cookie)
    assert foreign.status == 404
