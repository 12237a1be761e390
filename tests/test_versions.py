"""Never lose a version, and notice what the service dropped or moved: real crawls of the sandbox
while its data changes underneath (edited profiles, emptied knowledge, edited and deleted memories,
memories deleted in the middle of a walk, old memories appearing)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from crawlhelp import assert_matches_sandbox, crawl, metadata, saved
from tzcrawl.paging import rewalk_from
from tzcrawl.store.backup import full_read_due
from tzcrawl.store import BackupStore, BackupView
from tzcrawl.store.metadata import save as save_metadata

ONE = dict(personalities=1, memories=45, messages=60, empty_last=False)


def name(sb) -> str:
    return sb.personalities[0]["username"]


def run(sb, out, *args, **kwargs):
    return crawl(sb, "personality", out, "-a", f"personality={name(sb)}", *args, **kwargs)


def history(out, username: str, *parts: str):
    return BackupView(out).history_dir(username).joinpath(*parts)


def test_an_edited_profile_keeps_the_previous_version_and_unchanged_answers_add_nothing(sandbox_factory, tmp_path):
    sb, out = sandbox_factory(**ONE), tmp_path / "b"
    assert run(sb, out).returncode == 0
    first = saved(out, name(sb), "profile")
    assert not history(out, name(sb)).exists()
    assert run(sb, out).returncode == 0
    assert not history(out, name(sb)).exists(), "an unchanged answer adds nothing"
    sb.edit(name(sb), profile={"description": "the owner rewrote the prompt"})
    result = run(sb, out)
    assert result.returncode == 0
    kept = list(history(out, name(sb), "profile").iterdir())
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == first
    assert saved(out, name(sb), "profile")["description"] == "the owner rewrote the prompt"
    assert oct(kept[0].stat().st_mode & 0o777) == "0o600"
    assert metadata(out, name(sb))["resources"]["profile"]["previous_version"] == f"history/profile/{kept[0].name}"


def test_knowledge_emptied_on_the_service_is_saved_the_old_kept_and_the_run_warns(sandbox_factory, tmp_path):
    sb, out = sandbox_factory(**ONE, overrides={0: {"knowledge_shape": "items", "knowledge": 3}}), tmp_path / "b"
    assert run(sb, out).returncode == 0
    before = saved(out, name(sb), "knowledge")
    sb.edit(name(sb), knowledge=[])
    result = run(sb, out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert saved(out, name(sb), "knowledge")["items"] == []
    kept = list(history(out, name(sb), "knowledge").iterdir())
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == before
    warning = result.stderr.split("Warnings:", 1)[1]
    assert "knowledge with no entries; the 3 saved before are kept in history/knowledge/" in warning


def test_a_memory_changed_on_the_service_keeps_its_earlier_copy(sandbox_factory, tmp_path):
    sb, out = sandbox_factory(**ONE), tmp_path / "b"
    assert run(sb, out).returncode == 0
    before = {m["id"]: m for m in saved(out, name(sb), "memories")}
    sb.edit(name(sb), memory=(10, {"content": "corrected by the owner"}))
    edited = sb.export(name(sb))["memories"][10]
    result = run(sb, out, "-a", "full=1")
    assert result.returncode == 0
    now = {m["id"]: m for m in saved(out, name(sb), "memories")}
    assert now[edited["id"]]["content"] == "corrected by the owner" and len(now) == len(before)
    lines = history(out, name(sb), "memories.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["record"] == before[edited["id"]] and record["replaced_at"].endswith("Z")
    assert "1 changed on the service" in result.stderr
    assert run(sb, out, "-a", "full=1").returncode == 0
    assert len(history(out, name(sb), "memories.jsonl").read_text().splitlines()) == 1, "unchanged: nothing added"


@pytest.mark.sandbox_records("2025")  # needs the record total the 2025 answers gave (2026: see below)
def test_records_deleted_upstream_are_counted_on_a_full_run_and_stay(sandbox_factory, tmp_path):
    sb, out = sandbox_factory(**ONE), tmp_path / "b"
    assert run(sb, out).returncode == 0
    gone = [m["id"] for m in sb.export(name(sb))["memories"][:3]]
    sb.app.world.delete_memories(3)
    result = run(sb, out, "-a", "full=1")
    assert result.returncode == 0
    entry = metadata(out, name(sb))["resources"]["memories"]
    assert entry["deleted_upstream"]["count"] == 3 and sorted(entry["deleted_upstream"]["ids"]) == sorted(gone)
    assert {m["id"] for m in saved(out, name(sb), "memories")} >= set(gone), "they stay in the backup"
    assert "45 (+0), 3 deleted upstream" in result.stderr
    assert run(sb, out).returncode == 0  # an incremental run keeps what only a full read can say
    assert metadata(out, name(sb))["resources"]["memories"]["deleted_upstream"]["count"] == 3


@pytest.mark.sandbox_records("2025")  # needs the record total the 2025 answers gave (2026: see below)
@pytest.mark.parametrize("style", ["pagination", "camel"])
def test_memories_deleted_during_the_walk_are_not_missed(sandbox_factory, tmp_path, style):
    # 200 memories, 20 a page. After the profile and three pages, the 7 newest are deleted: every
    # later memory moves up 7 places, and 7 of them cross into page 3, already read.
    sb = sandbox_factory(personalities=1, memories=200, messages=10, empty_last=False, pagination_style=style)
    out = tmp_path / "b"
    sb.set_knobs(delete_memories_after=4, delete_memories_count=7)
    result = run(sb, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'backup/memories/rewalks': 1" in result.stderr
    held = {m["id"] for m in saved(out, name(sb), "memories")}
    assert {m["id"] for m in sb.export(name(sb))["memories"]} <= held
    assert len(held) == 200  # the 7 deleted were read before they went, and stay


@pytest.mark.sandbox_records("2025")  # needs the record total the 2025 answers gave (2026: see below)
def test_memories_that_keep_moving_end_the_resource_failed_after_two_walks_again(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=300, messages=10, empty_last=False)
    sb.set_knobs(delete_memories_after=3, delete_memories_count=4, delete_memories_repeat=True)
    out = tmp_path / "b"
    result = run(sb, out)
    assert result.returncode == 1
    assert "memories: FAILED (memories kept being deleted on the service while they were read (2 walks" in result.stderr
    assert "'backup/memories/rewalks': 2" in result.stderr
    assert saved(out, name(sb), "memories") is None, "an incomplete walk commits nothing"
    assert saved(out, name(sb), "messages") is not None  # the other resources go on
    assert rewalk_from(4, 20, 200, 193, by_pages=False) == 3
    assert rewalk_from(4, 20, 200, 160, by_pages=False) == 2
    assert rewalk_from(4, 20, 10, 9, by_pages=True) == 3  # one page fewer: a page's worth moved
    assert rewalk_from(2, 20, 200, 100, by_pages=False) == 1
    assert rewalk_from(4, 20, 200, 200, by_pages=False) is None
    assert rewalk_from(4, 20, 200, 210, by_pages=False) is None  # growth moves records down: re-read, not lost
    assert rewalk_from(4, 20, None, 200, by_pages=False) is None


@pytest.mark.sandbox_records("2025")  # needs the record total the 2025 answers gave (2026: see below)
def test_a_shortfall_fails_the_run_and_the_next_run_reads_everything(sandbox_factory, tmp_path):
    sb, out = sandbox_factory(**ONE), tmp_path / "b"
    assert run(sb, out).returncode == 0
    sb.edit(name(sb), old_memories=5)  # older than everything held: an incremental walk stops before them
    short = run(sb, out)
    assert short.returncode == 1
    assert "the backup holds 45 memories, the service counts 50: 5 missing" in short.stderr
    assert metadata(out, name(sb))["resources"]["memories"]["shortfall"] == 5
    healed = run(sb, out)
    assert healed.returncode == 0, healed.stderr[-2000:]
    assert "reading in full (the last run found records missing)" in healed.stderr
    assert_matches_sandbox(sb, out, name(sb), resources=("memories",))
    assert "shortfall" not in metadata(out, name(sb))["resources"]["memories"]


def test_a_collection_not_read_in_full_for_too_long_is_read_in_full(sandbox_factory, tmp_path):
    now = datetime(2026, 11, 22, tzinfo=timezone.utc)
    assert full_read_due("2026-11-14T00:00:00Z", 7, now) and not full_read_due("2026-11-16T00:00:00Z", 7, now)
    assert full_read_due(None, 7, now) and not full_read_due(None, 0, now)
    sb, out = sandbox_factory(**ONE), tmp_path / "b"
    assert run(sb, out).returncode == 0
    full = {r: sb.stats()["routes"][r] for r in ("memory", "chat_history")}
    sb.reset_stats()
    assert run(sb, out).returncode == 0
    assert sb.stats()["routes"]["memory"] == 1 < full["memory"], "within BACKUP_FULL_EVERY: incremental"
    store = BackupStore(out)
    data = store.metadata(name(sb))
    old = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat(timespec="seconds").replace("+00:00", "Z")
    for resource in ("memories", "messages"):
        data["resources"][resource]["last_full_read"] = old
    save_metadata(store.metadata_path(name(sb)), data)
    sb.reset_stats()
    result = run(sb, out)
    assert result.returncode == 0
    assert "no full read in the last 7 days (BACKUP_FULL_EVERY)" in result.stderr
    assert {r: sb.stats()["routes"][r] for r in ("memory", "chat_history")} == full
    assert metadata(out, name(sb))["resources"]["memories"]["last_full_read"] > old
