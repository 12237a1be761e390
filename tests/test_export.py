"""`scrapy export`: transcripts, cards, SillyTavern chats, incremental re-export and bad input, on real
backups (made by real crawls of the sandbox, or written with the real BackupStore for hostile records)."""

from __future__ import annotations

import base64
import io
import json
import re
import stat
import struct
import zlib
from datetime import datetime, timezone
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from crawlhelp import REPO, crawl, crawl_env, unshare_works
from tzcrawl.export import card, transcript
from tzcrawl.export.text import markdown
from tzcrawl.store import BackupStore, BackupView

# The published specs' required fields (chara_card_v2 spec_v2.md, chara_card_v3 SPEC_V3.md).
V2_DATA = {"name": str, "description": str, "personality": str, "scenario": str, "first_mes": str,
           "mes_example": str, "creator_notes": str, "system_prompt": str, "post_history_instructions": str,
           "alternate_greetings": list, "tags": list, "creator": str, "character_version": str, "extensions": dict}
V3_DATA = {**{k: v for k, v in V2_DATA.items()}, "group_only_greetings": list}
BOOK_ENTRY = {"keys": list, "content": str, "extensions": dict, "enabled": bool, "insertion_order": int}


def export(backup, out, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {"BACKUP_DIR": str(backup), "PATH": "/usr/bin:/bin", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "scrapy", "export", "-a", f"out={out}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def crawled(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=30, messages=150, hostile_text=True)
    backup = tmp_path / "backup"
    result = crawl(sb, "all_personalities", backup)
    assert result.returncode == 0, result.stderr[-3000:]
    return sb, backup


def exported(crawled, tmp_path, fmt: str):
    """The crawled backup exported in ``fmt``: (sandbox, out, first username, its folder name)."""
    sb, backup = crawled
    out = tmp_path / "export"
    assert export(backup, out, "-a", f"format={fmt}").returncode == 0
    username = sb.personalities[0]["username"]
    return sb, out, username, BackupView(backup).dir_name(username)


def card_chunks(png: bytes) -> dict:
    """The PNG's tEXt chunks, read by Pillow (a parser we did not write)."""
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return dict(image.text)


def png_text_chunks(png: bytes) -> dict[str, str]:
    """The PNG's tEXt chunks, read chunk by chunk with struct (no image library): length, type, data,
    CRC-32 checked; the signature and the IEND end checked too."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, at, kind = {}, 8, b""
    while kind != b"IEND":
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        body = png[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length:at + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            out[key.decode("latin-1")] = text.decode("latin-1")
        at += 12 + length
    assert at == len(png)
    return out


def check_fields(data: dict, required: dict) -> None:
    for field, kind in required.items():
        assert isinstance(data.get(field), kind), (field, data.get(field))


# -- text is data -------------------------------------------------------------------------------------
def test_message_text_renders_markdown_and_never_markup():
    html = str(markdown("**bold** _it_ `code` <script>alert(1)</script> <img src=x onerror=alert(1)>\nnext "
                        "[bad](javascript:alert(1)) [good](https://example.com/a)"))
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html and "<code>code</code>" in html
    assert "<script" not in html and "<img" not in html and "&lt;script&gt;" in html and "<br" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.com/a" rel="noopener noreferrer nofollow" target="_blank">good</a>' in html
    assert str(markdown("a \ud800 b")) == "a \ufffd b"
    assert str(markdown(None)) == ""


# -- the whole command on a crawled backup ----------------------------------------------------------
def test_every_format_from_a_crawled_backup_and_an_unchanged_rerun_skips_all(crawled, tmp_path):
    sb, backup = crawled
    out = tmp_path / "export"
    first = export(backup, out)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"archive: {(out / 'index.html').resolve().as_uri()}" in first.stdout
    view = BackupView(backup)
    for p in sb.personalities:
        name = view.dir_name(p["username"])
        folder = out / name
        for fmt in ("html", "md", "card", "st"):
            assert re.search(rf"export · .* · {fmt}: done", first.stdout)
        for relative in ("index.html", "chat.html", "chat-0001.html", "memories.html", "search.html", "chat.md",
                         "memories.md", f"{name}.card.json", f"{name}.card.png", f"{name}.chat.jsonl"):
            assert (folder / relative).is_file(), relative
        assert (folder / "search" / "chat-0001.js").is_file()
        media = {e.name for e in (backup / name / "media").iterdir()}
        assert media and {e.name for e in (folder / "media").iterdir()} == media
        assert {oct(f.stat().st_mode & 0o777) for f in folder.rglob("*") if f.is_file()} == {"0o600"}
    again = export(backup, out)
    assert again.returncode == 0 and again.stdout.count(": unchanged") == 2 * 4, again.stdout

    sb.add(sb.personalities[0]["username"], messages=3)
    assert crawl(sb, "all_personalities", backup).returncode == 0
    third = export(backup, out)
    assert third.returncode == 0
    # only the chat changed: its card (profile, knowledge, memories) is not made again
    assert third.stdout.count(": unchanged") == 5 and third.stdout.count(": done") == 3, third.stdout
    assert re.search(r"· card: unchanged", third.stdout) and "reused" in third.stdout


def tree(folder: Path) -> dict[str, bytes]:
    """Every file of an export by relative path, with its bytes (the export state aside)."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != ".tzcrawl-export.json"}


def figures(said: list[str], fmt: str) -> str:
    return next(line for line in said if f"· {fmt}: " in line)


def test_an_export_after_an_incremental_backup_redoes_only_what_changed(sandbox_factory, tmp_path, monkeypatch):
    """10 new messages: the chat's last page, its shard and the indexes are rendered; the other pages and
    the transcripts' earlier stretches are reused; the card is not made again. The result is byte for
    byte a fresh export of the same backup (which also proves nothing in it depends on the clock). A
    record changed in the middle of the history redoes its page only, still byte for byte."""
    from tzcrawl.export import FORMATS, run
    from tzcrawl.export.output import Output
    from tzcrawl.export.segments import Stretch
    from tzcrawl.export.source import Personality

    monkeypatch.setattr(transcript, "YEARLY_ABOVE", 1000)  # a file a year, as for a big history
    sb = sandbox_factory(personalities=1, messages=2600, memories=45, empty_last=False, attachments=0.3)
    name = sb.personalities[0]["username"]
    backup, out = tmp_path / "backup", tmp_path / "export"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    assert run(backup, out, list(FORMATS), None, sb.base_url, say=lambda line: None).exit_code == 0
    folder = out / BackupView(backup).dir_name(name)
    inodes = {p.name: p.stat().st_ino for p in folder.glob("*.md")}
    sb.add(name, messages=10)
    assert crawl(sb, "all_personalities", backup).returncode == 0
    said: list[str] = []
    assert run(backup, out, list(FORMATS), None, sb.base_url, say=said.append).exit_code == 0, said
    # a transcript made only of the last export's bytes is left as it is (the same file: the memories);
    # the chat's, which the new messages extend, is a new one
    now = {p.name: p.stat().st_ino for p in folder.glob("*.md")}
    assert now["memories.md"] == inodes["memories.md"]
    assert [n for n in now if n.startswith("chat") and now[n] != inodes.get(n)] == [max(n for n in now if n.startswith("chat"))]
    assert "reused 3" in figures(said, "html")  # chat pages 1 and 2, memories page 1; chat page 3 rendered
    assert "reused 3" in figures(said, "md")    # the chat's first two stretches, the memories
    assert "reused 2" in figures(said, "st")
    assert "card: unchanged" in figures(said, "card")
    # the archive renders last, while the transcripts and the chat file are synced in the background
    assert [re.search(r" · (\w+): ", line).group(1) for line in said if " · " in line[9:]] == ["md", "card", "st", "html"]
    fresh = tmp_path / "fresh"
    assert run(backup, fresh, list(FORMATS), None, sb.base_url, say=lambda line: None).exit_code == 0
    assert tree(out) == tree(fresh)
    # the next export's first read takes the segments noted at the start of the file as they are (read
    # again only by range, checked by digest) and walks through the lines after them only
    view = BackupView(backup)
    noted = Output(out).cuts(folder.name)
    assert [entry[0] for entry in noted["messages"]["segments"]] == [1, 2, 3]
    again = Personality(view, name, view.directory(name), view.metadata(name), noted=noted).segments("messages")
    whole = Personality(view, name, view.directory(name), view.metadata(name)).segments("messages")
    pairs = list(zip(again, whole, strict=True))
    assert [isinstance(a.bodies, Stretch) for a, _ in pairs] == [True, True, False]
    assert [(a.number, a.more, a.digest, len(a.bodies)) for a, _ in pairs] == \
        [(b.number, b.more, b.digest, len(b.bodies)) for _, b in pairs]

    # a message in the middle of the history changed by hand: its page and stretch only are redone
    path = BackupView(backup).path(name, "messages")
    lines = path.read_bytes().split(b"\n")
    record = json.loads(lines[1500].rstrip(b","))
    record["reply"] = "changed by hand"
    lines[1500] = json.dumps(record).encode() + b","
    path.write_bytes(b"\n".join(lines))
    said = []
    assert run(backup, out, list(FORMATS), None, sb.base_url, say=said.append).exit_code == 0, said
    assert "reused 3" in figures(said, "html") and "reused 3" in figures(said, "md"), said  # pages 1, 3 + memories
    assert "changed by hand" in (out / BackupView(backup).dir_name(name) / "chat-0002.html").read_text()
    again = tmp_path / "again"
    assert run(backup, again, list(FORMATS), None, sb.base_url, say=lambda line: None).exit_code == 0
    assert tree(out) == tree(again)


def test_transcripts_are_stable_utc_and_link_media(crawled, tmp_path):
    sb, backup = crawled
    username = sb.personalities[0]["username"]
    name = BackupView(backup).dir_name(username)
    a, b = tmp_path / "a", tmp_path / "b"
    assert export(backup, a, "-a", "format=md").returncode == 0
    assert export(backup, b, "-a", "format=md", "-a", f"personality={username}").returncode == 0
    chat = (a / name / "chat.md").read_bytes()
    assert chat == (b / name / "chat.md").read_bytes(), "same backup, same bytes"
    text = chat.decode("utf-8")
    assert re.search(r"^## \d{4}-\d{2}-\d{2}$", text, re.M)
    assert re.search(r"^\*\*You\*\* \(\d{2}:\d{2}\): ", text, re.M)
    assert re.search(rf"^\*\*{re.escape(sb.personalities[0]['name'])}\*\* \(\d\d:\d\d\): ", text, re.M)
    assert re.search(r"\]\(<media/[0-9a-f]{40}\.(png|jpg|mp3)>\)", text), "attachments link to the media copies"
    assert "<script>alert(1)</script>" in text  # as the service stored it: Markdown is plain text
    assert (a / name / "memories.md").read_text().count("\n- **") == 30
    assert not (a / name / "index.html").exists(), "only the formats asked for"


def test_a_large_history_is_one_transcript_a_year(crawled, tmp_path, monkeypatch):
    sb, backup = crawled
    view = BackupView(backup)
    from tzcrawl.export.output import Output
    from tzcrawl.export.source import personalities

    monkeypatch.setattr(transcript, "YEARLY_ABOVE", 10)
    people, _ = personalities(view, [sb.personalities[0]["username"]])
    transcript.export(people[0], Output(tmp_path / "out"))
    files = sorted(p.name for p in (tmp_path / "out" / people[0].dir_name).glob("chat*.md"))
    assert files and all(re.fullmatch(r"chat-\d{4}\.md", f) for f in files)


def test_the_card_follows_both_specs_and_survives_an_independent_reader(crawled, tmp_path):
    sb, out, username, name = exported(crawled, tmp_path, "card")
    v3 = json.loads((out / name / f"{name}.card.json").read_text())
    raw = (out / name / f"{name}.card.png").read_bytes()
    assert b"tEXtccv3\x00" in raw and b"tEXtchara\x00" in raw, "tEXt chunks (not zTXt/iTXt)"
    chunks = card_chunks(raw)
    assert json.loads(base64.b64decode(chunks["ccv3"])) == v3
    v2 = json.loads(base64.b64decode(chunks["chara"]))
    assert (v3["spec"], v3["spec_version"], v2["spec"], v2["spec_version"]) == ("chara_card_v3", "3.0",
                                                                                "chara_card_v2", "2.0")
    check_fields(v3["data"], V3_DATA)
    check_fields(v2["data"], V2_DATA)
    assert png_text_chunks(raw) == chunks, "the same chunks, read without Pillow"
    for field in ("name", "description", "personality", "scenario", "first_mes", "mes_example"):
        assert v2[field] == v2["data"][field] == v3["data"][field], field  # V1 readers see the character
    for book, v3_book in ((v3["data"]["character_book"], True), (v2["data"]["character_book"], False)):
        assert isinstance(book["extensions"], dict) and book["entries"]
        for entry in book["entries"]:
            check_fields(entry, BOOK_ENTRY)
            assert ("use_regex" in entry) is v3_book
    profile = sb.export(username)["profile"]  # today's ~173 fields
    data = v3["data"]
    assert data["name"] == profile["name"] and data["system_prompt"] == profile["jailbreak"]
    assert data["description"].startswith(profile["user_prompt"])
    for label, field in (("Appearance", "personality_appearance"), ("History", "personality_history")):
        assert f"{label}: {profile[field]}" in data["description"]
    for label, field in (("Traits", "personality_traits"), ("Tone", "personality_tone"),
                         ("Likes", "personality_likes"), ("Conversational goals", "personality_conversational_goals")):
        assert f"{label}: {profile[field]}" in data["personality"]
    assert data["first_mes"] == profile["shape_settings"]["shape_initial_message"]
    assert data["mes_example"].startswith("<START>\n{{user}}: ") and "{{char}}: " in data["mes_example"]
    assert data["tags"] == profile["search_tags_v2"]
    kept = data["extensions"]["tzcrawl"]["profile"]
    assert kept["avatar_url"] == profile["avatar_url"] and kept["engine_model"] == profile["engine_model"]
    assert "jailbreak" not in kept and "personality_traits" not in kept and "setting_000" in kept
    memories = [e for e in data["character_book"]["entries"] if e["extensions"]["tzcrawl"]["kind"] == "memory"]
    assert len(memories) == 30 and all(e["constant"] and e["keys"] == [] for e in memories)
    truth = {m["id"]: m for m in sb.export(username)["memories"]}
    for entry in memories:
        memory = truth[entry["extensions"]["tzcrawl"]["id"]]
        assert entry["content"] and entry["content"] in memory["result"].replace("\r", "")
        assert entry["name"].startswith("memory 20") and entry["enabled"] is not memory["deleted"]
    knowledge = [e for e in data["character_book"]["entries"] if e["extensions"]["tzcrawl"]["kind"] == "knowledge"]
    assert knowledge and all(e["extensions"]["tzcrawl"]["story_type"] in ("general", "command", "relationship")
                             for e in knowledge)
    with Image.open(io.BytesIO(raw)) as image:
        assert image.size[0] > 0  # the avatar (from media/), re-encoded as PNG


def test_the_book_is_capped_and_the_rest_kept_beside_it(crawled, tmp_path, monkeypatch):
    sb, backup = crawled
    from tzcrawl.export.output import Output
    from tzcrawl.export.source import personalities

    monkeypatch.setattr(card, "BOOK_MAX_CHARS", 6000)
    people, _ = personalities(BackupView(backup), [sb.personalities[0]["username"]])
    p = people[0]
    rest_path = tmp_path / "rest.json"
    v3, left_out = card.build(p, "site", rest_path)
    rest = json.loads(rest_path.read_text())
    book = v3["data"]["character_book"]["entries"]
    in_book = [e["extensions"]["tzcrawl"]["id"] for e in book if e["extensions"]["tzcrawl"]["kind"] == "memory"]
    saved = [m["id"] for m in p.records("memories")]
    assert left_out == len(rest) > 0 and len(in_book) + left_out == len(saved)
    assert [m["id"] for m in rest] == saved[:left_out], "the oldest go to the side file"
    assert set(in_book) == set(saved[left_out:])
    assert sum(len(e["content"]) for e in book) <= 6000 and "did not fit" in v3["data"]["creator_notes"]


def test_sillytavern_chat(crawled, tmp_path):
    sb, out, username, name = exported(crawled, tmp_path, "st")
    lines = [json.loads(line) for line in (out / name / f"{name}.chat.jsonl").read_text().splitlines()]
    header, rows = lines[0], lines[1:]
    assert header["character_name"] == sb.personalities[0]["name"] and header["user_name"] == "You"
    messages = sorted(sb.export(username)["messages"], key=lambda m: m["ts"])
    expected = sum(bool(m["message"] or m["attachment_url"]) + bool(m["reply"] or m["voice_reply_url"])
                   for m in messages)
    assert len(rows) == expected
    for row in rows:
        assert set(row) >= {"name", "is_user", "send_date", "mes"}
    # Every send_date, read as SillyTavern reads its humanized form (its timestampToMoment: a UTC time to
    # the millisecond), is the message's ts: user line and reply share their message's time.
    times = [ST_DATE(row["send_date"]) for row in rows]
    wanted = [round(float(m["ts"]) * 1000) for m in messages
              for _ in range(bool(m["message"] or m["attachment_url"]) + bool(m["reply"] or m["voice_reply_url"]))]
    assert times == wanted
    assert ST_DATE(header["create_date"]) == wanted[0]
    regenerated = next(m for m in messages if m["regenerated_replies"])
    row = next(r for r in rows if not r["is_user"] and r["extra"]["tzcrawl"]["id"] == regenerated["id"])
    assert row["swipes"] == [regenerated["reply"], *regenerated["regenerated_replies"]] and row["swipe_id"] == 0
    assert any(r["is_user"] and r["extra"].get("image", "").startswith("media/") for r in rows)


def test_a_card_with_nothing_for_its_book_has_no_book(tmp_path):
    backup = tmp_path / "backup"
    store = BackupStore(backup)
    profile = {"id": "p1", "username": "quiet", "name": "Quiet One", "user_prompt": "Calm.", "jailbreak": "Be kind."}
    store.save_document({"id": "p1", "username": "quiet", "name": "Quiet One"}, "profile", profile, 1, 1)
    result = export(backup, tmp_path / "out", "-a", "format=card")
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "out" / BackupView(backup).dir_name("quiet")
    chunks = png_text_chunks((folder / "quiet.card.png").read_bytes())
    v3, v2 = (json.loads(base64.b64decode(chunks[k])) for k in ("ccv3", "chara"))
    assert "character_book" not in v3["data"] and "character_book" not in v2["data"]
    assert "character_book" not in json.loads((folder / "quiet.card.json").read_text())["data"]
    assert v2["name"] == v2["data"]["name"] == "Quiet One" and v2["data"]["system_prompt"] == "Be kind."


def ST_DATE(text: str) -> int:  # noqa: N802  (SillyTavern's pattern, read independently: UTC, ms)
    match = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2}) @(\d{1,2})h (\d{1,2})m (\d{1,2})s (\d{1,3})ms", text)
    assert match, text
    year, month, day, hour, minute, second, ms = map(int, match.groups())
    at = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    return int(at.timestamp()) * 1000 + ms


