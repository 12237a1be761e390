"""The browser login: which Chromium, headed or headless, where the password comes from (pure decisions
over settings, spider arguments and the environment, each refusal one line), and the login itself on a
Playwright page (``BrowserLogin``), used by ``scrapy crawl login`` and by a crawl's unattended recovery.

The login waits for any of the service's session cookies (``__Secure-better-auth.session_token``,
``appSession``, its ``.N`` parts), proves them with one current-user call through the crawl's own
client, and returns them as a jar; Chromium trusts ``TZCRAWL_CA_FILE``'s keys and nothing else extra.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable, Mapping

from tzcrawl.config import ConfigError, flag, lookup, website
from tzcrawl.session.forms import CLEARANCE_NAMES, SESSION_NAMES, is_session
from tzcrawl.session.jar import Cookie, Jar
from tzcrawl.session.tls import ca_file as configured_ca_file, spki_hashes

DEBIAN_CHROMIUM = "/usr/bin/chromium"
PASSWORD_ENV = "TZCRAWL_PASSWORD"
HEADED_TIMEOUT = 300.0
HEADLESS_TIMEOUT = 30.0

# No network beyond the site itself: keep Chromium from phoning home for updates, sync and the like.
QUIET_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
)



def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_chromium(configured: str | None = None, which: Callable[[str], str | None] = shutil.which,
                  is_executable: Callable[[str], bool] = _is_executable) -> str:
    """The Chromium to launch: ``TZCRAWL_CHROMIUM`` if set, else Debian's, else one on PATH."""
    if configured:
        path = os.path.expanduser(str(configured))
        resolved = path if os.sep in path else which(path)
        if not resolved or not is_executable(resolved):
            raise ConfigError(f"TZCRAWL_CHROMIUM={configured!r} is not an executable file: "
                              f"point it at a Chromium binary, or unset it to use {DEBIAN_CHROMIUM}")
        return resolved
    if is_executable(DEBIAN_CHROMIUM):
        return DEBIAN_CHROMIUM
    for name in ("chromium", "chromium-browser"):
        found = which(name)
        if found and is_executable(found):
            return found
    raise ConfigError("no Chromium found for the browser login: install it (sudo apt-get install chromium) "
                      "or set TZCRAWL_CHROMIUM=/path/to/chromium")


def has_display(env: Mapping[str, str]) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def _flag(spargs: Mapping[str, str], name: str) -> bool | None:
    raw = spargs.get(name)
    return True if raw is not None and not str(raw).strip() else flag(raw, f"-a {name}=")


@dataclass(frozen=True)
class LoginPlan:
    """How this login runs; built once from settings, spider arguments and the environment."""

    website: str
    login_url: str
    chromium: str
    headless: bool
    email: str | None
    password_from: str | None  # "env" or "prompt" when headless; None when the user types in the browser
    timeout: float
    ca_file: str | None = None  # TZCRAWL_CA_FILE: its keys are trusted by Chromium too

    @property
    def mode(self) -> str:
        return "headless" if self.headless else "headed"

    def launch_options(self) -> dict:
        args = list(QUIET_FLAGS)
        if self.ca_file:  # exactly these public keys, as the crawl trusts this CA file; nothing else is relaxed
            args.append("--ignore-certificate-errors-spki-list=" + ",".join(spki_hashes(self.ca_file)))
        return {"executable_path": self.chromium, "headless": self.headless, "args": args}


def plan_login(settings, spargs: Mapping[str, str], env: Mapping[str, str] | None = None,
               stdin_isatty: bool = False, which: Callable[[str], str | None] = shutil.which,
               is_executable: Callable[[str], bool] = _is_executable) -> LoginPlan:
    """Decide everything before a browser starts; a ``ConfigError`` says what to fix.

    Headless when ``-a email=`` is given (the password then comes from ``TZCRAWL_PASSWORD`` or a
    terminal prompt), headed otherwise; ``-a headless=yes|no`` overrides. A password given as a spider
    argument is refused: command lines end up in shell history, ``ps`` and scrapyd's job logs.
    """
    env = os.environ if env is None else env
    if "password" in spargs:
        raise ConfigError(f"never put the password on the command line (shell history, ps, logs): "
                          f"export {PASSWORD_ENV}=... or run in a terminal to be prompted")
    site = website(settings)
    email = (spargs.get("email") or "").strip() or None
    headless = _flag(spargs, "headless")
    if headless is None:
        headless = email is not None
    if headless and not email:
        raise ConfigError("a headless login needs the account's email: -a email=you@example.com "
                          f"(the password comes from {PASSWORD_ENV} or a prompt)")
    if not headless and not has_display(env):
        raise ConfigError("a headed login needs a display and neither DISPLAY nor WAYLAND_DISPLAY is set: "
                          f"run it in a desktop session, or log in headless with -a email=... and {PASSWORD_ENV}")
    password_from = None
    if headless:
        if env.get(PASSWORD_ENV):
            password_from = "env"
        elif stdin_isatty:
            password_from = "prompt"
        else:
            raise ConfigError(f"no password for the headless login: export {PASSWORD_ENV}=... "
                              "or run it in a terminal to be prompted")
    default_timeout = HEADLESS_TIMEOUT if headless else HEADED_TIMEOUT
    raw_timeout = spargs.get("timeout", default_timeout)
    try:
        timeout = float(raw_timeout)
    except (TypeError, ValueError):
        raise ConfigError(f"-a timeout= takes a number of seconds, not {raw_timeout!r}") from None
    if not 0 < timeout <= 24 * 3600:
        raise ConfigError(f"-a timeout= must be between 0 and 86400 seconds, not {raw_timeout!r}")
    chromium = find_chromium(lookup(settings, "TZCRAWL_CHROMIUM"), which=which, is_executable=is_executable)
    return LoginPlan(website=site, login_url=f"{site}/login", chromium=chromium, headless=headless,
                     email=email, password_from=password_from, timeout=timeout, ca_file=configured_ca_file(settings))


