"""``scrapy verify``, offline: prove what a backup holds, file by file, without the network.

For each personality: every data file parses; collections hold one record per id, in time order;
counts equal the metadata's totals; each file's sha256 equals the one recorded at its last commit
(older backups have none yet: a note, not damage); every ``ok`` media file is there, whole; every
media URL of every saved record is in the media manifest and held (else INCOMPLETE: the next crawl
fetches it); no temp or staging files are left; files are 0600 and folders 0700. Each problem names the file and, where it
can, the record. Nothing is changed. The online comparison (``-a online=1``) is the ``verify_online``
spider; both report through ``Check``.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tzcrawl import api, registry
from tzcrawl.fsutil import sha256_file
from tzcrawl.media import manifest, refs
from tzcrawl.media.held import held_refs
from tzcrawl.store import BackupView
from tzcrawl.store.backup import MEDIA_DIR, STAGING
from tzcrawl.store.jsonarray import CorruptCollectionError, read_array
from tzcrawl.store.merge import dedupe_id
from tzcrawl.store.metadata import METADATA_NAME
from tzcrawl.store.timestamps import sort_key

OK, NOTE, INCOMPLETE, DAMAGED = "ok", "note", "INCOMPLETE", "DAMAGED"


@dataclass
class Check:
    """One line of a personality's table: what was checked, how it stands, and the details."""

    what: str
    status: str = OK
    details: list[str] = field(default_factory=list)

    def damaged(self, detail: str) -> None:
        self.status = DAMAGED
        self.details.append(detail)

    def incomplete(self, detail: str) -> None:
        """Whole, but something the backup should hold is not there yet (media not downloaded)."""
        if self.status in (OK, NOTE):
            self.status = INCOMPLETE
        self.details.append(detail)

    def note(self, detail: str) -> None:
        if self.status == OK:
            self.status = NOTE
        self.details.append(detail)


@dataclass
class Verdict:
    username: str
    dir_name: str
    checks: list[Check] = field(default_factory=list)
    said: str = ""  # how it was checked, when not plainly (being backed up now)

    @property
    def damaged(self) -> bool:
        return any(c.status == DAMAGED for c in self.checks)

    @property
    def incomplete(self) -> bool:
        return not self.damaged and any(c.status == INCOMPLETE for c in self.checks)

    def table(self) -> str:
        width = max((len(c.what) for c in self.checks), default=8)
        state = DAMAGED if self.damaged else INCOMPLETE if self.incomplete else OK
        lines = [f"{self.username} ({self.dir_name}): {state}{'  (' + self.said + ')' if self.said else ''}"]
        for check in self.checks:
            detail = "; ".join(check.details)
            lines.append(f"  {check.what.ljust(width)}  {check.status}{'  ' + detail if detail else ''}")
        return "\n".join(lines)


def check_collection(path: Path, resource: registry.Resource, check: Check) -> int:
    """Parse the collection; one record per id; oldest first. Returns how many records it holds."""
    seen: dict[str, int] = {}
    previous = None
    count = 0
    try:
        for _line, record in read_array(path):
            count += 1
            ident = dedupe_id(record, resource.id_field)
            if ident in seen:
                check.damaged(f"record {count} repeats the id of record {seen[ident]} "
                              f"({ident[2:] if ident.startswith('i:') else 'same content'})")
            else:
                seen[ident] = count
            key = sort_key(record, resource.when, resource.id_field)
            if previous is not None and key < previous:
                check.damaged(f"record {count} (id {ident[2:]}) is older than the one before it: out of order")
            previous = key
    except CorruptCollectionError as exc:
        check.damaged(f"not valid JSON after {count} records ({exc})")
    except OSError as exc:
        check.damaged(f"unreadable: {exc}")
    return count


