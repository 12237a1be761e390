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
- requests go to their own download slot, without cookie or referrer, bounded in size and time;
- its memory of results is per personality: a URL two personalities share lands in both folders.
"""

from __future__ import annotations

import asyncio
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
from tzcrawl.fsutil import atomic_write_bytes, ensure_private_dir
from tzcrawl.items import Document, Outcome, Page, PersonalityEnd, ResourceDone
from tzcrawl.signals import resource_finished
from tzcrawl.store import BackupView
from tzcrawl.store.backup import MEDIA_DIR

from . import MEDIA_SLOT, MediaConfig, manifest, refs

logger = logging.getLogger(__name__)

SAFE_EXT = re.compile(r"\.[a-z0-9]{1,8}")
EXTENSIONS = {"image/jpeg": ".jpg", "audio/mp3": ".mp3", "audio/mpeg": ".mp3", "audio/ogg": ".ogg",
              "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "video/mp4": ".mp4"}
UPTODATE, DOWNLOADED, LEFT = "uptodate", "downloaded", "left"  # results that need no download / did one / skipped


class MediaGone(FileException):
    """The file host answered 404 or 410: the service no longer has this file."""


class MediaFailed(FileException):
    """Anything else that kept a file from arriving whole; retried next run."""


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
        if isinstance(item, (Page, Document)):
            await self._found(item)
        elif isinstance(item, ResourceDone):
            state = self.people.get(item.personality.get("username"))
            if state is not None and state.changed:
                await self._save(state)
        elif isinstance(item, PersonalityEnd):
            await self._finish(item.personality)
        return item

    def close_spider(self):
        """A crawl that stopped mid-personality: its downloads are dropped (the manifest saved at the
        last ResourceDone lists them as not downloaded yet; the next run fetches them)."""
        for state in self.people.values():
            for task in state.tasks:
                task.cancel()
        self.people.clear()

    async def _found(self, item: Page | Document) -> None:
        state = await self._state(item.personality)
        records = item.records if isinstance(item, Page) else [item.payload]
        id_field = registry.get(item.resource).id_field
        seen, requests = now_utc(), []
        for record in records:
            for ref in refs.refs(record, self.fields, id_field):
                form = refs.kind(ref.url)
                if form != refs.FETCH:
                    self._say_ignored(state, ref, form)
                    continue
                if ref.url not in state.entries:
                    state.changed = True
                manifest.note(state.entries, ref.url, item.resource, ref.source_id, seen)
                if ref.url not in state.scheduled:
                    state.scheduled.add(ref.url)
                    requests.append(self._request(ref.url))
        self._start(state, requests)

    async def _state(self, personality: dict) -> PersonalityMedia:
        """This personality's media state; on first sight its manifest is read and every ``failed``
        entry (and ``gone`` on a full run) is fetched again, referred to this run or not."""
        username = personality["username"]
        state = self.people.get(username)
        if state is not None:
            return state
        path = self.view.media_manifest_path(username)
        try:
            entries = await asyncio.to_thread(manifest.load, path)
        except ValueError as exc:
            aside = path.with_name(f"{path.name}.damaged-{now_utc().replace(':', '')}")
            path.rename(aside)
            logger.error("%s: the media manifest was damaged (%s); kept as %s, rebuilt from this run",
                         username, exc, aside.name)
            entries = {}
        state = self.people[username] = PersonalityMedia(
            personality, self.view.directory(username), self.view.dir_name(username), path, entries)
        retry = [url for url, e in entries.items() if e.get("status") == manifest.FAILED
                 or (self.full and e.get("status") == manifest.GONE)]
        state.scheduled.update(retry)
        self._start(state, [self._request(url) for url in retry])
        return state

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
            return await super().process_item(batch)

    @staticmethod
    def _task_done(state: PersonalityMedia):
        def done(task: asyncio.Future) -> None:
            state.tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                logger.error("Media downloads for %s stopped: %r", state.personality.get("username"), task.exception())
        return done

    async def _save(self, state: PersonalityMedia) -> None:
        data = manifest.dumps(state.entries)  # serialized here: downloads change entries meanwhile
        state.changed = False
        await asyncio.to_thread(self._write_manifest, state.directory, state.manifest_path, data)

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
            await self._save(state)
        counts = manifest.counts(state.entries)
        outcome = Outcome.complete()
        if counts[manifest.FAILED]:
            outcome = Outcome.failed(f"{counts[manifest.FAILED]} media files could not be downloaded "
                                     f"(retried next run)")
        figures = {"total": counts["held"], "new": state.new, "gone": counts[manifest.GONE],
                   "failed": counts[manifest.FAILED], "bytes": state.bytes}
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
        """A media request: its own slot, no cookie (not the API's origin), no referrer, bounded."""
        return Request(url, callback=NO_CALLBACK, meta={
            "download_slot": MEDIA_SLOT,
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
        """A result without downloading: the file held and whole, or gone and not a full run."""
        entry = item.state.entries[request.url]
        held = entry.get("status") == manifest.OK and await asyncio.to_thread(manifest.file_ok, item.state.directory,
                                                                               entry)
        if manifest.wanted(entry, full=self.full, file_ok=held):
            return None
        return {"url": request.url, "path": entry.get("path"), "checksum": entry.get("sha256"),
                "status": UPTODATE if held else LEFT}

    def media_failed(self, failure, request, info):
        """Every error of a download ends here, ours from ``media_downloaded`` included."""
        if isinstance(failure.value, (MediaGone, MediaFailed)):
            raise failure.value
        reason = str(failure.value) or failure.type.__name__
        if "max size" in reason or "maxsize" in reason:
            reason = f"larger than BACKUP_MEDIA_MAX_SIZE ({self.media.max_size} bytes)"
        raise MediaFailed(reason)

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
                error = value.value
                status = manifest.GONE if isinstance(error, MediaGone) else manifest.FAILED
                manifest.resolved(entry, {"status": status, "error": str(error) or type(error).__name__})
                stats.inc_value(f"backup/media/{status}")
                level = logging.INFO if status == manifest.GONE else logging.WARNING
                logger.log(level, "%s: media %s %s: %s", state.personality.get("username"), request.url,
                           "is gone" if status == manifest.GONE else "failed (retried next run)", entry["error"])
            state.changed = True
        return item


class _Body:
    """What ``persist_file`` reads: ``getvalue()`` without copying the body into a BytesIO."""

    def __init__(self, data: bytes):
        self.data = data

    def getvalue(self) -> bytes:
        return self.data
