"""The session cookie's forms (pasted text, Set-Cookie lines), the jar, and the 0600 cookie file."""

from __future__ import annotations

import json
import logging
import os
import stat
import time

import pytest

from tzcrawl.session.forms import (BETTER_AUTH, CookieError, is_session, parse, parse_set_cookie,
                                   redact, secure_only)
from tzcrawl.session.jar import Cookie, Jar, default_cookie_file, load_jar, save_cookie_text, save_jar

VALUE = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..Zk9x_Qw-3hT.abcDEF123"
BA = BETTER_AUTH


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    (BA, True), ("appSession", True), ("appSession.0", True), ("appSession.12", True),
    ("appSession.x", False), ("appSessionX", False), ("appsession", False), ("session", False),
    (f"{BA}.1", True), ("_ga", False), ("cf_clearance", False),
])
def test_which_names_are_the_session(name, expected):
    assert is_session(name) is expected


def test_secure_prefixes_are_https_only():
    assert secure_only(BA) and secure_only("__Host-x") and not secure_only("appSession")


# -- pasted text ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, name", [
    (f"appSession={VALUE}", "appSession"),
    (f"appSession = {VALUE} ", "appSession"),
    (f'appSession="{VALUE}"', "appSession"),
    (f"'appSession={VALUE}'", "appSession"),
    (f"Cookie: _ga=GA1.2.345; appSession={VALUE}; theme=dark", "appSession"),
    (f"theme=dark; appSession=old; appSession={VALUE}", "appSession"),  # the last one wins, as browsers send it
    (f"Set-Cookie: appSession={VALUE}; Path=/api; Expires=Wed, 21 Oct 2026 07:28:00 GMT; HttpOnly; Secure",
     "appSession"),
    (f"{BA}={VALUE}", BA),
    (f"Cookie: _ga=GA1; __Host-csrf=abc; {BA}={VALUE}; ph_phc_x=%7B%7D", BA),
    (f"set-cookie: {BA}={VALUE}; Path=/; HttpOnly; Secure; SameSite=Lax", BA),
    (f"{BA}={VALUE}; Path=/; HttpOnly; Secure", BA),  # a Set-Cookie line without its prefix
])
def test_pasted_forms_keep_the_session(text, name):
    pasted = parse(text)
    assert pasted.cookies[name] == VALUE and pasted.bare is None


def test_a_pasted_header_keeps_session_and_clearance_and_names_what_it_dropped():
    pasted = parse(f"Cookie: _ga=GA1.2; cf_clearance=CLEAR-1; {BA}={VALUE}; theme=dark; __Host-csrf=x; _ga=again")
    assert pasted.cookies == {"cf_clearance": "CLEAR-1", BA: VALUE}
    assert pasted.dropped == ("_ga", "theme", "__Host-csrf")


def test_auth0_chunks_are_kept_together():
    pasted = parse("Cookie: appSession.1=PART-B; a=1; appSession.0=PART-A")
    assert pasted.cookies == {"appSession.1": "PART-B", "appSession.0": "PART-A"}
    jar = Jar({n: Cookie(v) for n, v in pasted.cookies.items()})
    assert jar.header(secure=True) == "appSession.0=PART-A; appSession.1=PART-B"  # parts in order


@pytest.mark.parametrize("text", [VALUE, f"  {VALUE}\n", f'"{VALUE}"', f"'{VALUE}'", "c2Vzc2lvbi1kYXRh=="])
def test_a_bare_value_waits_for_its_name(text):
    pasted = parse(text)
    assert pasted.cookies == {} and pasted.bare == text.strip().strip("'\"")


@pytest.mark.parametrize("text", ["", "   ", '""', "Cookie:", None, "appSession=", "appSession=;theme=dark"])
def test_empty(text):
    with pytest.raises(CookieError, match="is empty"):
        parse(text)


@pytest.mark.parametrize("text", ["session=abc", "Cookie: _ga=1; theme=dark", "appsession=abc", "appSessionX=abc",
                                  "cf_clearance=only-a-clearance"])
def test_a_text_without_a_session_cookie_says_which_names_to_copy(text):
    with pytest.raises(CookieError) as info:
        parse(text)
    message = str(info.value)
    assert "no session cookie" in message and BA in message and "appSession" in message
    assert "abc" not in message and "only-a-clearance" not in message  # names, never values


