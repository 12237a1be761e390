"""``scrapy crawl``, with tzcrawl's promises: configuration problems are one line and exit 2, and
the exit status is 0 only when the backup was complete (Scrapy's own exits 0 whatever happened)."""

from __future__ import annotations

import contextlib
import sys

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.spiderloader import get_spider_loader

from tzcrawl import config
from tzcrawl.config import ConfigError
from tzcrawl import quiet
from tzcrawl.notify import run_notify
from tzcrawl.outcome import EXIT_CODE_STAT, EXIT_CONFIG, EXIT_INCOMPLETE


class Command(ScrapyCrawlCommand):
    def process_options(self, args, opts):
        """Check the spider's configuration before Scrapy starts logging, so an error is one line."""
        super().process_options(args, opts)
        try:
            quiet.install(self.settings)
        except ConfigError as exc:
            self._fail(f"tzcrawl: {exc}")
        if any(str(item).split("=", 1)[0].strip() == "SERVICE_COOKIE" for item in opts.set or ()):
            print("tzcrawl: warning: -s SERVICE_COOKIE=... shows the cookie to anyone who can list processes "
                  "(ps) and keeps it in shell history; export SERVICE_COOKIE or use the cookie file "
                  "(scrapy crawl login) instead", file=sys.stderr)
        if len(args) != 1:
            return
        try:
            spidercls = get_spider_loader(self.settings).load(args[0])
        except KeyError:
            self._fail(f"tzcrawl: no spider named {args[0]!r}; `scrapy list` shows them")
        check = getattr(spidercls, "check_config", None)
        if check is not None:
            try:
                check(self.settings, opts.spargs)
            except ConfigError as exc:
                self._fail(f"tzcrawl: {exc}")

    def _fail(self, line: str):
        """One line on stderr, and in LOG_FILE too (scrapyd keeps a job's log there), then exit 2."""
        print(line, file=sys.stderr)
        log_file = self.settings.get("LOG_FILE")
        if log_file:
            with contextlib.suppress(OSError), open(log_file, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        raise SystemExit(EXIT_CONFIG)

    def run(self, args, opts):
        if len(args) != 1:
            return super().run(args, opts)
        crawler = self._create_crawler(args[0])
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        status = crawler.stats.get_value(EXIT_CODE_STAT) if crawler.stats else None
        # No status: the crawl never reached its end (a second Ctrl-C forces an unclean shutdown,
        # skipping spider_closed): never report that as success.
        self.exitcode = EXIT_INCOMPLETE if self.crawler_process.bootstrap_failed or status is None else int(status)
        self._notify(crawler)

    def _notify(self, crawler) -> None:
        """TZCRAWL_NOTIFY, once, when the crawl did not succeed (tzcrawl.notify)."""
        command = config.lookup(self.settings, "TZCRAWL_NOTIFY")
        if not command or not self.exitcode:
            return
        stats = crawler.stats.get_stats() if crawler.stats else {}
        outcome = {"exit": self.exitcode, "finish_reason": stats.get("finish_reason"),
                   "summary": stats.get("tzcrawl/summary") or "the crawl stopped before its end (no summary)",
                   "spider": crawler.spidercls.name}
        try:
            timeout = config.seconds(self.settings, "TZCRAWL_NOTIFY_TIMEOUT", 30.0)
        except ConfigError as exc:
            print(f"tzcrawl: {exc}; using 30 s", file=sys.stderr)
            timeout = 30.0
        run_notify(str(command), outcome, timeout)
