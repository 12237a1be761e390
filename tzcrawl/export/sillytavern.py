"""A SillyTavern chat file (``st``): ``<name>.chat.jsonl``, streamed.

The first line is the chat header; then, per message, one line for what you wrote and one for the
reply, with ``name``, ``is_user``, ``send_date`` (SillyTavern's own "March 14, 2025 2:03pm", UTC) and
``mes``; regenerated replies are the reply's ``swipes``. An image attachment is the user line's
``extra.image`` (SillyTavern shows it); other media are listed under ``extra.tzcrawl``.
"""

from __future__ import annotations

from tzcrawl import jsonio
from tzcrawl.fsutil import atomic_writer

from .output import Output
from .source import Personality, clean
from .text import media_kind, moment

USER = "You"


def send_date(ts) -> str:
    at = moment(ts)
    if at is None:
        return ""
    return f"{at:%B} {at.day}, {at.year} {at.hour % 12 or 12}:{at:%M}{'am' if at.hour < 12 else 'pm'}"


def lines(p: Personality, media: dict[str, str]):
    """The file's lines (JSON text), header first."""
    yield {"user_name": USER, "character_name": p.name, "create_date": "", "chat_metadata": {"tzcrawl": {
        "username": p.username, "exported_from": "tzcrawl backup"}}}
    for m in p.records("messages"):
        date = send_date(m.get("ts"))
        attachment = m.get("attachment_url")
        if m.get("message") or attachment:
            extra: dict = {}
            if isinstance(attachment, str) and attachment:
                local = media.get(attachment)
                if local and media_kind(attachment, m.get("attachment_type")) == "image":
                    extra["image"] = local
                extra["tzcrawl"] = {"attachment": local or attachment, "attachment_type": m.get("attachment_type")}
            yield {"name": USER, "is_user": True, "is_system": False, "send_date": date,
                   "mes": clean(m.get("message")), "extra": extra}
        if m.get("reply") or m.get("voice_reply_url"):
            reply = clean(m.get("reply"))
            swipes = [reply] + [clean(r) for r in m.get("regenerated_replies") or [] if isinstance(r, str)]
            extra = {"tzcrawl": {"id": m.get("id")}}
            voice = m.get("voice_reply_url")
            if isinstance(voice, str) and voice:
                extra["tzcrawl"]["voice_reply"] = media.get(voice) or voice
            yield {"name": p.name, "is_user": False, "is_system": False, "send_date": date, "mes": reply,
                   "swipes": swipes, "swipe_id": 0, "extra": extra}


def export(p: Personality, out: Output) -> dict:
    folder = out.folder(p.dir_name)
    media = p.media
    for path in media.values():
        out.link(p.directory / path, folder / path)
    count = -1
    with atomic_writer(folder / f"{p.dir_name}.chat.jsonl", binary=True) as fh:
        for count, line in enumerate(lines(p, media)):
            fh.write(jsonio.dumps_bytes(line) + b"\n")
    return {"lines": count}