def test_sillytavern_dates_do_not_depend_on_the_machines_time_zone(crawled, tmp_path):
    sb, backup = crawled
    files = {}
    for zone in ("UTC", "Asia/Tokyo"):
        out = tmp_path / zone.replace("/", "-")
        result = export(backup, out, "-a", "format=st", env_extra={"TZ": zone})
        assert result.returncode == 0, result.stdout + result.stderr
        files[zone] = {p.name: p.read_bytes() for p in out.rglob("*.chat.jsonl")}
    assert files["UTC"] == files["Asia/Tokyo"] and len(files["UTC"]) == 2


# -- bad input ---------------------------------------------------------------------------------------
HOSTILE = "<script>alert(1)</script>\ud800 " + "x" * 50


def hostile_backup(root: Path) -> dict:
    """A backup written by the real store: hostile names, a 10 MB message, an attachment-only message,
    lone surrogates, a personality with nothing at all."""
    store = BackupStore(root)
    people = {"odd": {"id": "p1", "username": "../Évil/<name>", "name": "<b>Évil</b> \ud800"},
              "empty": {"id": "p2", "username": "empty-one", "name": "Empty"}}
    p = people["odd"]
    store.save_document(p, "profile", {**p, "description": HOSTILE, "avatar_url": None}, 1, 1)
    run = store.begin(p, "messages")
    run.add([{"id": "big", "ts": 1700000000.0, "message": "y" * 10_000_000, "reply": HOSTILE},
             {"id": "att", "ts": 1700000100.0, "message": "", "reply": "",
              "attachment_url": "https://files.example.com/a.png", "attachment_type": "image/png"},
             {"id": "odd-ts", "ts": "not a time", "message": "when?", "reply": "never"}])
    run.commit(1)
    run = store.begin(p, "memories")
    run.add([{"id": "mem1", "created_at": "2024-01-01T00:00:00Z", "content": HOSTILE}])
    run.commit(1)
    for resource, value in (("knowledge", []), ("training", {"items": []}), ("user_data", {})):
        store.save_document(p, resource, value, 0, 1)
    store.save_document(people["empty"], "profile", people["empty"], 1, 1)
    return people


