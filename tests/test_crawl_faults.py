"""Faults from the sandbox's knobs: for each, nothing already saved is lost, the exit status is
right, and the message is clear."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from crawlhelp import (MEMORY_TIME, REPO, assert_matches_sandbox, crawl, crawl_cmd, crawl_env, data_files, metadata, oldest_first,
                       saved)


def complete_and_exact(sb, out, result):
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    for p in sb.personalities:
        assert_matches_sandbox(sb, out, p["username"])


def test_rate_limit_429_with_retry_after_is_honoured(sandbox_factory, tmp_path):
    sb = sandbox_factory(rate_limit=15.0, rate_burst=3)
    out = tmp_path / "b"
    result = crawl(sb, "all_personalities", out)
    complete_and_exact(sb, out, result)
    assert sb.stats()["status"].get("429", 0) > 0, "the limit should have been hit"
    assert "'backup/retry/rate_limited'" in result.stderr
    assert "'backup/retry/wait_seconds'" in result.stderr


def test_retry_after_is_waited_for_so_one_retry_is_enough(sandbox_factory, tmp_path):
    # 2 requests/s, no burst: every fast second request gets 429 + Retry-After: 1. Retried at once
    # (Scrapy's own behaviour) it would be refused again and RETRY_TIMES=1 would give up.
    sb = sandbox_factory(rate_limit=2.0, rate_burst=1, personalities=3)
    names = ",".join(p["username"] for p in sb.personalities)
    out = tmp_path / "b"
    result = crawl(sb, "knowledge", out, "-a", f"personality={names}",
                   settings={"RETRY_TIMES": "1", "TZCRAWL_ADAPTIVE_PACING": "False"})
    assert result.returncode == 0, result.stderr[-3000:]
    limited = sb.stats()["status"].get("429", 0)
    assert limited >= 2, "the limit should have been hit"
    assert f"'backup/retry/rate_limited': {limited}" in result.stderr
    for p in sb.personalities:
        assert_matches_sandbox(sb, out, p["username"], resources=("knowledge",))


def test_pacing_learns_the_rate_limit_so_429s_stay_rare(sandbox_factory, tmp_path):
    # 20 requests/s, burst 2, delays off. Without the learned pacing every refill is spent at once
    # and about a third of the requests are refused (27 of 84 when measured); with it, ~1 in 60.
    sb = sandbox_factory(personalities=1, memories=400, messages=1500, empty_last=False,
                         rate_limit=20.0, rate_burst=2)
    out = tmp_path / "b"
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    requests, limited = sb.stats()["requests"], sb.stats()["status"].get("429", 0)
    assert 1 <= limited <= 0.1 * requests, f"{limited} of {requests} requests answered 429"
    learned = float(re.search(r"'backup/pacing/interval_ms': ([\d.]+)", result.stderr).group(1))
    assert 25 <= learned <= 100, f"learned {learned} ms between requests for a 50 ms limit"
    assert_matches_sandbox(sb, out, sb.personalities[0]["username"])


def test_bulk_runs_pause_between_personalities(sandbox, tmp_path):
    names = ",".join(p["username"] for p in sandbox.personalities)
    elapsed = {}
    for delay in ("0", "1.0"):
        result = crawl(sandbox, "profile", tmp_path / delay, "-a", f"personality={names}",
                       settings={"BACKUP_PERSONALITY_DELAY": delay})
        assert result.returncode == 0, result.stderr[-3000:]
        elapsed[delay] = float(re.search(r"'elapsed_time_seconds': ([\d.]+)", result.stderr).group(1))
    assert elapsed["1.0"] >= 2.0, "two pauses of 1 s between three personalities"
    # (no upper bound on the run without pauses: on a loaded machine it may take as long)


@pytest.mark.parametrize("knobs", [
    {"error_rate": 0.25},
    {"drop_rate": 0.15},
    {"latency": 0.5, "latency_rate": 0.2},
], ids=["5xx", "dropped-connections", "slow-answers"])
def test_transient_faults_are_retried_to_a_complete_backup(sandbox_factory, tmp_path, knobs):
    sb = sandbox_factory(**knobs)
    out = tmp_path / "b"
    result = crawl(sb, "all_personalities", out, settings={"DOWNLOAD_TIMEOUT": "0.3", "RETRY_TIMES": "8"})
    complete_and_exact(sb, out, result)
    assert "Backup complete: 3 of 3 personalities" in result.stderr


def test_retries_exhausted_fail_the_run_and_keep_previous_files(sandbox, tmp_path):
    out = tmp_path / "b"
    assert crawl(sandbox, "all_personalities", out).returncode == 0
    before = data_files(out)
    name = sandbox.personalities[0]["username"]
    sandbox.add(name, memories=5, messages=5)
    sandbox.set_knobs(error_rate=1.0)
    result = crawl(sandbox, "personality", out, "-a", f"personality={name}", settings={"RETRY_TIMES": "2"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Backup INCOMPLETE" in result.stderr
    assert data_files(out) == before, "a failed run must leave every saved file as it was"
    # The profile failed, so nothing else was tried: the metadata says so for every resource, and
    # keeps the figures of the last good run.
    meta = metadata(out, name)["resources"]
    assert meta["profile"]["outcome"] == "failed" and meta["profile"]["error"].startswith("HTTP 5")
    for resource in ("memories", "messages", "knowledge", "training", "user_data"):
        assert meta[resource]["outcome"] == "failed", resource
        assert meta[resource]["error"].startswith("not attempted: profile unavailable: HTTP 5"), meta[resource]
        assert meta[resource]["last_sync"] and "total" in meta[resource]


def test_one_failing_resource_fails_only_itself(sandbox, tmp_path):
    out = tmp_path / "b"
    name = sandbox.personalities[0]["username"]
    assert crawl(sandbox, "personality", out, "-a", f"personality={name}").returncode == 0
    previous = (next(out.rglob("*_messages.json"))).read_bytes()
    sandbox.add(name, memories=5, messages=5)
    sandbox.set_knobs(ignore_before_ts=True)  # chat history repeats its newest batch
    result = crawl(sandbox, "personality", out, "-a", f"personality={name}", "-a", "full=1", timeout=120)
    assert result.returncode == 1
    assert "ignored before_ts" in result.stderr
    assert next(out.rglob("*_messages.json")).read_bytes() == previous
    meta = metadata(out, name)["resources"]
    assert meta["messages"]["outcome"] == "failed" and "before_ts" in meta["messages"]["error"]
    assert meta["memories"]["outcome"] == "complete" and meta["memories"]["total"] == 50
    assert saved(out, name, "memories") == oldest_first(sandbox.export(name)["memories"], MEMORY_TIME)


def test_cookie_expiring_mid_run_stops_at_once_and_keeps_finished_personalities(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=3, empty_last=False)
    out = tmp_path / "b"
    assert crawl(sb, "all_personalities", out).returncode == 0
    before = data_files(out)
    people = [p["username"] for p in sb.personalities]
    for name in people:
        sb.add(name, memories=3, messages=3)
    # 1 list + 6 per personality: the cookie dies during the second personality.
    sb.set_knobs(cookie_max_requests=10)
    sb.reset_stats()
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 3  # log in again
    assert "Traceback" not in result.stderr
    assert "Authentication failed" in result.stderr and "1 of 3 personalities were completed" in result.stderr
    assert "fresh" in result.stderr and "cookie" in result.stderr
    assert sb.stats()["requests"] <= 11, "the crawl must stop at the first authentication failure"
    assert_matches_sandbox(sb, out, people[0])
    after = data_files(out)
    # The personality being backed up when the cookie died: each file is the old one or a newer
    # complete one, never less.
    for rel, blob in before.items():
        if rel.startswith(people[1]):
            assert rel in after
            if rel.endswith(("_memories.json", "_messages.json")):
                assert {r["id"] for r in json.loads(blob)} <= {r["id"] for r in json.loads(after[rel])}
    # The one never reached is untouched.
    assert {k: v for k, v in after.items() if k.startswith(people[2])} == \
        {k: v for k, v in before.items() if k.startswith(people[2])}


@pytest.mark.parametrize("mode", ["401", "html", "redirect"])
def test_not_authenticated_in_every_form_is_a_clear_failure(sandbox_factory, tmp_path, mode):
    sb = sandbox_factory(auth_failure=mode)
    sb.expire_cookie()
    out = tmp_path / "b"
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "Authentication failed" in result.stderr and "0 of 0 personalities" in result.stderr
    assert not out.exists() or data_files(out) == {}


def test_html_login_page_instead_of_json_is_never_saved_as_data(sandbox_factory, tmp_path):
    sb = sandbox_factory(auth_failure="html")
    out = tmp_path / "b"
    name = sb.personalities[0]["username"]
    sb.expire_cookie()
    result = crawl(sb, "memories", out, "-a", f"personality={name}")
    assert result.returncode == 3
    assert "the login page instead of JSON" in result.stderr
    assert not out.exists() or data_files(out) == {}


@pytest.mark.parametrize("env_change, expected", [
    ({"SERVICE_WEBSITE": ""}, "SERVICE_WEBSITE is not set"),
    ({"SERVICE_WEBSITE": "ftp://x"}, "SERVICE_WEBSITE must be an http(s) URL"),
    ({"SERVICE_COOKIE": "has spaces in it"}, "SERVICE_COOKIE: the session cookie holds spaces"),
    ({"SERVICE_COOKIE": ""}, "scrapy crawl login"),
    ({"BACKUP_LOCK_TIMEOUT": "soon"}, "BACKUP_LOCK_TIMEOUT must be a number"),
    ({"PERSONALITY_JARGON_TERM": "a/b"}, "PERSONALITY_JARGON_TERM must be one path word"),
    ({"BACKUP_DIR": "/proc/x"}, "BACKUP_DIR '/proc/x' cannot be created or written"),
    ({"BACKUP_DIR": "/dev/null/backups"}, "BACKUP_DIR '/dev/null/backups' cannot be created or written"),
])
def test_configuration_problems_are_one_clear_line(sandbox, tmp_path, env_change, expected):
    env = crawl_env(sandbox, tmp_path / "b")
    env.update(env_change)
    result = crawl(sandbox, "all_personalities", tmp_path / "b", env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tzcrawl: ") and expected in lines[0], result.stderr
    assert sandbox.stats()["requests"] == 0


def test_a_bad_full_argument_is_one_clear_line(sandbox, tmp_path):
    result = crawl(sandbox, "memories", tmp_path / "b", "-a", "personality=x", "-a", "full=maybe")
    assert result.returncode == 2
    assert result.stderr.strip() == "tzcrawl: -a full= takes yes or no, not 'maybe'"
    assert sandbox.stats()["requests"] == 0


def test_missing_personality_argument_is_one_clear_line(sandbox, tmp_path):
    result = crawl(sandbox, "memories", tmp_path / "b")
    assert result.returncode == 2
    assert result.stderr.strip() == ("tzcrawl: say which personality: scrapy crawl memories "
                                     "-a personality=NAME[,NAME...]")


def test_unknown_personality_fails_without_touching_others(sandbox, tmp_path):
    out = tmp_path / "b"
    name = sandbox.personalities[0]["username"]
    result = crawl(sandbox, "personality", out, "-a", f"personality={name},no-such-one")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line and "no-such-one" in line]
    assert len(errors) == 1, errors  # one line that says what is wrong, not one per resource
    assert "no-such-one · profile: FAILED (no personality 'no-such-one' on the service (HTTP 404" in errors[0]
    assert f"Backing up to {out.resolve()}" in result.stderr
    assert_matches_sandbox(sandbox, out, name)
    assert sorted(p.name for p in out.iterdir()) == [".locks", name]  # no folder for a name that does not exist


def test_a_wrong_jargon_term_names_the_setting(sandbox, tmp_path):
    env = crawl_env(sandbox, tmp_path / "b", PERSONALITY_JARGON_TERM="shapez")
    result = crawl(sandbox, "all_personalities", tmp_path / "b", env=env)
    assert result.returncode == 1
    assert "is PERSONALITY_JARGON_TERM='shapez' the site's word for a personality in its paths?" in result.stderr


def test_unknown_spider_is_one_clear_line(sandbox, tmp_path):
    result = crawl(sandbox, "no_such_spider", tmp_path / "b")
    assert result.returncode == 2
    assert result.stderr.strip() == "tzcrawl: no spider named 'no_such_spider'; `scrapy list` shows them"


@pytest.mark.parametrize("interrupts", [1, 2], ids=["ctrl-c", "ctrl-c twice (unclean shutdown)"])
def test_an_interrupted_crawl_never_exits_0(sandbox_factory, tmp_path, interrupts):
    # Every answer takes 1 s, so a graceful stop (which waits for the request in flight) is still
    # going when the second Ctrl-C comes, 0.2 s after the first.
    sb = sandbox_factory(latency=1.0)
    out = tmp_path / "b"
    proc = subprocess.Popen(crawl_cmd("all_personalities"), cwd=REPO, env=crawl_env(sb, out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sb.stats()["requests"] < 3:  # the list and a profile answered, more in flight: far from done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    for _ in range(interrupts):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-3000:]
    assert "Backup complete" not in stderr
    if interrupts == 2:
        assert "forcing unclean shutdown" in stderr


def test_a_cookie_on_the_command_line_is_warned_about_once_and_never_echoed(sandbox, tmp_path):
    env = crawl_env(sandbox, tmp_path / "b")
    del env["SERVICE_COOKIE"]
    name = sandbox.personalities[0]["username"]
    result = subprocess.run(crawl_cmd("profile", "-a", f"personality={name}", settings={"SERVICE_COOKIE": sandbox.cookie}),
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "-s SERVICE_COOKIE=... shows the cookie" in line]
    assert len(warnings) == 1 and warnings[0].startswith("tzcrawl: warning: ")
    assert sandbox.cookie not in result.stderr + result.stdout


def test_an_answer_nested_too_deep_fails_its_resource_and_the_walk_goes_on(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=20, messages=30, empty_last=False, deep_json="story")
    out = tmp_path / "b"
    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert result.stderr.count("knowledge: FAILED (invalid JSON from ") == 2
    assert "nested deeper than 1024 levels" in result.stderr
    assert "0 of 2 personalities complete" in result.stderr  # both were asked for, both lack knowledge
    for p in sb.personalities:  # everything else of both personalities was saved
        assert_matches_sandbox(sb, out, p["username"], resources=("profile", "memories", "messages", "training",
                                                                  "user_data"))
        assert metadata(out, p["username"])["resources"]["knowledge"]["outcome"] == "failed"