@pytest.mark.parametrize("text", ["abc def", "appSession=abc def", "ab\tc", "café", 'ab"c', "a,b", "a\\b", "abc\x00"])
def test_characters_a_cookie_cannot_have(text):
    with pytest.raises(CookieError, match="spaces or characters a cookie cannot have"):
        parse(text)


def test_custom_known_names():
    assert parse("sid=abc; appSession=x", known=("sid",), keep=()).cookies == {"sid": "abc"}


# -- Set-Cookie lines -------------------------------------------------------------------------------

def test_set_cookie_lines():
    now = 1_800_000_000.0
    update = parse_set_cookie(f"{BA}={VALUE}; Path=/; HttpOnly; Secure; Max-Age=604800", now)
    assert (update.name, update.value, update.deleted) == (BA, VALUE, False)
    assert update.expires == "2027-01-22T08:00:00Z"
    gone = parse_set_cookie("appSession.2=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT", now)
    assert gone.deleted and gone.name == "appSession.2"
    assert parse_set_cookie("appSession=x; Max-Age=0", now).deleted
    assert parse_set_cookie("no equals sign", now) is None
    assert parse_set_cookie("a b=c", now) is None


# -- the jar ----------------------------------------------------------------------------------------

def test_the_secure_cookie_never_goes_over_http():
    jar = Jar({BA: Cookie("ba"), "appSession": Cookie("as"), "cf_clearance": Cookie("cf")})
    assert jar.header(secure=True) == f"{BA}=ba; appSession=as; cf_clearance=cf"
    assert jar.header(secure=False) == "appSession=as; cf_clearance=cf"
    assert Jar({BA: Cookie("ba")}).header(secure=False) is None


def test_a_bare_value_is_tried_under_each_name_that_may_travel():
    jar = Jar(bare="v")
    assert jar.candidates(secure=True) == [BA, "appSession"]
    assert jar.candidates(secure=False) == ["appSession"]
    assert jar.header(True, bare_as=BA) == f"{BA}=v"
    jar.name_bare("appSession")
    assert jar.bare is None and jar.header(True) == "appSession=v" and jar.candidates(True) == [None]


def test_rotation_updates_deletes_and_ignores_other_cookies():
    jar = Jar({"appSession.0": Cookie("a0"), "appSession.1": Cookie("a1"), "appSession.2": Cookie("a2")})
    updates = [parse_set_cookie(line, 100.0) for line in (
        "appSession.0=b0; Path=/", "appSession.1=b1; Path=/", "appSession.2=; Max-Age=0", "_ga=x; Path=/",
        "cf_clearance=c2; Path=/")]
    assert jar.merge(updates, 100.0) == ["appSession.0", "appSession.1", "appSession.2", "cf_clearance"]
    assert jar.header(True) == "appSession.0=b0; appSession.1=b1; cf_clearance=c2"
    assert jar.merge(updates[:2], 101.0) == []  # the same values again: nothing changed
    assert jar.cookies["appSession.0"].received == 100.0  # when each value came: the newest wins in the file


def test_describe_never_holds_a_whole_value():
    jar = Jar({BA: Cookie(VALUE), "cf_clearance": Cookie("CLEARANCE-VALUE-1234")})
    text = jar.describe()
    assert BA in text and VALUE not in text and "CLEARANCE-VALUE-1234" not in text
    assert VALUE not in Jar(bare=VALUE).describe()


def test_redact():
    assert redact(VALUE) == f"{VALUE[:6]}…({len(VALUE)} chars)"
    assert redact(None) == "<none>"
    assert [v for v in (("Zq9" * 20)[:n] for n in range(1, 40)) if v in redact(v)] == []


# -- the cookie file --------------------------------------------------------------------------------

def test_save_writes_0600_in_a_new_0700_directory(tmp_path):
    path = tmp_path / "conf" / "tzcrawl" / "cookie.json"
    assert save_cookie_text(path, f"Cookie: a=b; {BA}={VALUE}", site="https://service.example.com") == path
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    record = json.loads(path.read_text())
    assert record["cookies"][BA]["value"] == VALUE and "a" not in record["cookies"]
    assert record["site"] == "https://service.example.com"
    assert sorted(p.name for p in path.parent.iterdir()) == ["cookie.json", "cookie.json.lock"]
    assert mode(path.with_name("cookie.json.lock")) == 0o600


