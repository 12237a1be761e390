"""Real crawls against today's service (the sandbox's default: Better Auth over HTTPS): the cookie forms
users paste, Auth0 chunks and rotation over long runs, the cookie file kept up to date, bot protection
told apart from a lapsed session, and certificates verified before any cookie leaves."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from crawlhelp import assert_matches_sandbox, crawl, crawl_env, data_files
from tzcrawl.session.forms import BETTER_AUTH
from tzcrawl.session.jar import load_jar, save_cookie_text

TESTS = Path(__file__).resolve().parent


def outcome(result) -> dict:
    line = [l for l in result.stderr.splitlines() if "tzcrawl outcome: " in l][-1]
    return json.loads(line.split("tzcrawl outcome: ", 1)[1])


def with_cookie_file(sb, backup, text: str, **extra) -> tuple[dict, Path]:
    """The crawl's environment with the session in a cookie file (as `scrapy crawl login` leaves it)."""
    path = Path(backup).parent / "config" / "cookie.json"
    save_cookie_text(path, text, site=sb.base_url)
    env = crawl_env(sb, backup, **extra)
    env.pop("SERVICE_COOKIE")
    env["TZCRAWL_COOKIE_FILE"] = str(path)
    return env, path


# -- the forms users paste --------------------------------------------------------------------------

def test_a_bare_value_is_found_to_be_the_better_auth_cookie(sandbox, tmp_path):
    result = crawl(sandbox, "all_personalities", tmp_path / "b", cookie=sandbox.cookie)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"The bare session value is the {BETTER_AUTH} cookie" in result.stderr
    assert sandbox.stats()["routes"]["users_info"] == 1
    for p in sandbox.personalities:
        assert_matches_sandbox(sandbox, tmp_path / "b", p["username"])


def test_a_whole_cookie_header_keeps_session_and_clearance_and_sends_nothing_else(sandbox, tmp_path):
    header = (f"Cookie: _ga=GA1.2.3; ph_phc_abc_posthog=%7B%22d%22%7D; __Host-csrf=c5rf; {sandbox.cookie_header}; "
              f"cf_clearance=from-the-browser; theme=dark")
    result = crawl(sandbox, "all_personalities", tmp_path / "b", cookie=header)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "left out _ga, ph_phc_abc_posthog, __Host-csrf, theme (not the session)" in result.stderr
    assert "c5rf" not in result.stderr and sandbox.cookie not in result.stderr
    counts = sandbox.stats()["session"]
    assert counts["requests_with_other_cookies"] == 0, "analytics and CSRF cookies were sent"


def test_the_2025_appsession_form_still_works_over_http(sandbox_factory, tmp_path):
    sb = sandbox_factory(session="appsession", personalities=2)
    result = crawl(sb, "all_personalities", tmp_path / "b", cookie=f"appSession={sb.cookie}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sb.stats()["routes"]["users_me"] == 1 and sb.stats()["status"].get("404", 0) == 1  # users/info first


def test_the_secure_cookie_never_goes_over_plain_http(sandbox_factory, tmp_path):
    sb = sandbox_factory(tls=False, personalities=1)  # Better Auth's cookie, but an http:// site
    result = crawl(sb, "all_personalities", tmp_path / "b", cookie=sb.cookie_header)
    assert result.returncode == 2
    assert "only ever sent over HTTPS" in result.stderr and sb.stats()["requests"] == 0
    assert sb.stats()["session"]["secure_cookie_over_http"] == 0


# -- rotation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [{"session": "auth0", "chunks": 2},
                                  {"session": "better-auth", "rotate_every": 1, "rotate_values": True}])
