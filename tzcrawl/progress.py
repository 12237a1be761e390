"""Progress of long crawls: where each personality and resource is, its pace, and an ETA.

On a terminal (stderr is a TTY and no ``LOG_FILE``): a live display drawn on stderr with ``rich``,
log lines printed above it, nothing of it in any log file. Otherwise (cron, scrapyd): one log line per
personality and resource every ``TZCRAWL_PROGRESS_EVERY`` seconds (default 30) while it is running.
``TZCRAWL_PROGRESS``: ``auto`` (default), ``live``, ``lines`` or ``off``.

Memories: page i of N (the service's page count), ETA from the pace of the pages so far. Messages go
back in time: the date reached, ETA from how fast the walk moves back and how far it still has to go
to the personality's creation date (from the profile), when the profile has one.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from scrapy import signals
from scrapy.exceptions import NotConfigured

from tzcrawl import config, registry
from tzcrawl.items import Document, Page, PersonalityEnd, ResourceDone
from tzcrawl.store.timestamps import to_epoch

logger = logging.getLogger(__name__)
MODES = ("auto", "live", "lines", "off")


@dataclass
class Position:
    """Where one resource of one personality is."""

    username: str
    resource: str
    started: float
    pages: int = 0
    records: int = 0
    total_pages: int | None = None
    newest: float | None = None  # messages: the newest ts seen (the walk starts there)
    oldest: float | None = None  # messages: the oldest ts reached so far
    created: float | None = None  # the personality's creation time, from its profile

    def update(self, page: Page) -> None:
        self.pages += 1
        self.records += len(page.records)
        if page.pages:
            self.total_pages = page.pages
        described = registry.get(self.resource)
        if described.by_time:
            stamps = [t for t in (to_epoch(described.time_of(r)) for r in page.records) if t is not None]
            if stamps:
                self.newest = max(stamps) if self.newest is None else max(self.newest, max(stamps))
                self.oldest = min(stamps) if self.oldest is None else min(self.oldest, min(stamps))

    def eta(self, now: float) -> float | None:
        return eta_seconds(self.resource, now - self.started, self.pages, self.total_pages, self.newest,
                           self.oldest, self.created)

    def text(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        pace = f"{self.pages / elapsed * 60:.0f} pages/min"
        if registry.get(self.resource).by_time:
            reached = (datetime.fromtimestamp(self.oldest, timezone.utc).strftime("%Y-%m-%d")
                       if self.oldest is not None else "-")
            where = f"{self.records} {self.resource}, back to {reached}"
        elif self.total_pages:
            where = f"page {self.pages} of {self.total_pages} ({self.records} {self.resource})"
        else:
            where = f"page {self.pages} ({self.records} {self.resource})"
        eta = self.eta(now)
        return f"{self.username} · {self.resource}: {where}, {pace}, ETA {human(eta)}"


def eta_seconds(resource: str, elapsed: float, pages: int, total_pages: int | None, newest: float | None,
                oldest: float | None, created: float | None) -> float | None:
    """Seconds left, from the pace so far; None when nothing says how much is left."""
    if elapsed <= 0 or pages <= 0:
        return None
    if registry.get(resource).by_time:
        if newest is None or oldest is None or created is None or newest <= oldest:
            return None
        covered_per_second = (newest - oldest) / elapsed  # how fast the walk moves back in time
        return max(0.0, (oldest - created) / covered_per_second)
    if total_pages:
        return max(0, total_pages - pages) * elapsed / pages
    return None


def human(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressReport:
    def __init__(self, crawler, mode: str, every: float):
        self.crawler = crawler
        self.mode = mode
        self.every = every
        self.running: dict[tuple[str, str], Position] = {}
        self.created: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        self._live = None
        self._bars: dict[tuple[str, str], int] = {}
        self._handlers: list = []
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler):
        mode = str(config.lookup(crawler.settings, "TZCRAWL_PROGRESS", "auto")).strip().lower()
        if mode not in MODES:
            raise NotConfigured(f"TZCRAWL_PROGRESS must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "off" or getattr(crawler.spidercls, "resources", None) is None:
            raise NotConfigured("TZCRAWL_PROGRESS is off (or this is not a backup spider)")
        if mode == "auto":
            mode = "live" if sys.stderr.isatty() and not crawler.settings.get("LOG_FILE") else "lines"
        return cls(crawler, mode, config.seconds(crawler.settings, "TZCRAWL_PROGRESS_EVERY", 30.0) or 30.0)

    # -- what the crawl did -------------------------------------------------------------------------
    def item_scraped(self, item, response=None, spider=None):
        if isinstance(item, Document) and item.resource == "profile" and isinstance(item.payload, dict):
            created = to_epoch(item.payload.get("created_at"))
            if created is not None:
                self.created[item.personality.get("username")] = created
        elif isinstance(item, Page):
            key = (item.personality.get("username"), item.resource)
            position = self.running.get(key)
            if position is None:
                position = self.running[key] = Position(key[0], key[1], time.monotonic(),
                                                        created=self.created.get(key[0]))
            position.update(item)
            self._draw(key, position)
        elif isinstance(item, ResourceDone):
            self._finish((item.personality.get("username"), item.resource))
        elif isinstance(item, PersonalityEnd):
            for key in [k for k in self.running if k[0] == item.personality.get("username")]:
                self._finish(key)

    def _finish(self, key) -> None:
        self.running.pop(key, None)
        if self._live is not None and key in self._bars:
            self._live.remove_task(self._bars.pop(key))

    # -- showing it ---------------------------------------------------------------------------------
    def spider_opened(self, spider):
        if self.mode == "live":
            self._start_live()
        else:
            self._task = asyncio.ensure_future(self._lines())

    def spider_closed(self, spider, reason):
        if self._task is not None:
            self._task.cancel()
        if self._live is not None:
            self._live.stop()
            for handler, stream in self._handlers:
                handler.setStream(stream)
            self._live = None

    async def _lines(self):
        while True:
            await asyncio.sleep(self.every)
            now = time.monotonic()
            for position in list(self.running.values()):
                logger.info("progress · %s", position.text(now))

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._live = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                              console=Console(stderr=True), redirect_stderr=True, redirect_stdout=False,
                              transient=True)
        self._live.start()
        # Scrapy's log handler holds the real stderr: point it at rich's proxy, so log lines are printed
        # above the display instead of through it.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.__stderr__:
                self._handlers.append((handler, handler.setStream(sys.stderr)))

    def _draw(self, key, position: Position) -> None:
        if self._live is None:
            return
        text = position.text(time.monotonic())
        total = None if registry.get(position.resource).by_time else position.total_pages
        if key not in self._bars:
            self._bars[key] = self._live.add_task(text, total=total)
        self._live.update(self._bars[key], description=text, completed=position.pages, total=total)
