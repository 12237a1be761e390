"""Unattended runs: the session checked first, an expired cookie recovered by a headless login (real
Chromium against the sandbox), exit 3 when nobody can log in, TZCRAWL_NOTIFY, progress lines."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from crawlhelp import FAST, REPO, assert_matches_sandbox, read_terminal
from test_login import chromium_or_skip
from test_login import Stored as load_cookie_file
from tzcrawl.session.jar import save_cookie_text


def save_cookie_file(path, value, site):
    """The cookie file as ``scrapy crawl login`` leaves it: the session's value under its name."""
    return save_cookie_text(path, value if "=" in value else f"{SESSION_NAME[0]}={value}", site=site)


SESSION_NAME = ["__Secure-better-auth.session_token"]
from tzcrawl.notify import notify_environment
from tzcrawl.progress import eta_seconds, human

TESTS = Path(__file__).resolve().parent


def run(sb, backup, *args, cookie=None, spider="all_personalities", timeout=240, **env_extra):
    """A crawl as cron runs it: the cookie from the cookie file (no SERVICE_COOKIE), no terminal."""
    cookie_path = Path(backup).parent / "config" / "cookie.json"
    SESSION_NAME[0] = sb.cookie_names[0]
    if cookie is not None:
        save_cookie_file(cookie_path, cookie, site=sb.base_url)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SERVICE_", "TZCRAWL_", "BACKUP_", "PYTHON_KEYRING"))}
    env.update(SERVICE_WEBSITE=sb.base_url, BACKUP_DIR=str(backup), TZCRAWL_COOKIE_FILE=str(cookie_path),
               PYTHONPATH=str(TESTS), **env_extra)
    if sb.ca_file:
        env["TZCRAWL_CA_FILE"] = sb.ca_file
    env["BACKUP_MEDIA_PRIVATE_HOSTS"] = sb.media_hosts
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider, *args]
    for name, value in FAST.items():
        cmd += ["-s", f"{name}={value}"]
    return subprocess.run(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout), cookie_path