def test_save_leaves_an_existing_directory_alone(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    save_cookie_text(folder / "cookie.json", "first-value")
    save_cookie_text(folder / "cookie.json", "second-value")
    assert mode(folder) == 0o755 and load_jar(folder / "cookie.json").bare == "second-value"


def test_save_of_a_bad_cookie_keeps_the_old_file(tmp_path):
    path = tmp_path / "cookie.json"
    save_cookie_text(path, VALUE)
    before = path.read_bytes()
    with pytest.raises(CookieError):
        save_cookie_text(path, "not a cookie")
    assert path.read_bytes() == before


def test_round_trip(tmp_path):
    path = tmp_path / "cookie.json"
    jar = Jar({BA: Cookie(VALUE, 5.0, "2030-01-01T00:00:00Z"), "cf_clearance": Cookie("cf", 5.0)}, site="https://s")
    save_jar(path, jar)
    back = load_jar(path)
    assert back.cookies == jar.cookies and back.site == "https://s" and back.expires() == "2030-01-01T00:00:00Z"


@pytest.mark.parametrize("text, expected", [
    (json.dumps({"appSession": VALUE, "saved_at": "x", "expires": None, "site": "http://old"}), {"appSession": VALUE}),
    (f"appSession={VALUE}\n", {"appSession": VALUE}),
    (f"Cookie: theme=dark; {BA}={VALUE}\n", {BA: VALUE}),
])
def test_old_and_hand_written_files_still_load(tmp_path, text, expected):
    path = tmp_path / "cookie.json"
    path.write_text(text)
    path.chmod(0o600)
    assert {n: c.value for n, c in load_jar(path).cookies.items()} == expected


def test_a_hand_written_bare_value_loads_as_bare(tmp_path):
    path = tmp_path / "cookie.txt"
    path.write_text(f"{VALUE}\n")
    assert load_jar(path).bare == VALUE


@pytest.mark.parametrize("text, match", [
    ('{"site": "x"}', "is empty"),
    ('{"appSession": ""}', "is empty"),
    ("", "is empty"),
    ("two words", "characters a cookie cannot have"),
    ('{"format": "tzcrawl-cookie-jar/2", "cookies": {}}', "no session cookie"),
])
def test_a_bad_file(tmp_path, text, match):
    path = tmp_path / "cookie.json"
    path.write_text(text)
    with pytest.raises(CookieError, match=match):
        load_jar(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CookieError, match="cannot read the cookie file") as info:
        load_jar(tmp_path / "nowhere" / "cookie.json")
    assert "nowhere" in str(info.value)


def test_the_newest_value_wins_when_two_runs_write(tmp_path):
    path = tmp_path / "cookie.json"
    mine = Jar({BA: Cookie("mine-older", 100.0)})
    theirs = Jar({BA: Cookie("theirs-newer", 200.0)})
    save_jar(path, theirs)
    save_jar(path, mine)  # written later, but received earlier
    assert load_jar(path).cookies[BA].value == "theirs-newer"
    save_jar(path, Jar({BA: Cookie("newest", 300.0)}))
    assert load_jar(path).cookies[BA].value == "newest"


@pytest.mark.parametrize("file_mode", [0o640, 0o604, 0o644])
def test_a_file_others_can_read_is_warned_about_without_the_cookie(tmp_path, caplog, file_mode):
    path = tmp_path / "cookie.json"
    save_cookie_text(path, VALUE)
    path.chmod(file_mode)
    with caplog.at_level(logging.WARNING, logger="tzcrawl.session.jar"):
        assert load_jar(path).bare == VALUE
    [warning] = [r for r in caplog.records if r.name == "tzcrawl.session.jar"]
    assert "chmod 600" in warning.getMessage() and f"{file_mode:o}" in warning.getMessage()
    assert VALUE not in caplog.text


def test_default_cookie_file_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_cookie_file() == tmp_path / "xdg" / "tzcrawl" / "cookie.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cookie_file() == tmp_path / "home" / ".config" / "tzcrawl" / "cookie.json"


def test_received_time_is_recorded(tmp_path):
    before = time.time()
    path = save_cookie_text(tmp_path / "c.json", f"{BA}={VALUE}")
    assert load_jar(path).cookies[BA].received >= before
