"""A SillyTavern chat file (``st``): ``<name>.chat.jsonl``, streamed.

The first line is the chat header; then, per message, one line for what you wrote and one for the
reply, with ``name``, ``is_user``, ``send_date`` and ``mes``; regenerated replies are the reply's
``swipes``. Dates are SillyTavern's own humanized form ``2023-7-22 @04h 53m 24s 8ms``, which every
version from 1.6.0 reads as UTC to the millisecond (its "July 22, 2023 4:53am" is read as the
browser's local time to the minute, and ISO 8601 is refused by its parser from 1.12.4 on); the
header's ``create_date`` is the first message's. An image attachment is the user line's
``extra.image`` (SillyTavern shows it); other media are listed under ``extra.tzcrawl``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from tzcrawl import jsonio
from tzcrawl.store.timestamps import to_epoch

from .output import Output
from .segments import Stream
from .source import Personality, clean
from .text import media_kind

USER = "You"


def send_date(ts) -> str:
    """``ts`` (Unix seconds, ms, ISO 8601) in SillyTavern's humanized UTC form, to the millisecond."""
    epoch = to_epoch(ts)
    if epoch is None:
        return ""
    ms = round(epoch * 1000)
    try:
        at = datetime.fromtimestamp(ms // 1000, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return ""
    return f"{at.year:04d}-{at.month}-{at.day} @{at.hour:02d}h {at.minute:02d}m {at.second:02d}s {ms % 1000}ms"


def header(p: Personality, first: dict | None) -> dict:
    """The chat's first line: who talks, and ``create_date``, the first message's time."""
    return {"user_name": USER, "character_name": p.name,
            "create_date": send_date(first.get("ts")) if first else "",
            "chat_metadata": {"tzcrawl": {"username": p.username, "exported_from": "tzcrawl backup"}}}


def message_lines(m: dict, name: str, media) -> list[dict]:
    """A message's lines: what you wrote (with its attachment), then the reply (with its swipes)."""
    out = []
    date = send_date(m.get("ts"))
    attachment = m.get("attachment_url")
    if m.get("message") or attachment:
        extra: dict = {}
        if isinstance(attachment, str) and attachment:
            local = media.get(attachment)
            if local and media_kind(attachment, m.get("attachment_type")) == "image":
                extra["image"] = local
            extra["tzcrawl"] = {"attachment": local or attachment, "attachment_type": m.get("attachment_type")}
        out.append({"name": USER, "is_user": True, "is_system": False, "send_date": date,
                    "mes": clean(m.get("message")), "extra": extra})
    if m.get("reply") or m.get("voice_reply_url"):
        reply = clean(m.get("reply"))
        swipes = [reply] + [clean(r) for r in m.get("regenerated_replies") or [] if isinstance(r, str)]
        extra = {"tzcrawl": {"id": m.get("id")}}
        voice = m.get("voice_reply_url")
        if isinstance(voice, str) and voice:
            extra["tzcrawl"]["voice_reply"] = media.get(voice) or voice
        out.append({"name": name, "is_user": False, "is_system": False, "send_date": date, "mes": reply,
                    "swipes": swipes, "swipe_id": 0, "extra": extra})
    return out


def export(p: Personality, out: Output) -> dict:
    """The chat file, a stretch of messages at a time; stretches that did not change since the last
    export are copied from it (``segments.Stream``)."""
    folder = out.folder(p.dir_name)
    media = p.media
    for path in media.values():
        out.link(p.directory / path, folder / path)
    name = f"{p.dir_name}.chat.jsonl"

    def render(segment, carry, looked):
        rows = [] if carry else [header(p, segment.records[0] if segment.records else None)]
        for m in segment.records:
            rows += message_lines(m, p.name, looked)
        return [(name, b"".join(jsonio.dumps_bytes(row) + b"\n" for row in rows))], True

    stream = Stream(folder, out.earlier(p.dir_name, "st").get("chat"), media, out.sync_for(p.dir_name))
    count = stream.write(p.segments("messages"), render, ["st", p.name, p.username])
    return {"messages": count, "reused": stream.reused, "state": {"chat": stream.state}}
