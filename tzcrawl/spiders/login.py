"""``scrapy crawl login``: log in with a real Chromium and save the ``appSession`` cookie to the cookie file.

Headed (no ``-a email=``): a browser window opens on ``SERVICE_WEBSITE/login`` and the user logs in by
any means the site offers. Headless (``-a email=you@example.com``): the form is filled in, the password
coming from ``TZCRAWL_PASSWORD`` or a terminal prompt, never from the command line. Either way the spider
waits until the site sets a cookie that one authenticated call (the current user) accepts, and only
then writes the cookie file (atomically, 0600); a wrong password, an anonymous cookie the site sets on
any page, a timeout or a crashed browser leaves an existing cookie file as it was.

Only this spider enables scrapy-playwright's download handlers: no other spider starts a browser.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import scrapy
from playwright.async_api import Error as PlaywrightError

from tzcrawl import api
from tzcrawl.browser import PASSWORD_ENV, LoginPlan, plan_login
from tzcrawl import session
from tzcrawl.config import ConfigError, ServiceConfig, cookie_file, flag, lookup
from tzcrawl.cookies import COOKIE_NAME, CookieError, redact, save_cookie_file
from tzcrawl.outcome import EXIT_CODE_STAT

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# After submitting, a page that still shows a password field this long has refused the credentials.
REJECT_GRACE_SECONDS = 2.0
_PLAYWRIGHT_HANDLER = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"
_ERROR_SELECTORS = '[role="alert"], .error, .errors, .alert, .flash, #error, .message'


class LoginFailed(Exception):
    """The login did not produce a cookie; the message says why in one line."""


def expiry_iso(expires: float | int | None) -> str | None:
    """Playwright's ``expires`` (Unix seconds; -1 for a session cookie) as ISO UTC, or None."""
    if not expires or expires <= 0:
        return None
    try:
        when = datetime.fromtimestamp(float(expires), timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def one_line(text: object, limit: int = 200) -> str:
    """The first line of an error (Playwright's carry browser logs and call logs below it)."""
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(text).__name__
    return first if len(first) <= limit else first[: limit - 1] + "…"


_BROWSER_ERR_RE = re.compile(r"\[err\]\s*(.+)")


def launch_failure(message: str) -> str:
    """Why Chromium did not start, from Playwright's launch error: the browser's own first error line
    (its stderr is in the call log below the useless "Target page ... has been closed")."""
    errors = [m.group(1).strip() for m in _BROWSER_ERR_RE.finditer(str(message))]
    # D-Bus complaints come first or not, as the machine's load has it; they are noise on any box
    # without a session bus and never why the browser stopped.
    chromium_errors = [e for e in errors if ":ERROR:" in e and ":ERROR:dbus/" not in e]
    if chromium_errors:  # "[26927:26927:1121/...:ERROR:ui/ozone/...cc:257] Missing X server or $DISPLAY"
        return one_line(chromium_errors[0].split("] ", 1)[-1])
    useful = [e for e in errors if "unexpected operator" not in e]  # Debian's wrapper script's noise
    return one_line(useful[0] if useful else message)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect (to the login page) is an answer, not something to follow


def session_state(website: str, value: str, timeout: float = 15) -> tuple[bool | None, str]:
    """One authenticated call (the current user) with exactly this cookie: True (a session), False
    (refused: not logged in), or None when the service could not be asked (with why)."""
    url = api.Endpoints(ServiceConfig(website)).current_user()
    request = urllib.request.Request(url, headers={"Cookie": f"{COOKIE_NAME}={value}", "Accept": "application/json"})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as answer:
            status, kind, body = answer.status, answer.headers.get("Content-Type", ""), answer.read()
    except urllib.error.HTTPError as answer:
        status, kind, body = answer.code, answer.headers.get("Content-Type", ""), answer.read()
    except (OSError, ValueError) as exc:
        return None, f"{url} could not be reached ({exc})"
    if status >= 500 or status == 429:
        return None, f"{url} answered HTTP {status}"
    try:
        payload = api.decode(status, kind, body, url)
    except api.NotAuthenticated as exc:
        return False, str(exc)
    except api.BadAnswer as exc:
        return (False, str(exc)) if status in (401, 403) else (None, str(exc))
    if isinstance(payload, dict) and payload.get("id") not in (None, ""):
        return True, ""
    return False, f"{url} did not name a user"


def accepted(website: str, value: str, timeout: float = 15) -> bool:
    """Is this cookie a session? (``session_state`` is True.)"""
    return session_state(website, value, timeout)[0] is True


class BrowserLogin:
    """The login itself, on a Playwright page showing the login URL: fill the form (headless) or let
    the user log in (headed), then wait for an ``appSession`` cookie that one authenticated call
    accepts. ``scrapy crawl login`` runs it on scrapy-playwright's page; an unattended crawl whose
    cookie expired runs it on a page of its own (``unattended_login``)."""

    def __init__(self, plan: LoginPlan, password: str | None):
        self.plan = plan
        self._password = password

    async def log_in(self, page) -> tuple[str, float | None]:
        deadline = time.monotonic() + self.plan.timeout
        submitted_at = None
        refused: set[str] = set()  # cookie values the service did not accept
        if self.plan.headless:
            await self._fill_form(page, deadline)
            submitted_at = time.monotonic()
        while True:
            if page.is_closed():
                raise LoginFailed(f"{self._closed_how(page)} before the site set the {COOKIE_NAME} cookie")
            # The site's pages and its API: a cookie set with Path=/api is not sent to "/".
            jar = await page.context.cookies([self.plan.website + "/", self.plan.website + "/api/"])
            for cookie in jar:  # some sites set an anonymous appSession on any page: prove each one
                value = cookie.get("value")
                if cookie.get("name") != COOKIE_NAME or not value or value in refused:
                    continue
                if await asyncio.to_thread(accepted, self.plan.website, value):
                    return value, cookie.get("expires")
                refused.add(value)
            now = time.monotonic()
            if submitted_at is not None and now - submitted_at >= REJECT_GRACE_SECONDS:
                if await self._visible(page, 'input[type="password"]'):
                    raise LoginFailed(f"the site refused the email and password{await self._error_text(page)}")
            if now >= deadline:
                raise LoginFailed(f"the site did not set the {COOKIE_NAME} cookie within {self.plan.timeout:g}s "
                                  "(raise it with -a timeout=SECONDS)")
            await asyncio.sleep(POLL_SECONDS)

    async def _fill_form(self, page, deadline: float) -> None:
        wait_ms = max(1.0, deadline - time.monotonic()) * 1000
        email = page.locator('input[name="email"], input[type="email"], input[name="username"]').first
        password = page.locator('input[type="password"]').first
        try:
            await email.wait_for(state="visible", timeout=wait_ms)
            await password.wait_for(state="visible", timeout=wait_ms)
        except PlaywrightError:
            if page.is_closed():
                raise
            raise LoginFailed(f"{page.url} shows no email and password form: log in headed instead "
                              "(run without -a email=)") from None
        await email.fill(self.plan.email)
        await password.fill(self._password)
        submit = page.locator('form [type="submit"]').first
        if await submit.count():
            await submit.click(timeout=wait_ms)
        else:
            await password.press("Enter", timeout=wait_ms)

    @staticmethod
    def _closed_how(page) -> str:
        browser = page.context.browser
        if browser is not None and not browser.is_connected():
            return "Chromium exited or crashed"
        return "the browser window was closed"

    @staticmethod
    async def _visible(page, selector: str) -> bool:
        try:
            return await page.locator(selector).first.is_visible()
        except PlaywrightError:  # mid-navigation: the next poll will see the settled page
            if page.is_closed():
                raise
            return False

    @staticmethod
    async def _error_text(page) -> str:
        try:
            for handle in await page.locator(_ERROR_SELECTORS).all():
                if await handle.is_visible():
                    text = " ".join((await handle.inner_text()).split())
                    if text:
                        return f" (the page says: {one_line(text, 120)})"
        except PlaywrightError:
            pass
        return ""



async def unattended_login(plan: LoginPlan, password: str) -> tuple[str, float | None]:
    """A headless login in a Chromium of its own (no Scrapy request): the crawl's session recovery.
    Raises LoginFailed (or Playwright's Error when the browser does not start)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**plan.launch_options())
        try:
            page = await browser.new_page()
            await page.goto(plan.login_url, timeout=plan.timeout * 1000)
            return await BrowserLogin(plan, password).log_in(page)
        finally:
            await browser.close()


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
        logger.info("opening %s in %s Chromium (%s): %s; waiting up to %ds for the %s cookie",
                    self.plan.login_url, self.plan.mode, self.plan.chromium, how, self.plan.timeout, COOKIE_NAME)
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
            value, expires = await BrowserLogin(self.plan, self._password).log_in(page)
            self._save(value, expires)
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

    def _save(self, value: str, expires: float | None) -> None:
        when = expiry_iso(expires)
        try:
            path = save_cookie_file(self.cookie_path, value, expires=when, site=self.plan.website)
        except CookieError as exc:
            raise LoginFailed(f"the site's {COOKIE_NAME} cookie cannot be used: {exc}") from None
        except OSError as exc:
            raise LoginFailed(f"cannot write the cookie file {self.cookie_path}: {exc.strerror}") from None
        expiry = f"it expires {when}" if when else "the site did not say when it expires"
        print(f"login: saved the {COOKIE_NAME} cookie {redact(value)} to {path}; {expiry}", flush=True)
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
        problem = session.store_password(self.plan.website, self.plan.email, self._password)
        if problem:
            logger.warning("login: %s", problem)
        else:
            print(f"login: the password for {self.plan.email} is in the system keyring "
                  f"({session.keyring_service(self.plan.website)}); set {session.EMAIL_ENV}={self.plan.email} "
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
