"""What an export reads: one personality's backup, through ``BackupView``, never changing it.

Collections are streamed oldest first, so a history of 100,000 messages is never held whole. A file
that is missing or torn is not fatal: what can be read is exported, and ``problems`` says what was
skipped (the export then exits 1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tzcrawl import jsonio, registry
from tzcrawl.media import manifest
from tzcrawl.store import BackupView
from tzcrawl.store.jsonarray import CorruptCollectionError, Spans
from tzcrawl.store.metadata import METADATA_NAME
from tzcrawl.store.metadata import load as load_metadata

from .segments import SEGMENT, Segment, again, cut, unchanged_start

def clean(text) -> str:
    """Text safe to write as UTF-8: a lone surrogate (valid in JSON, not in UTF-8) becomes U+FFFD."""
    if text is None:
        return ""
    text = text if isinstance(text, str) else str(text)
    return jsonio.LONE_SURROGATE.sub("\ufffd", text)


@dataclass
class Personality:
    """One backed-up personality as an export sees it."""

    view: BackupView
    username: str
    directory: Path
    metadata: dict
    problems: list[str] = field(default_factory=list)
    _media: dict[str, str] | None = None
    _profile: dict | None = None
    _cuts: dict = field(default_factory=dict)  # (resource, size) → what the first read found, for the next format
    noted: dict = field(default_factory=dict)  # what the last export's first reads found (``cuts``)

    @property
    def dir_name(self) -> str:
        return self.directory.name

    @property
    def profile(self) -> dict:
        """The saved profile (``{}`` when missing or unreadable: noted in ``problems``)."""
        if self._profile is None:
            value = self.document("profile")
            self._profile = value if isinstance(value, dict) else {}
        return self._profile

    @property
    def name(self) -> str:
        return clean(self.profile.get("name") or self.metadata.get("personality", {}).get("name") or self.username)

    @property
    def whose(self) -> str:
        """"" for the user's own; for someone else's personality, one line saying so (and why some
        resources are absent: only its owner may read them)."""
        block = self.metadata.get("personality")
        if not isinstance(block, dict) or block.get("owned") is not False:
            return ""
        owner = clean(block.get("owner") or "")
        return (f"Someone else's personality{f' (owner {owner})' if owner else ''}: its chat history and your "
                f"personalization are here; its memories, knowledge and training are only its owner's to read.")

    def total(self, resource: str) -> int:
        entry = self.metadata.get("resources", {}).get(resource, {})
        total = entry.get("total")
        return total if isinstance(total, int) else 0

    def document(self, resource: str):
        try:
            return self.view.read_document(self.username, resource)
        except (OSError, ValueError) as exc:
            self.problems.append(f"{resource}: unreadable ({exc.__class__.__name__}: {exc}); skipped")
            return None

    def torn(self, resource: str, count: int, why) -> None:
        """Say once that ``resource`` is torn or unreadable after ``count`` records (the rest skipped)."""
        problem = f"{resource}: torn or unreadable after {count} records; the rest skipped ({why})"
        if problem not in self.problems:  # a page rendered elsewhere may have said it already
            self.problems.append(problem)

    def records(self, resource: str) -> Iterator[dict]:
        """The collection's records, oldest first; a torn file yields what it holds, then a problem."""
        count = 0
        try:
            for record in self.view.read_collection(self.username, resource):
                if isinstance(record, dict):
                    count += 1
                    yield record
        except (OSError, CorruptCollectionError) as exc:
            self.torn(resource, count, exc)

    def segments(self, resource: str, size: int = SEGMENT) -> Iterator[Segment]:
        """The collection in segments (``segments.cut``), records parsed only when a segment is rendered;
        a torn file: the records before the tear, then a problem. The first read notes each segment's
        digest and byte range: the other formats of this export read only the segments they render,
        and the next export's first read checks those at the start of the file by their digest
        (``unchanged_start``) instead of walking through every line again."""
        cut_before = self._cuts.get((resource, size))
        spans, found = Spans(), []
        path = self.view.path(self.username, registry.collection(resource).name)
        if cut_before is not None:
            source, kept = again(*cut_before), None
        else:
            last = self.noted.get(resource)
            kept, stat = unchanged_start(path, last.get("segments")) if isinstance(last, dict) \
                and last.get("size") == size else ([], None)
            before = sum(n for _, _, _, n, _, _ in kept)
            resume = (kept[-1][5], before, stat) if kept else None
            source = itertools.chain(again(path, stat, kept), cut(
                self.view.read_bodies(self.username, resource, spans, resume), size, first=len(kept) + 1))
        count = 0
        try:
            for segment in source:
                yield segment
                if segment.torn:
                    self.torn(resource, count + len(segment.records), segment.torn)
                    return
                found.append((segment.number, segment.more, segment.digest, count, len(segment.bodies)))
                count += len(segment.bodies)
        except (OSError, CorruptCollectionError) as exc:
            self.torn(resource, count, exc)
            return
        if kept is None or not spans.whole or len(spans.ends) != count - before or (kept and spans.stat != stat):
            return
        reused = {number: (start, end) for number, _, _, _, start, end in kept}
        self._cuts[(resource, size)] = (path, spans.stat, [
            (number, more, digest, n, *(reused.get(number) or spans.stretch(first - before, n)))
            for number, more, digest, first, n in found])

    def cuts(self) -> dict:
        """What this export's first reads found, for the next export (``noted``): the segments of each
        collection read whole, by resource."""
        return {resource: {"size": size, "segments": [list(entry) for entry in noted]}
                for (resource, size), (_path, _stat, noted) in self._cuts.items()}

    @property
    def media(self) -> dict[str, str]:
        """Media URL → path under the personality folder (``media/...``) of every file held whole."""
        if self._media is None:
            self._media = {}
            try:
                entries = manifest.load(self.view.media_manifest_path(self.username))
            except (OSError, ValueError) as exc:
                self.problems.append(f"media manifest: unreadable ({exc}); media shown as remote links")
                entries = {}
            for url, entry in entries.items():
                path = entry.get("path")
                if entry.get("status") == manifest.OK and isinstance(path, str) and path.startswith("media/") \
                        and "/" not in path[6:] and (self.directory / path).is_file():
                    self._media[url] = path
        return self._media

    def inputs(self, names=registry.RESOURCES, media: bool | str = True) -> list:
        """What says whether the backup changed since an export, for a format that reads ``names``: each
        data file's sha256 as the metadata recorded it at its last commit (with its size, to notice a
        hand edit), else the file's size and modification time; and the media manifest's (``media``), or
        only the avatar's file (``"avatar"``). The metadata's own timestamps are left out: a run that
        found nothing new changes nothing here."""
        out: list = []
        resources = self.metadata.get("resources", {})
        for resource in names:
            path = self.view.path(self.username, resource)
            try:
                stat = path.stat()
            except OSError:
                continue
            digest = resources.get(resource, {}).get("sha256")
            out.append([resource, digest, stat.st_size] if digest else [resource, stat.st_size, stat.st_mtime_ns])
        if media == "avatar":  # only the profile picture (a card's portrait), not every media file
            for key in ("avatar_url", "avatar"):
                url = self.profile.get(key)
                local = self.media.get(url) if isinstance(url, str) else None
                out.append([key, local, (self.directory / local).stat().st_size if local else None])
        elif media:
            try:
                stat = self.view.media_manifest_path(self.username).stat()
                out.append(["media", stat.st_size, stat.st_mtime_ns])
            except OSError:
                pass
        whose = self.metadata.get("personality", {})
        if isinstance(whose, dict) and "owned" in whose:  # the archive marks someone else's personality
            out.append(["owned", whose.get("owned"), whose.get("owner")])
        return out


def personalities(view: BackupView, names: list[str] | None = None) -> tuple[list[Personality], list[str]]:
    """The backed-up personalities (all, or ``names``), and the names asked for that have no backup."""
    found: list[Personality] = []
    missing: list[str] = []
    if names:
        for username in names:
            directory = view.directory(username)
            if (directory / METADATA_NAME).is_file():
                found.append(Personality(view, username, directory, view.metadata(username)))
            else:
                missing.append(username)
        return found, missing
    if view.root.is_dir():
        for directory in sorted(view.root.iterdir()):
            meta_path = directory / METADATA_NAME
            if directory.is_dir() and not directory.name.startswith(".") and meta_path.is_file():
                metadata = load_metadata(meta_path)
                username = metadata.get("personality", {}).get("username")
                if isinstance(username, str) and view.directory(username) == directory:
                    found.append(Personality(view, username, directory, metadata))
    return found, missing
