"""Plain-text transcripts (``md``): ``chat.md`` (or ``chat-YYYY.md`` a year when large) and ``memories.md``.

Day headings and times are UTC, so the same backup gives the same bytes on every machine.
Attachments and voice replies link to the export's ``media/`` copies (the original URL when the
backup has no copy). Text is written as the service stored it, Markdown already, but held inside
its own paragraph (``held``): no line of it can open or close a block outside it (an unclosed code
fence, a ``---`` or ``===`` underline, a ``# `` line, a list, a quote, an HTML block, a blank line).
"""

from __future__ import annotations

import contextlib
import re
import string
from typing import Iterator

from tzcrawl import registry
from tzcrawl.fsutil import atomic_writer

from .output import Output
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


def chat_blocks(p: Personality, media: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(year, text) for each message in order, with a day heading before the first of each UTC day."""
    day = None
    for m in p.records("messages"):
        at = moment(m.get("ts"))
        today = at.strftime("%Y-%m-%d") if at else "unknown date"
        clock = at.strftime("%H:%M") if at else "--:--"
        parts = []
        if today != day:
            parts.append(f"\n## {today}\n")
            day = today
        for speaker, text_field, label, url_field in (("You", "message", "attachment", "attachment_url"),
                                                      (p.name, "reply", "voice reply", "voice_reply_url")):
            if m.get(text_field) or m.get(url_field):
                parts.append(f"**{speaker}** ({clock}): {_lines(m.get(text_field))}")
                link = _media_line(label, m.get(url_field), media)
                parts += [link, ""] if link else [""]
        yield (at.strftime("%Y") if at else "unknown"), "\n".join(parts) + "\n"


def export(p: Personality, out: Output) -> dict:
    """Write the transcripts, streaming: a file is written as the history is read, never held whole."""
    folder = out.folder(p.dir_name)
    media = p.media
    for path in media.values():
        out.link(p.directory / path, folder / path)
    yearly = p.total("messages") > YEARLY_ABOVE
    count = 0
    with contextlib.ExitStack() as stack:
        current, fh = None, None
        for year, block in chat_blocks(p, media):
            name = f"chat-{year}.md" if yearly else "chat.md"
            if name != current:
                stack.close()
                fh = stack.enter_context(atomic_writer(folder / name))
                fh.write(f"# Chat with {p.name}" + (f", {year}" if yearly else "") + "\n\nTimes are UTC.\n")
                current = name
            fh.write(block)
            count += 1
    if not count:
        out.write(folder / "chat.md", f"# Chat with {p.name}\n\nNo messages.\n")

    memories = 0
    with atomic_writer(folder / "memories.md") as fh:
        fh.write(f"# Memories of {p.name}\n\nOldest first; times are UTC.\n\n")
        described = registry.get("memories")
        for m in p.records("memories"):
            at = moment(described.time_of(m))
            when = at.strftime("%Y-%m-%d %H:%M") if at else "unknown date"
            kind = f" ({clean(m.get('kind'))})" if m.get("kind") else ""
            meta = m.get("metadata") if isinstance(m.get("metadata"), dict) else {}
            start, end = moment(meta.get("start_ts")), moment(meta.get("end_ts"))
            span = f" (conversation {start:%Y-%m-%d %H:%M}–{end:%H:%M})" if start and end else ""
            flag = " *[deleted on the service]*" if m.get("deleted") is True else ""
            fh.write(f"- **{when}**{kind}{span}{flag}: {held(described.text_of(m), '  ')}\n")
            memories += 1
    return {"messages": count, "memories": memories}
