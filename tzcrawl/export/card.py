"""A portable character: Character Card V3 (``<name>.card.json``, and ``<name>.card.png`` with the card
in a ``ccv3`` tEXt chunk plus a V2 copy in ``chara`` for older apps), and a SillyTavern chat file.

The card maps what the profile holds to the card's fields; everything it has no field for is kept
under ``data.extensions.tzcrawl`` (the unmapped profile fields, user data, training), so nothing is
lost. The character book holds knowledge first, then memories, newest first, up to
``BOOK_MAX_CHARS`` of content; older memories go to ``<name>.card-book-rest.json``.

Memories become *constant* entries: they have no keywords of their own (the service chose them by
relevance, which card apps cannot do), and a constant entry is what "the character remembers this"
means to those apps; the size cap keeps the prompt bounded. Knowledge entries with a title are
keyword entries (the title is the key); untitled ones are constant.
"""

from __future__ import annotations

import base64
import collections
import io
from tzcrawl import api, jsonio, registry
from tzcrawl.fsutil import atomic_writer
from tzcrawl.store.timestamps import to_epoch

from .output import Output
from .source import Personality, clean
from .text import media_kind, moment

BOOK_MAX_CHARS = 60_000
V2_NOTE = ("This character card is Character Card V3, but it is loaded as a Character Card V2. Please use a "
           "Character Card V3 compatible application to use this character card properly.")
# profile field candidates for each card field, first non-empty wins (dotted: nested)
MAPPING = {
    "description": ("user_prompt", "description", "character_background"),
    "personality": ("tagline", "search_description"),
    "scenario": ("character_universe",),
    "first_mes": ("shape_settings.shape_initial_message", "settings.behaviour.initial_message", "initial_message"),
    "system_prompt": ("jailbreak", "settings.behaviour.custom_instructions", "custom_instructions"),
}
# Today's profile describes the personality in fields of its own: they join the card's text fields as
# labelled sections (after what MAPPING found), so a card app shows the whole character.
SECTIONS = {
    "description": (("personality_appearance", "Appearance"), ("personality_history", "History"),
                    ("character_background", "Background")),
    "personality": (("personality_traits", "Traits"), ("personality_tone", "Tone"), ("personality_age", "Age"),
                    ("personality_likes", "Likes"), ("personality_dislikes", "Dislikes"),
                    ("personality_conversational_goals", "Conversational goals")),
}
EXAMPLES_FIELD = "personality_conversational_examples"  # already in card form ({{user}}: / {{char}}:)
EXAMPLE_FIELDS = ("typical_phrases", "example_prompts")
TAG_FIELDS = ("search_tags_v2", "tags")


def _first(profile: dict, candidates: tuple[str, ...], used: set[str]) -> str:
    for dotted in candidates:
        value = registry.first_present(profile, (dotted,))
        if isinstance(value, str) and value.strip():
            used.add(dotted)
            return clean(value)
    return ""


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [clean(v.strip()) for v in value.split("\n") if v.strip()]
    if isinstance(value, list):
        return [clean(v if isinstance(v, str) else jsonio.readable(v)) for v in value if v]
    return []


def _without(profile: dict, used: set[str]) -> dict:
    """The profile minus the top-level fields the card's own fields now hold."""
    top = {u for u in used if "." not in u}
    return {k: v for k, v in profile.items() if k not in top}


def book_entry(content: str, keys: list[str], name: str, order: int, extra: dict) -> dict:
    return {"keys": keys, "content": content, "extensions": {"tzcrawl": extra}, "enabled": True,
            "insertion_order": order, "case_sensitive": False, "constant": not keys, "use_regex": False,
            "name": name, "comment": name, "id": order, "selective": False, "secondary_keys": [],
            "position": "before_char"}


