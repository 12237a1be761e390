"""The media URLs the records a backup already holds point at, read from the saved files.

A run sees only the records the service sends it, so media of records saved earlier (by a run with
media off, or whose manifest was lost or never written) would never be listed again. The media
pipeline reads a saved resource through here when the metadata does not say its records' media
are listed (``media_listed``); ``scrapy verify`` reads every one, to report records whose media are
missing from the manifest.
"""

from __future__ import annotations

from typing import Iterator

from tzcrawl import jsonio, registry
from tzcrawl.store import BackupView
from tzcrawl.store.jsonarray import read_array

from . import refs


def held_refs(view: BackupView, username: str, resource: str, fields) -> Iterator[refs.Ref]:
    """Every media reference in the saved ``resource`` of ``username`` (none when it is not saved).
    A file that cannot be read or parsed raises (OSError, ValueError)."""
    described = registry.get(resource)
    path = view.path(username, resource)
    if not path.exists():
        return
    if described.collection:
        for _line, record in read_array(path):
            yield from refs.refs(record, fields, described.id_field)
    else:
        yield from refs.refs(jsonio.loads(path.read_bytes()), fields, described.id_field)


def missing_from(entries: dict[str, dict], found: Iterator[refs.Ref]) -> dict[str, refs.Ref]:
    """The fetchable references in ``found`` that the manifest ``entries`` do not list, by URL."""
    out: dict[str, refs.Ref] = {}
    for ref in found:
        if ref.url not in entries and ref.url not in out and refs.kind(ref.url) == refs.FETCH:
            out[ref.url] = ref
    return out
