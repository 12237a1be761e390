"""Whole backups against the sandbox service: real `scrapy crawl` processes over loopback."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tzcrawl.store.timestamps import to_epoch

from crawlhelp import MEMORY_TIME, RESOURCES, assert_matches_sandbox, crawl, data_files, metadata, oldest_first, saved

def test_all_personalities_backs_up_everything_exactly(sandbox_factory, tmp_path):
    sb = sandbox_factory(iso_dates=0.3, pagination_style="mixed")
    out = tmp_path / "backup"
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Backup complete: 3 of 3 personalities" in result.stderr
    for p in sb.personalities:
        assert_matches_sandbox(sb, out, p["username"])
        meta = metadata(out, p["username"])
        truth = sb.export(p["username"])
        assert meta["personality"]["username"] == p["username"]
        assert meta["personality"]["id"] == p["id"]
        assert meta["last_backup"]
        for resource in RESOURCES:
            assert meta["resources"][resource]["outcome"] == "complete", resource
        assert meta["resources"]["memories"]["total"] == len(truth["memories"])
        assert meta["resources"]["messages"]["total"] == len(truth["messages"])
        if truth["messages"]:
            assert meta["resources"]["messages"]["newest_ts"] == truth["messages"][0]["ts"]
            assert meta["resources"]["messages"]["oldest_ts"] == truth["messages"][-1]["ts"]
            chars = sum(len(m.get("message") or "") + len(m.get("reply") or "") for m in truth["messages"])
            assert meta["resources"]["messages"]["characters"] == chars
    # Private: directories 0700, files 0600.
    for path in out.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_iso_and_float_created_at_sort_on_one_timeline(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=60, iso_dates=0.5)
    out = tmp_path / "b"
    assert crawl(sb, "memories", out, "-a", f"personality={sb.personalities[0]['username']}").returncode == 0
    memories = saved(out, sb.personalities[0]["username"], "memories")
    kinds = {type(m["metadata"]["created_at"]) for m in memories}  # today's memories: the time is in metadata
    assert kinds == {float, str}, "the sandbox should have served both spellings"
    times = [to_epoch(m["metadata"]["created_at"]) for m in memories]
    assert times == sorted(times) and len(memories) == 60


@pytest.mark.parametrize("spider", RESOURCES)
def test_single_resource_spider_saves_only_its_resource(sandbox, tmp_path, spider):
    names = [p["username"] for p in sandbox.personalities[:2]]
    out = tmp_path / "b"
    result = crawl(sandbox, spider, out, "-a", f"personality={names[0]},{names[1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in names:
        assert_matches_sandbox(sandbox, out, name, resources=(spider,))
        present = {r for r in RESOURCES if saved(out, name, r) is not None}
        assert present == {spider}
        assert set(metadata(out, name)["resources"]) == {spider}


def test_incremental_run_costs_about_one_request_per_page_of_new_items(sandbox, tmp_path):
    out = tmp_path / "b"
    assert crawl(sandbox, "all_personalities", out).returncode == 0
    first = sandbox.stats()["routes"]
    target = sandbox.personalities[0]["username"]
    sandbox.add(target, memories=10, messages=10)
    sandbox.reset_stats()
    result = crawl(sandbox, "all_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    routes = sandbox.stats()["routes"]
    people = len(sandbox.personalities)
    assert routes["memory"] <= 2 * people and routes["chat_history"] <= 2 * people
    assert routes["memory"] < first["memory"] and routes["chat_history"] < first["chat_history"]
    assert routes["list"] == 1 and routes["profile"] == routes["story"] == routes["training"] == people
    for p in sandbox.personalities:
        assert_matches_sandbox(sandbox, out, p["username"])
    meta = metadata(out, target)["resources"]
    assert meta["memories"]["new"] == 10 and meta["messages"]["new"] == 10
    assert "memories: 10 new, 55 total" in result.stderr


def test_full_rereads_everything_and_never_drops_what_was_saved(sandbox, tmp_path):
    out = tmp_path / "b"
    name = sandbox.personalities[0]["username"]
    assert crawl(sandbox, "personality", out, "-a", f"personality={name}").returncode == 0
    # A memory the service has since deleted: it is in the backup, not on the service.
    path = next((out).rglob("*_memories.json"))
    records = json.loads(path.read_text())
    gone = {"id": "deleted-by-the-service", "created_at": 1000000000.5, "content": "still mine"}
    path.write_text(json.dumps([gone] + records))
    sandbox.reset_stats()
    result = crawl(sandbox, "memories", out, "-a", f"personality={name}", "-a", "full=1")
    assert result.returncode == 0, result.stderr[-3000:]
    pages = -(-len(sandbox.export(name)["memories"]) // 20)
    assert sandbox.stats()["routes"]["memory"] >= pages
    again = saved(out, name, "memories")
    assert again[0] == gone and again[1:] == oldest_first(sandbox.export(name)["memories"], MEMORY_TIME)


def test_ties_straddling_batch_edges_are_never_lost(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, messages=400, ts_ties=True)
    out = tmp_path / "b"
    name = sb.personalities[0]["username"]
    result = crawl(sb, "messages", out, "-a", f"personality={name}")
    assert result.returncode == 0, result.stderr[-3000:]
    truth = sb.export(name)["messages"]
    assert len({m["ts"] for m in truth}) < len(truth), "the sandbox should have made ties"
    assert_matches_sandbox(sb, out, name, resources=("messages",))


def test_pages_shifting_during_the_crawl_lose_nothing(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=120, messages=300, grow_every=3)
    before = {p["username"]: sb.export(p["username"]) for p in sb.personalities}
    out = tmp_path / "b"
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, truth in before.items():
        for resource in ("memories", "messages"):
            got = saved(out, name, resource)
            ids = [r["id"] for r in got]
            assert len(ids) == len(set(ids)), "no duplicates"
            assert {r["id"] for r in truth[resource]} <= set(ids), f"{resource} lost while pages shifted"


def test_unsafe_usernames_never_escape_backup_dir(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=8, unsafe_usernames=True, memories=5, messages=5, empty_last=False)
    out = tmp_path / "inner" / "backup"
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    usernames = [p["username"] for p in sb.personalities]
    assert any("/" in u or ".." in u for u in usernames), usernames
    children = [p for p in out.iterdir() if p.name != ".locks"]
    assert all(c.is_dir() and c.parent == out for c in children)
    assert {p.name for p in (out / ".locks").iterdir()} == {f"{c.name}.lock" for c in children}
    assert len(children) == len(usernames), "every personality has its own folder"
    assert sorted(p.name for p in (tmp_path / "inner").iterdir()) == ["backup"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inner"]
    for name in usernames:
        assert metadata(out, name)["personality"]["username"] == name
        assert_matches_sandbox(sb, out, name)


def test_cookie_never_appears_in_logs_or_backups(sandbox, tmp_path):
    out = tmp_path / "b"
    result = crawl(sandbox, "all_personalities", out, settings={"LOG_LEVEL": "DEBUG"})
    assert result.returncode == 0
    assert sandbox.cookie[:6] in result.stderr, "a short prefix is logged, so the check below means something"
    assert sandbox.cookie not in result.stdout + result.stderr
    for rel, blob in data_files(out).items():
        assert sandbox.cookie.encode() not in blob, rel
    for meta in out.rglob(".backup-metadata.json"):
        assert sandbox.cookie not in meta.read_text()


def test_jargon_and_profile_path_are_configurable(sandbox_factory, tmp_path):
    sb = sandbox_factory(jargon="shapes", profile_path="shapes/by-name", personalities=2)
    out = tmp_path / "b"
    wrong = crawl(sb, "all_personalities", out)
    assert wrong.returncode != 0
    result = crawl(sb, "all_personalities", out, settings={"PERSONALITY_JARGON_TERM": "shapes",
                                                           "PROFILE_INFO_PRIVATE_PATH": "shapes/by-name"})
    assert result.returncode == 0, result.stderr[-3000:]
    for p in sb.personalities:
        assert_matches_sandbox(sb, out, p["username"])
