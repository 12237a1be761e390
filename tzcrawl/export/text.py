"""Message text to safe HTML, and the small pure helpers every format shares (times, media kinds).

Text is data, never markup: markdown-it-py renders the Markdown-ish formatting people type (bold,
italics, code, line breaks, links) with raw HTML disabled, so ``<script>`` shows as text; links it
accepts are http(s)/mailto only (it refuses ``javascript:``), and each opens with ``rel=noopener``.
Only inline rules run: chat messages have no block structure worth rendering, and it is 20x faster.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from markdown_it import MarkdownIt
from markupsafe import Markup

from tzcrawl.store.timestamps import to_epoch

from .source import clean

_MD = MarkdownIt("zero", {"html": False, "breaks": True, "linkify": False}).enable(
    ["emphasis", "backticks", "newline", "link", "escape", "entity", "autolink"])


def _link_open(renderer, tokens, idx, options, env):
    token = tokens[idx]
    token.attrSet("rel", "noopener noreferrer nofollow")
    token.attrSet("target", "_blank")
    return renderer.renderToken(tokens, idx, options, env)


_MD.add_render_rule("link_open", _link_open)


# The characters an enabled inline rule (or markdown-it's input normalization) acts on. A text without
# any is rendered as markdown-it renders plain text, HTML-escaped, without parsing it (tests compare the two).
_MARKUP_CHARS = re.compile(r"[*_`\[\]\\&<\n\r\x00]")


# Texts whose only markup is line breaks and backslash escapes (most long messages) take a short path:
# what markdown-it's newline and escape rules do, without its parser (tests compare the two on random
# texts). Anything else an enabled rule acts on goes to markdown-it.
_OTHER_MARKUP = re.compile(r"[*_`\[\]&<\r\x00]")
_BREAK_OR_ESCAPE = re.compile(r"\\\n[ \t]*|\\.|\n[ \t]*", re.S)
_ESCAPABLE = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_BR = "<br>\n"


def _escape(text: str) -> str:
    return text.replace(">", "&gt;").replace('"', "&quot;")  # no & or < here: those go to markdown-it


def _breaks_and_escapes(text: str) -> str:
    out, last = [], 0
    for m in _BREAK_OR_ESCAPE.finditer(text):
        pending, token, last = text[last:m.start()], m.group(), m.end()
        if token[0] == "\n":  # newline rule: 2+ trailing spaces make a hard break, 1 is dropped
            if pending.endswith(" "):
                pending = pending.rstrip(" ") if pending.endswith("  ") else pending[:-1]
            out += (_escape(pending), _BR)
        elif token[1] == "\n":  # backslash at the end of a line: a hard break
            out += (_escape(pending), _BR)
        else:  # an escape: the character itself when it is punctuation, else kept as typed
            out += (_escape(pending), _escape(token[1] if token[1] in _ESCAPABLE else token))
    out.append(_escape(text[last:]))
    return "".join(out)


def markdown(text) -> Markup:
    """Safe HTML for a message or memory text (lone surrogates become U+FFFD)."""
    text = clean(text)
    if not text:
        return Markup("")
    if _MARKUP_CHARS.search(text) is None:  # plain text: most short messages
        return Markup(text.replace(">", "&gt;").replace('"', "&quot;"))
    if _OTHER_MARKUP.search(text) is None:
        return Markup(_breaks_and_escapes(text))
    return Markup(_MD.renderInline(text))


def moment(value) -> datetime | None:
    """A record's timestamp (Unix seconds, ms, ISO 8601) as an aware UTC datetime, or None."""
    epoch = to_epoch(value)
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def iso(value) -> str:
    at = moment(value)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z") if at else ""


def media_kind(url: str | None, declared: str | None = None) -> str:
    """``image``, ``audio`` or ``file``: from the declared type, else the URL's extension."""
    declared = (declared or "").lower()
    if declared.startswith(("image/", "audio/", "video/")):
        return {"video": "file"}.get(declared.split("/")[0], declared.split("/")[0])
    path = (url or "").lower().split("?")[0]
    if path.endswith((".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif")):
        return "image"
    if path.endswith((".mp3", ".ogg", ".oga", ".opus", ".wav", ".m4a", ".aac", ".flac")):
        return "audio"
    return "file"
