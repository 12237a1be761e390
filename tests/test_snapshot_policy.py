"""Pure pieces of the snapshot tool: names, durations, sizes, retention decisions, config precedence."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tzcrawl.snapshot import SnapshotError
from tzcrawl.snapshot.config import load_config
from tzcrawl.snapshot.naming import is_temp_name, parse_snapshot_name, snapshot_name
from tzcrawl.snapshot.retention import (BAD, GOOD, INCOMPLETE, LEGACY, Entry, parse_duration, parse_size,
                                        plan_prune)

NOW = datetime(2025, 11, 22, 12, 0, 0, tzinfo=timezone.utc)


def entry(days_ago: float, status=GOOD, detail="") -> Entry:
    when = NOW - timedelta(days=days_ago)
    return Entry(snapshot_name(when), when, status, detail)


def decisions_by_name(entries, **kw):
    return {d.name: d for d in plan_prune(entries, NOW, **kw)}


def test_name_is_the_seed_format_in_utc():
    when = datetime(2025, 11, 22, 3, 35, 57, 396000, tzinfo=timezone.utc)
    assert snapshot_name(when) == "codex-backup-2025-11-22T03-35-57-396Z"
    local = when.astimezone(timezone(timedelta(hours=-8)))
    assert snapshot_name(local) == "codex-backup-2025-11-22T03-35-57-396Z"
    assert parse_snapshot_name("codex-backup-2025-11-22T03-35-57-396Z") == when


@pytest.mark.parametrize("name", ["codex-backup-2025-13-22T03-35-57-396Z", "codex-backup-latest",
                                  "codex-backup-2025-11-22T03-35-57Z", "../codex-backup-2025-11-22T03-35-57-396Z",
                                  "codex-backup-2025-11-22T03-35-57-396Z/x", ""])
def test_other_names_are_not_snapshots(name):
    assert parse_snapshot_name(name) is None


def test_temp_names():
    assert is_temp_name(".tmp-codex-backup-2025-11-22T03-35-57-396Z.123")
    assert not is_temp_name("codex-backup-2025-11-22T03-35-57-396Z")


@pytest.mark.parametrize("text,seconds", [("7d", 7 * 86400), ("12h", 43200), ("1d12h", 129600), ("2w", 1209600),
                                          ("90m", 5400), ("30s", 30), ("1D 2H", 93600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["7", "d", "7x", "-7d", "7d junk", "", "1.5d"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text,size", [("50KB", 51200), ("50k", 51200), ("51200", 51200), ("2MB", 2 * 1024**2),
                                       ("1GiB", 1024**3)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "KB", "50XB", "-5KB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_keep_last_keeps_newest_n_and_prunes_the_rest():
    entries = [entry(d) for d in (0, 1, 2, 3, 4)]
    plan = plan_prune(entries, NOW, keep_last=3, max_age=None)
    assert [d.keep for d in plan] == [True, True, True, False, False]
    assert plan[0].reason.startswith("newest good")
    assert "keep-last 3: #3" in plan[2].reason
    assert "beyond the last 3" in plan[3].reason


def test_max_age_alone_prunes_older_but_keeps_newest_good_even_if_old():
    entries = [entry(10), entry(20), entry(30)]
    plan = decisions_by_name(entries, keep_last=None, max_age=timedelta(days=7))
    assert plan[entries[0].name].keep and "newest good" in plan[entries[0].name].reason
    assert not plan[entries[1].name].keep and "older than max-age 7d" in plan[entries[1].name].reason
    assert not plan[entries[2].name].keep


def test_rules_combine_as_a_union_like_borg():
    entries = [entry(d) for d in (0, 1, 2, 8, 9, 10)]
    plan = plan_prune(entries, NOW, keep_last=4, max_age=timedelta(days=7))
    # 0,1,2 within 7d; 8 is #4 of keep-last; 9 and 10 are outside both.
    assert [d.keep for d in plan] == [True, True, True, True, False, False]
    assert "keep-last 4: #4" in plan[3].reason
    assert "beyond the last 4 good and older than max-age 7d" in plan[4].reason


def test_age_boundary_is_inclusive():
    entries = [entry(0), entry(7)]
    plan = plan_prune(entries, NOW, keep_last=None, max_age=timedelta(days=7))
    assert all(d.keep for d in plan)


def test_newest_good_survives_keep_last_zero_and_bad_newer_snapshots():
    entries = [entry(0, BAD, "sha256 differs"), entry(1, BAD, "missing"), entry(40), entry(50)]
    plan = decisions_by_name(entries, keep_last=0, max_age=timedelta(days=7))
    assert plan[entries[2].name].keep and "newest good" in plan[entries[2].name].reason
    assert not plan[entries[3].name].keep
    # bad snapshots are not counted and are kept while young
    assert plan[entries[0].name].keep and "bad (sha256 differs)" in plan[entries[0].name].reason


def test_bad_snapshots_do_not_count_toward_keep_last():
    entries = [entry(0), entry(1, BAD), entry(2), entry(3)]
    plan = decisions_by_name(entries, keep_last=2, max_age=None)
    assert plan[entries[2].name].keep and "#2" in plan[entries[2].name].reason
    assert not plan[entries[3].name].keep
    assert plan[entries[1].name].keep  # no max-age: a bad one is only reported


def test_old_bad_snapshot_is_pruned_with_its_reason():
    entries = [entry(0), entry(30, BAD, "integrity_check failed")]
    plan = decisions_by_name(entries, keep_last=5, max_age=timedelta(days=7))
    d = plan[entries[1].name]
    assert not d.keep and "integrity_check failed" in d.reason and "older than max-age" in d.reason


def test_unclassifiable_folders_are_never_pruned_and_say_so():
    entries = [entry(100, LEGACY, "no manifest"), entry(0)]
    plan = decisions_by_name(entries, keep_last=1, max_age=timedelta(days=1))
    d = plan[entries[0].name]
    assert d.keep and "no manifest" in d.reason and "by hand" in d.reason


def test_interrupted_builds_are_pruned():
    e = Entry(".tmp-codex-backup-2025-11-22T11-00-00-000Z.42", NOW, INCOMPLETE)
    (d,) = plan_prune([e], NOW, keep_last=10, max_age=timedelta(days=7))
    assert not d.keep and "interrupted" in d.reason


def test_no_rule_refuses_to_plan():
    with pytest.raises(ValueError, match="keep-last"):
        plan_prune([entry(0)], NOW, keep_last=None, max_age=None)


def test_every_entry_gets_exactly_one_decision_newest_first():
    entries = [entry(d, s) for d, s in ((5, GOOD), (1, BAD), (3, LEGACY), (0, GOOD), (9, GOOD))]
    plan = plan_prune(entries, NOW, keep_last=1, max_age=timedelta(days=4))
    assert sorted(d.name for d in plan) == sorted(e.name for e in entries)
    assert [d.name for d in plan] == [e.name for e in sorted(entries, key=lambda e: e.time, reverse=True)]
    assert all(d.reason for d in plan)


def test_config_precedence_cli_over_env_over_file(tmp_path):
    cfg_file = tmp_path / "snapshot.toml"
    cfg_file.write_text('db = "data/brain.db"\ncode = "/srv/code"\ndest = "backups"\ngrowth = "1MB"\n'
                        'interval = "5m"\nkeep_last = 4\n')
    env = {"SNAPSHOT_CONFIG": str(cfg_file), "SNAPSHOT_CODE": "/env/code", "SNAPSHOT_DEST": "/env/dest"}
    cfg = load_config({"dest": "/cli/dest", "db": None}, env=env)
    assert cfg.db == tmp_path / "data/brain.db"  # relative to the config file
    assert str(cfg.code) == "/env/code"
    assert str(cfg.dest) == "/cli/dest"
    assert cfg.growth == 1024**2 and cfg.interval == timedelta(minutes=5) and cfg.keep_last == 4


def test_config_defaults_and_errors(tmp_path):
    cfg = load_config({}, env={"HOME": str(tmp_path)})
    assert cfg.db is None and cfg.growth == 51200 and cfg.interval == timedelta(seconds=60)
    with pytest.raises(SnapshotError, match="not found"):
        load_config({}, env={"SNAPSHOT_CONFIG": str(tmp_path / "missing.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    with pytest.raises(SnapshotError, match="unknown setting 'colour'"):
        load_config({}, env={}, path=bad)
    with pytest.raises(SnapshotError, match="SNAPSHOT_GROWTH"):
        load_config({}, env={"HOME": str(tmp_path), "SNAPSHOT_GROWTH": "lots"})
    assert cfg.layout == "dedup"
    assert load_config({}, env={"HOME": str(tmp_path), "SNAPSHOT_LAYOUT": "plain"}).layout == "plain"
    with pytest.raises(SnapshotError, match="SNAPSHOT_LAYOUT.*use dedup or plain"):
        load_config({}, env={"HOME": str(tmp_path), "SNAPSHOT_LAYOUT": "zip"})
