"""`tzcrawl doctor` against the sandbox: each line that would stop a backup says so, with the fix."""

from __future__ import annotations

import subprocess
import sys

from crawlhelp import REPO, crawl_env


def doctor(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scrapy", "doctor", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def line(result, what: str) -> str:
    return next(l for l in result.stdout.splitlines() if l.startswith(what))


def test_all_is_well_costs_one_request(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1)
    notify = tmp_path / "notify.sh"
    notify.write_text("#!/bin/sh\nexit 0\n")
    notify.chmod(0o700)
    env = crawl_env(sb, tmp_path / "backup", TZCRAWL_NOTIFY=str(notify), TZCRAWL_CHROMIUM="/bin/true")
    sb.reset_stats()
    result = doctor(env)
    assert result.returncode == 0, result.stdout + result.stderr
    for what in ("service", "cookie", "session", "backup folder", "chromium", "notify"):
        assert line(result, what).split()[1 if what != "backup folder" else 2] == "ok", result.stdout
    assert "accepted by the service (1 request)" in result.stdout
    assert sb.stats()["requests"] == 1
    assert sb.cookie not in result.stdout + result.stderr, "the cookie is never shown"


def test_each_blocker_is_a_failing_line_with_its_fix(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, bot_check="none")
    base = crawl_env(sb, tmp_path / "backup", TZCRAWL_CHROMIUM="/bin/true")

    refused = doctor({**base, "SERVICE_COOKIE": "__Secure-better-auth.session_token=not-a-session"})
    assert refused.returncode == 1 and "FAIL" in line(refused, "session") and "log in again" in refused.stdout

    sb.set_knobs(bot_check="cloudflare")
    blocked = doctor(base)
    assert blocked.returncode == 1 and "bot protection" in line(blocked, "session"), blocked.stdout
    sb.set_knobs(bot_check="none")

    unwritable = doctor({**base, "BACKUP_DIR": "/proc/tzcrawl-backup"})
    assert unwritable.returncode == 1 and "FAIL" in line(unwritable, "backup folder"), unwritable.stdout
    assert "cannot be created or written" in unwritable.stdout

    no_browser = doctor({**base, "TZCRAWL_CHROMIUM": str(tmp_path / "no-chromium")})
    assert no_browser.returncode == 1 and "FAIL" in line(no_browser, "chromium"), no_browser.stdout
    assert "apt-get install chromium" in no_browser.stdout

    no_site = doctor({k: v for k, v in base.items() if k != "SERVICE_WEBSITE"})
    assert no_site.returncode == 1 and "FAIL" in line(no_site, "service") and "not checked" in line(no_site, "session")