def test_a_session_rotating_on_every_answer_lasts_a_long_run_and_the_next(sandbox_factory, tmp_path, mode):
    # ~560 API requests: memories 20 a page, messages 50 a batch; a superseded value lasts 3 requests only.
    sb = sandbox_factory(personalities=2, memories=3000, messages=12000, empty_last=False, voice_replies=0,
                         attachments=0, **mode)
    backup = tmp_path / "b"
    env, cookie_file = with_cookie_file(sb, backup, sb.cookie_header)
    first = crawl(sb, "all_personalities", backup, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sb.stats()["requests"] >= 500
    counts = sb.stats()["session"]
    assert counts["rotations"] >= 500 and counts["requests_with_superseded"] == 0
    assert stat.S_IMODE(cookie_file.stat().st_mode) == 0o600
    saved = load_jar(cookie_file)
    assert saved.header(True) != sb.cookie_header and saved.session_names() == sb.cookie_names
    for value in [sb.cookie, *saved.values()]:
        assert value not in first.stderr
        assert all(value not in text.decode() for text in data_files(backup).values())
    assert "'backup/session/rotations'" in first.stderr

    sb.add(sb.personalities[0]["username"], memories=3, messages=3)
    second = crawl(sb, "all_personalities", backup, env=env)  # opens with the file the first run kept
    assert second.returncode == 0, second.stderr[-3000:]
    for p in sb.personalities:
        assert_matches_sandbox(sb, backup, p["username"])


def test_a_renewed_service_cookie_value_is_said_to_be_stale(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, rotate_every=5, rotate_values=True)
    result = crawl(sb, "all_personalities", tmp_path / "b", cookie=sb.cookie_header)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SERVICE_COOKIE still holds the old value" in result.stderr


# -- bot protection ---------------------------------------------------------------------------------

def test_bot_protection_at_start_is_its_own_outcome_and_the_clearance_passes_it(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=30, messages=60)
    backup = tmp_path / "b"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    before = data_files(backup)
    sb.set_knobs(bot_check="cloudflare")
    sb.reset_stats()
    record = tmp_path / "notify.txt"
    env = crawl_env(sb, backup, TZCRAWL_EMAIL="owner@example.com", TZCRAWL_PASSWORD="sandbox-password",
                    TZCRAWL_NOTIFY=f"env > {record}")
    blocked = crawl(sb, "all_personalities", backup, env=env)
    assert blocked.returncode == 4, blocked.stderr[-3000:]
    summary = outcome(blocked)["summary"]
    assert summary.startswith("BLOCKED by the site's bot protection (Cloudflare's bot check (cf-mitigated: challenge")
    assert "cf_clearance" in summary and "USER_AGENT" in summary and "Log in again" not in blocked.stderr
    assert sb.stats()["requests"] == 1 and "login" not in sb.stats()["routes"], "no retries, no browser login"
    assert data_files(backup) == before, "nothing saved changed"
    notified = dict(l.split("=", 1) for l in record.read_text().splitlines() if "=" in l)
    assert notified["TZCRAWL_EXIT"] == "4" and notified["TZCRAWL_SUMMARY"].startswith("BLOCKED")

    clearance = sb.clearance()
    sb.add(sb.personalities[0]["username"], memories=2, messages=2)
    env = crawl_env(sb, backup, cookie=f"Cookie: {sb.cookie_header}; {clearance['cookie']}; _ga=1",
                    USER_AGENT=clearance["user_agent"])
    passed = crawl(sb, "all_personalities", backup, env=env)
    assert passed.returncode == 0, passed.stderr[-3000:]
    for p in sb.personalities:
        assert_matches_sandbox(sb, backup, p["username"])


def test_bot_protection_mid_run_blocks_what_is_not_done_and_keeps_what_is(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=3, memories=45, messages=120, empty_last=False)
    backup = tmp_path / "b"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    before = data_files(backup)
    for p in sb.personalities:
        sb.add(p["username"], memories=5, messages=5)
    sb.set_knobs(bot_check="datadome", bot_check_from=12)  # inside the second personality
    sb.reset_stats()
    result = crawl(sb, "all_personalities", backup)
    assert result.returncode == 4, result.stderr[-3000:]
    assert "DataDome's bot check" in outcome(result)["summary"]
    first, second, third = (p["username"] for p in sb.personalities)
    rows = {line.split()[0]: line for line in result.stderr.split("Backup summary")[1].splitlines()[2:4]}
    assert "BLOCKED" not in rows[first] and rows[second].count("BLOCKED") >= 1
    assert sb.stats()["bot_check_answers"] == 1, "one answer from the bot check, then the crawl stopped"
    after = data_files(backup)
    assert_matches_sandbox(sb, backup, first)  # done before the check came: complete
    assert {k: v for k, v in after.items() if third in k} == {k: v for k, v in before.items() if third in k}
    for rel, content in before.items():  # nothing lost anywhere; what the second had is still there
        assert rel in after and (len(after[rel]) >= len(content))


def test_scrapyd_status_and_verify_online_say_blocked(sandbox_factory, tmp_path):
    from crawlhelp import REPO
    import subprocess
    import sys

    sb = sandbox_factory(personalities=1, memories=5, messages=5)
    backup = tmp_path / "b"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    sb.set_knobs(bot_check="cloudflare")
    result = subprocess.run([sys.executable, "-m", "scrapy", "verify", "-a", "online=1"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=crawl_env(sb, backup))
    assert result.returncode == 1 and "stopped by the site's bot protection" in result.stdout


# -- certificates -----------------------------------------------------------------------------------

def test_an_untrusted_certificate_stops_the_crawl_before_any_request(sandbox, tmp_path):
    env = crawl_env(sandbox, tmp_path / "b")
    env.pop("TZCRAWL_CA_FILE")
    result = crawl(sandbox, "all_personalities", tmp_path / "b", env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [l for l in result.stderr.splitlines() if " ERROR: " in l]
    assert len(errors) == 1 and f"127.0.0.1:{sandbox.port}" in errors[0] and "certificate verify failed" in errors[0]
    assert "TZCRAWL_CA_FILE" in errors[0]
    assert sandbox.stats()["requests"] == 0, "the session cookie reached a server nobody vouched for"
    assert not (tmp_path / "b").exists() or data_files(tmp_path / "b") == {}


def test_ssl_cert_file_is_honoured_too(sandbox, tmp_path):
    env = crawl_env(sandbox, tmp_path / "b", SSL_CERT_FILE=sandbox.ca_file)
    env.pop("TZCRAWL_CA_FILE")
    result = crawl(sandbox, "all_personalities", tmp_path / "b", env=env)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("content, message", [("not a certificate", "holds no PEM certificate"),
                                              (None, "cannot be read")])
def test_a_bad_ca_file_is_one_line(sandbox, tmp_path, content, message):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    env = crawl_env(sandbox, tmp_path / "b", TZCRAWL_CA_FILE=str(path))
    result = crawl(sandbox, "all_personalities", tmp_path / "b", env=env)
    assert result.returncode == 2 and result.stderr.strip().startswith("tzcrawl: TZCRAWL_CA_FILE=")
    assert message in result.stderr and sandbox.stats()["requests"] == 0
