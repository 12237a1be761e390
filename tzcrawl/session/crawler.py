"""``Session``: the session of one crawl, built once (``Session.of(crawler)``) and shared by the cookie
middleware (which sends the jar and hands it the service's ``Set-Cookie`` rotations) and the spider
(which asks it, before any personality, whether the session holds, and to recover it when it lapses).

The session check goes through the crawl's own downloader (``engine.download_async``): the same TLS
verification, the same cookie middleware, no second HTTP client with rules of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from scrapy import Request

from tzcrawl import api, config
from tzcrawl.session.forms import parse_set_cookie
from tzcrawl.session.jar import save_jar
from tzcrawl.session.tls import tls_problem

logger = logging.getLogger(__name__)

OK, REFUSED, BLOCKED, TLS, UNREACHABLE, MISSING = "ok", "refused", "blocked", "tls", "unreachable", "missing"
SAVE_EVERY = 1.0  # seconds: a rotating session rewrites the cookie file at most this often
OWN_COOKIE = "tzcrawl_own_cookie"  # request meta: the request carries the exact Cookie header to try
NO_COOKIE = "tzcrawl_no_cookie"  # request meta: never a cookie, whatever the origin (media downloads)


@dataclass(frozen=True)
class Check:
    """What one current-user call said of a cookie: OK, REFUSED (log in again), BLOCKED (bot
    protection), TLS (the certificate failed), UNREACHABLE (could not tell), MISSING (no such path)."""

    state: str
    why: str = ""


def judge(status: int, headers, content_type: str, body: bytes, url: str) -> Check:
    """The current-user call's answer → Check, read by ``api.decode`` like every other answer. Pure."""
    if status == 404:
        return Check(MISSING, f"HTTP 404 from {url}")
    if status == 429 or status >= 500:  # the service is busy or failing: no reason to log in again
        return Check(UNREACHABLE, f"{url} answered HTTP {status}")
    try:
        payload = api.decode(status, content_type, body, url, headers)
    except api.Blocked as exc:
        return Check(BLOCKED, str(exc))
    except api.NotAuthenticated as exc:
        return Check(REFUSED, str(exc))
    except api.BadAnswer as exc:
        return Check(UNREACHABLE, str(exc))
    if isinstance(payload, dict) and any(payload.get(k) not in (None, "") for k in ("id", "uuid", "user_id", "email")):
        return Check(OK)
    return Check(REFUSED, f"{url} did not name a user")


async def ask_current_user(crawler, endpoints: api.Endpoints, header: str | None, path: str | None = None
                           ) -> tuple[Check, str | None]:
    """One current-user call with exactly ``header`` through the crawl's downloader: ``users/info``,
    falling back to the 2025 ``users/me`` (or ``path`` when known). Returns the check and the path."""
    for each in ([path] if path else api.CURRENT_USER_PATHS):
        url = endpoints.current_user(each)
        request = Request(url, headers={"Accept": "application/json", **({"Cookie": header} if header else {})},
                          meta={"dont_retry": True, "dont_redirect": True, OWN_COOKIE: True, "download_timeout": 30},
                          dont_filter=True)
        try:
            response = await crawler.engine.download_async(request)
        except Exception as exc:  # noqa: BLE001 - every failure is an answer here: TLS or unreachable
            problem = tls_problem(exc)
            parts = urlsplit(url)
            if problem:
                return Check(TLS, f"{parts.hostname}:{parts.port or 443}: {problem}"), None
            return Check(UNREACHABLE, f"{url} could not be reached ({type(exc).__name__}: {exc})"[:300]), None
        content_type = response.headers.get("Content-Type", b"").decode("latin-1")
        check = judge(response.status, response.headers, content_type, response.body, url)
        if check.state != MISSING:
            return check, each
    return Check(UNREACHABLE, f"the service has no current-user path ({' and '.join(api.CURRENT_USER_PATHS)} "
                              "answered 404)"), None


