"""Service and backup configuration: -s settings over the environment, one-line errors (tzcrawl.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scrapy.settings import Settings

from tzcrawl.config import (BackupConfig, ConfigError, ServiceConfig, check_transport, cookie as cookie_source,
                            cookie_file, website)
from tzcrawl.session.forms import BETTER_AUTH
from tzcrawl.session.jar import Jar, save_cookie_text as save_cookie_file


def cookie(settings) -> tuple[str, str]:
    """(the session's one value, where it came from)."""
    found = cookie_source(settings)
    values = [c.value for c in found.jar.cookies.values()] or [found.jar.bare]
    return values[0], found.source

VALUE = "sess-VALUE_0123456789.abcdefghijklmnop"
NAMES = ("SERVICE_WEBSITE", "SERVICE_COOKIE", "TZCRAWL_COOKIE_FILE", "PERSONALITY_JARGON_TERM",
         "PROFILE_INFO_PRIVATE_PATH", "BACKUP_DIR", "BACKUP_PERSONALITY_DELAY", "BACKUP_LOCK_TIMEOUT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    # never look at the real user's cookie file
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def S(**values) -> Settings:
    return Settings(values)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# -- SERVICE_WEBSITE --------------------------------------------------------------------------------

def test_missing_website_names_the_setting():
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_settings(S())
    message = one_line(info)
    assert message.startswith("SERVICE_WEBSITE is not set")
    assert "export SERVICE_WEBSITE=" in message and "-s SERVICE_WEBSITE=" in message


def test_empty_website_setting_is_missing():
    with pytest.raises(ConfigError, match="SERVICE_WEBSITE is not set"):
        website(S(SERVICE_WEBSITE=""))


@pytest.mark.parametrize("raw", ["service.example.com", "ftp://service.example.com", "http://", "https:///api",
                                 "javascript:alert(1)", "file:///etc/passwd", "//service.example.com"])
def test_website_must_be_an_http_url(raw):
    with pytest.raises(ConfigError) as info:
        website(S(SERVICE_WEBSITE=raw))
    message = one_line(info)
    assert message.startswith("SERVICE_WEBSITE must be an http(s) URL") and repr(raw) in message


@pytest.mark.parametrize("raw, expected", [
    ("https://service.example.com", "https://service.example.com"),
    ("https://service.example.com/", "https://service.example.com"),
    ("  https://service.example.com//  ", "https://service.example.com"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("https://example.com/tenant/", "https://example.com/tenant"),
    # the API's own address pasted by mistake: the site is meant (paths add /api themselves)
    ("https://service.example.com/api", "https://service.example.com"),
    ("https://service.example.com/API/", "https://service.example.com"),
    ("https://example.com/tenant/api", "https://example.com/tenant"),
    ("https://example.com/apis", "https://example.com/apis"),
])
def test_website_trailing_slash_trimmed(raw, expected):
    assert website(S(SERVICE_WEBSITE=raw)) == expected


def test_setting_beats_the_environment(monkeypatch):
    monkeypatch.setenv("SERVICE_WEBSITE", "https://env.example.com")
    assert website(S(SERVICE_WEBSITE="https://cli.example.com/")) == "https://cli.example.com"
    assert website(S()) == "https://env.example.com"
    assert website(None) == "https://env.example.com"
    assert website(S(SERVICE_WEBSITE="")) == "https://env.example.com"  # an empty -s falls back


# -- jargon and profile path ------------------------------------------------------------------------

def test_service_config_defaults(monkeypatch):
    monkeypatch.setenv("SERVICE_WEBSITE", "https://service.example.com/")
    assert ServiceConfig.from_settings(S()) == ServiceConfig("https://service.example.com", "personalities",
                                                             "personalities/username")


def test_profile_path_defaults_to_the_jargon_word():
    config = ServiceConfig.from_settings(S(SERVICE_WEBSITE="https://s.example", PERSONALITY_JARGON_TERM="/shapes/"))
    assert (config.jargon, config.profile_path) == ("shapes", "shapes/username")


def test_jargon_and_profile_path_from_environment_and_settings(monkeypatch):
    monkeypatch.setenv("PERSONALITY_JARGON_TERM", "agents")
    monkeypatch.setenv("PROFILE_INFO_PRIVATE_PATH", "agents/private")
    config = ServiceConfig.from_settings(S(SERVICE_WEBSITE="https://s.example"))
    assert (config.jargon, config.profile_path) == ("agents", "agents/private")
    config = ServiceConfig.from_settings(S(SERVICE_WEBSITE="https://s.example", PERSONALITY_JARGON_TERM="shapes",
                                           PROFILE_INFO_PRIVATE_PATH="/shapes/by-name/"))
    assert (config.jargon, config.profile_path) == ("shapes", "shapes/by-name")


@pytest.mark.parametrize("jargon", ["a/b", "../x", "shape s", "shapes?x=1", "名前", "..", "/"])
def test_bad_jargon_names_the_setting(jargon):
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_settings(S(SERVICE_WEBSITE="https://s.example", PERSONALITY_JARGON_TERM=jargon))
    assert one_line(info).startswith("PERSONALITY_JARGON_TERM must be one path word")


@pytest.mark.parametrize("path", ["a//b", "a b/c", "a?x=1", "a#b", "a/名前", "a\\b"])
def test_bad_profile_path_names_the_setting(path):
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_settings(S(SERVICE_WEBSITE="https://s.example", PROFILE_INFO_PRIVATE_PATH=path))
    assert one_line(info).startswith("PROFILE_INFO_PRIVATE_PATH must be a path like 'personalities/username'")


def accepted(make, values) -> list:
    """The values ``make(value)`` accepts instead of raising ConfigError."""
    passed = []
    for value in values:
        try:
            make(value)
        except ConfigError:
            continue
        passed.append(value)
    return passed


def test_profile_path_cannot_climb_out_of_the_api():
    # a dot segment takes the profile look-up outside /api/ once the URL is normalized
    paths = ["..", "../users", "personalities/../users/me", "./username", "a/."]
    assert accepted(lambda path: ServiceConfig.from_settings(
        S(SERVICE_WEBSITE="https://s.example", PROFILE_INFO_PRIVATE_PATH=path)), paths) == []
    with pytest.raises(ConfigError, match="^PROFILE_INFO_PRIVATE_PATH"):
        ServiceConfig.from_settings(S(SERVICE_WEBSITE="https://s.example", PROFILE_INFO_PRIVATE_PATH="a/../b"))


# -- backup config ----------------------------------------------------------------------------------

def test_backup_config_defaults():
    assert BackupConfig.from_settings(S()) == BackupConfig(Path("data/personalities"), 2.0, 60.0)


def test_backup_config_values(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("BACKUP_PERSONALITY_DELAY", "5")
    config = BackupConfig.from_settings(S(BACKUP_DIR="~/backups", BACKUP_PERSONALITY_DELAY=0.5,
                                          BACKUP_LOCK_TIMEOUT="0"))
    assert config.backup_dir == tmp_path / "home" / "backups"
    assert (config.personality_delay, config.lock_timeout) == (0.5, 0.0)
    config = BackupConfig.from_settings(S())
    assert (config.backup_dir, config.personality_delay) == (tmp_path / "env", 5.0)


@pytest.mark.parametrize("name", ["BACKUP_PERSONALITY_DELAY", "BACKUP_LOCK_TIMEOUT"])
@pytest.mark.parametrize("raw", ["two", "1s", "[]"])
def test_backup_seconds_not_a_number(name, raw):
    with pytest.raises(ConfigError) as info:
        BackupConfig.from_settings(S(**{name: raw}))
    assert one_line(info) == f"{name} must be a number of seconds, not {raw!r}"


@pytest.mark.parametrize("name", ["BACKUP_PERSONALITY_DELAY", "BACKUP_LOCK_TIMEOUT"])
def test_backup_seconds_negative(name, monkeypatch):
    monkeypatch.setenv(name, "-1")
    with pytest.raises(ConfigError) as info:
        BackupConfig.from_settings(S())
    assert one_line(info) == f"{name} must be a finite, non-negative number of seconds (got '-1')"


def test_backup_seconds_must_be_finite():
    # NaN passes "< 0" and would reach asyncio.sleep; inf parks the bulk run forever
    raws = ["nan", "NaN", "inf", "-inf", "1e999"]
    for name in ("BACKUP_PERSONALITY_DELAY", "BACKUP_LOCK_TIMEOUT"):
        assert accepted(lambda raw: BackupConfig.from_settings(S(**{name: raw})), raws) == [], name
    with pytest.raises(ConfigError, match="^BACKUP_PERSONALITY_DELAY"):
        BackupConfig.from_settings(S(BACKUP_PERSONALITY_DELAY="nan"))


# -- cookie ---------------------------------------------------------------------------------------

def test_cookie_from_service_cookie_setting_and_environment(monkeypatch):
    assert cookie(S(SERVICE_COOKIE=VALUE)) == (VALUE, "SERVICE_COOKIE")
    monkeypatch.setenv("SERVICE_COOKIE", f"Cookie: theme=dark; appSession={VALUE}")
    assert cookie(S()) == (VALUE, "SERVICE_COOKIE")
    assert cookie(S(SERVICE_COOKIE="appSession=from-cli")) == ("from-cli", "SERVICE_COOKIE")


def test_bad_service_cookie_names_the_setting_without_echoing_it():
    secret = "secret part with spaces"
    with pytest.raises(ConfigError) as info:
        cookie(S(SERVICE_COOKIE=secret))
    message = one_line(info)
    assert message.startswith("SERVICE_COOKIE: the session cookie holds spaces")
    assert secret not in message and "secret" not in message


def test_cookie_from_the_cookie_file(tmp_path, monkeypatch):
    path = tmp_path / "c" / "cookie.json"
    save_cookie_file(path, VALUE)
    monkeypatch.setenv("TZCRAWL_COOKIE_FILE", str(path))
    assert cookie(S()) == (VALUE, str(path))
    assert cookie_file(S()) == path


def test_cookie_file_setting_beats_the_environment(tmp_path, monkeypatch):
    cli, env = tmp_path / "cli.json", tmp_path / "env.json"
    save_cookie_file(cli, "from-cli")
    save_cookie_file(env, "from-env")
    monkeypatch.setenv("TZCRAWL_COOKIE_FILE", str(env))
    assert cookie(S(TZCRAWL_COOKIE_FILE=str(cli))) == ("from-cli", str(cli))


def test_service_cookie_beats_the_cookie_file(tmp_path):
    path = tmp_path / "cookie.json"
    save_cookie_file(path, "from-file")
    assert cookie(S(SERVICE_COOKIE="from-env", TZCRAWL_COOKIE_FILE=str(path))) == ("from-env", "SERVICE_COOKIE")


def test_cookie_from_the_default_cookie_file(tmp_path):
    path = tmp_path / "xdg" / "tzcrawl" / "cookie.json"
    save_cookie_file(path, VALUE)
    assert cookie_file(S()) == path
    assert cookie(S()) == (VALUE, str(path))


@pytest.mark.parametrize("content", ['{"appSession": "two words"}', "", '{"expires": null}'])
def test_bad_cookie_file_names_the_setting(tmp_path, content):
    path = tmp_path / "cookie.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        cookie(S(TZCRAWL_COOKIE_FILE=str(path)))
    assert one_line(info).startswith("TZCRAWL_COOKIE_FILE: the ")


def test_cookie_file_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="^TZCRAWL_COOKIE_FILE: cannot read the cookie file"):
        cookie(S(TZCRAWL_COOKIE_FILE=str(tmp_path)))


def test_no_cookie_at_all_says_how_to_get_one(tmp_path):
    path = tmp_path / "missing" / "cookie.json"
    with pytest.raises(ConfigError) as info:
        cookie(S(TZCRAWL_COOKIE_FILE=str(path)))
    message = one_line(info)
    assert message.startswith("no session cookie")
    assert "export SERVICE_COOKIE=" in message and "`scrapy crawl login`" in message and str(path) in message


def test_no_cookie_names_the_default_file():
    with pytest.raises(ConfigError, match="scrapy crawl login") as info:
        cookie(S())
    assert str(Path(str(info.value).rsplit(" ", 1)[-1])).endswith("xdg/tzcrawl/cookie.json")


def test_the_jar_keeps_what_was_pasted_and_names_what_it_dropped():
    found = cookie_source(S(SERVICE_COOKIE=f"_ga=1; {BETTER_AUTH}={VALUE}; cf_clearance=cf; theme=dark"))
    assert {n: c.value for n, c in found.jar.cookies.items()} == {BETTER_AUTH: VALUE, "cf_clearance": "cf"}
    assert found.dropped == ("_ga", "theme") and found.file is None


def test_the_cookie_file_is_the_one_a_rotation_rewrites(tmp_path):
    path = save_cookie_file(tmp_path / "c.json", f"{BETTER_AUTH}={VALUE}")
    assert cookie_source(S(TZCRAWL_COOKIE_FILE=str(path))).file == path


def test_session_cookie_names_are_a_setting():
    found = cookie_source(S(SERVICE_COOKIE=f"sid={VALUE}; appSession=x", TZCRAWL_SESSION_COOKIES="sid"))
    assert list(found.jar.cookies) == ["sid"]
    with pytest.raises(ConfigError, match="TZCRAWL_SESSION_COOKIES names no cookie"):
        cookie_source(S(SERVICE_COOKIE=VALUE, TZCRAWL_SESSION_COOKIES=" , "))


def test_a_secure_only_session_with_an_http_site_is_refused():
    jar, _ = Jar.from_text(f"{BETTER_AUTH}={VALUE}")
    with pytest.raises(ConfigError, match="only ever sent over HTTPS.*https://"):
        check_transport("http://127.0.0.1:8000", jar)
    check_transport("https://127.0.0.1:8000", jar)
    check_transport("http://127.0.0.1:8000", Jar.from_text(f"appSession={VALUE}")[0])
    check_transport("http://127.0.0.1:8000", Jar(bare=VALUE))  # a bare value is tried as appSession over http