def test_hostile_records_and_names_export_whole_and_safe(tmp_path):
    people = hostile_backup(tmp_path / "backup")
    out = tmp_path / "export"
    result = export(tmp_path / "backup", out)
    assert result.returncode == 0, result.stdout + result.stderr
    name = BackupView(tmp_path / "backup").dir_name(people["odd"]["username"])
    assert "/" not in name and (out / name / "index.html").is_file()
    page = (out / name / "chat-0001.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\ufffd" in page and "<script>alert" not in page
    assert 'id="m-big"' in page and 'id="m-att"' in page and 'id="m-odd-ts"' in page
    assert "unknown time" in page
    assert 'href="https://files.example.com/a.png"' in page and "(remote)" in page  # not in the backup: a link
    assert "y" * 10_000_000 in page
    chat = (out / name / "chat.md").read_text(encoding="utf-8")
    assert "[attachment (remote)](<https://files.example.com/a.png>)" in chat and "\ufffd" in chat
    v3 = json.loads((out / name / f"{name}.card.json").read_text(encoding="utf-8"))
    assert v3["data"]["name"] == "<b>Évil</b> \ufffd"
    assert (out / "empty-one" / "index.html").is_file() and "No messages." in (out / "empty-one" / "chat.md").read_text()
    assert (out / "empty-one" / "empty-one.card.png").is_file()  # a placeholder portrait
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;Évil&lt;/b&gt;" in index


def test_a_torn_file_exports_what_is_there_and_exits_1(crawled, tmp_path):
    sb, backup = crawled
    view = BackupView(backup)
    torn_user, whole_user = (p["username"] for p in sb.personalities)
    path = view.path(torn_user, "messages")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "export"
    result = export(backup, out, "-a", "format=html,md")
    assert result.returncode == 1, result.stdout
    assert "INCOMPLETE" in result.stdout and "messages: torn or unreadable after" in result.stdout
    torn = out / view.dir_name(torn_user)
    assert (torn / "chat-0001.html").read_text().count('class="msg"') > 0
    assert (out / view.dir_name(whole_user) / "chat.md").is_file()
    assert "export INCOMPLETE" in result.stderr
    again = export(backup, out, "-a", "format=html,md")
    assert again.returncode == 1 and "unchanged" not in again.stdout.split(sb.personalities[0]["name"])[1][:40]


def test_a_named_personality_without_backup_fails_alone(crawled, tmp_path):
    sb, backup = crawled
    result = export(backup, tmp_path / "export", "-a", f"personality=nobody,{sb.personalities[0]['username']}",
                    "-a", "format=md")
    assert result.returncode == 1 and "export · nobody: no backup of this personality" in result.stdout
    assert ": done" in result.stdout


@pytest.mark.parametrize("args, message", [
    (("-a", "format=pdf"), "unknown export format pdf"),
    (("-a", "colour=blue"), "expected one of personality=..., format=..., out=..."),
    (("extra",), "no positional arguments"),
])
def test_configuration_errors_exit_2(crawled, tmp_path, args, message):
    _, backup = crawled
    result = export(backup, tmp_path / "export", *args)
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "export").exists()