def check_resource(view: BackupView, username: str, resource: registry.Resource, entry: dict) -> Check:
    check = Check(resource.name)
    path = view.path(username, resource.name)
    if not path.exists():
        if entry.get("outcome") == "not_theirs":  # someone else's personality: nothing of this to hold
            check.note("not yours: only its owner may read it")
        elif entry.get("last_sync") or entry.get("sha256"):
            check.damaged(f"{path.name} is missing (the metadata says it was saved {entry.get('last_sync')})")
        else:
            check.note("not backed up yet")
        return check
    recorded = entry.get("sha256")
    if recorded:
        actual = sha256_file(path)
        if actual != recorded:
            check.damaged(f"{path.name}: sha256 {actual[:12]}… differs from the {recorded[:12]}… recorded at its "
                          f"last commit ({entry.get('last_sync')})")
    else:
        check.note("no checksum yet (saved by an older tzcrawl; the next run records one)")
    if resource.collection:
        count = check_collection(path, resource, check)
    else:
        try:
            with open(path, encoding="utf-8") as fh:
                count = api.entry_count(resource, json.load(fh))
        except (OSError, ValueError, api.BadAnswer) as exc:
            check.damaged(f"{path.name} is not valid JSON ({exc})")
            return check
    total = entry.get("total")
    if isinstance(total, int) and total != count:
        check.damaged(f"{path.name} holds {count} {'records' if resource.collection else 'entries'}, the metadata "
                      f"says {total}")
    if check.status != DAMAGED:
        check.details.insert(0, f"{count} {'records' if resource.collection else 'entries'}")
    if entry.get("drift"):
        check.note(f"the service's last answer lacked {', '.join(map(str, entry['drift']))} (drift; saved as received)")
    if resource.flag_field and entry.get(resource.flag_field):
        check.details.append(f"{entry[resource.flag_field]} flagged {resource.flag_field} on the service")
    return check


def check_media(view: BackupView, username: str, fields=None) -> Check | None:
    """Every ``ok`` file whole; every media URL of the saved records listed and held (INCOMPLETE when not)."""
    path = view.media_manifest_path(username)
    media_dir = view.media_dir(username)
    referred: dict[str, str] = {}  # URL → "resource id" of the first saved record that refers to it
    for resource in registry.REGISTRY:
        try:
            for ref in held_refs(view, username, resource.name, fields or refs.parse_fields(None)):
                if refs.kind(ref.url) == refs.FETCH:
                    referred.setdefault(ref.url, f"{resource.name} {ref.source_id or ''}".strip())
        except (OSError, ValueError):
            pass  # that file's own check says it is damaged
    if not path.exists() and not media_dir.exists() and not referred:
        return None
    check = Check("media")
    try:
        entries = manifest.load(path)
    except (OSError, ValueError) as exc:
        check.damaged(f"{path.name} is not a readable media manifest ({exc})")
        return check
    held = 0
    listed = set()
    for url, entry in entries.items():
        if entry.get("status") != manifest.OK:
            continue
        held += 1
        listed.add(entry.get("path"))
        if not manifest.file_ok(view.directory(username), entry):
            file = view.directory(username) / str(entry.get("path"))
            why = "missing" if not file.exists() else "not the bytes recorded (size or sha256 differ)"
            check.damaged(f"{entry.get('path')} ({url}): {why}")
    if media_dir.is_dir():
        for file in media_dir.iterdir():
            if not file.name.startswith(".") and f"{MEDIA_DIR}/{file.name}" not in listed:
                check.note(f"{MEDIA_DIR}/{file.name} is not in the manifest (a download a stopped run did not list)")
    unlisted = [url for url in referred if url not in entries]
    if unlisted:
        check.incomplete(f"{len(unlisted)} media URLs of saved records are not in the manifest (first: "
                         f"{referred[unlisted[0]]}: {refs.redacted(unlisted[0])}); the next crawl fetches them")
    waiting = [url for url in referred if entries.get(url, {}).get("status") == manifest.FAILED]
    if waiting:
        check.incomplete(f"{len(waiting)} media files of saved records are not downloaded yet (first: "
                         f"{refs.redacted(waiting[0])}: {entries[waiting[0]].get('error')}); the next crawl tries "
                         f"again")
    counts = manifest.counts(entries)
    refused = f", {counts['refused']} refused (not a public address)" if counts["refused"] else ""
    check.details.insert(0, f"{held} files held, {counts['gone']} gone, {counts['failed']} failed{refused}")
    return check


