"""Which values of a record are media to bring home: pure, no I/O.

A media field is named by its key, or by a dotted path of keys for nested ones (``screenshots.url``:
a ``url`` inside whatever ``screenshots`` holds; lists are looked through). A field matches wherever
the record nests it, so knowledge wrapped as ``{"items": [...]}`` needs no special case.
Only absolute http(s) URLs are fetched; a ``data:`` URL already holds its bytes in the JSON; any other
form (``file:``, ``javascript:``, relative) is never fetched, nor is a URL carrying a user name or password
(``http://user:pass@host/x.png``: shown only as ``http://***@host/x.png``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

DEFAULT_FIELDS = (
    # profile
    "avatar_url", "avatar", "banner", "voice_file", "screenshots.url",
    # chat messages
    "voice_reply_url", "attachment_url",
    # knowledge, training and anything else that carries a file
    "image_url", "audio_url", "file_url", "media_url",
)
FETCH, INLINE, IGNORED, CREDENTIALS = "fetch", "inline", "ignored", "credentials"
MAX_DEPTH = 64  # JSON nested deeper than this is not looked into (a hostile answer costs nothing)


@dataclass(frozen=True)
class Ref:
    """One media URL as a record refers to it: ``source_id`` is the nearest enclosing record's id."""

    url: str
    field: str
    source_id: str | None


def parse_fields(extra: str | list | tuple | None) -> tuple[tuple[str, ...], ...]:
    """The default fields plus ``extra`` (``BACKUP_MEDIA_FIELDS``: a comma-separated string or a list)."""
    names = list(DEFAULT_FIELDS)
    if isinstance(extra, str):
        extra = extra.split(",")
    names += [str(n).strip() for n in extra or () if str(n).strip()]
    return tuple(dict.fromkeys(tuple(part for part in name.split(".") if part) for name in names))


def kind(url: str) -> str:
    """``fetch`` for an absolute http(s) URL, ``inline`` for ``data:``, ``credentials`` for one with a user
    name or password in it (refused), ``ignored`` for anything else."""
    text = url.strip()
    lowered = text[:8].lower()
    if lowered.startswith("data:"):
        return INLINE
    if lowered.startswith(("http://", "https://")):
        try:
            parts = urlsplit(text)
            if parts.username is not None or parts.password is not None or "@" in parts.netloc:
                return CREDENTIALS
            if parts.hostname:
                return FETCH
        except ValueError:  # e.g. a bad IPv6 literal
            pass
    return IGNORED


def redacted(url: str) -> str:
    """``url`` with any user name and password replaced by ``***`` (what may be logged)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{slash}{path}"


def refs(record, fields: tuple[tuple[str, ...], ...], id_field: str = "id") -> Iterator[Ref]:
    """Every non-empty string at a media field of ``record``, with the field and the source id."""
    stack = [(record, (), None, 0)]
    while stack:
        value, path, source, depth = stack.pop()
        if isinstance(value, dict):
            own = value.get(id_field)
            source = str(own) if isinstance(own, (str, int)) and not isinstance(own, bool) else source
            children = [(v, path + (str(k),)) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(v, path) for v in value]
        else:
            if isinstance(value, str) and value.strip() and path:
                for spec in fields:
                    if path[-len(spec):] == spec:
                        yield Ref(value.strip(), ".".join(spec), source)
                        break
            continue
        if depth < MAX_DEPTH:
            stack.extend((v, p, source, depth + 1) for v, p in reversed(children))