def test_no_backup_dir_or_an_output_inside_it_exit_2(tmp_path):
    result = export(tmp_path / "missing", tmp_path / "export")
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "backup").mkdir()
    inside = export(tmp_path / "backup", tmp_path / "backup" / "export")
    assert inside.returncode == 2 and "inside BACKUP_DIR" in inside.stderr


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*"))}


@pytest.mark.skipif(not unshare_works(), reason="needs a private mount namespace for a small tmpfs")
def test_an_export_that_fills_the_disk_leaves_the_previous_export_whole(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=20, messages=150, attachments=0.3)
    backup, small, before, after = (tmp_path / n for n in ("backup", "small", "before", "after"))
    assert crawl(sb, "all_personalities", backup).returncode == 0
    for p in sb.personalities:
        sb.add(p["username"], messages=300)
    small.mkdir()
    scrapy = f"'{sys.executable}' -m scrapy"
    env = {**crawl_env(sb, backup), "PATH": "/usr/bin:/bin"}
    # export once; a crawl brings new messages and media; the disk is filled up to 64 KB; export again
    script = (f'set -u; mount -t tmpfs -o size=64m tmpfs "{small}" || exit 9; '
              f'{scrapy} export -a out="{small}" >/dev/null 2>&1 || exit 8; cp -a "{small}/." "{before}/"; '
              f'{scrapy} crawl all_personalities -s DOWNLOAD_DELAY=0 -s AUTOTHROTTLE_ENABLED=False '
              f'-s BACKUP_PERSONALITY_DELAY=0 >/dev/null 2>&1 || exit 7; '
              f'avail=$(df -B1 --output=avail "{small}" | tail -1); '
              f'head -c $((avail - 65536)) /dev/zero > "{small}/.filler"; '
              f'{scrapy} export -a out="{small}"; rc=$?; rm -f "{small}/.filler"; cp -a "{small}/." "{after}/"; '
              f'exit $rc')
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No space left on device" in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert _tree(after) == _tree(before), "the previous export is there, byte for byte, modes included"
    index = (after / "index.html").read_text()
    assert "No backed-up personality yet" not in index
    assert all(f">{p['name']}<" in index or p["name"] in index for p in sb.personalities)