def personality_folders(backup) -> list[str]:
    return sorted(p.name for p in Path(backup).iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if Path(backup).exists() else []


def test_an_expired_cookie_stops_before_any_personality_with_exit_3(sandbox, tmp_path):
    sandbox.expire_cookie()
    result, _ = run(sandbox, tmp_path / "b", cookie=sandbox.cookie)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "unattended login is not set up (TZCRAWL_EMAIL is not set)" in result.stderr
    assert "Log in again" in result.stderr
    assert sandbox.stats()["routes"] == {"users_info": 1}, "nothing but the session check"
    assert personality_folders(tmp_path / "b") == []


def test_an_expired_cookie_is_recovered_by_an_unattended_login(sandbox_factory, tmp_path):
    chromium_or_skip()
    sb = sandbox_factory(personalities=2, memories=7, messages=12)
    sb.expire_cookie()
    result, cookie_path = run(sb, tmp_path / "b", cookie=sb.cookie, TZCRAWL_EMAIL="owner@example.com",
                              TZCRAWL_PASSWORD="sandbox-password")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "logging in again as owner@example.com (unattended, password from the environment)" in result.stderr
    stored = load_cookie_file(cookie_path)
    assert stored.value != sb.cookie and stat.S_IMODE(cookie_path.stat().st_mode) == 0o600
    assert "sandbox-password" not in result.stdout + result.stderr and stored.value not in result.stderr
    for p in sb.personalities:
        assert_matches_sandbox(sb, tmp_path / "b", p["username"])


def test_a_cookie_expiring_mid_run_is_recovered_and_nothing_done_is_redone(sandbox_factory, tmp_path):
    chromium_or_skip()
    # 30 API requests in all: the first cookie stops working after 20, the new one lasts the rest.
    sb = sandbox_factory(personalities=3, memories=45, messages=120, cookie_max_requests=20)
    result, _ = run(sb, tmp_path / "b", cookie=sb.cookie, TZCRAWL_EMAIL="owner@example.com",
                    TZCRAWL_PASSWORD="sandbox-password")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'backup/session/recovered': 1" in result.stderr
    routes = sb.stats()["route_status"]
    assert sum(routes["profile"].values()) == 3, "no personality was started twice"
    assert sum(v for r in routes.values() for k, v in r.items() if k == "401") == 1, "one page refused, asked again"
    for p in sb.personalities:
        assert_matches_sandbox(sb, tmp_path / "b", p["username"])


def test_a_wrong_stored_password_exits_3_without_a_loop_and_keeps_the_cookie_file(sandbox, tmp_path):
    chromium_or_skip()
    sandbox.expire_cookie()
    cookie_path = tmp_path / "config" / "cookie.json"
    save_cookie_file(cookie_path, sandbox.cookie, site=sandbox.base_url)
    before = cookie_path.read_bytes()
    result, _ = run(sandbox, tmp_path / "b", TZCRAWL_EMAIL="owner@example.com", TZCRAWL_PASSWORD="wrong")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "the unattended login failed: the site refused the email and password" in result.stderr
    assert sandbox.stats()["routes"].get("login") == 1, "one login attempt, no loop"
    assert cookie_path.read_bytes() == before


def test_no_keyring_backend_is_one_line_and_the_environment_is_used(sandbox, tmp_path):
    sandbox.expire_cookie()
    result, _ = run(sandbox, tmp_path / "b", cookie=sandbox.cookie, TZCRAWL_EMAIL="owner@example.com",
                    PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    assert result.returncode == 3
    said = [line for line in result.stderr.splitlines() if "no keyring backend on this machine" in line
            and "ERROR: Not logged in" in line]
    assert len(said) == 1 and "set TZCRAWL_PASSWORD in the job's environment instead" in said[0]
    assert "Traceback" not in result.stderr


def test_login_save_puts_the_password_in_the_keyring_and_recovery_uses_it(sandbox, tmp_path):
    chromium_or_skip()
    keyring_file = tmp_path / "keyring.json"
    backend = {"PYTHON_KEYRING_BACKEND": "keyring_file_backend.FileKeyring", "TZCRAWL_TEST_KEYRING": str(keyring_file)}
    result, _ = run(sandbox, tmp_path / "b", "-a", "email=owner@example.com", "-a", "save=1", spider="login",
                    TZCRAWL_PASSWORD="sandbox-password", **backend)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the password for owner@example.com is in the system keyring" in result.stdout
    assert json.loads(keyring_file.read_text()) == {f"tzcrawl:{sandbox.base_url}\nowner@example.com": "sandbox-password"}
    sandbox.expire_cookie()
    crawl, _ = run(sandbox, tmp_path / "b", TZCRAWL_EMAIL="owner@example.com", **backend)  # no password in env
    assert crawl.returncode == 0, crawl.stderr[-3000:]
    assert "(unattended, password from the keyring)" in crawl.stderr


RECORDER = """#!/bin/sh
env > "$1"
"""


def test_notify_runs_once_on_failure_with_the_outcome_and_nothing_secret(sandbox, tmp_path):
    script = tmp_path / "record.sh"
    script.write_text(RECORDER)
    script.chmod(0o700)
    record = tmp_path / "env.txt"
    sandbox.expire_cookie()
    result, _ = run(sandbox, tmp_path / "b", cookie=sandbox.cookie, TZCRAWL_NOTIFY=f"{script} {record}",
                    TZCRAWL_PASSWORD="hunter2", SOME_API_TOKEN="t0k3n")
    assert result.returncode == 3
    env = dict(line.split("=", 1) for line in record.read_text().splitlines() if "=" in line)
    assert env["TZCRAWL_EXIT"] == "3" and "Authentication failed" in env["TZCRAWL_SUMMARY"]
    assert json.loads(env["TZCRAWL_OUTCOME"])["exit"] == 3
    assert not any(k in env for k in ("SERVICE_COOKIE", "TZCRAWL_PASSWORD", "SOME_API_TOKEN", "TZCRAWL_COOKIE_FILE"))
    assert "hunter2" not in record.read_text() and sandbox.cookie not in record.read_text()
    record.unlink()
    ok, _ = run(sandbox, tmp_path / "c", cookie=sandbox.new_cookie(), TZCRAWL_NOTIFY=f"{script} {record}")
    assert ok.returncode == 0 and not record.exists(), "a successful crawl notifies nobody"


@pytest.mark.parametrize("command, message", [
    ("exit 7", "TZCRAWL_NOTIFY exited with status 7"),
    ("sleep 30", "TZCRAWL_NOTIFY did not finish within 1s (TZCRAWL_NOTIFY_TIMEOUT) and was killed"),
])
def test_a_failing_or_hanging_notify_is_logged_and_changes_nothing(sandbox, tmp_path, command, message):
    sandbox.expire_cookie()
    result, _ = run(sandbox, tmp_path / "b", cookie=sandbox.cookie, TZCRAWL_NOTIFY=command,
                    TZCRAWL_NOTIFY_TIMEOUT="1")
    assert result.returncode == 3 and message in result.stderr


def test_notify_environment_drops_secrets():
    env = notify_environment({"PATH": "/bin", "SERVICE_COOKIE": "x", "MY_SECRET": "y", "AWS_ACCESS_KEY_ID": "z",
                              "HOME": "/h"}, {"exit": 1, "summary": "s"})
    assert set(env) == {"PATH", "HOME", "TZCRAWL_EXIT", "TZCRAWL_SUMMARY", "TZCRAWL_OUTCOME"}


def test_progress_lines_in_a_job_log(sandbox_factory, tmp_path):
    # Slow answers (0.05 s each, ~30 requests) and a line every 0.2 s: several lines whatever the load.
    sb = sandbox_factory(personalities=1, memories=100, messages=400, empty_last=False, latency=0.05)
    result, _ = run(sb, tmp_path / "b", cookie=sb.cookie, TZCRAWL_PROGRESS_EVERY="0.2")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "progress · " in line]
    assert lines, result.stderr[-2000:]
    assert any("memories: page " in line and " of 5 " in line for line in lines) or \
        any("messages, back to 20" in line for line in lines), lines


def test_eta_from_pace():
    assert eta_seconds("memories", 10.0, 2, 10, None, None, None) == 40.0
    assert eta_seconds("memories", 10.0, 2, None, None, None, None) is None
    # 10 s moved the walk back 1,000 s of history; 5,000 s are left to the creation date: 50 s
    assert eta_seconds("messages", 10.0, 3, None, 10_000.0, 9_000.0, 4_000.0) == 50.0
    assert eta_seconds("messages", 10.0, 3, None, 10_000.0, 9_000.0, None) is None
    assert human(None) == "unknown" and human(30) == "30s" and human(600) == "10 min" and human(7200) == "2.0 h"


def test_warning_level_still_shows_the_summary_and_quiet_startup_hides_the_lists(sandbox, tmp_path):
    result, _ = run(sandbox, tmp_path / "b", "-s", "LOG_LEVEL=WARNING", cookie=sandbox.cookie,
                    TZCRAWL_QUIET_STARTUP="yes")
    assert result.returncode == 0
    assert "Backup summary" in result.stderr and "tzcrawl outcome: " in result.stderr
    assert "Enabled downloader middlewares" not in result.stderr and "Dumping Scrapy stats" not in result.stderr
    debug, _ = run(sandbox, tmp_path / "c", "-s", "LOG_LEVEL=DEBUG", cookie=sandbox.cookie,
                   TZCRAWL_QUIET_STARTUP="yes")
    assert "Enabled downloader middlewares" in debug.stderr and "Dumping Scrapy stats" in debug.stderr


def run_on_a_terminal(sb, backup, **env_extra) -> str:
    """The crawl with stderr (and stdout) on a pseudo-terminal, as a person at a shell runs it."""
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "TZCRAWL_", "BACKUP_"))}
    env.update(SERVICE_WEBSITE=sb.base_url, SERVICE_COOKIE=sb.cookie, BACKUP_DIR=str(backup), TERM="xterm",
               COLUMNS="120", TZCRAWL_COOKIE_FILE=str(Path(backup).parent / "none"), TZCRAWL_CA_FILE=sb.ca_file,
               **env_extra)
    cmd = [sys.executable, "-m", "scrapy", "crawl", "all_personalities"]
    for name, value in FAST.items():
        cmd += ["-s", f"{name}={value}"]
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        shown = read_terminal(master, 120)
    finally:
        os.close(master)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    return shown.decode("utf-8", "replace")


