"""Acceptance: a plain urllib client written only from /work/shared/service-api.md backs up everything
the sandbox generated. If the sandbox drifts from the documented API, this client breaks."""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import quote

import pytest

# The 2025 service these tests were written for (appSession over plain http, 2025 record shapes); today's
# default has tests of its own (test_sandbox_sessions.py, test_sandbox_records.py).
pytestmark = [pytest.mark.sandbox_session("appsession"), pytest.mark.sandbox_records("2025")]


class DocClient:
    """Knows only SERVICE_WEBSITE, SERVICE_COOKIE, PERSONALITY_JARGON_TERM and PROFILE_INFO_PRIVATE_PATH."""

    def __init__(self, website: str, cookie: str, jargon: str = "personalities", profile_path: str | None = None):
        self.website, self.cookie, self.jargon = website.rstrip("/"), cookie, jargon
        self.profile_path = profile_path or f"{jargon}/username"
        self.requests = 0

    def get(self, path: str):
        self.requests += 1
        assert self.requests < 10_000, "client looped"
        request = urllib.request.Request(f"{self.website}/api/{path}", headers={"Cookie": f"appSession={self.cookie}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers.get_content_type() == "application/json"
            return json.loads(response.read())

    def memories(self, pid: str) -> list:
        items, page = [], 1
        while True:
            answer = self.get(f"memory/{pid}?page={page}")
            pagination = answer.get("pagination") or answer.get("meta", {}).get("pagination") or {}
            total_pages = pagination.get("total_pages", pagination.get("totalPages"))
            items += answer["items"]
            if not answer["items"] or page >= total_pages:
                return items
            page += 1

    def history(self, pid: str) -> list:
        messages, before = [], ""
        while True:
            batch = self.get(f"{self.jargon}/{pid}/chat/history?limit=50&shape_id={pid}{before}")
            if not batch:
                return messages
            messages += batch
            before = f"&before_ts={min(m['ts'] for m in batch)!r}"

    @staticmethod
    def entries(answer, keys) -> list:
        if isinstance(answer, list):
            return answer
        for key in keys:
            if key in answer:
                return answer[key]
        return [answer] if answer else []

    def backup(self) -> dict:
        me = self.get("users/me")
        result = {}
        for entry in self.get(f"{self.jargon}?category=self"):
            profile = self.get(f"{self.profile_path}/{quote(entry['username'], safe='')}")
            assert profile["user_id"] == me["id"] and profile["id"] == entry["id"]
            pid = entry["id"]
            result[pid] = {
                "profile": profile,
                "memories": self.memories(pid),
                "messages": self.history(pid),
                "knowledge": self.entries(self.get(f"{self.jargon}/{pid}/story"), ("items", "story", "knowledge")),
                "training": self.entries(self.get(f"{self.jargon}/{pid}/training"), ("items", "training")),
                "user": self.get(f"{self.jargon}/{pid}/user"),
            }
        return result


def _check(sb, client: DocClient):
    backup = client.backup()
    totals = sb.totals()
    assert list(backup) == [row["id"] for row in totals["personalities"]]
    for row in totals["personalities"]:
        got, truth = backup[row["id"]], sb.export(row["id"])
        assert (len(got["memories"]), len(got["messages"]), len(got["knowledge"]), len(got["training"]), len(got["user"])) == (
            row["memories"], row["messages"], row["knowledge"], row["training"], row["user_keys"])
        assert got["profile"] == truth["profile"]
        assert got["memories"] == truth["memories"] and got["messages"] == truth["messages"]
        assert got["knowledge"] == truth["knowledge_entries"] and got["training"] == truth["training_entries"]
        assert got["user"] == truth["user"]
    assert sum(len(b["messages"]) for b in backup.values()) == totals["sum"]["messages"]
    assert sum(len(b["memories"]) for b in backup.values()) == totals["sum"]["memories"]


def test_doc_client_backs_up_the_default_sandbox(sandbox):
    _check(sandbox, DocClient(sandbox.base_url, sandbox.cookie))


@pytest.mark.parametrize("jargon", ["shapes", "agents"])
def test_doc_client_backs_up_a_varied_deployment(sandbox_factory, jargon):
    sb = sandbox_factory(seed=99, personalities=6, memories=33, messages=151, memory_page_size=7, jargon=jargon,
                         profile_path=f"{jargon}/private", pagination_style="mixed", unsafe_usernames=True)
    _check(sb, DocClient(sb.base_url, sb.cookie, jargon=jargon, profile_path=f"{jargon}/private"))
