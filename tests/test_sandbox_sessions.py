"""The sandbox's session modes (Better Auth over HTTPS by default, Auth0 chunks, the 2025 appSession),
its bot check and the counters tests read."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

from tzcrawl.sandbox.app import CLEARANCE_USER_AGENT
from tzcrawl.sandbox.client import call
from tzcrawl.session.forms import BETTER_AUTH


def get(sb, path: str, cookie: str | None = None, user_agent: str = "test", context=None):
    headers = {"User-Agent": user_agent, **({"Cookie": cookie} if cookie else {})}
    request = urllib.request.Request(sb.base_url + path, headers=headers)
    context = context or (ssl.create_default_context(cafile=sb.ca_file) if sb.ca_file else None)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers, answer.read()


def test_the_default_is_better_auth_over_https_with_its_own_ca(sandbox):
    assert sandbox.base_url.startswith("https://127.0.0.1:") and sandbox.ca_file
    assert sandbox.cookie_header == f"{BETTER_AUTH}={sandbox.cookie}"
    status, _, body = get(sandbox, "/api/users/info", sandbox.cookie_header)
    assert status == 200 and b'"email"' in body
    assert get(sandbox, "/api/users/me", sandbox.cookie_header)[0] == 404  # the 2025 path is gone
    assert get(sandbox, "/api/users/info", f"appSession={sandbox.cookie}")[0] == 401
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(sandbox, "/api/users/info", sandbox.cookie_header, context=ssl.create_default_context())


def test_better_auth_renews_now_and_then(sandbox_factory):
    sb = sandbox_factory(personalities=1, rotate_every=3)
    cookies = [get(sb, "/api/users/info", sb.cookie_header)[1].get("Set-Cookie") for _ in range(6)]
    assert [c is not None for c in cookies] == [False, False, True, False, False, True]
    assert cookies[2].startswith(f"{BETTER_AUTH}={sb.cookie};") and "Secure" in cookies[2]
    assert sb.stats()["session"]["renewals"] == 2


def test_a_rotated_value_is_superseded_after_a_grace(sandbox_factory):
    sb = sandbox_factory(personalities=1, rotate_every=1, rotate_values=True, superseded_grace=2)
    first = get(sb, "/api/users/info", sb.cookie_header)[1]["Set-Cookie"]
    new = first.split(";")[0]
    assert new != sb.cookie_header
    assert [get(sb, "/api/users/info", sb.cookie_header)[0] for _ in range(3)] == [200, 200, 401]
    assert get(sb, "/api/users/info", new)[0] == 200  # itself superseded by the two answers since, still in grace
    counts = sb.stats()["session"]
    assert counts["requests_with_superseded"] == 3 and counts["refused_superseded"] == 1


def test_auth0_chunks_rotate_on_every_answer(sandbox_factory):
    sb = sandbox_factory(personalities=1, session="auth0", chunks=3)
    assert sb.cookie_names == ["appSession.0", "appSession.1", "appSession.2"]
    assert get(sb, "/api/users/info", "appSession.0=" + sb.cookie[:10])[0] == 401  # one part is not the session
    _, headers, _ = get(sb, "/api/users/info", sb.cookie_header)
    lines = headers.get_all("Set-Cookie")
    assert [line.split("=")[0] for line in lines] == sb.cookie_names
    assert "; ".join(line.split(";")[0] for line in lines) != sb.cookie_header


def test_the_2025_session_is_plain_http_with_users_me(sandbox_factory):
    sb = sandbox_factory(personalities=1, session="appsession")
    assert sb.base_url.startswith("http://") and sb.ca_file is None
    assert call(sb.base_url, "/api/users/me", sb.cookie).status == 200
    assert call(sb.base_url, "/api/users/info", sb.cookie).status == 404


def test_counters_of_stray_and_insecure_cookies(sandbox_factory):
    sb = sandbox_factory(personalities=1, session="better-auth", tls=False)
    assert sb.base_url.startswith("http://")
    get(sb, "/api/users/info", f"_ga=1; {BETTER_AUTH}={sb.cookie}")
    get(sb, "/api/users/info", f"cf_clearance=x; {BETTER_AUTH}={sb.cookie}")
    counts = sb.stats()["session"]
    assert counts["requests_with_other_cookies"] == 1 and counts["secure_cookie_over_http"] == 2


@pytest.mark.parametrize("kind, status, header", [("cloudflare", 403, "cf-mitigated"), ("datadome", 200, "x-datadome")])
def test_the_bot_check_and_the_clearance_that_passes_it(sandbox_factory, kind, status, header):
    sb = sandbox_factory(personalities=1, bot_check=kind, bot_check_from=2)
    assert get(sb, "/api/users/info", sb.cookie_header)[0] == 200  # the first request passes
    answer, headers, body = get(sb, "/api/users/info", sb.cookie_header)
    assert answer == status and headers.get(header) and body.lstrip().startswith(b"<")
    clearance = sb.clearance()
    assert clearance["user_agent"] == CLEARANCE_USER_AGENT
    with_clearance = f"{sb.cookie_header}; {clearance['cookie']}"
    assert get(sb, "/api/users/info", with_clearance, user_agent=clearance["user_agent"])[0] == 200
    assert get(sb, "/api/users/info", with_clearance, user_agent="another browser")[0] == status, "bound to the UA"
    assert get(sb, "/login")[0] == status  # the whole site is behind it
    assert sb.stats()["bot_check_answers"] == 3
