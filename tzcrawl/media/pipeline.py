"""Bring media home with Scrapy's own FilesPipeline, beside the text backup and never in its way.

For each page or document the pipeline notes every media URL in the personality's manifest and hands
the ones it has not seen this run to ``FilesPipeline.process_item`` as background tasks: text items
go on to ``BackupPipeline`` at once, so JSON files are committed whatever happens to a download. The
manifest is saved at each ``ResourceDone`` (before the text commit: every saved record's media are
listed, ``failed`` until downloaded) and at ``PersonalityEnd``, once that personality's downloads are
over; the personality's lock is held throughout (``BackupPipeline`` releases it after us).

What FilesPipeline does differently here, and why:
- "up to date" means the manifest says ``ok`` and the file's size and sha256 match, not an mtime;
  ``gone`` files wait for a full run (``media_to_download``);
- files are written whole (temp, fsync, rename), 0600 in 0700 folders (``PrivateFilesStore``);
- a 404/410 is ``gone``, an HTML page where a file was expected is refused (``media_downloaded``);
- requests go to their own download slot, without cookie (whatever the origin, the service's own
  included) or referrer, bounded in size and time; hosts that are not public are refused
  (``addresses``) and ``refused`` in the manifest;
- records saved earlier whose media the manifest may not list (a run with media off, a manifest
  never written) are read back once (``held``): every media URL of every held record gets an entry;
- a failed download is one line, never a traceback, and a cause on this side (disk full) one line
  for all the files it stopped; nothing here ever drops an item: the text backup goes on;
- its memory of results is per personality: a URL two personalities share lands in both folders.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.exceptions import NotConfigured
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline, FSFilesStore
from scrapy.pipelines.media import FileException

from tzcrawl import registry
from tzcrawl.config import BackupConfig
from tzcrawl.session.crawler import NO_COOKIE
from tzcrawl.fsutil import atomic_write_bytes, ensure_private_dir
from tzcrawl.items import Document, Outcome, Page, PersonalityEnd, ResourceDone
from tzcrawl.signals import resource_finished
from tzcrawl.store import BackupView
from tzcrawl.store.backup import MEDIA_DIR

from . import MEDIA_SLOT, MediaConfig, held, manifest, refs
from .addresses import MediaRefused

logger = logging.getLogger(__name__)

SAFE_EXT = re.compile(r"\.[a-z0-9]{1,8}")
EXTENSIONS = {"image/jpeg": ".jpg", "audio/mp3": ".mp3", "audio/mpeg": ".mp3", "audio/ogg": ".ogg",
              "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "video/mp4": ".mp4"}
UPTODATE, DOWNLOADED, LEFT = "uptodate", "downloaded", "left"  # results that need no download / did one / skipped
# Errors of writing a file here (not of the download): said once for all the files they stop.
LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.ENOTDIR, errno.EISDIR}
MEDIA_ERROR = "tzcrawl_media_error"  # request meta: why the download failed (see media_failed)


class MediaGone(FileException):
    """The file host answered 404 or 410: the service no longer has this file."""


class MediaFailed(FileException):
    """Anything else that kept a file from arriving whole; retried next run. ``local``: the cause is on
    this side (the file could not be written), said once for every file it stops."""

    def __init__(self, reason: str, local: bool = False):
        super().__init__(reason)
        self.local = local


def cause(exc: BaseException) -> str:
    """An exception in a few words: an OSError by its errno's text (one line per cause, not per file)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def extension(url: str, content_type: str | None) -> str:
    """The file's extension: from its content type, else its URL; ``.bin`` when neither says."""
    if content_type:
        ext = EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ""
        if SAFE_EXT.fullmatch(ext):
            return ext
    ext = PurePosixPath(urlsplit(url).path).suffix.lower()
    return ext if SAFE_EXT.fullmatch(ext) else ".bin"