HOSTILE_BLOCKS = [
    "Here is the code:\n```python\ndef cut_off(",  # a reply cut off inside a code block
    "A title line\n---\nand more",
    "Another\n===",
    "# Not a second title\n## nor this",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "<div>\n<script>alert(1)</script>\n</div>",
    "    indented four\n\n    after a blank line",
    "1. one\n2) two\n- three\n+ four\n* five\n> quoted\n~~~\n***",
    "**You** (00:00): a speaker line inside a message\n**Echo** (00:01): and another",
    "trailing backslash \\\n\n\n",
]


def test_transcripts_hold_every_text_inside_its_own_block(tmp_path):
    from markdown_it import MarkdownIt

    backup, out = tmp_path / "backup", tmp_path / "out"
    store = BackupStore(backup)
    who = {"id": "p1", "username": "echo", "name": "Echo"}
    store.save_document(who, "profile", {**who, "user_prompt": "x"}, 1, 1)
    messages = [{"id": f"m{i}", "ts": 1_700_000_000 + 60 * i, "message": text, "reply": HOSTILE_BLOCKS[-1 - i]}
                for i, text in enumerate(HOSTILE_BLOCKS)]
    memories = [{"id": f"k{i}", "created_at": 1_700_000_000 + i, "content": text} for i, text in enumerate(HOSTILE_BLOCKS)]
    for resource, records in (("messages", messages), ("memories", memories)):
        run = store.begin(who, resource)
        run.add(records)
        run.commit(1)
    result = export(backup, out, "-a", "format=md")
    assert result.returncode == 0, result.stdout + result.stderr
    md = MarkdownIt("commonmark")

    def held_texts(path: Path, top: str) -> list[str]:
        """The text of every top-level paragraph (or list item) whose first child is ``top``'s strong."""
        tokens, found = md.parse(path.read_text()), []
        for i, token in enumerate(tokens):
            kids = [c for c in token.children or [] if c.type != "text" or c.content]
            if token.type == "inline" and tokens[i - 1].type == "paragraph_open" and kids \
                    and kids[0].type == "strong_open" and tokens[i - 1].level == top:
                found.append("".join(c.content if c.type in ("text", "code_inline", "html_inline") else "\n"
                                     for c in kids if c.type in ("text", "code_inline", "html_inline", "hardbreak",
                                                                 "softbreak")))
        return found

    def lines(text: str) -> list[str]:  # inline emphasis is the service's Markdown, rendered: its stars compared out
        return [line.replace("*", "").strip() for line in text.splitlines() if line.strip()]

    folder = out / BackupView(backup).dir_name("echo")
    tokens = md.parse((folder / "chat.md").read_text())
    assert [t.tag for t in tokens if t.type == "heading_open"] == ["h1", "h2"], "one title, one day heading"
    said = held_texts(folder / "chat.md", 0)
    assert len(said) == 2 * len(messages), "every message and reply is one paragraph of its own"
    for paragraph, text in zip(said, [t for m in messages for t in (m["message"], m["reply"])]):
        body = paragraph.split("): ", 1)[1] if "): " in paragraph else paragraph
        assert lines(body) == lines(text), (body, text)  # the text whole, as text
    items = held_texts(folder / "memories.md", 2)  # list item paragraphs
    assert [t.type for t in md.parse((folder / "memories.md").read_text())].count("list_item_open") == len(memories)
    for item, memory in zip(items, memories):
        assert lines(item.split(": ", 1)[1]) == lines(memory["content"])


