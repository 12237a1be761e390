"""The pure media decisions: which values are media, what a manifest entry needs, how files are named."""

from __future__ import annotations

import hashlib

import pytest

from tzcrawl.extensions import media_cell, summary_table
from tzcrawl.items import Outcome
from tzcrawl.media import MediaAddon, MediaConfig, manifest, refs
from tzcrawl.media.pipeline import extension, media_name

FIELDS = refs.parse_fields("")


def found(record, fields=FIELDS, id_field="id"):
    return [(r.url, r.field, r.source_id) for r in refs.refs(record, fields, id_field)]


def test_profile_fields_nested_screenshots_and_the_same_url_twice():
    profile = {"id": "p1", "avatar_url": "https://files.x/a.png", "avatar": "https://files.x/a.png",
               "banner": "https://files.x/b.jpg", "voice_file": "https://files.x/v.ogg", "description": "https://x/page",
               "screenshots": [{"id": "s1", "url": "https://files.x/s1.png", "caption": "https://not.media/"}],
               "settings": {"url": "https://not-a-screenshot/"}}
    assert sorted(found(profile)) == sorted([
        ("https://files.x/a.png", "avatar_url", "p1"), ("https://files.x/a.png", "avatar", "p1"),
        ("https://files.x/b.jpg", "banner", "p1"), ("https://files.x/v.ogg", "voice_file", "p1"),
        ("https://files.x/s1.png", "screenshots.url", "s1")])


def test_message_and_wrapped_knowledge_entries_name_their_own_record():
    message = {"id": "m1", "voice_reply_url": "https://f/v.mp3", "attachment_url": None, "attachment_type": None}
    assert found(message) == [("https://f/v.mp3", "voice_reply_url", "m1")]
    knowledge = {"items": [{"id": "k1", "image_url": "https://f/k1.png", "source_url": "https://docs/"},
                           {"id": "k2"}], "x_version": 2}
    assert found(knowledge) == [("https://f/k1.png", "image_url", "k1")]


def test_the_user_adds_fields_plain_or_dotted():
    record = {"id": "r", "cover": "https://f/c.png", "gallery": [{"src": "https://f/g.png"}], "src": "https://f/no.png"}
    assert found(record) == []
    assert sorted(found(record, refs.parse_fields("cover, gallery.src"))) == [
        ("https://f/c.png", "cover", "r"), ("https://f/g.png", "gallery.src", "r")]
    assert refs.parse_fields(["cover"]) == refs.parse_fields("cover")


@pytest.mark.parametrize("url, kind", [
    ("https://files.example.com/a.png", refs.FETCH), ("HTTP://files.example.com/a.png", refs.FETCH),
    ("data:image/png;base64,AAAA", refs.INLINE), ("file:///etc/passwd", refs.IGNORED),
    ("javascript:alert(1)", refs.IGNORED), ("/relative/a.png", refs.IGNORED), ("a.png", refs.IGNORED),
    ("//files.example.com/a.png", refs.IGNORED), ("http://", refs.IGNORED), ("http://[::1/a", refs.IGNORED),
    ("ftp://files.example.com/a.png", refs.IGNORED),
])
def test_only_absolute_http_urls_are_fetched(url, kind):
    assert refs.kind(url) == kind


def test_hostile_nesting_costs_nothing():
    deep: dict = {"avatar_url": "https://f/deep.png"}
    for _ in range(5000):
        deep = {"x": deep}
    assert found({"id": "r", "a": deep}) == []  # beyond MAX_DEPTH: not looked into, no RecursionError


@pytest.mark.parametrize("status, full, file_ok, fetch", [
    (manifest.OK, False, True, False), (manifest.OK, True, True, False), (manifest.OK, False, False, True),
    (manifest.GONE, False, False, False), (manifest.GONE, True, False, True),
    (manifest.FAILED, False, False, True), (manifest.FAILED, True, False, True),
])
def test_what_is_fetched_again(status, full, file_ok, fetch):
    assert manifest.wanted({"status": status}, full=full, file_ok=file_ok) is fetch


def test_a_new_url_is_failed_until_downloaded_and_keeps_its_first_source():
    entries: dict = {}
    first = manifest.note(entries, "https://f/a.png", "messages", "m1", "2026-01-01T00:00:00Z")
    assert first["status"] == manifest.FAILED and first["error"] == manifest.NOT_YET and first["path"] is None
    again = manifest.note(entries, "https://f/a.png", "profile", "p", "2026-02-02T00:00:00Z")
    assert again is first and again["source"] == {"resource": "messages", "id": "m1"}
    manifest.resolved(first, {"status": manifest.OK, "path": "media/x.png", "sha256": "ab", "size": 2,
                              "content_type": "image/png"})
    assert first["status"] == manifest.OK and "error" not in first
    manifest.resolved(first, {"status": manifest.GONE, "error": "HTTP 404"})
    assert first["status"] == manifest.GONE and first["error"] == "HTTP 404"
    assert manifest.counts(entries) == {"held": 0, "gone": 1, "refused": 0, "failed": 0}