def test_on_a_terminal_progress_is_drawn_live_and_the_startup_lists_stay_quiet(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=100, messages=400, empty_last=False, latency=0.03)
    shown = run_on_a_terminal(sb, tmp_path / "b")
    assert "\x1b[" in shown, "drawn with terminal control sequences"
    assert "pages/min" in shown and ("back to 20" in shown or "page " in shown)
    assert "Backup summary" in shown
    assert "Enabled downloader middlewares" not in shown and "Dumping Scrapy stats" not in shown
    assert "Versions:" not in shown, "the versions table is a start-up list too"
    assert "Warning" not in shown, "no deprecation warning on a normal run (DOWNLOAD_SLOTS takes jitter)"
    assert "progress · " not in shown, "no progress log lines when the display is live"


def test_a_log_file_never_holds_the_live_display(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=100, messages=400, empty_last=False, latency=0.03)
    log = tmp_path / "job.log"
    result, _ = run(sb, tmp_path / "b", "-s", f"LOG_FILE={log}", cookie=sb.cookie, TZCRAWL_PROGRESS="auto",
                    TZCRAWL_PROGRESS_EVERY="0.2")
    assert result.returncode == 0
    text = log.read_text()
    assert "progress · " in text and "Backup summary" in text
    assert "\x1b[" not in text, "no terminal drawing in a log file"
