"""``scrapy crawl login``: log in with a real Chromium and save the session cookies to the cookie file.

Headed (no ``-a email=``): a browser window opens on ``SERVICE_WEBSITE/login`` and the user logs in by
any means the site offers. Headless (``-a email=you@example.com``): the form is filled in, the password
coming from ``TZCRAWL_PASSWORD`` or a terminal prompt, never from the command line. Either way the spider
waits until the site sets any of the service's session cookies (``TZCRAWL_SESSION_COOKIES``) that one
authenticated call (the current user, through Scrapy's own verified client) accepts, and only then
writes the cookie file (atomically, 0600); a wrong password, an anonymous cookie the site sets on any
page, a timeout or a crashed browser leaves an existing cookie file as it was.

Only this spider enables scrapy-playwright's download handlers: no other spider starts a browser.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys

import scrapy
from playwright.async_api import Error as PlaywrightError

from tzcrawl import api, config
from tzcrawl.config import ConfigError, ServiceConfig, cookie_file, flag, lookup
from tzcrawl.outcome import EXIT_CODE_STAT
from tzcrawl.session import credentials
from tzcrawl.session.browser import (PASSWORD_ENV, SESSION_WORDS, BrowserLogin, LoginFailed, LoginPlan,
                                     launch_failure, one_line, plan_login)
from tzcrawl.session.crawler import OK, ask_current_user
from tzcrawl.session.forms import CLEARANCE_NAMES, SESSION_NAMES
from tzcrawl.session.jar import save_jar

logger = logging.getLogger(__name__)

_PLAYWRIGHT_HANDLER = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"


class LoginSpider(scrapy.Spider):
    name = "login"
    uses_session_cookie = False  # it fetches the cookie: tzcrawl's cookie middleware stays off
    custom_settings = {
        "DOWNLOAD_HANDLERS": {"http": _PLAYWRIGHT_HANDLER, "https": _PLAYWRIGHT_HANDLER},
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        # The browser's own headers: a site's bot checks should see a browser, not tzcrawl's user agent.
        "PLAYWRIGHT_PROCESS_REQUEST_HEADERS": None,
        "PLAYWRIGHT_MAX_CONTEXTS": 1,
        "RETRY_ENABLED": False,
        "AUTOTHROTTLE_ENABLED": False,
        "DOWNLOAD_DELAY": 0,
        # A login writes no backup: keep the backup pipeline and its report (and exit status) out of it.
        "ITEM_PIPELINES": {},
        "EXTENSIONS": {"tzcrawl.extensions.BackupReport": None},
    }

    plan: LoginPlan | None = None
    config_error: str | None = None

    @classmethod
    def check_config(cls, settings, spargs) -> None:
        """Called by tzcrawl's crawl command before anything starts; raises ConfigError."""
        flag(spargs.get("save"), "-a save=")
        plan_login(settings, spargs, stdin_isatty=sys.stdin.isatty())

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider._password = None
        try:
            spider.save_password = bool(flag(kwargs.get("save"), "-a save="))
        except ConfigError as exc:
            spider.save_password = False
            spider.config_error = str(exc)
            return spider
        try:
            spider.known = config.names(crawler.settings, "TZCRAWL_SESSION_COOKIES", SESSION_NAMES)
            spider.keep = config.names(crawler.settings, "TZCRAWL_CLEARANCE_COOKIES", CLEARANCE_NAMES)
            spider.plan = plan_login(crawler.settings, kwargs, stdin_isatty=sys.stdin.isatty())
            spider.cookie_path = cookie_file(crawler.settings)
            if spider.plan.headless:
                spider._password = spider._read_password()
        except ConfigError as exc:
            spider.config_error = str(exc)
            return spider
        crawler.settings.set("PLAYWRIGHT_LAUNCH_OPTIONS", spider.plan.launch_options(), priority="spider")
        crawler.settings.set("PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT", spider.plan.timeout * 1000,
                             priority="spider")
        return spider

    def _read_password(self) -> str:
        if self.plan.password_from == "env":
            return os.environ[PASSWORD_ENV]
        password = getpass.getpass(f"password for {self.plan.email} at {self.plan.website}: ")
        if not password:
            raise ConfigError("no password typed: the headless login needs one")
        return password

    async def start(self):
        if self.plan is None:
            self._finish(2, self.config_error)
            return
        how = ("log in in the browser window" if not self.plan.headless
               else f"logging in as {self.plan.email}")
        logger.info("opening %s in %s Chromium (%s): %s; waiting up to %ds for a %s",
                    self.plan.login_url, self.plan.mode, self.plan.chromium, how, self.plan.timeout, SESSION_WORDS)
        yield scrapy.Request(
            self.plan.login_url,
            callback=self.logged_in_page,
            errback=self.page_failed,
            dont_filter=True,
            meta={"playwright": True, "playwright_include_page": True, "handle_httpstatus_all": True},
        )

    async def logged_in_page(self, response):
        page = response.meta["playwright_page"]
        try:
            if response.status >= 400:
                raise LoginFailed(f"{self.plan.login_url} answered HTTP {response.status}")
            jar = await BrowserLogin(self.plan, self._password, self._prove, self.known, self.keep).log_in(page)
            self._save(jar)
        except LoginFailed as exc:
            self._finish(1, f"login failed: {exc}; nothing was written")
        except PlaywrightError as exc:
            self._finish(1, f"login failed: the browser closed or crashed ({one_line(exc.message)}); "
                            "nothing was written")
        finally:
            await self._close(page)

    async def page_failed(self, failure):
        page = failure.request.meta.get("playwright_page")
        await self._close(page)
        reason = one_line(failure.value)
        if reason.startswith("BrowserType.launch"):
            what = f"Chromium ({self.plan.chromium}) did not start"
            reason = launch_failure(str(failure.value))
        else:
            what = f"could not open {self.plan.login_url} in Chromium"
        self._finish(1, f"login failed: {what} ({reason}); nothing was written")

    async def _prove(self, header: str) -> bool:
        """One current-user call with exactly this Cookie header, through Scrapy's own (verified) client:
        scrapy-playwright hands requests without ``meta["playwright"]`` to Scrapy's HTTP handler."""
        endpoints = api.Endpoints(ServiceConfig.from_settings(self.settings))
        check, _ = await ask_current_user(self.crawler, endpoints, header)
        return check.state == OK

    def _save(self, jar) -> None:
        jar.site = self.plan.website
        try:
            path = save_jar(self.cookie_path, jar, merge=False)
        except OSError as exc:
            raise LoginFailed(f"cannot write the cookie file {self.cookie_path}: {exc.strerror}") from None
        when = jar.expires()
        expiry = f"it expires {when}" if when else "the site did not say when it expires"
        print(f"login: saved the session ({jar.describe()}) to {path}; {expiry}", flush=True)
        if lookup(self.settings, "SERVICE_COOKIE"):
            logger.warning("SERVICE_COOKIE is set and wins over the cookie file: unset it so the backup "
                           "uses the cookie just saved")
        if self.save_password:
            self._store_password()
        self._finish(0, None)

    def _store_password(self) -> None:
        """``-a save=1``: the password that just worked goes to the system keyring, for unattended runs."""
        if not self.plan.headless or not self._password:
            print("login: -a save=1 stores the password of a headless login (-a email=...); nothing stored",
                  flush=True)
            return
        problem = credentials.store_password(self.plan.website, self.plan.email, self._password)
        if problem:
            logger.warning("login: %s", problem)
        else:
            print(f"login: the password for {self.plan.email} is in the system keyring "
                  f"({credentials.keyring_service(self.plan.website)}); set {credentials.EMAIL_ENV}={self.plan.email} "
                  "for unattended runs", flush=True)

    def _finish(self, code: int, message: str | None) -> None:
        self.crawler.stats.set_value(EXIT_CODE_STAT, code)
        self.crawler.stats.set_value("tzcrawl/login", "ok" if code == 0 else "failed")
        if message:
            logger.error(message)

    @staticmethod
    async def _close(page) -> None:
        if page is None:
            return
        try:
            if not page.is_closed():
                await page.close()
        except PlaywrightError:
            pass