def test_plain_text_skips_the_markdown_parser_with_the_same_html():
    """``markdown``'s fast path (no character an enabled rule acts on) gives markdown-it's own output."""
    import random

    from tzcrawl.export import text
    from tzcrawl.sandbox.data import HOSTILE_TEXT, PHRASES

    rng = random.Random(5)
    plain, special = list("ab XY éü日本🌙>\"'!~#$%^()-+=|{}:;,./?\t0123456789 "), list("*_`[]\\&<\n\r\x00")
    samples = [*PHRASES, HOSTILE_TEXT, " lead", "trail ", "  ", ">quote", "1. item", "# h", "---", "http://x.y/z",
               "a\u00a0b", "\ufeffx", "&amp;", "a\\b", "x\ny", "\ud800 lone"]
    samples += ["".join(rng.choice(plain) for _ in range(rng.randint(1, 50))) for _ in range(3000)]
    samples += ["".join(rng.choice(plain + special) for _ in range(rng.randint(1, 50))) for _ in range(3000)]
    fast = 0
    for sample in samples:
        expected = text._MD.renderInline(text.clean(sample)) if text.clean(sample) else ""
        assert str(text.markdown(sample)) == expected, repr(sample)
        fast += text._MARKUP_CHARS.search(text.clean(sample)) is None
    assert fast > 3000  # the fast path was taken, and agreed