def build(p: Personality, website: str, rest_path) -> tuple[dict, int]:
    """The V3 card, and how many memories went to the side file instead of the book."""
    profile = p.profile
    used: set[str] = {"name"}
    data: dict = {"name": p.name}
    for field, candidates in MAPPING.items():
        data[field] = _first(profile, candidates, used)
    for field, sections in SECTIONS.items():
        parts = [data[field]] if data[field] else []
        for name, label in sections:
            value = profile.get(name)
            if name not in used and isinstance(value, (str, int, float)) and str(value).strip():
                used.add(name)
                parts.append(f"{label}: {clean(str(value))}")
        data[field] = "\n\n".join(parts)
    written = profile.get(EXAMPLES_FIELD)
    mes_example = ""
    if isinstance(written, str) and written.strip():
        used.add(EXAMPLES_FIELD)
        mes_example = "".join(f"<START>\n{block.strip()}\n" for block in clean(written).split("<START>") if block.strip())
    examples = []
    for field in EXAMPLE_FIELDS:
        if _strings(profile.get(field)):
            used.add(field)
            examples += _strings(profile.get(field))
    data["mes_example"] = mes_example + "".join(f"<START>\n{{{{char}}}}: {line}\n" for line in examples)
    tags: list[str] = []
    for field in TAG_FIELDS:
        if _strings(profile.get(field)):
            used.add(field)
            tags = _strings(profile.get(field))
            break
    entries, chars = [], 0
    knowledge = [e for e in api.entries(registry.get("knowledge"), p.document("knowledge")) if isinstance(e, dict)]
    for item in knowledge:
        content = clean(registry.get("knowledge").text_of(item) or jsonio.readable(item))
        title = clean(item.get("title") or "")
        story = clean(item.get("story_type") or "")  # general, command, relationship (2026)
        entries.append(book_entry(content, [title] if title else [],
                                  f"knowledge{f' ({story})' if story else ''}: {title or item.get('id')}",
                                  len(entries), {"kind": "knowledge", "id": item.get("id"), "story_type": story or None}))
        chars += len(content)
    memories = registry.get("memories")
    recent: collections.deque = collections.deque()
    recent_chars, left_out = 0, 0
    # the card's date is its data's, never the clock's: the same backup always gives the same card
    newest = max([to_epoch(profile.get(k)) or 0 for k in ("updated_at", "modified_at", "created_at")])
    with atomic_writer(rest_path) as rest:
        rest.write("[\n")
        for memory in p.records("memories"):  # oldest first: the newest that fit stay in ``recent``
            newest = max(newest, to_epoch(memories.time_of(memory)) or 0)
            content = clean(memories.text_of(memory))
            recent.append(memory)
            recent_chars += len(content)
            while recent and chars + recent_chars > BOOK_MAX_CHARS:
                old = recent.popleft()
                recent_chars -= len(clean(memories.text_of(old)))
                rest.write(("" if not left_out else ",\n") + jsonio.dumps(old))
                left_out += 1
        rest.write("\n]\n")
    for memory in reversed(recent):
        stamp = memories.time_of(memory)
        at = moment(stamp)
        when = at.strftime("%Y-%m-%d") if at else "undated"
        entry = book_entry(clean(memories.text_of(memory)), [], f"memory {when}", len(entries),
                           {"kind": "memory", "id": memory.get("id"), "created_at": stamp,
                            "memory_kind": memory.get("kind") or memory.get("summary_type"),
                            "deleted": memory.get("deleted") is True})
        entry["enabled"] = memory.get("deleted") is not True  # deleted on the service: kept, not remembered
        entries.append(entry)
    created = moment(profile.get("created_at"))
    notes = [f"Exported by tzcrawl from a backup of {website} (username {p.username!r})."]
    if left_out:
        notes.append(f"{left_out} older memories did not fit the character book ({BOOK_MAX_CHARS} characters): "
                     f"they are in {rest_path.name}.")
    data.update({
        "tags": tags, "creator": "", "character_version": "", "post_history_instructions": "",
        "alternate_greetings": [], "group_only_greetings": [], "creator_notes": " ".join(notes),
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "creation_date": int(created.timestamp()) if created else 0,
        "modification_date": int(newest),
        "extensions": {"tzcrawl": {"username": p.username, "website": website,
                                   "profile": _without(profile, used),
                                   "user_data": p.document("user_data"), "training": p.document("training"),
                                   "memories_in_side_file": left_out}},
    })
    if entries:  # an empty book makes card apps offer to import an empty lorebook
        data["character_book"] = {"name": f"{p.name}: knowledge and memories", "extensions": {}, "entries": entries}
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}, left_out


V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")


def v2_of(v3: dict) -> dict:
    """The V2 copy for the ``chara`` chunk: V2's fields only, the backfill warning in creator_notes, and
    the V1 fields at the top level too, as SillyTavern writes them (readers that know only V1 read those)."""
    data = {k: v for k, v in v3["data"].items()
            if k not in ("assets", "group_only_greetings", "creation_date", "modification_date", "nickname", "source",
                         "creator_notes_multilingual")}
    data["creator_notes"] = f"{V2_NOTE}\n\n{data['creator_notes']}"
    if "character_book" in data:
        book = dict(data["character_book"])
        book["entries"] = [{k: v for k, v in e.items() if k != "use_regex"} for e in book["entries"]]
        data["character_book"] = book
    return {**{k: data[k] for k in V1_FIELDS}, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def portrait(p: Personality) -> bytes:
    """The avatar as PNG bytes, or a generated placeholder with the name's initial."""
    from PIL import Image, ImageDraw, ImageFont

    for field in ("avatar_url", "avatar"):
        url = p.profile.get(field)
        local = p.media.get(url) if isinstance(url, str) else None
        if local and media_kind(url) == "image":
            try:
                with Image.open(p.directory / local) as image:
                    image.load()
                    picture = image.convert("RGBA")
                break
            except (OSError, ValueError):
                continue
    else:
        picture = Image.new("RGBA", (400, 600), (70, 72, 110, 255))
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default(size=240)
        draw.text((200, 300), (p.name[:1] or "?").upper(), fill=(235, 235, 245, 255), font=font, anchor="mm")
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def with_cards(png: bytes, v3: dict, v2: dict) -> bytes:
    """``png`` re-saved with the cards in ``tEXt`` chunks: ``ccv3`` (V3) and ``chara`` (V2), base64 of UTF-8 JSON."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(jsonio.readable(v2).encode("utf-8")).decode("ascii"))
    info.add_text("ccv3", base64.b64encode(jsonio.readable(v3).encode("utf-8")).decode("ascii"))
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def export(p: Personality, out: Output, website: str) -> dict:
    folder = out.folder(p.dir_name)
    v3, left_out = build(p, website, folder / f"{p.dir_name}.card-book-rest.json")
    v2 = v2_of(v3)
    out.write(folder / f"{p.dir_name}.card.json", jsonio.readable(v3, indent=2) + "\n")
    out.write(folder / f"{p.dir_name}.card.png", with_cards(portrait(p), v3, v2))
    return {"book_entries": len(v3["data"].get("character_book", {}).get("entries", [])),
            "memories_in_side_file": left_out}
