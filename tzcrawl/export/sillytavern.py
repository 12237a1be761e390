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

import itertools
from datetime import datetime, timezone

from tzcrawl import jsonio
from tzcrawl.fsutil import atomic_writer
from tzcrawl.store.timestamps import to_epoch

from .output import Output
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


def lines(p: Personality, media: dict[str, str]):
    """The file's lines (JSON text), header first (its ``create_date``: the first message's time)."""
    messages = p.records("messages")
    first = next(messages, None)
    yield {"user_name": USER, "character_name": p.name,
           "create_date": send_date(first.get("ts")) if first else "",
           "chat_metadata": {"tzcrawl": {"username": p.username, "exported_from": "tzcrawl backup"}}}
    for m in itertools.chain([first] if first else [], messages):
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
