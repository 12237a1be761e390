"""The backup crawl shared by every spider: which personalities, which resources, in what order.

Personalities are backed up one after another (the profile first: it gives the id the other
paths need), each resource to its end before the next, so the pipeline sees every page of a
resource before its ``ResourceDone``. Paging decisions live in ``tzcrawl.paging``, URLs and answer
shapes in ``tzcrawl.api``; this module only walks them and reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import scrapy
from scrapy.exceptions import CloseSpider

from tzcrawl import api, config, paging
from tzcrawl.config import BackupConfig, ConfigError, ServiceConfig
from tzcrawl.items import COLLECTIONS, RESOURCES, Document, Page, PersonalityEnd, PersonalityStart, ResourceDone
from tzcrawl.signals import personality_skipped
from tzcrawl.store import BackupStore
from tzcrawl.store.timestamps import to_epoch

ANSWER_ERRORS = (api.NotAuthenticated, api.BadAnswer)


def history_timestamps(batch: list[dict]) -> dict[float, str]:
    """Each message's ts on the common timeline → the ts as the service spelled it."""
    raw = {}
    for message in batch:
        key = to_epoch(message.get("ts"))
        if key is None:
            raise api.BadAnswer(f"a message without a usable ts: {message.get('ts')!r}")
        raw.setdefault(key, str(message.get("ts")))
    return raw


def split_names(value: str | None) -> list[str]:
    """``foo,bar`` → ``["foo", "bar"]``, trimmed, without blanks or repeats."""
    names = [n.strip() for n in (value or "").split(",")]
    return list(dict.fromkeys(n for n in names if n))


def truthy(value) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Job:
    """One personality's walk through its resources."""

    personality: dict
    resources: list[str]
    requests: int = 0                       # requests of the current resource
    seen_ids: set = field(default_factory=set)  # memory ids seen this run (repeat detection)
    held: paging.Held = field(default_factory=paging.Held)  # the backup's newest, read at resource start


