"""The backup crawl shared by every spider: which personalities, which resources, in what order.

Read top to bottom, the walk is ``start`` (or ``parse_list``) → ``_next_personality`` (claim the
personality's lock without blocking the event loop, ask for its profile) → ``parse_profile`` →
``_continue`` (the first request of the current resource) → ``parse_memories`` / ``parse_history``
/ ``parse_document`` until the paging decision ends the resource → ``_continue`` again → at the
end of the plan a ``PersonalityEnd`` and the next personality. Callbacks only decode (``api``),
decide (``paging``, ``walk``) and hand the walk its next step; resource outcomes are made in
``_end`` and ``_error`` only. The spider never writes the backup: it reads what the backup holds
through the pipeline's store (``held``) and claims personalities there; the pipeline saves.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from dataclasses import dataclass

import scrapy
from scrapy.exceptions import CloseSpider

from tzcrawl import api, config, paging, registry
from tzcrawl.config import BackupConfig, ConfigError, ServiceConfig, split_names
from tzcrawl.session.crawler import BLOCKED as SESSION_BLOCKED, OK, REFUSED, TLS, UNREACHABLE, Session
from tzcrawl.session.tls import ca_file
from tzcrawl.items import Outcome, PersonalityEnd
from tzcrawl.media import MediaConfig
from tzcrawl.pipelines import BackupPipeline
from tzcrawl.walk import ANSWER, AUTH, BLOCKED, LOCKED, NOT_THEIRS, Walk, after_error, gather, not_theirs, \
    outcome_of

PROFILE = registry.get("profile")
PUBLIC = "public"  # the profile's position when it is asked for on the public path
ANSWER_ERRORS = (api.NotAuthenticated, api.BadAnswer, api.Blocked)
CATEGORIES = ("self", "recent")  # the service's lists: the personalities owned, those talked to lately


@dataclass(frozen=True)
class RecoverSession:
    """Yielded by a callback whose answer said "not logged in": ``step`` tries the unattended login
    once and asks for the same page again, or ends the crawl as before. ``confirm`` (a 403): ask the
    current-user call first; when the session holds, only this resource was refused (it fails)."""

    walk: Walk
    resource: object
    position: object
    reason: str
    confirm: bool = False


def step(method):
    """Turn a callback written as a plain generator into Scrapy's async callback: when it has
    ended a personality (yielded ``PersonalityEnd``), the next personality is claimed and started.

    An exception the callback did not expect (a bug of ours, an answer no rule foresaw, a disk error)
    does not end the walk: ``after_unexpected`` fails the resource being walked and goes on."""

    @functools.wraps(method)
    async def callback(self, *args, **kwargs):
        ended = went_on = False
        try:
            for out in method(self, *args, **kwargs):  # a CloseSpider raised here stops before the next
                if isinstance(out, RecoverSession):
                    refused = await self._refused_alone(out) if out.confirm else None
                    if refused is not None:
                        for following in self._error(out.walk, *refused):
                            ended = ended or isinstance(following, PersonalityEnd)
                            yield following
                        continue
                    if await self.session.recover(out.reason):  # the same page again, nothing done is redone
                        went_on = True
                        yield self._request(out.walk, out.resource, out.position)
                        continue
                    for following in self._error(out.walk, AUTH, out.reason):
                        ended = ended or isinstance(following, PersonalityEnd)
                        yield following
                    continue
                ended = ended or isinstance(out, PersonalityEnd)
                went_on = went_on or isinstance(out, scrapy.Request)
                yield out
        except CloseSpider:
            raise
        except Exception as exc:
            async for out in self.after_unexpected(walk_of(args, kwargs), exc, went_on=went_on or ended):
                yield out
            return
        if ended:
            async for following in self._next_personality():
                yield following

    return callback


def walk_of(args: tuple, kwargs: dict):
    """The walk a callback (``walk=`` keyword) or errback (the failure's request) was working on."""
    if "walk" in kwargs:
        return kwargs["walk"]
    request = getattr(args[0], "request", None) if args else None
    return request.cb_kwargs.get("walk") if request is not None else None


class BackupSpider(scrapy.Spider):
    """Base for every backup spider; subclasses set ``resources`` and, for bulk, ``bulk = True``."""

    resources: tuple[str, ...] = ()
    bulk = False
    categories: tuple[str, ...] = ("self",)  # bulk: the lists whose personalities are backed up
    handle_httpstatus_list = [401, 403, 404]  # answered by the callbacks, in words that point at the cause

    def __init__(self, personality: str | None = None, full: str | None = None, media: str | None = None,
                 category: str | None = None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.names = split_names(personality)
        self.categories = tuple(split_names(category)) or type(self).categories
        self.lists: dict[str, list[dict] | None] = {}  # bulk: each list as read (None: it could not be)
        self.full = bool(config.flag(full, "-a full="))
        self.media_arg = config.flag(media, "-a media=")  # None: BACKUP_MEDIA decides
        self.queue: deque[Walk] = deque()
        self.walks: list[Walk] = []
        self.planned = tuple(r for r in registry.REGISTRY if r.name in self.resources)

    @classmethod
    def check_config(cls, settings, spargs: dict) -> None:
        """Raise ConfigError (one line) for anything that would make this crawl fail at once."""
        service = ServiceConfig.from_settings(settings)
        BackupConfig.from_settings(settings).check_backup_dir()
        config.check_transport(service.website, config.cookie(settings).jar)
        ca_file(settings)
        config.flag(spargs.get("full"), "-a full=")
        config.flag(spargs.get("media"), "-a media=")
        MediaConfig.from_settings(settings)
        if not cls.bulk and not split_names(spargs.get("personality")):
            raise ConfigError(f"say which personality: scrapy crawl {cls.name} -a personality=NAME[,NAME...]")
        categories = split_names(spargs.get("category"))
        if categories and not cls.bulk:
            raise ConfigError(f"-a category= chooses lists for all_personalities and recent_personalities, not "
                              f"for {cls.name} (which backs up the personalities named)")
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise ConfigError(f"-a category= takes {' and '.join(CATEGORIES)} (comma-separated), not "
                              f"{', '.join(map(repr, unknown))}")

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.backup = BackupConfig.from_settings(crawler.settings)
        spider.endpoints = api.Endpoints(ServiceConfig.from_settings(crawler.settings))
        spider.store = None  # the pipeline's, found at start
        spider.session = Session.of(crawler)
        wanted = MediaConfig.from_settings(crawler.settings).enabled
        spider.media = wanted if spider.media_arg is None else spider.media_arg  # read by the media pipeline
        return spider

    def _store(self):
        pipeline = self.crawler.get_item_pipeline(BackupPipeline)
        if pipeline is None:
            raise CloseSpider("tzcrawl.pipelines.BackupPipeline is not in ITEM_PIPELINES: nothing would be saved")
        return pipeline.store

    # -- the session -----------------------------------------------------------------------------
    async def _session_ok(self) -> bool:
        """One cheap authenticated call before any personality: a refused session stops the crawl at once
        (after one unattended login, when configured); bot protection and an untrusted certificate stop
        it too, each with its own remedy; an unreachable service does not."""
        check = await self.session.check()
        stats = self.crawler.stats
        if check.state == OK:
            return True
        if check.state == UNREACHABLE:
            self.logger.warning("Could not check the session first (%s); going on", check.why)
            return True
        if check.state == TLS:
            stats.set_value("backup/tls_failed", check.why)  # the summary's one line names host and reason
            return False
        if check.state == SESSION_BLOCKED:
            stats.set_value("backup/blocked", check.why)
            return False
        why = f"the session cookie is not accepted ({check.why})"
        if await self.session.recover(why):
            return True
        stats.set_value("backup/auth_failed", why + (f"; {self.session.problem}" if self.session.problem else ""))
        return False

    def closed(self, reason):
        self.session.close()

    # -- the walk --------------------------------------------------------------------------------
    async def start(self):
        self.store = self._store()
        self.logger.info("Backing up to %s", self.store.root)
        if not await self._session_ok():
            return  # nothing was touched; the report says why: log in again (3), bot check (4), certificate (2)
        if self.bulk:  # the owned list first, always: it says which of the others' lists are the user's own
            yield self._list_request("self")
            return
        async for out in self._plan([{"username": n} for n in self.names]):
            yield out

    def _list_request(self, category: str):
        return scrapy.Request(self.endpoints.personalities(category), callback=self.parse_list, errback=self.on_error,
                              dont_filter=True, cb_kwargs={"category": category})

    async def parse_list(self, response, category: str = "self"):
        """One list read (``self``, then ``recent`` when asked for); after the last, the plan: each
        personality once, marked owned when the ``self`` list holds it."""
        try:
            listed = api.personality_list(self._decode(response))
        except api.Blocked as exc:
            self.crawler.stats.set_value("backup/blocked", str(exc))
            raise CloseSpider("blocked") from None
        except api.NotAuthenticated as exc:
            if await self.session.recover(str(exc)):
                yield self._list_request(category)
                return
            self.crawler.stats.set_value("backup/auth_failed", str(exc))
            raise CloseSpider("auth_failed") from None
        except api.BadAnswer as exc:
            self.crawler.stats.inc_value("backup/errors")
            hint = ""
            if response.status == 404:
                hint = (f" (is PERSONALITY_JARGON_TERM={self.endpoints.service.jargon!r} the site's word for a "
                        f"personality in its paths?)")
            self.logger.error("Cannot read the list of personalities (%s): %s%s", category, exc, hint)
            listed = None
        self.lists[category] = listed
        if listed is not None:
            self.logger.info("%s %d personalities: %s", "The account owns" if category == "self" else
                             "Lately the account talked to", len(listed), ", ".join(str(p["username"]) for p in listed))
        unread = [c for c in self.categories if c not in self.lists]
        if unread:
            yield self._list_request(unread[0])
            return
        plan = gather(self.lists, self.categories)
        others = sum(1 for p in plan if p.get("owned") is False)
        if others:
            self.crawler.stats.set_value("backup/personalities/not_owned", others)
            self.logger.info("%d of them are other people's: their chat history and your personalization for each "
                             "are backed up, and whatever else the service lets you read", others)
        async for out in self._plan(plan):
            yield out

    async def _plan(self, personalities: list[dict]):
        self.queue = deque(Walk(p, self.planned) for p in personalities)
        self.walks = list(self.queue)  # the plan, for the report: every resource of it gets an outcome
        stats = self.crawler.stats
        stats.set_value("backup/personalities/requested", len(self.queue))
        stats.set_value("backup/resources/requested", len(self.queue) * len(self.planned))
        async for out in self._next_personality(first=True):
            yield out

    async def _next_personality(self, first: bool = False):
        """After a polite pause (BACKUP_PERSONALITY_DELAY), claim the next personality and ask for its profile.

        A personality another run is backing up goes behind the others once; when nothing else is
        left its lock is waited for (BACKUP_LOCK_TIMEOUT) with ``asyncio.sleep``, so downloads and
        the pipeline's commits go on meanwhile.
        """
        if not first and self.queue and self.backup.personality_delay:
            await asyncio.sleep(self.backup.personality_delay)  # the polite pause between personalities
        while self.queue:
            walk = self.queue.popleft()
            try:
                claimed = await self.store.try_claim_async(walk.username)
            except Exception as exc:  # an unwritable backup folder, a hostile name the layout refuses...
                self.logger.error("Skipping %s: cannot take its lock: %s", walk.username, exc)
                for out in self._error(walk, LOCKED, f"not backed up: cannot take its lock: {exc}"):
                    yield out
                continue
            if not claimed:
                if self.queue and not walk.deferred:
                    walk.deferred = True
                    self.queue.append(walk)
                    self.logger.info("%s is being backed up by another run; coming back to it after the others",
                                     walk.username)
                    continue
                try:
                    if self.backup.lock_timeout:
                        self.logger.warning("%s is being backed up by another run; waiting up to %gs "
                                            "(BACKUP_LOCK_TIMEOUT)", walk.username, self.backup.lock_timeout)
                    await self.store.claim_async(walk.username, self.backup.lock_timeout)
                except Exception as exc:  # BackupLocked names the holder; anything else, the cause
                    self.logger.error("Skipping %s: %s", walk.username, exc)
                    for out in self._error(walk, LOCKED, f"not backed up: {exc}"):
                        yield out
                    continue
            try:  # what the backup holds, read once now that the personality is ours, off the event loop
                walk.stops = await self.store.stop_points(walk.username, [r.name for r in walk.planned if r.collection],
                                                          self.full, self.backup.full_every)
                if walk.owned is None:  # named, never listed: whose it is, as the last backup recorded it
                    owned = await asyncio.to_thread(self.store.recorded_owned, walk.username)
                    if owned is not None:
                        walk.personality["owned"] = owned
            except Exception as exc:
                self.logger.error("Skipping %s: cannot read what its backup holds: %s", walk.username, exc)
                for out in self._error(walk, ANSWER, f"cannot read what the backup holds: {exc}"):
                    yield out
                continue
            yield self._request(walk, PROFILE, None)
            return

    async def after_unexpected(self, walk: Walk | None, exc: Exception, went_on: bool):
        """An exception nothing foresaw: logged with its traceback, the resource being walked fails
        with its reason and the walk goes on (the next resource, or the next personality). When the
        walk had already gone on (its next request was out), only the error is counted."""
        resource = walk.current.name if walk is not None and walk.current is not None else None
        where = f"{walk.username} · {resource}" if resource else (walk.username if walk else "the crawl")
        self.logger.error("Unexpected error in %s: %s: %s", where, type(exc).__name__, exc, exc_info=exc)
        self.crawler.stats.inc_value("backup/errors/unexpected")
        if walk is None or went_on:
            self.crawler.stats.inc_value("backup/errors")
            return
        ended = False
        reason = f"unexpected error: {type(exc).__name__}: {exc}"
        for _ in range(len(walk.planned) + 1):  # each pass ends at least one resource
            try:
                if walk.current is not None:
                    for out in self._error(walk, ANSWER, reason):
                        ended = ended or isinstance(out, PersonalityEnd)
                        yield out
                elif not ended:  # the personality was over when it happened
                    ended = True
                    yield PersonalityEnd(walk.personality)
                break
            except CloseSpider:
                raise
            except Exception as again:  # starting the next resource failed too: that one fails, and so on
                self.logger.error("Unexpected error in %s: %s: %s", walk.username, type(again).__name__, again,
                                  exc_info=again)
                reason = f"unexpected error: {type(again).__name__}: {again}"
        if ended:
            async for out in self._next_personality():
                yield out

    def _continue(self, walk: Walk):
        """The current resource's first request; at the end of the plan, the personality's end."""
        resource = walk.current
        if resource is None:
            yield PersonalityEnd(walk.personality)  # ``step`` starts the next personality
            return
        walk.begin(self._held(walk, resource), self.full)
        yield self._request(walk, resource, walk.pager.first if walk.pager is not None else None)

    def _end(self, walk: Walk, outcome: Outcome):
        """End the current resource with ``outcome`` and go on."""
        yield walk.end(outcome)
        yield from self._continue(walk)

    def _error(self, walk: Walk, kind: str, reason: str):
        """End what this ``kind`` of error ends (``walk.after_error``), then go on or stop the crawl."""
        ending = after_error(walk, kind, reason)
        yield from ending.done
        if ending.stop_crawl:
            self.crawler.stats.set_value("backup/blocked" if kind == BLOCKED else "backup/auth_failed", reason)
            yield PersonalityEnd(walk.personality)
            raise CloseSpider("blocked" if kind == BLOCKED else "auth_failed")
        if ending.personality_over:
            yield PersonalityEnd(walk.personality)
        else:
            yield from self._continue(walk)

    def _answer_error(self, walk: Walk, exc: Exception, resource=None, position=None):
        """The report logs each resource's outcome with this reason: no second line here. "Not logged
        in" goes through ``step``: one unattended login, then the same page (``resource``, ``position``);
        a 403 asks the current-user call first. An owner-only resource of someone else's personality
        that refuses is not theirs (``walk.not_theirs``)."""
        why = not_theirs(walk, resource or walk.current, exc)
        if why:
            yield from self._error(walk, NOT_THEIRS, why)
            return
        if isinstance(exc, api.NotAuthenticated):
            yield RecoverSession(walk, resource or walk.current, position, str(exc),
                                 confirm=isinstance(exc, api.Forbidden))
            return
        yield from self._error(walk, BLOCKED if isinstance(exc, api.Blocked) else ANSWER, str(exc))

    async def _refused_alone(self, out: RecoverSession) -> tuple[str, str] | None:
        """After a 403: does the session still hold? Then this one resource was refused (the error's kind
        and reason); None when the session is refused too (log in again, as for a 401)."""
        check = await self.session.check()
        if check.state == REFUSED:
            return None
        self.crawler.stats.inc_value("backup/refused")
        if check.state == SESSION_BLOCKED:
            return BLOCKED, check.why
        if check.state == OK:
            return ANSWER, f"{out.reason}: refused, though the session is accepted (is it your personality?)"
        return ANSWER, f"{out.reason}: refused (the session could not be checked: {check.why})"

    def _held(self, walk: Walk, resource) -> paging.Held:
        """Where an incremental walk may stop (read by the store at the claim: ``stop_points``); empty
        (read everything) on a full run, when the last run found records missing, or when the last full
        read is older than BACKUP_FULL_EVERY days."""
        if not resource.collection:
            return paging.Held()
        held, full_because = walk.stops.get(resource.name, (paging.Held(), None))
        if full_because:
            self.logger.info("%s · %s: reading in full (%s)", walk.username, resource.name, full_because)
        return held

    # -- requests and answers --------------------------------------------------------------------
    def _request(self, walk: Walk, resource, position):
        """The request for ``resource`` at ``position`` (page number or before_ts), counted on the walk."""
        callback = (self.parse_profile if resource == PROFILE else
                    self.parse_page if resource.collection else self.parse_document)
        walk.requests += 1
        url = (self.endpoints.public_profile(walk.personality) if resource == PROFILE and position == PUBLIC
               else self.endpoints.resource(resource, walk.personality, position))
        return scrapy.Request(url, callback=callback, errback=self.on_error, dont_filter=True,
                              cb_kwargs={"walk": walk, "position": position})

    def _decode(self, response):
        if api.origin(response.url) != self.endpoints.origin:  # a redirect took the request elsewhere
            raise api.BadAnswer(f"the answer came from {response.url}, not from SERVICE_WEBSITE's origin "
                                f"(a redirect): it is not backup data")
        return api.decode(response.status, response.headers.get("Content-Type", b"").decode("latin-1"),
                          response.body, response.url, response.headers)

    # -- callbacks: decode, decide, hand the walk its next step ----------------------------------
    @step
    def on_error(self, failure):
        walk = failure.request.cb_kwargs.get("walk")
        error = failure.getErrorMessage() or failure.type.__name__
        if getattr(failure.value, "response", None) is not None:
            error = f"HTTP {failure.value.response.status} from {failure.request.url}"
        if walk is None:
            self.logger.error("Request failed for good: %s", error)
            self.crawler.stats.inc_value("backup/errors")
            return
        yield from self._error(walk, ANSWER, error)

    @step
    def parse_profile(self, response, walk: Walk, position=None):
        try:
            payload = api.profile(self._decode(response), walk.username)
        except ANSWER_ERRORS as exc:
            refused = isinstance(exc, (api.Forbidden, api.NotFound))
            if refused and walk.owned is False:  # someone else's: the public profile, else not theirs to see
                if position is None and self.endpoints.public_profile(walk.personality):
                    yield self._request(walk, PROFILE, PUBLIC)
                elif walk.current == PROFILE:
                    yield from self._error(walk, NOT_THEIRS, f"its profile is not shown to you ({exc})")
                else:
                    yield from self._error(walk, ANSWER, f"its profile is not shown to you ({exc})")
                return
            if isinstance(exc, api.NotFound):
                exc = api.NotFound(f"no personality {walk.username!r} on the service ({exc}; check the name, and "
                                   f"PROFILE_INFO_PRIVATE_PATH if every name fails)")
            yield from self._answer_error(walk, exc, PROFILE, position)
            return
        walk.identify(payload)
        # someone else's profile shows what its owner lets others see: fewer keys is not drift
        walk.drift = PROFILE.missing_keys(payload) if walk.owned is not False else ()
        if walk.current == PROFILE:
            yield walk.document(payload, 1)
            yield from self._end(walk, Outcome.complete())
        else:
            yield from self._continue(walk)

    @step
    def parse_document(self, response, walk: Walk, position=None):
        try:
            payload = self._decode(response)
            count = api.entry_count(walk.current, payload)
        except ANSWER_ERRORS as exc:
            yield from self._answer_error(walk, exc)
            return
        yield walk.document(payload, count)
        yield from self._end(walk, Outcome.complete())

    @step
    def parse_page(self, response, walk: Walk, position):
        """A page of the current collection: decode, let its pager decide, follow."""
        pager = walk.pager_of(self.full)
        try:
            answer = self._decode(response)
            if position == pager.first and walk.requests == 1:  # the first answer: has the service's shape drifted?
                walk.drift = walk.current.missing_keys(answer)
            step_ = pager.step(pager.read(answer), position)
        except ANSWER_ERRORS as exc:
            yield from self._answer_error(walk, exc, walk.current, position)
            return
        if step_.records:
            yield walk.page(step_.records, step_.pages)
        if step_.rewalk:
            self.logger.info("%s · %s: %s", walk.username, walk.current.name, step_.rewalk)
            self.crawler.stats.inc_value(f"backup/{walk.current.name}/rewalks")
        yield from self._follow(walk, step_.decision,
                                step_.decision.value if isinstance(step_.decision, paging.Next) else None)

    def _follow(self, walk: Walk, decision, position):
        """The next page of the current resource, or its end as the paging decision says."""
        outcome = outcome_of(decision)
        if outcome is None:
            yield self._request(walk, walk.current, position)
            return
        yield from self._end(walk, outcome)