def media_name(url: str, content_type: str | None) -> str:
    """``<sha1 of the URL><extension>``: one file per URL, whatever the URL holds."""
    return hashlib.sha1(url.encode("utf-8", "surrogatepass")).hexdigest() + extension(url, content_type)


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class PrivateFilesStore(FSFilesStore):
    """FSFilesStore writing each file whole (temp, fsync, rename), 0600 inside 0700 folders: the
    stock store writes the final name in place, so a kill mid-write would leave half a file."""

    def __init__(self, basedir: str):
        ensure_private_dir(basedir)
        super().__init__(basedir)

    def persist_file(self, path, buf, info, meta=None, headers=None) -> None:
        absolute = self._get_filesystem_path(path)
        ensure_private_dir(absolute.parent)
        atomic_write_bytes(absolute, buf.getvalue())


@dataclass
class PersonalityMedia:
    """One personality's media this run: its manifest entries and the downloads under way."""

    personality: dict
    directory: Path
    dir_name: str
    manifest_path: Path
    entries: dict[str, dict]
    scheduled: set[str] = field(default_factory=set)
    tasks: set[asyncio.Future] = field(default_factory=set)
    said: set[str] = field(default_factory=set)  # ignored URLs already logged
    unlisted: set[str] = field(default_factory=set)  # resources whose saved records' media may lack entries
    problem: str | None = None  # what went wrong on this side (the media outcome fails with it)
    causes: set[str] = field(default_factory=set)  # local causes already said
    new: int = 0
    bytes: int = 0
    changed: bool = False


@dataclass
class Batch:
    """What FilesPipeline.process_item gets: one personality's requests (``repr`` counts only)."""

    state: PersonalityMedia = field(repr=False)
    requests: list[Request] = field(repr=False)

    def __repr__(self) -> str:
        return f"Batch({self.state.personality.get('username')}, {len(self.requests)} media)"


