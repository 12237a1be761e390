"""Records as today's service sends them (the sandbox's default): 2026 memories and profiles, 20-per-page
paging with has_next, drift noticed, deleted memories kept, and exports and a real consumer that read them."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
import re
import subprocess
import sys

import pytest

from crawlhelp import MEMORY_TIME, REPO, assert_matches_sandbox, crawl, crawl_env, metadata, oldest_first, saved
from tzcrawl import registry
from tzcrawl.sandbox.client import call
from tzcrawl.store.timestamps import to_epoch

MEMORIES = registry.get("memories")
MEMORY_KEYS = {"id", "shape_id", "senders", "result", "summary_type", "deleted", "metadata"}
META_KEYS = {"start_ts", "end_ts", "created_at", "senders", "discord_channel_id", "discord_guild_id", "msg_ids"}
PROFILE_FIELDS = ("jailbreak", "user_prompt", "personality_traits", "personality_tone", "personality_age",
                  "personality_appearance", "personality_likes", "personality_dislikes",
                  "personality_conversational_goals", "personality_conversational_examples", "personality_history",
                  "engine_model", "fallback_engine_model", "engine_temperature", "engine_top_p", "engine_top_k",
                  "engine_frequency_penalty", "engine_presence_penalty", "engine_repetition_penalty", "engine_min_p",
                  "engine_top_a", "stm_window", "ltm_enabled", "ltm_threshold", "ltm_max_retrieved_summaries",
                  "voice_model", "voice_id", "voice_file", "voice_frequency", "voice_stability", "voice_similarity",
                  "voice_style", "image_model", "image_size", "error_message", "birthday", "favorite_reacts",
                  "keywords", "search_description", "wack_message", "sleep_message", "created_by")


def api(sb, path: str):
    return call(sb.base_url, path, sb.cookie_header).json()


# -- the sandbox's records --------------------------------------------------------------------------

def test_memories_as_the_service_sends_them_now(sandbox_factory):
    sb = sandbox_factory(personalities=3, memories=45, empty_last=False)
    for p in sb.personalities:
        answer = api(sb, f"/api/memory/{p['id']}?page=1&limit=100")  # a larger limit is capped at 20
        key = "memories" if "memories" in answer else "items"
        items = answer[key]
        assert len(items) == 20 and answer["pagination"]["has_next"] is True
        for m in items:
            assert set(m) == MEMORY_KEYS and set(m["metadata"]) == META_KEYS and "created_at" not in m
            assert re.fullmatch(r"[0-9a-f-]{36}/[0-9a-f-]{36}", m["id"]) and m["result"] and m["senders"]
            assert m["metadata"]["discord_guild_id"] == "" and m["metadata"]["created_at"] > 0
    keys = {("memories" in api(sb, f"/api/memory/{p['id']}?page=1")) for p in sb.personalities}
    assert keys == {True, False}, "some answers name the list memories, some items"
    counts = [("total_pages" in api(sb, f"/api/memory/{p['id']}?page=1")["pagination"]) for p in sb.personalities]
    assert counts == [True, True, False], "some answers give no total_pages"
    last = api(sb, f"/api/memory/{sb.personalities[0]['id']}?page=3")
    assert len(last["items"]) == 5 and last["pagination"]["has_next"] is False
    flagged = [m for m in sb.export(sb.personalities[0]["username"])["memories"] if m["deleted"]]
    assert len(flagged) == 3, "a few memories are deleted: true"


def test_profiles_knowledge_and_personalization_as_today(sandbox_factory):
    sb = sandbox_factory(personalities=2, jargon="shapes")
    p = sb.personalities[0]
    profile = api(sb, f"/api/shapes/username/{p['username']}")
    assert api(sb, f"/api/shapes/{p['id']}") == profile
    assert 165 <= len(profile) <= 180 and all(field in profile for field in PROFILE_FIELDS)
    assert profile["shape_settings"]["shape_initial_message"] and re.fullmatch(r"\d\d-\d\d", profile["birthday"])
    knowledge = sb.export(p["username"])["knowledge_entries"]
    assert knowledge and all({"id", "shape_id", "story_type", "title", "content", "metadata"} <= set(e)
                             for e in knowledge)
    assert {"backstory", "preferred_name", "pronouns"} <= set(api(sb, f"/api/shapes/{p['id']}/user"))


def test_the_2025_shapes_stay_behind_a_knob(sandbox_factory):
    sb = sandbox_factory(personalities=1, records="2025", memories=5)
    memory = sb.export(sb.personalities[0]["username"])["memories"][0]
    assert {"id", "created_at", "content"} <= set(memory) and "metadata" not in memory
    assert "jailbreak" not in sb.export(sb.personalities[0]["username"])["profile"]


# -- a backup of today's records --------------------------------------------------------------------

@pytest.fixture(scope="module")
def today(tmp_path_factory):
    """A backup of the default sandbox, then 3 new memories and 3 new messages and an incremental run."""
    from tzcrawl.sandbox import Sandbox, SandboxConfig

    sb = Sandbox(SandboxConfig(personalities=3, memories=45, messages=120), max_lifetime=900).start()
    out = tmp_path_factory.mktemp("today") / "b"
    first = crawl(sb, "all_personalities", out)
    assert first.returncode == 0, first.stderr[-3000:]
    target = sb.personalities[0]["username"]
    before = saved(out, target, "memories")
    sb.add(target, memories=3, messages=3)
    sb.reset_stats()
    second = crawl(sb, "all_personalities", out)
    assert second.returncode == 0, second.stderr[-3000:]
    yield sb, out, target, before, second
    sb.stop()


def test_memories_are_oldest_first_by_their_time_and_the_metadata_names_the_newest(today):
    sb, out, target, _, _ = today
    for p in sb.personalities:
        assert_matches_sandbox(sb, out, p["username"])
    memories = saved(out, target, "memories")
    times = [to_epoch(m["metadata"]["created_at"]) for m in memories]
    assert times == sorted(times) and len(memories) == 48
    entry = metadata(out, target)["resources"]["memories"]
    assert entry["newest_created_at"] == memories[-1]["metadata"]["created_at"]
    assert entry["deleted"] == sum(m["deleted"] for m in memories) > 0


def test_an_incremental_run_costs_few_requests_and_appends_exactly_the_new(today):
    sb, out, target, before, second = today
    routes = sb.stats()["routes"]
    assert routes.pop("users_info") == routes.pop("list") == 1
    # every resource of every personality: one request each (the target's 3 new memories are on page 1)
    assert routes == {"profile": 3, "memory": 3, "chat_history": 3, "story": 3, "training": 3, "user": 3}, routes
    memories = saved(out, target, "memories")
    assert memories[:45] == before and len(memories) == 48
    newest = sorted(sb.export(target)["memories"], key=lambda m: m["metadata"]["created_at"])[-3:]
    assert memories[-3:] == newest
    assert metadata(out, target)["resources"]["memories"]["new"] == 3
    assert metadata(out, target)["resources"]["messages"]["new"] == 3


def test_exports_show_every_memory_with_its_text_and_date(today, tmp_path):
    sb, out, target, _, _ = today
    export = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "scrapy", "export", "-a", f"out={export}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env=crawl_env(sb, out))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = export / target  # a plain username is its own folder name
    memories = saved(out, target, "memories")
    pages = "".join(p.read_text() for p in sorted(folder.glob("memories-*.html")))
    shards = "".join(p.read_text() for p in sorted((folder / "search").glob("memories-*.js")))
    markdown = (folder / "memories.md").read_text()
    card = json.loads(next(folder.glob("*.card.json")).read_text())
    book = {e["extensions"]["tzcrawl"]["id"]: e for e in card["data"]["character_book"]["entries"]
            if e["extensions"]["tzcrawl"]["kind"] == "memory"}
    assert "unknown date" not in markdown and "unknown time" not in pages
    assert pages.count('<div class="text"></div>') == 0
    for m in memories:
        first_words = m["result"].split("\n")[0][:30]
        day = datetime.fromtimestamp(to_epoch(m["metadata"]["created_at"]), timezone.utc)
        assert f'id="mem-{m["id"]}"' in pages and day.strftime("%Y-%m-%dT%H:%M") in pages
        assert html.escape(first_words, quote=False) in pages or first_words in html.unescape(pages)
        assert json.dumps(m["id"]) in shards and json.dumps(first_words, ensure_ascii=False)[1:-1] in shards
        assert f"**{day:%Y-%m-%d %H:%M}**" in markdown and first_words in markdown
        entry = book[m["id"]]
        assert entry["content"].startswith(first_words.strip()[:10]) and entry["name"] == f"memory {day:%Y-%m-%d}"
        assert entry["enabled"] is not m["deleted"]
    assert pages.count('class="memory deleted"') == sum(m["deleted"] for m in memories)
    assert markdown.count("[deleted on the service]") == sum(m["deleted"] for m in memories)
    assert '<h2 id="profile-prompting">Prompting</h2>' in (folder / "index.html").read_text()


def test_a_real_consumer_can_import_the_backup(today):
    """What the successor bot's importer requires of this layout (shared/service-api.md)."""
    sb, out, _, _, _ = today
    for p in sb.personalities:
        name = p["username"]
        profile = saved(out, name, "profile")
        assert profile["id"] and profile["name"] and re.fullmatch(r"[a-z0-9-]+", profile["username"])
        assert profile["jailbreak"] and profile["engine_model"]
        assert 0 <= profile["engine_temperature"] <= 2 and 1 <= profile["stm_window"] <= 100
        memories = saved(out, name, "memories")
        assert len({m["id"] for m in memories}) == len(memories)
        for m in memories:
            assert m["result"].strip() and m["senders"] and m["metadata"]["created_at"] > 0