def test_line_breaks_and_backslash_escapes_take_a_short_path_with_the_same_html():
    """Texts whose only markup is line breaks and backslash escapes skip markdown-it's parser: the
    result is its output exactly (trailing spaces before a break, escapes of punctuation and of other
    characters, a backslash before a line break or at the end, spaces at the start of a line)."""
    import random

    from tzcrawl.export import text

    rng = random.Random(23)
    parts = ["a", "Zé", " ", " ", "  ", "\t", "\n", "\n", "\\", "\\", ".", "!", ">", '"', "#", "~", "-", "{", "'",
             "🌙", "\u00a0", "\\\n", "  \n", " \n", "\\ "]
    samples = ["x\n", "\\", "a\\", "\\\n  y", "a  \n b", "a \n\tb", "\\. \n", "\\a", "\\\\", "\n\n", " \n"]
    samples += ["".join(rng.choice(parts) for _ in range(rng.randint(1, 40))) for _ in range(5000)]
    short = 0
    for sample in samples:
        assert text._OTHER_MARKUP.search(sample) is None
        assert str(text.markdown(sample)) == text._MD.renderInline(sample), repr(sample)
        short += text._MARKUP_CHARS.search(sample) is not None
    assert short > 4000  # the short path was taken (not the plain one), and agreed


