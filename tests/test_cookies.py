"""The forms users paste the cookie in, its log-safe form, and the 0600 cookie file (tzcrawl.cookies)."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from tzcrawl.cookies import (COOKIE_NAME, CookieError, StoredCookie, default_cookie_file, load_cookie_file,
                             parse_cookie, redact, save_cookie_file)

VALUE = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..Zk9x_Qw-3hT.abcDEF123"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- parse_cookie -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    VALUE,
    f"  {VALUE}\n",
    f"appSession={VALUE}",
    f"appSession = {VALUE} ",
    f"appSession={VALUE};",
    f'"{VALUE}"',
    f'appSession="{VALUE}"',
    f"Cookie: _ga=GA1.2.345; appSession={VALUE}; theme=dark",
    f"cookie:appSession={VALUE}",
    f"COOKIE: theme=dark;appSession={VALUE}",
    f"theme=dark; appSession=old; appSession={VALUE}",  # the last one wins, as browsers send it
    f"appSessionX=nope; appSession={VALUE}; xappSession=nope",
    f"'{VALUE}'",                                           # single quotes, as pasted into a shell
    f"'appSession={VALUE}'",
    f"Set-Cookie: appSession={VALUE}; Path=/api; Expires=Wed, 21 Oct 2026 07:28:00 GMT; HttpOnly; Secure",
    f"set-cookie:appSession={VALUE}; SameSite=Lax",
])
def test_parse_cookie_accepts_the_forms_users_paste(text):
    assert parse_cookie(text) == VALUE


def test_parse_cookie_raw_value_with_base64_padding():
    # '=' is a legal cookie-octet; a raw value ending in base64 padding is still a raw value
    assert parse_cookie("c2Vzc2lvbi1kYXRh==") == "c2Vzc2lvbi1kYXRh=="
    assert parse_cookie("appSession=c2Vzc2lvbi1kYXRh==") == "c2Vzc2lvbi1kYXRh=="


@pytest.mark.parametrize("text", ["", "   ", "appSession=", "appSession=;theme=dark", '""', "Cookie:", None])
def test_parse_cookie_empty(text):
    with pytest.raises(CookieError, match=f"the {COOKIE_NAME} cookie is empty"):
        parse_cookie(text)


@pytest.mark.parametrize("text", ["session=abc", "Cookie: _ga=1; theme=dark", "appsession=abc", "appSessionX=abc"])
def test_parse_cookie_without_an_appsession_part(text):
    with pytest.raises(CookieError) as info:
        parse_cookie(text)
    message = str(info.value)
    assert "no appSession=... part" in message and "copy the appSession cookie's value" in message


@pytest.mark.parametrize("text", ["abc def", "appSession=abc def", "ab\tc", "café", 'ab"c', "a,b", "a\\b",
                                  '"abc', "abc\x00"])
def test_parse_cookie_rejects_characters_a_cookie_cannot_have(text):
    with pytest.raises(CookieError, match="spaces or characters a cookie cannot have; copy its value only"):
        parse_cookie(text)


def test_cookie_error_is_a_value_error():
    assert issubclass(CookieError, ValueError)


# -- redact -----------------------------------------------------------------------------------------

def test_redact_shows_a_prefix_and_the_length():
    assert redact(VALUE) == f"{VALUE[:6]}…({len(VALUE)} chars)"
    assert redact(VALUE, keep=3) == f"{VALUE[:3]}…({len(VALUE)} chars)"
    assert redact(None) == "<none>" and redact("") == "<none>"


def test_redact_never_contains_the_whole_value():
    values = [("Zq9" * 20)[:length] for length in range(1, 40)]
    leaked = [value for value in values if value in redact(value)]
    assert leaked == []


# -- the cookie file --------------------------------------------------------------------------------

def test_save_writes_0600_in_a_new_0700_directory(tmp_path):
    path = tmp_path / "conf" / "tzcrawl" / "cookie.json"
    returned = save_cookie_file(path, f"Cookie: a=b; appSession={VALUE}", expires="2030-01-01T00:00:00Z",
                                site="https://service.example.com")
    assert returned == path
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    record = json.loads(path.read_text())
    assert record["appSession"] == VALUE  # the value only, not the pasted header
    assert record["expires"] == "2030-01-01T00:00:00Z" and record["site"] == "https://service.example.com"
    assert record["saved_at"].endswith("+00:00")
    assert [p.name for p in path.parent.iterdir()] == ["cookie.json"]  # no temp file left behind


def test_save_leaves_an_existing_directory_alone_and_replaces_the_file(tmp_path):
    # The cookie file may sit in the user's home: never chmod a directory we did not create.
    folder = tmp_path / "home"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    path = folder / "cookie.json"
    save_cookie_file(path, "first-value")
    save_cookie_file(path, "second-value")
    assert mode(folder) == 0o755 and mode(path) == 0o600
    assert load_cookie_file(path).value == "second-value"
    created = folder / "new" / "deeper" / "cookie.json"
    save_cookie_file(created, "third-value")
    assert mode(folder / "new") == 0o700 and mode(folder / "new" / "deeper") == 0o700


def test_save_of_a_bad_cookie_keeps_the_old_file(tmp_path):
    path = tmp_path / "cookie.json"
    save_cookie_file(path, VALUE)
    before = path.read_bytes()
    with pytest.raises(CookieError):
        save_cookie_file(path, "not a cookie")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cookie.json"]


def test_load_round_trip(tmp_path):
    path = tmp_path / "cookie.json"
    save_cookie_file(path, VALUE, expires="later", site="https://s.example")
    stored = load_cookie_file(path)
    assert isinstance(stored, StoredCookie)
    assert (stored.value, stored.expires, stored.site) == (VALUE, "later", "https://s.example")
    assert stored.saved_at is not None


@pytest.mark.parametrize("text", [VALUE, f"{VALUE}\n", f"appSession={VALUE}\n",
                                  f"Cookie: theme=dark; appSession={VALUE}\n"])
def test_load_a_hand_written_file(tmp_path, text):
    path = tmp_path / "cookie.txt"
    path.write_text(text)
    path.chmod(0o600)
    assert load_cookie_file(path) == StoredCookie(VALUE)


@pytest.mark.parametrize("text, match", [
    ('{"site": "x"}', "cookie is empty"),
    ('{"appSession": ""}', "cookie is empty"),
    ("", "cookie is empty"),
    ("two words", "characters a cookie cannot have"),
    ('{"appSession": "a b"}', "characters a cookie cannot have"),
])
def test_load_a_bad_file(tmp_path, text, match):
    path = tmp_path / "cookie.json"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(CookieError, match=match):
        load_cookie_file(path)


def test_load_a_missing_file_names_it(tmp_path):
    path = tmp_path / "nowhere" / "cookie.json"
    with pytest.raises(CookieError, match="cannot read the cookie file") as info:
        load_cookie_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("file_mode", [0o640, 0o604, 0o660, 0o644])
def test_load_warns_about_a_file_others_can_read_without_logging_the_cookie(tmp_path, caplog, file_mode):
    path = tmp_path / "cookie.json"
    save_cookie_file(path, VALUE)
    path.chmod(file_mode)
    with caplog.at_level(logging.WARNING, logger="tzcrawl.cookies"):
        assert load_cookie_file(path).value == VALUE
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "tzcrawl.cookies"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(path) in message and "chmod 600" in message and f"{file_mode:o}" in message
    assert VALUE not in caplog.text


def test_load_is_quiet_about_a_private_file(tmp_path, caplog):
    path = tmp_path / "cookie.json"
    save_cookie_file(path, VALUE)
    with caplog.at_level(logging.DEBUG, logger="tzcrawl.cookies"):
        load_cookie_file(path)
    assert [r for r in caplog.records if r.name == "tzcrawl.cookies"] == []


def test_default_cookie_file_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_cookie_file() == tmp_path / "xdg" / "tzcrawl" / "cookie.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cookie_file() == tmp_path / "home" / ".config" / "tzcrawl" / "cookie.json"
