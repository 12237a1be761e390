"""Downloader middlewares (the session cookie, waiting before retries, pacing to the server's limit) and
the spider middleware that keeps a backup walk going past an exception (``WalkGuardMiddleware``)."""

from __future__ import annotations

import asyncio
import logging
import time

from scrapy import Request
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import CloseSpider, NotConfigured

from tzcrawl.api import origin
from tzcrawl.session.botcheck import bot_check
from tzcrawl.session.crawler import NO_COOKIE, OWN_COOKIE, Session
from tzcrawl.pacing import MIN_SAMPLE, learn_interval, parse_retry_after, retry_wait

logger = logging.getLogger(__name__)


class SessionCookieMiddleware:
    """Send the session's cookies (``tzcrawl.session``) to the exact origin of SERVICE_WEBSITE only, and
    hand the service's ``Set-Cookie`` rotations to the session's jar.

    Scheme, host and port must all match: not to another host (the media file host), not to the
    same host over plain http after a redirect; ``__Secure-`` cookies never over http; never with a
    request whose meta has ``tzcrawl_no_cookie`` (every media download, the service's origin included). Scrapy's
    CookiesMiddleware is off (COOKIES_ENABLED = False): it would drop a header set here, and it would
    keep every cookie a site sets. A request whose meta has ``tzcrawl_own_cookie`` (the session check,
    the login's proof) carries the exact header to try. Sitting above the retry middleware, it sees
    every answer's ``Set-Cookie``, retried ones included. Spiders that need no session
    (``uses_session_cookie = False``) disable it.
    """

    def __init__(self, session: Session):
        self.session = session
        self.origin = session.endpoints.origin

    @classmethod
    def from_crawler(cls, crawler):
        if not getattr(crawler.spider, "uses_session_cookie", True):
            raise NotConfigured("this spider does not use the session cookie")
        return cls(Session.of(crawler))

    def process_request(self, request: Request):
        if request.meta.get(NO_COOKIE) or origin(request.url) != self.origin:
            request.headers.pop("Cookie", None)
            return None
        if request.meta.get(OWN_COOKIE):
            return None
        header = self.session.header(secure=self.origin[0] == "https")
        if header:
            request.headers["Cookie"] = header
        else:
            request.headers.pop("Cookie", None)
        return None

    def process_response(self, request: Request, response):
        # An answer to a request sent without the session (a media file on the service's own origin)
        # may set an anonymous session: it must never replace the user's.
        if origin(response.url) == self.origin and not request.meta.get(NO_COOKIE):
            lines = response.headers.getlist(b"Set-Cookie")
            if lines:
                self.session.rotated(lines)
        return response


class BackoffRetryMiddleware(RetryMiddleware):
    """Scrapy's retries (5xx, 429, timeouts, dropped connections), waiting before each one.

    A 429 or 503 with Retry-After waits what the server asked; anything else backs off
    exponentially (``TZCRAWL_RETRY_BACKOFF_BASE`` doubling up to ``TZCRAWL_RETRY_BACKOFF_MAX``).
    Replaces ``scrapy.downloadermiddlewares.retry.RetryMiddleware`` at the same priority.
    """

    def __init__(self, settings):
        super().__init__(settings)
        self.base = settings.getfloat("TZCRAWL_RETRY_BACKOFF_BASE", 0.5)
        self.cap = settings.getfloat("TZCRAWL_RETRY_BACKOFF_MAX", 30.0)

    async def _wait(self, retry: Request | None, retry_after: float | None):
        if retry is not None:
            delay = retry_wait(retry_after, retry.meta.get("retry_times", 1), base=self.base, cap=self.cap)
            self.crawler.stats.inc_value("backup/retry/wait_seconds", round(delay, 3))
            if delay > 0:
                await asyncio.sleep(delay)
        return retry

    async def process_response(self, request, response):
        if bot_check(response.status, response.headers,
                     response.headers.get("Content-Type", b"").decode("latin-1"), response.body):
            return response  # the site's bot check: retrying walks into it again (the spider stops)
        result = super().process_response(request, response)
        if not isinstance(result, Request):
            return result
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if response.status == 429:
            self.crawler.stats.inc_value("backup/retry/rate_limited")
        return await self._wait(result, retry_after)

    async def process_exception(self, request, exception):
        result = super().process_exception(request, exception)
        return await self._wait(result, None) if isinstance(result, Request) else result


class AdaptivePacingMiddleware:
    """Learn the server's rate limit from its 429s and keep the slot's delay just above it.

    AutoThrottle sets the delay from latency only; this raises it to the learned interval after
    AutoThrottle's adjustment (it runs on ``response_downloaded``, before middlewares see the response).
    Off with ``TZCRAWL_ADAPTIVE_PACING = False``; a request with ``meta["dont_pace"]`` (media, on
    another host with its own slot) neither teaches nor is paced.
    """

    def __init__(self, crawler, clock=time.monotonic):
        self.crawler = crawler
        self.clock = clock
        self.interval = 0.0
        self.cycle = 0  # successes the current estimate came from (0: none yet)
        self.successes = 0
        self.since: float | None = None  # the previous 429, or the first answer
        # Without AutoThrottle nobody else lowers the delay again: fall back to DOWNLOAD_DELAY.
        self.autothrottle = crawler.settings.getbool("AUTOTHROTTLE_ENABLED")
        self.download_delay = crawler.settings.getfloat("DOWNLOAD_DELAY")

    @classmethod
    def from_crawler(cls, crawler):
        if not crawler.settings.getbool("TZCRAWL_ADAPTIVE_PACING", True):
            raise NotConfigured("TZCRAWL_ADAPTIVE_PACING is off")
        return cls(crawler)

    def process_response(self, request, response):
        if request.meta.get("dont_pace"):
            return response
        now = self.clock()
        if self.since is None:
            self.since = now
        limited = response.status == 429
        if limited or self.interval:
            self.interval = learn_interval(self.interval, limited=limited, successes_since_limit=self.successes,
                                           seconds_since_limit=now - self.since, cycle=self.cycle)
        if limited:
            self.cycle = self.successes if self.successes >= MIN_SAMPLE else 0
            self.successes, self.since = 0, now
        else:
            self.successes += 1
        slot = self.crawler.engine.downloader.slots.get(request.meta.get("download_slot"))
        if slot is not None and self.interval:
            slot.delay = max(slot.delay if self.autothrottle else self.download_delay, self.interval)
        self.crawler.stats.set_value("backup/pacing/interval_ms", round(self.interval * 1000, 1))
        return response


WENT_ON = "tzcrawl_went_on"  # request meta: a request of this answer's output reached the engine


class WalkGuardMiddleware:
    """Closest to the engine, so it sees what leaves every other spider middleware: an exception
    raised while another middleware handles a backup callback's output would drop the walk's next
    request and end the walk with no outcome for what was left. Here it fails the resource being
    walked (``BackupSpider.after_unexpected``) and the walk goes on. Exceptions inside tzcrawl's own
    callbacks are handled there already (``spiders.base.step``)."""

    def __init__(self, crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    async def process_spider_output(self, response, result):
        async for out in result:
            if isinstance(out, Request):
                response.meta[WENT_ON] = True
            yield out

    def process_spider_exception(self, response, exception):
        recover = getattr(self.crawler.spider, "after_unexpected", None)
        request = getattr(response, "request", None)
        walk = request.cb_kwargs.get("walk") if request is not None else None
        if isinstance(exception, CloseSpider) or recover is None or walk is None:
            return None
        return recover(walk, exception, went_on=bool(response.meta.get(WENT_ON)))