def test_drift_is_one_warning_and_a_complete_backup(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=3, drift=True)
    result = crawl(sb, "all_personalities", tmp_path / "b")
    assert result.returncode == 0, result.stderr[-3000:]
    drift = [line for line in result.stderr.splitlines() if "Drift:" in line]
    assert len(drift) == 1 and "profile answers lack user_prompt, ltm_enabled (3 of 3 personalities)" in drift[0]
    for p in sb.personalities:
        assert metadata(tmp_path / "b", p["username"])["resources"]["profile"]["drift"] == ["user_prompt",
                                                                                          "ltm_enabled"]
        assert_matches_sandbox(sb, tmp_path / "b", p["username"])  # saved as received
    verify = subprocess.run([sys.executable, "-m", "scrapy", "verify"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=crawl_env(sb, tmp_path / "b"))
    assert verify.returncode == 0 and verify.stdout.count("lacked user_prompt, ltm_enabled (drift") == 3
    again = crawl(sb, "all_personalities", tmp_path / "c")
    sb.set_knobs(drift=False)
    clean = crawl(sb, "all_personalities", tmp_path / "c")
    assert "Drift:" not in clean.stderr and again.returncode == clean.returncode == 0
    assert "drift" not in metadata(tmp_path / "c", sb.personalities[0]["username"])["resources"]["profile"]


@pytest.mark.parametrize("index", [0, 2])  # with a page count, and without one
def test_memories_deleted_mid_walk_on_todays_pages_are_not_missed(sandbox_factory, tmp_path, index):
    # 200 memories, 20 a page; after the profile and four pages the 7 newest go: the page count stays 10,
    # so only the second look at page 1 can tell that the later memories moved up into pages read.
    sb = sandbox_factory(personalities=3, memories=200, messages=10, empty_last=False)
    name = sb.personalities[index]["username"]
    sb.set_knobs(delete_memories_after=5, delete_memories_count=7)
    result = crawl(sb, "personality", tmp_path / "b", "-a", f"personality={name}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "memories moved up while the walk read (deleted on the service): walking again from page 1" in result.stderr
    held = {m["id"] for m in saved(tmp_path / "b", name, "memories")}
    assert {m["id"] for m in sb.export(name)["memories"]} <= held and len(held) == 200
    assert oldest_first(saved(tmp_path / "b", name, "memories"), MEMORY_TIME) == saved(tmp_path / "b", name, "memories")