class Session:
    ATTRIBUTE = "_tzcrawl_session"

    def __init__(self, crawler, source: config.CookieSource, endpoints: api.Endpoints):
        self.crawler = crawler
        self.jar = source.jar
        self.source = source.source
        self.file = source.file
        self.endpoints = endpoints
        self.secure = endpoints.origin[0] == "https"
        self.user_path: str | None = None
        self.recovery_tried = self.recovered = False
        self.problem = ""
        self._saved_at = 0.0
        self._timer = None
        self.rotations = 0
        self.new_values = False
        if source.dropped:
            logger.info("Session cookies from %s: kept %s; left out %s (not the session)", source.source,
                        ", ".join(self.jar.cookies) or "a bare value", ", ".join(source.dropped))

    @classmethod
    def of(cls, crawler) -> "Session":
        """The crawl's one Session (made on first use from the crawl's settings)."""
        session = getattr(crawler, cls.ATTRIBUTE, None)
        if session is None:
            settings = crawler.settings
            session = cls(crawler, config.cookie(settings), api.Endpoints(config.ServiceConfig.from_settings(settings)))
            setattr(crawler, cls.ATTRIBUTE, session)
            logger.info("Using session %s from %s", session.jar.describe(), session.source)
        return session

    # -- sending ----------------------------------------------------------------------------------
    def header(self, secure: bool) -> str | None:
        """The Cookie header for the service. A bare value the session check could not name (the service
        did not answer it) goes under the first name that may travel."""
        return self.jar.header(secure, bare_as=self.jar.candidates(secure)[0] if self.jar.bare else None)

    # -- the check --------------------------------------------------------------------------------
    async def check(self) -> Check:
        """Is the session accepted? A bare value is tried under each known name once (the first accepted
        name is kept and said in one line)."""
        last = Check(REFUSED, "no session cookie could be sent")
        for name in self.jar.candidates(self.secure):
            check, path = await ask_current_user(self.crawler, self.endpoints,
                                                 self.jar.header(self.secure, bare_as=name), self.user_path)
            if check.state == OK:
                self.user_path = path
                if name is not None and self.jar.bare is not None:
                    self.jar.name_bare(name)
                    logger.info("The bare session value is the %s cookie (the service accepted it under that name)",
                                name)
                return check
            if check.state != REFUSED:
                return check
            last = check
        if self.jar.bare is not None and len(self.jar.candidates(self.secure)) > 1:
            return Check(REFUSED, f"{last.why}; the bare value was tried as "
                                  f"{', '.join(str(n) for n in self.jar.candidates(self.secure))}")
        return last

    async def prove(self, header: str) -> bool:
        """Does the service accept exactly this Cookie header? (the browser login's proof)"""
        check, path = await ask_current_user(self.crawler, self.endpoints, header, self.user_path)
        if check.state == OK:
            self.user_path = path
        return check.state == OK

    # -- rotation ---------------------------------------------------------------------------------
    def rotated(self, lines: list[bytes]) -> None:
        """The service's ``Set-Cookie`` lines (from its own origin): session cookies update the jar at once
        and, when the jar came from the cookie file, the file (at most once a second)."""
        now = time.time()
        updates = [u for u in (parse_set_cookie(line.decode("latin-1"), now) for line in lines) if u is not None]
        before = self.jar.header(True)
        changed = self.jar.merge(updates, now)
        if not changed:
            return
        self.new_values = self.new_values or self.jar.header(True) != before  # not only a later expiry
        self.rotations += 1
        self.crawler.stats.inc_value("backup/session/rotations")
        logger.debug("The service renewed %s", ", ".join(changed))
        if self.file is not None:
            self._save_soon()

    def _save_soon(self) -> None:
        wait = self._saved_at + SAVE_EVERY - time.monotonic()
        if wait <= 0:
            self.save()
        elif self._timer is None:
            from twisted.internet import reactor

            self._timer = reactor.callLater(wait, self.save)

    def save(self) -> None:
        """Write the jar to the cookie file now (atomic, 0600; the newest value of each cookie wins)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._saved_at = time.monotonic()
        try:
            save_jar(self.file, self.jar)
        except OSError as exc:
            logger.error("The renewed session could not be written to %s (%s): the next run may need a new "
                         "cookie", self.file, exc.strerror or exc)

    def close(self) -> None:
        """At the crawl's end: a pending write is made; a renewed SERVICE_COOKIE session is said to be stale."""
        if self._timer is not None:
            self.save()
        if self.new_values and self.file is None:
            logger.warning("The service renewed the session during this run, and SERVICE_COOKIE still holds the "
                           "old value: it may not open the next run. Keep the session in the cookie file "
                           "(scrapy crawl login, or unset SERVICE_COOKIE and save it to %s) so renewals are kept",
                           config.cookie_file(self.crawler.settings))

    # -- recovery ---------------------------------------------------------------------------------
    async def recover(self, why: str) -> bool:
        """Log in again without anyone (``TZCRAWL_EMAIL`` + ``TZCRAWL_PASSWORD`` or the keyring), with the
        headless browser flow of ``scrapy crawl login``; once per crawl, never in a loop."""
        from playwright.async_api import Error as PlaywrightError

        from tzcrawl.session import credentials
        from tzcrawl.session.browser import HEADLESS_TIMEOUT, LoginFailed, LoginPlan, find_chromium, one_line, \
            unattended_login
        from tzcrawl.session.forms import CookieError

        if self.recovery_tried:
            return False
        self.recovery_tried = True
        settings, website = self.crawler.settings, self.endpoints.service.website
        creds, problem = await asyncio.to_thread(credentials.credentials, settings, website)
        if creds is None:
            self.problem = problem
            logger.error("Not logged in: %s; %s", why, problem)
            return False
        logger.warning("Not logged in (%s): logging in again as %s (unattended, password from the %s)",
                       why, creds.email, creds.source)
        try:
            plan = LoginPlan(website=website, login_url=f"{website}/login", headless=True, email=creds.email,
                             chromium=find_chromium(config.lookup(settings, "TZCRAWL_CHROMIUM")),
                             password_from=creds.source, timeout=HEADLESS_TIMEOUT,
                             ca_file=config.lookup(settings, "TZCRAWL_CA_FILE"))
            jar = await unattended_login(plan, creds.password, self.prove, known=self.jar.known, keep=self.jar.keep)
            path = config.cookie_file(settings)
            await asyncio.to_thread(save_jar, path, jar, merge=False)
        except (LoginFailed, PlaywrightError, config.ConfigError, CookieError, OSError) as exc:
            self.problem = f"the unattended login failed: {one_line(exc)}"
            logger.error("Not logged in: %s; %s", why, self.problem)
            return False
        self.jar, self.file = jar, path
        self.crawler.stats.set_value("backup/session/recovered", 1)
        logger.warning("Logged in again: the new session %s is saved to %s; the backup goes on", jar.describe(), path)
        if config.lookup(settings, "SERVICE_COOKIE"):
            logger.warning("SERVICE_COOKIE is set and wins over the cookie file: unset it, or the next run "
                           "starts with the old cookie again")
        self.recovered = True
        return True
