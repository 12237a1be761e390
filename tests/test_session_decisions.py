"""The session's pure decisions: what a current-user answer says, which answers are a bot check, which
connection failures are TLS verification, which browser cookies are a session to prove."""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from scrapy.exceptions import DownloadFailedError
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from tzcrawl.outcome import EXIT_AUTH, EXIT_BLOCKED, EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK, exit_status
from tzcrawl.session.botcheck import bot_check, remedy
from tzcrawl.session.browser import harvest
from tzcrawl.session.crawler import BLOCKED, MISSING, OK, REFUSED, UNREACHABLE, judge
from tzcrawl.session.forms import BETTER_AUTH
from tzcrawl.session.tls import spki_hashes, tls_problem
from tzcrawl.walk import BLOCKED as BLOCKED_KIND, Walk, after_error
from tzcrawl import registry

URL = "https://s.example/api/users/info"
JSON = "application/json"
LOGIN_PAGE = b"<html><form><input type='email'><input type='password'></form></html>"


@pytest.mark.parametrize("status, headers, kind, body, state", [
    (200, {}, JSON, b'{"id": "u1", "email": "a@b"}', OK),
    (200, {}, JSON, b'{"email": "a@b"}', OK),
    (200, {}, JSON, b'{"uuid": "x"}', OK),
    (200, {}, JSON, b'{"name": "nobody"}', REFUSED),
    (200, {}, JSON, b"[]", REFUSED),
    (401, {}, JSON, b"{}", REFUSED),
    (403, {}, JSON, b"{}", REFUSED),
    (302, {"Location": "/login"}, "", b"", REFUSED),
    (200, {}, "text/html", LOGIN_PAGE, REFUSED),
    (404, {}, JSON, b"{}", MISSING),
    (429, {}, JSON, b"{}", UNREACHABLE),
    (503, {}, JSON, b"{}", UNREACHABLE),
    (200, {}, JSON, b"{not json", UNREACHABLE),
    (403, {"cf-mitigated": "challenge"}, "text/html", b"<html>Just a moment</html>", BLOCKED),
    (200, {"x-datadome": "protected"}, "text/html", b"<html></html>", BLOCKED),
    (200, {}, "text/html", b"<html><p>Checking your browser</p></html>", BLOCKED),
    (401, {"x-px-block": "1"}, JSON, b"{}", BLOCKED),
])
def test_what_a_current_user_answer_says(status, headers, kind, body, state):
    assert judge(status, headers, kind, body, URL).state == state


def test_a_login_page_is_never_taken_for_a_bot_check():
    assert bot_check(200, {}, "text/html", LOGIN_PAGE) is None
    assert bot_check(403, {}, "text/html", b"<!doctype html><h1>Access denied</h1>") is not None
    assert bot_check(500, {}, "text/html", b"<html>oops</html>") is None  # a 5xx page is retried, not a bot check
    assert bot_check(200, {}, JSON, b'{"items": []}') is None


def test_the_remedy_names_the_clearance_and_the_user_agent():
    text = remedy("https://s.example")
    assert "https://s.example" in text and "cf_clearance" in text and "USER_AGENT" in text
    assert "log in" not in text.lower()


def failure_of(error: BaseException) -> BaseException:
    """As Scrapy 2.19 raises it: DownloadFailedError from Twisted's ResponseNeverReceived."""
    try:
        try:
            raise ResponseNeverReceived([Failure(error)])
        except ResponseNeverReceived as inner:
            raise DownloadFailedError(str(inner)) from inner
    except DownloadFailedError as outer:
        return outer


def test_tls_failures_are_told_from_other_failures():
    assert "certificate verify failed" in tls_problem(
        failure_of(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    from service_identity import VerificationError

    assert "not for this host" in tls_problem(failure_of(VerificationError(errors=["x"])))
    assert tls_problem(failure_of(ConnectionRefusedError())) is None
    assert tls_problem(TimeoutError()) is None


def test_spki_hashes_of_a_ca_file(tmp_path):
    from tzcrawl.sandbox.tls import make_certificates

    ca, _, _ = make_certificates(tmp_path)
    [digest] = spki_hashes(str(ca))
    assert len(digest) == 44 and digest.endswith("=")  # base64 of a sha256


def test_harvest_proves_every_combination_of_a_name_set_twice():
    cookies = [{"name": "appSession", "value": "anonymous"}, {"name": "_ga", "value": "x"},
               {"name": "appSession", "value": "real", "expires": 1900000000}]
    jars = harvest(cookies)
    assert [j.header(True) for j in jars] == ["appSession=anonymous", "appSession=real"]
    assert jars[1].expires() == "2030-03-17T17:46:40Z"
    assert harvest([{"name": "_ga", "value": "x"}, {"name": "cf_clearance", "value": "c"}]) == []
    [chunks] = harvest([{"name": "appSession.1", "value": "b"}, {"name": "appSession.0", "value": "a"},
                        {"name": BETTER_AUTH, "value": ""}])
    assert chunks.header(True) == "appSession.0=a; appSession.1=b"


def test_a_bot_check_blocks_the_current_resource_and_every_one_after_it():
    walk = Walk({"username": "p", "id": "1"}, registry.REGISTRY)
    walk.index = 2
    ending = after_error(walk, BLOCKED_KIND, "Cloudflare's bot check")
    assert ending.stop_crawl and ending.personality_over
    assert {d.outcome.status for d in ending.done} == {"blocked"}
    assert [d.resource for d in ending.done] == [r.name for r in registry.REGISTRY[2:]]


@pytest.mark.parametrize("flags, code", [
    ({}, EXIT_OK), ({"auth_failed": True}, EXIT_AUTH), ({"blocked": True}, EXIT_BLOCKED),
    ({"untrusted": True}, EXIT_CONFIG), ({"blocked": True, "auth_failed": True}, EXIT_BLOCKED),
])
def test_exit_status(flags, code):
    assert exit_status("finished", requested=2, complete=2, failed=0, errors=0, **flags) == code
    assert exit_status("finished", requested=2, complete=1, failed=1, errors=0) == EXIT_INCOMPLETE


def test_a_rotating_session_rewrites_the_cookie_file_at_most_once_a_second(tmp_path, monkeypatch):
    import scrapy
    from scrapy.utils.test import get_crawler

    from tzcrawl.session.crawler import Session
    from tzcrawl.session.jar import load_jar, save_cookie_text

    monkeypatch.delenv("SERVICE_COOKIE", raising=False)
    path = save_cookie_text(tmp_path / "cookie.json", f"{BETTER_AUTH}=first")
    crawler = get_crawler(scrapy.Spider, {"SERVICE_WEBSITE": "https://s.example", "TZCRAWL_COOKIE_FILE": str(path)})
    session = Session.of(crawler)
    assert Session.of(crawler) is session  # one per crawl
    session.rotated([f"{BETTER_AUTH}=second; Secure; HttpOnly".encode()])
    assert load_jar(path).cookies[BETTER_AUTH].value == "second"  # the first renewal is written at once
    session.rotated([f"{BETTER_AUTH}=third; Secure; HttpOnly".encode()])
    assert load_jar(path).cookies[BETTER_AUTH].value == "second", "a second write within the second waits"
    assert session._timer is not None and session._timer.active()
    session.rotated([b"_ga=tracking; Path=/"])  # not the session: nothing to write
    session.close()  # the crawl's end writes what waited
    assert load_jar(path).cookies[BETTER_AUTH].value == "third" and session._timer is None
    assert crawler.stats.get_value("backup/session/rotations") == 2