class MediaFilesPipeline(FilesPipeline):
    LOG_FAILED_RESULTS = False  # each failed file is logged once, in one line, by item_completed
    STORE_SCHEMES = {**FilesPipeline.STORE_SCHEMES, "": PrivateFilesStore, "file": PrivateFilesStore}

    def __init__(self, store_uri: str, *, crawler, media: MediaConfig, full: bool):
        super().__init__(store_uri, crawler=crawler)
        self.media = media
        self.full = full
        self.fields = refs.parse_fields(media.fields)
        self.view = BackupView(store_uri)
        self.people: dict[str, PersonalityMedia] = {}
        self._gate: asyncio.Semaphore | None = None
        self._opening: asyncio.Lock | None = None
        self.backup_store = None  # the crawl's one BackupStore (BackupPipeline's), found at open_spider

    @classmethod
    def from_crawler(cls, crawler):
        wanted = getattr(crawler.spider, "media", None)
        if wanted is None:
            raise NotConfigured("not a backup spider")
        if not wanted:
            raise NotConfigured("media are off (BACKUP_MEDIA = False or -a media=0)")
        backup = BackupConfig.from_settings(crawler.settings)
        return cls(str(backup.backup_dir.resolve()), crawler=crawler, media=MediaConfig.from_settings(crawler.settings),
                   full=bool(getattr(crawler.spider, "full", False)))

    # -- the item flow ----------------------------------------------------------------------------
    async def process_item(self, item):
        """Never raises: an item dropped here would never reach BackupPipeline (its text unsaved, its
        resource without an outcome); what went wrong fails this personality's media instead."""
        try:
            if isinstance(item, (Page, Document)):
                await self._found(item)
            elif isinstance(item, ResourceDone):
                await self._resource_done(item)
            elif isinstance(item, PersonalityEnd):
                await self._finish(item.personality)
        except Exception as exc:
            self._trouble(item.personality, exc)
        return item

    def open_spider(self, spider=None):
        super().open_spider()
        from tzcrawl.pipelines import BackupPipeline  # pipelines imports the items this module handles

        backup = self.crawler.get_item_pipeline(BackupPipeline)
        self.backup_store = backup.store if backup is not None else None  # (self.store is FilesPipeline's)

    def close_spider(self):
        """A crawl that stopped mid-personality: its downloads are dropped (the manifest saved at the
        last ResourceDone lists them as not downloaded yet; the next run fetches them)."""
        for state in self.people.values():
            for task in state.tasks:
                task.cancel()
        self.people.clear()

    def _trouble(self, personality: dict, exc: BaseException, state: PersonalityMedia | None = None) -> None:
        """Something on this side failed (a manifest that cannot be written, a bug): one line per cause
        and personality; the personality's media outcome fails with it."""
        username = personality.get("username") if isinstance(personality, dict) else None
        state = state or self.people.get(username)
        why = cause(exc)
        self.crawler.stats.inc_value("backup/media/errors")
        if state is not None:
            state.problem = state.problem or why
            if why in state.causes:
                return
            state.causes.add(why)
        logger.error("%s: media: %s (the text backup goes on; what is missing is fetched next run)", username, why,
                     exc_info=None if isinstance(exc, OSError) else exc)

    async def _found(self, item: Page | Document) -> None:
        state = await self._state(item.personality)
        records = item.records if isinstance(item, Page) else [item.payload]
        id_field = registry.get(item.resource).id_field
        found = (ref for record in records for ref in refs.refs(record, self.fields, id_field))
        self._start(state, self._note(state, item.resource, found))

    def _note(self, state: PersonalityMedia, resource: str, found) -> list[Request]:
        """Enter every fetchable reference in the manifest; the requests for those not scheduled yet."""
        seen, requests = now_utc(), []
        for ref in found:
            form = refs.kind(ref.url)
            if form != refs.FETCH:
                self._say_ignored(state, ref, form)
                continue
            if ref.url not in state.entries:
                state.changed = True
            manifest.note(state.entries, ref.url, resource, ref.source_id, seen)
            if ref.url not in state.scheduled:
                state.scheduled.add(ref.url)
                requests.append(self._request(ref.url))
        return requests

    async def _resource_done(self, item: ResourceDone) -> None:
        """Save the manifest before the text commit, and tell the store whether it lists every media URL
        of the resource's records (``media_listed``, kept in the metadata)."""
        if not item.outcome.ok:
            return
        state = await self._state(item.personality)
        if state.changed:
            await self._save(state)
        item.media_listed = item.resource not in state.unlisted

    async def _state(self, personality: dict) -> PersonalityMedia:
        """This personality's media state, opened on first sight (one at a time)."""
        username = personality["username"]
        if username not in self.people:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if username not in self.people:
                    self.people[username] = await self._open(personality)
        return self.people[username]

    async def _open(self, personality: dict) -> PersonalityMedia:
        """Read the manifest; list the media of saved records it may lack; fetch every entry that is
        not ``ok`` again (``failed``; ``gone`` on a full run; ``refused`` when the allowed hosts changed),
        referred to this run or not."""
        username = personality["username"]
        path = self.view.media_manifest_path(username)
        try:
            entries = await asyncio.to_thread(manifest.load, path)
            listed = bool(entries) or path.exists()
        except ValueError as exc:
            aside = path.with_name(f"{path.name}.damaged-{now_utc().replace(':', '')}")
            path.rename(aside)
            logger.error("%s: the media manifest was damaged (%s); kept as %s, rebuilt from this run and the "
                         "saved records", username, exc, aside.name)
            entries, listed = {}, False
        state = PersonalityMedia(personality, self.view.directory(username), self.view.dir_name(username), path,
                                 entries)
        resources = (await asyncio.to_thread(self.view.metadata, username)).get("resources") or {}
        unlisted = [r.name for r in registry.REGISTRY
                    if not (listed and isinstance(resources.get(r.name), dict) and resources[r.name].get("media_listed"))]
        requests = await self._list_held(state, unlisted) if unlisted else []
        allowed = self.media.private_hosts_key
        retry = [url for url, e in entries.items() if url not in state.scheduled and e.get("status") != manifest.OK
                 and manifest.wanted(e, full=self.full, file_ok=True, allowed=allowed)]
        state.scheduled.update(retry)
        self._start(state, requests + [self._request(url) for url in retry])
        return state

    async def _list_held(self, state: PersonalityMedia, names: list[str]) -> list[Request]:
        """Enter the media of the saved records of ``names`` that the manifest lacks (read in a thread)."""
        username = state.personality["username"]

        def read() -> tuple[dict[str, tuple[str, refs.Ref]], dict[str, str]]:
            found, failed = {}, {}
            for name in names:
                try:
                    for url, ref in held.missing_from(state.entries, held.held_refs(
                            self.view, username, name, self.fields)).items():
                        found.setdefault(url, (name, ref))
                except (OSError, ValueError) as exc:
                    failed[name] = cause(exc)
            return found, failed

        found, failed = await asyncio.to_thread(read)
        self.crawler.stats.inc_value("backup/media/saved_read", len(names))
        for name, why in failed.items():
            logger.error("%s: the saved %s could not be read for its media (%s); tried again next run", username,
                         name, why)
        state.unlisted.update(failed)
        requests = []
        for name in names:
            requests += self._note(state, name, (ref for resource, ref in found.values() if resource == name))
        if found:
            logger.info("%s: %d media files of records saved earlier were not in the manifest; fetching them",
                        username, len(found))
            self.crawler.stats.inc_value("backup/media/listed_from_saved", len(found))
            try:
                await self._save(state)
            except Exception as exc:
                state.unlisted.update(names)
                self._trouble(state.personality, exc, state)
                return requests
        listed = [name for name in names if name not in failed and self.view.path(username, name).exists()]
        if listed and self.backup_store is not None:  # read back once: not again, even by a run that does not save them
            try:
                await asyncio.to_thread(self.backup_store.mark_media_listed, state.personality, listed)
            except Exception as exc:
                self._trouble(state.personality, exc, state)
        return requests

    def _start(self, state: PersonalityMedia, requests: list[Request]) -> None:
        """One background task per file, at most BACKUP_MEDIA_CONCURRENCY in the downloader at once:
        Scrapy stops taking API requests from the scheduler while CONCURRENT_REQUESTS requests are in
        the downloader, queued ones included, so a long media queue there would stall the walk."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.media.concurrency)
        for request in requests:
            task = asyncio.ensure_future(self._fetch(Batch(state, [request])))
            state.tasks.add(task)
            task.add_done_callback(self._task_done(state))

    async def _fetch(self, batch: Batch):
        async with self._gate:
            try:
                return await super().process_item(batch)
            except Exception as exc:  # a bug of ours in the hooks: said once per cause, the file retried next run
                self._trouble(batch.state.personality, exc, batch.state)

    @staticmethod
    def _task_done(state: PersonalityMedia):
        def done(task: asyncio.Future) -> None:
            state.tasks.discard(task)
        return done

    async def _save(self, state: PersonalityMedia) -> None:
        """Write the manifest (atomically); ``changed`` stays set when the write fails."""
        data = manifest.dumps(state.entries)  # serialized here: downloads change entries meanwhile
        state.changed = False
        try:
            await asyncio.to_thread(self._write_manifest, state.directory, state.manifest_path, data)
        except BaseException:
            state.changed = True
            raise

    @staticmethod
    def _write_manifest(directory: Path, path: Path, data: bytes) -> None:
        ensure_private_dir(directory)
        manifest.save(path, data)

    async def _finish(self, personality: dict) -> None:
        state = self.people.pop(personality.get("username"), None)
        if state is None:
            return
        while state.tasks:
            await asyncio.gather(*list(state.tasks), return_exceptions=True)
        self.spiderinfo.downloaded.clear()  # results are per personality: each folder gets its own copy
        if state.changed:
            try:
                await self._save(state)
            except Exception as exc:
                self._trouble(personality, exc, state)
        counts = manifest.counts(state.entries)
        outcome = Outcome.complete()
        if state.problem:
            outcome = Outcome.failed(f"{state.problem}; {counts[manifest.FAILED]} media files not held, fetched "
                                     f"next run")
        elif counts[manifest.FAILED]:
            outcome = Outcome.failed(f"{counts[manifest.FAILED]} media files could not be downloaded "
                                     f"(retried next run)")
        figures = {"total": counts["held"], "new": state.new, "gone": counts[manifest.GONE],
                   "refused": counts[manifest.REFUSED], "failed": counts[manifest.FAILED], "bytes": state.bytes}
        self.crawler.signals.send_catch_log(resource_finished, personality=personality, resource="media",
                                            outcome=outcome, figures=figures)

    def _say_ignored(self, state: PersonalityMedia, ref: refs.Ref, form: str) -> None:
        if ref.url in state.said:
            return
        state.said.add(ref.url)
        shown = refs.redacted(ref.url)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        why = {refs.INLINE: "a data: URL: its bytes are in the JSON already",
               refs.CREDENTIALS: "it carries a user name or password: refused"}.get(form, "not an http(s) URL")
        logger.info("%s: media field %s not fetched (%s): %r", state.personality.get("username"), ref.field, why, shown)
        self.crawler.stats.inc_value(f"backup/media/{form}")

    def _request(self, url: str) -> Request:
        """A media request: its own slot, never a cookie (whatever its origin), no referrer, bounded."""
        return Request(url, callback=NO_CALLBACK, meta={
            "download_slot": MEDIA_SLOT,
            NO_COOKIE: True,
            "download_maxsize": self.media.max_size,
            "download_warnsize": self.media.max_size,
            "download_timeout": self.media.timeout,
            "autothrottle_dont_adjust_delay": True,
            "dont_pace": True,
            "referrer_policy": "no-referrer",
        })

    # -- FilesPipeline's hooks ----------------------------------------------------------------------
    def get_media_requests(self, item: Batch, info):
        return item.requests

    async def media_to_download(self, request, info, *, item: Batch = None):
        """A result without downloading: the file held and whole, or gone (refused) and not to be asked again."""
        entry = item.state.entries[request.url]
        held_ok = entry.get("status") == manifest.OK and await asyncio.to_thread(manifest.file_ok,
                                                                                item.state.directory, entry)
        if manifest.wanted(entry, full=self.full, file_ok=held_ok, allowed=self.media.private_hosts_key):
            return None
        return {"url": request.url, "path": entry.get("path"), "checksum": entry.get("sha256"),
                "status": UPTODATE if held_ok else LEFT}

    def media_failed(self, failure, request, info):
        """Every error of a download ends here, ours from ``media_downloaded`` included. The reason goes
        on the request and ``item_completed`` records it: raising here would make Scrapy log a
        traceback for every failed file."""
        error = failure.value
        if not isinstance(error, (MediaGone, MediaFailed, MediaRefused)):
            reason = str(error) or failure.type.__name__
            if "max size" in reason or "maxsize" in reason:
                reason = f"larger than BACKUP_MEDIA_MAX_SIZE ({self.media.max_size} bytes)"
            local = isinstance(error, OSError) and error.errno in LOCAL_ERRNOS
            error = MediaFailed(f"cannot write it: {cause(error)}" if local else reason, local=local)
        request.meta[MEDIA_ERROR] = error
        return None

    async def media_downloaded(self, response, request, info, *, item: Batch = None):
        status = response.status
        if status in (404, 410):
            raise MediaGone(f"HTTP {status}: the file host no longer has it")
        if status != 200:
            raise MediaFailed(f"HTTP {status}")
        if not response.body:
            raise MediaFailed("an empty answer")
        content_type = (response.headers.get("Content-Type") or b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type == "text/html" or response.body[:64].lstrip().lower().startswith((b"<!doctype html", b"<html")):
            # A page (an error, a login wall) where a file should be: keeping it would claim a file we do not have.
            raise MediaFailed("the file host answered an HTML page, not the file")
        path = self.file_path(request, response=response, info=info, item=item)
        checksum = await self.file_downloaded(response, request, info, item=item)
        return {"url": request.url, "path": path.split("/", 1)[1], "checksum": checksum, "status": DOWNLOADED,
                "size": len(response.body), "content_type": content_type or None}

    async def file_downloaded(self, response, request, info, *, item=None) -> str:
        """Write the file whole and return its sha256 (in a worker thread: files can be large)."""
        path = self.file_path(request, response=response, info=info, item=item)

        def write() -> str:
            self.store.persist_file(path, _Body(response.body), info)
            return hashlib.sha256(response.body).hexdigest()

        return await asyncio.to_thread(write)

    def file_path(self, request, response=None, info=None, *, item: Batch = None) -> str:
        content_type = None
        if response is not None:
            content_type = (response.headers.get("Content-Type") or b"").decode("latin-1").split(";")[0].strip().lower()
        return f"{item.state.dir_name}/{MEDIA_DIR}/{media_name(request.url, content_type)}"

    def item_completed(self, results, item: Batch, info):
        state = item.state
        stats = self.crawler.stats
        for request, (ok, value) in zip(item.requests, results):
            entry = state.entries[request.url]
            if ok and value is None:  # media_failed recorded why on the request
                ok, value = False, request.meta.get(MEDIA_ERROR) or MediaFailed("no result")
            elif not ok:
                value = value.value
            if ok and value["status"] in (UPTODATE, LEFT):
                stats.inc_value(f"backup/media/{value['status']}")
                continue
            if ok:
                manifest.resolved(entry, {"status": manifest.OK, "path": value["path"], "sha256": value["checksum"],
                                          "size": value["size"], "content_type": value["content_type"]})
                state.new += 1
                state.bytes += value["size"]
                stats.inc_value("backup/media/downloaded")
                stats.inc_value("backup/media/bytes", value["size"])
            else:
                self._failed(state, request.url, entry, value)
            state.changed = True
        return item

    def _failed(self, state: PersonalityMedia, url: str, entry: dict, error: BaseException) -> None:
        """Record a file that did not come: gone, refused, or failed (one line each; a local cause once)."""
        status = (manifest.GONE if isinstance(error, MediaGone) else
                  manifest.REFUSED if isinstance(error, MediaRefused) else manifest.FAILED)
        manifest.resolved(entry, {"status": status, "error": str(error) or type(error).__name__,
                                  "refused_under": self.media.private_hosts_key})
        self.crawler.stats.inc_value(f"backup/media/{status}")
        username = state.personality.get("username")
        if getattr(error, "local", False):
            why = str(error).removeprefix("cannot write it: ")
            state.problem = state.problem or f"media files cannot be written: {why}"
            if why not in state.causes:
                state.causes.add(why)
                logger.error("%s: media files cannot be written to %s: %s (this and every other file it stops are "
                             "fetched again next run)", username, state.directory / MEDIA_DIR, why)
            return
        shown = refs.redacted(url)
        if status == manifest.REFUSED:
            logger.warning("%s: media %s refused: %s", username, shown, entry["error"])
        else:
            logger.log(logging.INFO if status == manifest.GONE else logging.WARNING, "%s: media %s %s: %s", username,
                       shown, "is gone" if status == manifest.GONE else "failed (retried next run)", entry["error"])


class _Body:
    """What ``persist_file`` reads: ``getvalue()`` without copying the body into a BytesIO."""

    def __init__(self, data: bytes):
        self.data = data

    def getvalue(self) -> bytes:
        return self.data
