"""The offline archive in a real browser: Chromium (Debian's /usr/bin/chromium) through Playwright opens
it from file://, with every request that is not file:// or loopback blocked and recorded."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from crawlhelp import crawl
from test_export import export
from tzcrawl.session.browser import DEBIAN_CHROMIUM, QUIET_FLAGS
from tzcrawl.store import BackupView

playwright = pytest.importorskip("playwright.sync_api")


def shown(image, timeout: float = 10.0) -> None:
    """Wait until ``image`` has decoded (complete, a natural width), asking through ``evaluate``: the
    archive's CSP forbids eval, which ``wait_for_function`` needs in older Playwrights (before 1.58)."""
    deadline = time.monotonic() + timeout
    while not image.evaluate("img => img.complete && img.naturalWidth > 0"):
        assert time.monotonic() < deadline, "the image was not shown"
        image.page.wait_for_timeout(50)
CHROMIUM = shutil.which("chromium") or DEBIAN_CHROMIUM
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"the browser tests need Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)")
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A real crawl of the sandbox (hostile text on, ~1,200 messages: two chat pages), exported."""
    from tzcrawl.sandbox import Sandbox, SandboxConfig

    tmp = tmp_path_factory.mktemp("archive")
    with Sandbox(SandboxConfig(personalities=2, memories=40, messages=1200, hostile_text=True), port=0,
                 max_lifetime=600) as sb:
        result = crawl(sb, "all_personalities", tmp / "backup")
        assert result.returncode == 0, result.stderr[-3000:]
        truth = {p["username"]: sb.export(p["username"]) for p in sb.personalities}
    done = export(tmp / "backup", tmp / "export")
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "backup", tmp / "export", truth


@pytest.fixture
def browser():
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(QUIET_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page whose requests off the machine are blocked and recorded, with console errors and dialogs."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1000, "height": 900})
        self.left: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)

    def _route(self, route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme == "file" or (parts.hostname or "") in ("127.0.0.1", "localhost", "::1"):
            route.continue_()
        else:
            self.left.append(url)
            route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: Path):
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")
        return self.page


def test_the_archive_shows_the_backup_and_runs_nothing_it_holds(archive, browser):
    backup, out, truth = archive
    view = BackupView(backup)
    watched = Watched(browser)
    page = watched.open(out / "index.html")
    for username, data in truth.items():
        person = page.locator(f'li.person[data-name="{view.dir_name(username)}"]')
        assert person.locator('.count[data-kind="messages"]').inner_text() == str(len(data["messages"]))
        assert person.locator('.count[data-kind="memories"]').inner_text() == str(len(data["memories"]))
        assert view.held(username, "messages").total == len(data["messages"])

    username = next(iter(truth))
    folder = out / view.dir_name(username)
    messages = sorted(truth[username]["messages"], key=lambda m: m["ts"])
    page = watched.open(folder / "chat-0001.html")
    hostile = messages[0]
    text = page.locator(f'[id="m-{hostile["id"]}"] .bubble.them .text').inner_text()
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(1)>" in text
    assert page.locator(f'[id="m-{hostile["id"]}"] .bubble.them strong').inner_text() == "bold"
    assert page.locator('a[href^="javascript:"]').count() == 0
    assert page.locator("main h1").count() == 1, "the hostile </ol><h1> stayed text"
    assert page.locator(".msg").count() == 1000 and page.locator("li.day").count() >= 1
    assert page.locator(f'[id="m-{messages[999]["id"]}"]').count() == 1
    image = page.locator('.msg .media img[src^="media/"]').first
    image.scroll_into_view_if_needed()
    shown(image)

    page = watched.open(folder / "chat-0002.html")
    assert page.locator(".msg").count() == len(messages) - 1000
    assert page.locator(f'[id="m-{messages[-1]["id"]}"]').count() == 1

    page = watched.open(folder / "memories-0001.html")
    memories = truth[username]["memories"]
    assert page.locator("li.memory").count() == len(memories)
    assert page.locator(f'[id="mem-{memories[-1]["id"]}"] .text').inner_text().startswith("<script>")

    # search the whole history from disk: a phrase from the last page's newest message
    target = messages[-1]
    needle = target["reply"][40:70].strip()
    page = watched.open(folder / "search.html")
    page.fill("#q", needle)
    page.click("#search button")
    playwright.expect(page.locator("#status")).to_contain_text("found", timeout=20_000)
    links = page.locator("#results a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert f"chat-0002.html#m-{target['id']}" in links
    page.goto(page.url.rsplit("/", 1)[0] + f"/chat-0002.html#m-{target['id']}")
    assert page.locator(f'[id="m-{target["id"]}"]').is_visible()

    page = watched.open(folder / "index.html")
    assert page.locator("h1").inner_text() == truth[username]["profile"]["name"]
    assert page.locator("img.avatar").evaluate("img => img.complete && img.naturalWidth > 0")
    shot = os.environ.get("TZCRAWL_ARCHIVE_SCREENSHOT")  # docs/archive.png is made this way
    if shot:
        chat = watched.open(folder / "chat-0001.html")
        pictured = chat.locator(".msg:has(.media img)").first
        pictured.evaluate("el => { el.scrollIntoView(); window.scrollBy(0, -120); }")
        shown(pictured.locator("img"))
        chat.screenshot(path=shot)

    assert watched.dialogs == [], "a script from the backup ran"
    assert watched.errors == []
    assert watched.left == [], "the archive made requests off the machine"