class BackupSpider(scrapy.Spider):
    """Base for every backup spider; subclasses set ``resources`` and, for bulk, ``bulk = True``."""

    resources: tuple[str, ...] = ()
    bulk = False
    handle_httpstatus_list = [401, 403]

    def __init__(self, personality: str | None = None, full: str | None = None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.names = split_names(personality)
        self.full = truthy(full)
        self.skipped: set[str] = set()
        self.queue: list[Job] = []
        self.finished = 0

    @classmethod
    def check_config(cls, settings, spargs: dict) -> None:
        """Raise ConfigError (one line) for anything that would make this crawl fail at once."""
        ServiceConfig.from_settings(settings)
        BackupConfig.from_settings(settings)
        config.cookie(settings)
        if not cls.bulk and not split_names(spargs.get("personality")):
            raise ConfigError(f"say which personality: scrapy crawl {cls.name} -a personality=NAME[,NAME...]")

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        service = ServiceConfig.from_settings(crawler.settings)
        spider.backup = BackupConfig.from_settings(crawler.settings)
        spider.endpoints = api.Endpoints.from_config(service)
        spider.store = BackupStore(spider.backup.backup_dir)
        crawler.signals.connect(spider._on_skipped, signal=personality_skipped)
        return spider

    def _on_skipped(self, username: str, reason: str = "") -> None:
        self.skipped.add(username)

    # -- the walk --------------------------------------------------------------------------------
    async def start(self):
        if self.bulk:
            yield self._request(self.endpoints.personalities("self"), self.parse_list, None)
            return
        if not self.names:
            raise CloseSpider("no personality named")  # check_config says it in one line first
        self.queue = [Job({"username": n}, self._planned()) for n in self.names]
        self.crawler.stats.set_value("backup/personalities/requested", len(self.queue))
        for request in self._next_personality(first=True):
            yield request

    def _planned(self) -> list[str]:
        planned = [r for r in RESOURCES if r in self.resources]
        self.crawler.stats.inc_value("backup/resources/requested", len(planned))
        return planned

    def parse_list(self, response, job=None):
        try:
            listed = api.personality_list(self._decode(response))
        except api.NotAuthenticated:
            raise CloseSpider("auth_failed") from None
        except api.BadAnswer as exc:
            self.crawler.stats.inc_value("backup/errors")
            self.logger.error("Cannot read the list of personalities: %s", exc)
            return
        self.logger.info("The account owns %d personalities: %s", len(listed),
                         ", ".join(str(p["username"]) for p in listed))
        self.queue = [Job(dict(p), self._planned()) for p in listed]
        self.crawler.stats.set_value("backup/personalities/requested", len(self.queue))
        yield from self._next_personality(first=True)

    def _next_personality(self, first: bool = False):
        """Start the next queued personality, a polite pause after the previous one."""
        if self.queue:
            job = self.queue.pop(0)
            wait = 0 if first else self.backup.personality_delay
            yield self._request(self.endpoints.profile(job.personality["username"]), self.parse_profile,
                                job, wait=wait)

    def _request(self, url, callback, job, wait: float = 0, **kwargs):
        if job is not None:
            job.requests += 1
        meta = {"tzcrawl_wait": wait} if wait else {}
        return scrapy.Request(url, callback=callback, errback=self.on_error, dont_filter=True, meta=meta,
                              cb_kwargs={"job": job, **kwargs})

    def _decode(self, response):
        """The answer's JSON; an authentication failure stops the whole crawl at once."""
        try:
            return api.decode(response.status, response.headers.get("Content-Type", b"").decode("latin-1"),
                              response.body, response.url)
        except api.NotAuthenticated as exc:
            self.crawler.stats.set_value("backup/auth_failed", str(exc))
            raise

    def _fail_current(self, job: Job, error: str):
        resource = job.resources.pop(0)
        yield ResourceDone(job.personality, resource, ok=False, requests=job.requests, error=error)

    def _advance(self, job: Job):
        """Move to the job's next resource, or finish the personality and start the next."""
        job.requests = 0
        job.seen_ids.clear()
        username = job.personality["username"]
        if job.resources and username not in self.skipped:
            job.held = self._held(job, job.resources[0])
            yield self._first_request(job)
            return
        for resource in job.resources:  # skipped (locked elsewhere) or abandoned
            yield ResourceDone(job.personality, resource, ok=False, error="not backed up: personality skipped")
        job.resources.clear()
        yield PersonalityEnd(job.personality)
        yield from self._next_personality()

    def _first_request(self, job: Job):
        resource, pid = job.resources[0], job.personality["id"]
        if resource == "memories":
            return self._request(self.endpoints.memories(pid, 1), self.parse_memories, job, page=1)
        if resource == "messages":
            return self._request(self.endpoints.chat_history(pid), self.parse_history, job, before_ts=None)
        url = getattr(self.endpoints, resource)(pid)  # Endpoints.knowledge / .training / .user_data
        return self._request(url, self.parse_document, job)

    def _held(self, job: Job, resource: str) -> paging.Held:
        if self.full or resource not in COLLECTIONS:
            return paging.Held()
        state = self.store.held(job.personality["username"], resource)
        if not state.incremental:
            return paging.Held()
        return paging.Held(state.newest_key, frozenset(state.newest_ids))

    # -- callbacks -------------------------------------------------------------------------------
    def on_error(self, failure):
        job = failure.request.cb_kwargs.get("job")
        error = failure.getErrorMessage() or failure.type.__name__
        if hasattr(failure.value, "response") and failure.value.response is not None:
            error = f"HTTP {failure.value.response.status} from {failure.request.url}"
        self.logger.error("Request failed for good: %s", error)
        if job is None:
            self.crawler.stats.inc_value("backup/errors")
            return
        yield from self._give_up(job, error)

    def _give_up(self, job: Job, error: str):
        if "id" not in job.personality:  # profile failed: nothing else can be asked for
            for resource in list(job.resources):
                yield ResourceDone(job.personality, resource, ok=False, error=f"profile unavailable: {error}")
            job.resources.clear()
            yield from self._advance(job)
            return
        yield from self._fail_current(job, error)
        yield from self._advance(job)

    def _handle(self, job: Job, exc: Exception):
        """A bad answer fails the current resource; an authentication failure stops the crawl."""
        if isinstance(exc, api.NotAuthenticated):
            if "id" in job.personality:
                yield from self._fail_current(job, f"not authenticated: {exc}")
            for resource in job.resources:
                yield ResourceDone(job.personality, resource, ok=False, error="not attempted: not authenticated")
            job.resources.clear()
            yield PersonalityEnd(job.personality)
            raise CloseSpider("auth_failed")
        yield from self._give_up(job, str(exc))

    def parse_profile(self, response, job: Job):
        try:
            payload = api.profile(self._decode(response), job.personality["username"])
        except ANSWER_ERRORS as exc:
            yield from self._handle(job, exc)
            return
        job.personality = {"id": payload["id"], "username": job.personality["username"],
                           "name": payload.get("name", job.personality.get("name"))}
        yield PersonalityStart(job.personality)
        if job.resources and job.resources[0] == "profile":
            yield Document(job.personality, "profile", payload, 1)
            yield ResourceDone(job.personality, "profile", ok=True, requests=job.requests)
            job.resources.pop(0)
        yield from self._advance(job)

    def parse_document(self, response, job: Job):
        resource = job.resources[0]
        try:
            payload = self._decode(response)
            count = api.entry_count(resource, payload)
        except ANSWER_ERRORS as exc:
            yield from self._handle(job, exc)
            return
        yield Document(job.personality, resource, payload, count)
        yield ResourceDone(job.personality, resource, ok=True, requests=job.requests)
        job.resources.pop(0)
        yield from self._advance(job)

    def parse_memories(self, response, job: Job, page: int):
        try:
            result = api.memory_page(self._decode(response))
        except ANSWER_ERRORS as exc:
            yield from self._handle(job, exc)
            return
        if result.items:
            yield Page(job.personality, "memories", result.items)
        ids = {str(m.get("id")) for m in result.items if isinstance(m, dict)}
        new_ids = len(ids - job.seen_ids)
        job.seen_ids |= ids
        decision = paging.next_memory_page(
            page, result.items, result.total_pages, new_ids=new_ids, held=job.held, full=self.full,
            key=lambda m: to_epoch(m.get("created_at")) if isinstance(m, dict) else None)
        yield from self._follow(job, decision, lambda n: self._request(
            self.endpoints.memories(job.personality["id"], n), self.parse_memories, job, page=n))

    def parse_history(self, response, job: Job, before_ts):
        try:
            batch = api.history_batch(self._decode(response))
            raw_ts = history_timestamps(batch)
        except ANSWER_ERRORS as exc:
            yield from self._handle(job, exc)
            return
        if batch:
            yield Page(job.personality, "messages", batch)
        decision = paging.next_before_ts(
            [to_epoch(m.get("ts")) for m in batch], limit=api.HISTORY_LIMIT,
            before_ts=to_epoch(before_ts), held=job.held, full=self.full)
        # The next before_ts is sent exactly as the service spelled that message's ts.
        yield from self._follow(job, decision, lambda key: self._request(
            self.endpoints.chat_history(job.personality["id"], raw_ts[key]), self.parse_history, job,
            before_ts=raw_ts[key]))

    def _follow(self, job: Job, decision, make_request):
        resource = job.resources[0]
        if job.personality["username"] in self.skipped:
            yield from self._advance(job)
            return
        if isinstance(decision, paging.Next):
            yield make_request(decision.value)
        elif isinstance(decision, paging.Stop):
            yield ResourceDone(job.personality, resource, ok=True, requests=job.requests, note=decision.reason)
            job.resources.pop(0)
            yield from self._advance(job)
        else:
            self.logger.error("%s %s: %s", job.personality["username"], resource, decision.reason)
            yield from self._fail_current(job, decision.reason)
            yield from self._advance(job)