def tree(directory: Path) -> list[Path]:
    """``directory`` and everything under it (symbolic links not followed); folders a running crawl
    removes while they are listed are passed over."""
    out = [directory]
    for root, dirs, files in os.walk(directory, onerror=lambda exc: None):
        out += [Path(root) / name for name in (*dirs, *files)]
    return out


def check_leftovers_and_modes(view: BackupView, username: str, live: bool = False) -> Check:
    """Temp files and staging a stopped run left (while a crawl runs, they are its own: not checked),
    symbolic links, and modes (0600 files, 0700 folders)."""
    check = Check("files")
    directory = view.directory(username)
    if not live:
        for leftover in [*directory.glob(".*.tmp"), *(directory / MEDIA_DIR).glob(".*.tmp"), directory / STAGING]:
            if leftover.exists():
                check.damaged(f"{leftover.relative_to(directory)} is a leftover of a stopped run (the next crawl "
                              f"removes it)")
    for path in tree(directory):
        if live and (STAGING in path.relative_to(directory).parts or path.name.endswith(".tmp")):
            continue  # the running crawl's, appearing and vanishing as it goes
        try:
            if path.is_symlink():
                check.damaged(f"{path.relative_to(view.root)} is a symbolic link")
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue  # removed meanwhile by the running crawl
        wanted = 0o700 if path.is_dir() else 0o600
        if mode != wanted:
            check.damaged(f"{path.relative_to(view.root)} has mode {mode:04o}, not {wanted:04o}")
    return check


def verify_personality(view: BackupView, username: str, fields=None, files: BackupView | None = None,
                       live: bool = False) -> Verdict:
    """Check the data in ``view`` (a committed state: ``store.committed``) and the folder itself in
    ``files`` (the backup; default ``view``). ``fields``: the media fields (``refs.parse_fields``);
    ``live``: a crawl is backing the personality up (its temp and staging files are not leftovers)."""
    verdict = Verdict(username, view.dir_name(username))
    metadata_path = view.metadata_path(username)
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        if not isinstance(metadata, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        check = Check("metadata")
        check.damaged(f"{METADATA_NAME} is unreadable ({exc})")
        verdict.checks.append(check)
        metadata = {}
    resources = metadata.get("resources", {}) if isinstance(metadata.get("resources"), dict) else {}
    whose = metadata.get("personality") if isinstance(metadata.get("personality"), dict) else {}
    if whose.get("owned") is False:
        verdict.said = "someone else's" + (f", owned by {whose['owner']}" if whose.get("owner") else "")
    for resource in registry.REGISTRY:
        entry = resources.get(resource.name, {})
        verdict.checks.append(check_resource(view, username, resource, entry if isinstance(entry, dict) else {}))
    media = check_media(view, username, fields)
    if media is not None:
        verdict.checks.append(media)
    verdict.checks.append(check_leftovers_and_modes(files or view, username, live))
    return verdict


def backed_up(view: BackupView) -> list[str]:
    """Usernames of every personality folder in the backup (from each folder's metadata)."""
    names = []
    if view.root.is_dir():
        for directory in sorted(view.root.iterdir()):
            path = directory / METADATA_NAME
            if directory.is_dir() and not directory.name.startswith(".") and path.is_file():
                try:
                    username = json.loads(path.read_text(encoding="utf-8")).get("personality", {}).get("username")
                except (OSError, ValueError, AttributeError):
                    username = None
                names.append(username if isinstance(username, str) and view.dir_name(username) == directory.name
                             else directory.name)
    return names


__all__ = ["Check", "Verdict", "verify_personality", "backed_up", "OK", "NOTE", "INCOMPLETE", "DAMAGED"]