# -- the login on a Playwright page -----------------------------------------------------------------
POLL_SECONDS = 0.25
# After submitting, a page that still shows a password field this long has refused the credentials.
REJECT_GRACE_SECONDS = 2.0
_ERROR_SELECTORS = '[role="alert"], .error, .errors, .alert, .flash, #error, .message'
SESSION_WORDS = "session cookie"


class LoginFailed(Exception):
    """The login did not produce a session; the message says why in one line."""


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


MAX_CANDIDATES = 16


def harvest(browser_cookies: list[dict], known=SESSION_NAMES, keep=CLEARANCE_NAMES) -> list[Jar]:
    """The session (and clearance) cookies among a browser's cookies for the site, as candidate jars
    (none when the site has set no session cookie yet). A name set twice (an anonymous ``appSession`` on
    ``/`` and the real one on ``/api``) gives one candidate per value, each to be proven. Pure."""
    now = time.time()
    values: dict[str, list[Cookie]] = {}
    for c in browser_cookies:
        name = c.get("name", "")
        if c.get("value") and (is_session(name, known) or name in keep):
            values.setdefault(name, []).append(Cookie(c["value"], now, expiry_iso(c.get("expires"))))
    if not any(is_session(name, known) for name in values):
        return []
    jars = [{}]
    for name, options in values.items():
        jars = [{**jar, name: option} for jar in jars for option in options][:MAX_CANDIDATES]
    return [Jar(cookies, known=known, keep=keep) for cookies in jars]


class BrowserLogin:
    """The login itself, on a Playwright page showing the login URL: fill the form (headless) or let
    the user log in (headed), then wait for session cookies that one authenticated call accepts
    (``prove``: the Cookie header → accepted?). ``scrapy crawl login`` runs it on scrapy-playwright's
    page; an unattended crawl whose session lapsed runs it on a Chromium of its own (``unattended_login``)."""

    def __init__(self, plan: LoginPlan, password: str | None, prove: Callable[[str], Awaitable[bool]],
                 known=SESSION_NAMES, keep=CLEARANCE_NAMES):
        self.plan = plan
        self._password = password
        self.prove = prove
        self.known, self.keep = known, keep

    async def log_in(self, page) -> Jar:
        deadline = time.monotonic() + self.plan.timeout
        submitted_at = None
        refused: set[str] = set()  # Cookie headers the service did not accept (anonymous cookies, old ones)
        if self.plan.headless:
            await self._fill_form(page, deadline)
            submitted_at = time.monotonic()
        while True:
            if page.is_closed():
                raise LoginFailed(f"{self._closed_how(page)} before the site set a {SESSION_WORDS}")
            # The site's pages and its API: a cookie set with Path=/api is not sent to "/".
            for jar in harvest(await page.context.cookies([self.plan.website + "/", self.plan.website + "/api/"]),
                               self.known, self.keep):
                header = jar.header(secure=self.plan.website.startswith("https"))
                if header and header not in refused:  # some sites set an anonymous session on any page: prove it
                    if await self.prove(header):
                        return jar
                    refused.add(header)
            now = time.monotonic()
            if submitted_at is not None and now - submitted_at >= REJECT_GRACE_SECONDS:
                if await self._visible(page, 'input[type="password"]'):
                    raise LoginFailed(f"the site refused the email and password{await self._error_text(page)}")
            if now >= deadline:
                raise LoginFailed(f"the site did not set a {SESSION_WORDS} ({', '.join(self.known)}) within "
                                  f"{self.plan.timeout:g}s (raise it with -a timeout=SECONDS)")
            await asyncio.sleep(POLL_SECONDS)

    async def _fill_form(self, page, deadline: float) -> None:
        from playwright.async_api import Error as PlaywrightError

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
        from playwright.async_api import Error as PlaywrightError

        try:
            return await page.locator(selector).first.is_visible()
        except PlaywrightError:  # mid-navigation: the next poll will see the settled page
            if page.is_closed():
                raise
            return False

    @staticmethod
    async def _error_text(page) -> str:
        from playwright.async_api import Error as PlaywrightError

        try:
            for handle in await page.locator(_ERROR_SELECTORS).all():
                if await handle.is_visible():
                    text = " ".join((await handle.inner_text()).split())
                    if text:
                        return f" (the page says: {one_line(text, 120)})"
        except PlaywrightError:
            pass
        return ""


async def unattended_login(plan: LoginPlan, password: str, prove: Callable[[str], Awaitable[bool]],
                           known=SESSION_NAMES, keep=CLEARANCE_NAMES) -> Jar:
    """A headless login in a Chromium of its own (no Scrapy request): the crawl's session recovery.
    Raises LoginFailed (or Playwright's Error when the browser does not start)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**plan.launch_options())
        try:
            page = await browser.new_page()
            await page.goto(plan.login_url, timeout=plan.timeout * 1000)
            return await BrowserLogin(plan, password, prove, known, keep).log_in(page)
        finally:
            await browser.close()
