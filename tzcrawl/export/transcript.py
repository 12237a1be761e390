"""Plain-text transcripts (``md``): ``chat.md`` (or ``chat-YYYY.md`` a year when large) and ``memories.md``.

Day headings and times are UTC, so the same backup gives the same bytes on every machine.
Attachments and voice replies link to the export's ``media/`` copies (the original URL when the
backup has no copy). Text is written as the service stored it, Markdown already, but held inside
its own paragraph (``held``): no line of it can open or close a block outside it (an unclosed code
fence, a ``---`` or ``===`` underline, a ``# `` line, a list, a quote, an HTML block, a blank line).
"""

from __future__ import annotations

import re
import string

from tzcrawl import registry

from .output import Output
from .segments import Stream
from .source import Personality, clean
from .text import media_kind, moment

YEARLY_ABOVE = 20_000  # messages: beyond this, one file a year


def _media_line(label: str, url, media: dict[str, str]) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    local = media.get(url)
    target = local or url
    mark = "!" if local and media_kind(url) == "image" else ""
    return f"{mark}[{label}{'' if local else ' (remote)'}](<{target}>)"


LEADING_DIGITS = re.compile(r"(\d+)([.)])")


def _inert(line: str) -> str:
    """``line`` as a paragraph's continuation line that cannot start a block: its first character, when
    ASCII punctuation, is backslash-escaped (``\\#``, ``\\```, ``\\-``, ``\\>``, ``\\<``, ``\\=``...), as is
    the ``.``/``)`` of a leading number (``1\\.``). The escape renders as the character itself."""
    body = line.lstrip(" \t")
    if not body:
        return "\\"  # a blank line would end the paragraph; a lone backslash is a line break
    indent = line[:len(line) - len(body)]
    if body[0] in string.punctuation:
        return f"{indent}\\{body}"
    number = LEADING_DIGITS.match(body)
    if number:
        return f"{indent}{number.group(1)}\\{body[number.end(1):]}"
    return line


def held(text, indent: str = "") -> str:
    """Text as the rest of one paragraph (after a speaker or date prefix): every line after the first
    made inert (``_inert``) and joined by hard line breaks; ``indent`` keeps list items' lines inside."""
    lines = clean(text).splitlines() or [""]
    while len(lines) > 1 and not lines[-1].strip():  # trailing blank lines say nothing (a lone \\ would show)
        lines.pop()
    out, blank = lines[0], False
    for line in lines[1:]:
        inert = _inert(line)
        # each line ends in a hard break: two spaces, or the lone backslash that stands for a blank line
        out += ("\n" if blank else "  \n") + indent + inert
        blank = inert == "\\" and not line.strip()
    return out


def _lines(text) -> str:
    """A message's text under its speaker line, held in that paragraph."""
    return held(text)


def chat_block(m: dict, name: str, day, media) -> tuple[str, str, str]:
    """One message as (year, text, its day): a day heading first when its UTC day is not ``day``."""
    at = moment(m.get("ts"))
    today = at.strftime("%Y-%m-%d") if at else "unknown date"
    clock = at.strftime("%H:%M") if at else "--:--"
    parts = []
    if today != day:
        parts.append(f"\n## {today}\n")
    for speaker, text_field, label, url_field in (("You", "message", "attachment", "attachment_url"),
                                                  (name, "reply", "voice reply", "voice_reply_url")):
        if m.get(text_field) or m.get(url_field):
            parts.append(f"**{speaker}** ({clock}): {_lines(m.get(text_field))}")
            link = _media_line(label, m.get(url_field), media)
            parts += [link, ""] if link else [""]
    return (at.strftime("%Y") if at else "unknown"), "\n".join(parts) + "\n", today


def joined(parts: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """Consecutive texts for the same file as one piece of UTF-8."""
    out: list[tuple[str, list[str]]] = []
    for name, text in parts:
        if out and out[-1][0] == name:
            out[-1][1].append(text)
        else:
            out.append((name, [text]))
    return [(name, "".join(texts).encode("utf-8")) for name, texts in out]


def chat_render(name: str, yearly: bool):
    """A stretch of the chat: its messages, a file a year when ``yearly``; the carry is the day of its
    last message and the file it went to (a heading or a file's header only when they change)."""
    def render(segment, carry, media):
        day, current = carry or (None, None)
        parts: list[tuple[str, str]] = []
        for m in segment.records:
            year, text, day = chat_block(m, name, day, media)
            target = f"chat-{year}.md" if yearly else "chat.md"
            if target != current:
                parts.append((target, f"# Chat with {name}" + (f", {year}" if yearly else "") + "\n\nTimes are UTC.\n"))
                current = target
            parts.append((target, text))
        if carry is None and current is None:
            parts.append(("chat.md", f"# Chat with {name}\n\nNo messages.\n"))
        return joined(parts), [day, current]
    return render


def memories_render(name: str):
    """A stretch of the memories, oldest first; the file's header before the first."""
    described = registry.get("memories")

    def render(segment, carry, media):
        lines = [] if carry else [f"# Memories of {name}\n\nOldest first; times are UTC.\n\n"]
        for m in segment.records:
            at = moment(described.time_of(m))
            when = at.strftime("%Y-%m-%d %H:%M") if at else "unknown date"
            kind = f" ({clean(m.get('kind'))})" if m.get("kind") else ""
            meta = m.get("metadata") if isinstance(m.get("metadata"), dict) else {}
            start, end = moment(meta.get("start_ts")), moment(meta.get("end_ts"))
            span = f" (conversation {start:%Y-%m-%d %H:%M}–{end:%H:%M})" if start and end else ""
            flag = " *[deleted on the service]*" if m.get("deleted") is True else ""
            lines.append(f"- **{when}**{kind}{span}{flag}: {held(described.text_of(m), '  ')}\n")
        return [("memories.md", "".join(lines).encode("utf-8"))], True
    return render


def export(p: Personality, out: Output) -> dict:
    """Write the transcripts, streaming, a stretch at a time; stretches whose messages did not change
    since the last export are copied from it, not written anew (``segments.Stream``)."""
    folder = out.folder(p.dir_name)
    media = p.media
    for path in media.values():
        out.link(p.directory / path, folder / path)
    earlier = out.earlier(p.dir_name, "md")
    yearly = p.total("messages") > YEARLY_ABOVE
    chat = Stream(folder, earlier.get("chat"), media, out.sync_for(p.dir_name))
    count = chat.write(p.segments("messages"), chat_render(p.name, yearly), ["md-chat", p.name, yearly])
    memories = Stream(folder, earlier.get("memories"), media, out.sync_for(p.dir_name))
    held_memories = memories.write(p.segments("memories"), memories_render(p.name), ["md-memories", p.name])
    return {"messages": count, "memories": held_memories, "reused": chat.reused + memories.reused,
            "state": {"chat": chat.state, "memories": memories.state}}