def test_manifest_bytes_are_stable_and_load_back(tmp_path):
    entries: dict = {}
    for url in ("https://f/b", "https://f/a"):
        manifest.note(entries, url, "messages", None, "2026-01-01T00:00:00Z")
    data = manifest.dumps(entries)
    assert data == manifest.dumps(dict(reversed(list(entries.items()))))
    path = tmp_path / "m.json"
    manifest.save(path, data)
    assert manifest.load(path) == entries and (path.stat().st_mode & 0o777) == 0o600
    assert manifest.load(tmp_path / "none.json") == {}
    path.write_text('{"not": "a list"}')
    with pytest.raises(ValueError):
        manifest.load(path)


def test_a_held_file_must_be_whole_and_where_the_manifest_says(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.png").write_bytes(b"12345")
    (tmp_path / "outside.png").write_bytes(b"12345")
    good = {"path": "media/a.png", "size": 5, "sha256": hashlib.sha256(b"12345").hexdigest()}
    assert manifest.file_ok(tmp_path, good)
    assert not manifest.file_ok(tmp_path, {**good, "size": 4})
    assert not manifest.file_ok(tmp_path, {**good, "sha256": "0" * 64})
    assert not manifest.file_ok(tmp_path, {**good, "path": "media/missing.png"})
    for hostile in ("../outside.png", "media/../outside.png", "/etc/passwd", "outside.png", None, "media/.."):
        assert not manifest.file_ok(tmp_path, {**good, "path": hostile}), hostile
    (tmp_path / "media" / "a.png").write_bytes(b"12346")  # same size, one byte flipped
    assert not manifest.file_ok(tmp_path, good)


@pytest.mark.parametrize("url, content_type, ext", [
    ("https://f/a.png", "image/png", ".png"), ("https://f/a", "image/jpeg", ".jpg"),
    ("https://f/v.mp3", "audio/mp3", ".mp3"), ("https://f/v.mp3", "audio/mpeg", ".mp3"),
    ("https://f/v.ogg", None, ".ogg"), ("https://f/x.PNG?size=2", None, ".png"),
    ("https://f/noext", None, ".bin"), ("https://f/a.png", "application/x-unknown-thing", ".png"),
    ("https://f/a.p%2Fng", None, ".bin"), ("https://f/a.verylongextension", None, ".bin"),
])
def test_files_are_named_by_url_hash_with_the_right_extension(url, content_type, ext):
    name = media_name(url, content_type)
    assert name == hashlib.sha1(url.encode()).hexdigest() + ext
    assert extension(url, content_type) == ext and "/" not in name


def test_summary_shows_held_new_gone_and_failed_media():
    ok = Outcome.complete()
    rows = {"sam": {"profile": {"outcome": ok, "total": 1},
                    "media": {"outcome": Outcome.failed("1 failed"), "total": 30, "new": 2, "gone": 1, "failed": 1}},
            "kim": {"profile": {"outcome": ok, "total": 1}, "media": {"outcome": ok, "total": 5, "new": 5}}}
    table = summary_table(rows)
    assert "media" in table.splitlines()[0]
    assert "30 (+2), 1 gone, 1 FAILED" in table and "5 (+5)" in table
    assert media_cell({"total": 0, "new": 0}) == "0 (+0)"
    no_media = summary_table({"kim": {"profile": {"outcome": ok, "total": 1}}})
    assert "media" not in no_media


def test_media_get_their_own_slot_and_room_next_to_the_api():
    from scrapy.settings import Settings

    from tzcrawl import settings as project

    settings = Settings()
    settings.setmodule(project, priority="project")
    MediaAddon().update_settings(settings)
    assert settings.getdict("DOWNLOAD_SLOTS")["tzcrawl-media"]["concurrency"] == 4
    assert settings.getint("CONCURRENT_REQUESTS") == 5 and settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 1

    settings = Settings()
    settings.setmodule(project, priority="project")
    settings.set("BACKUP_MEDIA_CONCURRENCY", "2", priority="cmdline")
    settings.set("CONCURRENT_REQUESTS", 1, priority="cmdline")  # the user's word stands
    MediaAddon().update_settings(settings)
    assert settings.getdict("DOWNLOAD_SLOTS")["tzcrawl-media"]["concurrency"] == 2
    assert settings.getint("CONCURRENT_REQUESTS") == 1


def test_media_settings_are_checked():
    from tzcrawl.config import ConfigError

    assert MediaConfig.from_settings({}).max_size == 200 * 1024 * 1024
    assert MediaConfig.from_settings({"BACKUP_MEDIA": "no"}).enabled is False
    for bad in ({"BACKUP_MEDIA": "maybe"}, {"BACKUP_MEDIA_MAX_SIZE": "big"}, {"BACKUP_MEDIA_TIMEOUT": "-1"},
                {"BACKUP_MEDIA_CONCURRENCY": "0"}):
        with pytest.raises(ConfigError):
            MediaConfig.from_settings(bad)


@pytest.mark.parametrize("url, shown", [
    ("http://user:pass@files.example.com/a.png", "http://***@files.example.com/a.png"),
    ("https://token@files.example.com/a.png?x=1", "https://***@files.example.com/a.png?x=1"),
    ("https://:secret@files.example.com/", "https://***@files.example.com/"),
    ("https://a@b:c@files.example.com/x", "https://***@files.example.com/x"),
])
def test_urls_with_credentials_are_refused_and_shown_without_them(url, shown):
    assert refs.kind(url) == refs.CREDENTIALS
    assert refs.redacted(url) == shown
    assert refs.kind("https://files.example.com/a.png") == refs.FETCH
    assert refs.redacted("https://files.example.com/a@b.png") == "https://files.example.com/a@b.png"