def test_a_format_after_another_reads_only_what_it_renders_and_writes_the_same_files(sandbox_factory, tmp_path,
                                                                                      monkeypatch):
    """The first format of an export notes where each segment lies; the next ones (the archive's pages
    in worker processes too) get segments read from those byte ranges: the files are those of each
    format exported alone, whatever the order."""
    from tzcrawl.export import run

    monkeypatch.setenv("TZCRAWL_EXPORT_WORKERS", "3")
    sb = sandbox_factory(personalities=1, messages=3500, memories=1200, empty_last=False)
    backup = tmp_path / "backup"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    together = tmp_path / "together"
    assert run(backup, together, ["st", "md", "html"], None, sb.base_url, say=lambda line: None).exit_code == 0
    alone: dict = {}
    for fmt in ("html", "md", "st"):
        assert run(backup, tmp_path / fmt, [fmt], None, sb.base_url, say=lambda line: None).exit_code == 0
        alone.update(tree(tmp_path / fmt))
    assert tree(together) == alone


def test_pages_rendered_on_several_cores_are_the_pages_rendered_on_one(sandbox_factory, tmp_path, monkeypatch):
    """The archive's pages rendered by worker processes are byte for byte those rendered in the exporting
    process (a torn history too: the same pages and the same problem)."""
    from tzcrawl.export import run

    sb = sandbox_factory(personalities=1, messages=3500, memories=30, empty_last=False)
    backup = tmp_path / "backup"
    assert crawl(sb, "all_personalities", backup).returncode == 0
    path = BackupView(backup).path(sb.personalities[0]["username"], "messages")
    path.write_bytes(path.read_bytes()[:-900])  # torn in the middle of the last record
    results = {}
    for count in ("1", "3"):
        monkeypatch.setenv("TZCRAWL_EXPORT_WORKERS", count)
        said: list[str] = []
        report = run(backup, tmp_path / count, ["html"], None, sb.base_url, say=said.append)
        assert report.exit_code == 1 and "torn or unreadable" in said[0], said
        results[count] = (tree(tmp_path / count), said[0].split(";")[0])
    assert results["1"] == results["3"]
    assert len([name for name in results["1"][0] if name.endswith(".html") and "/chat-" in name]) == 4
