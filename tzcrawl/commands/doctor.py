"""``scrapy doctor`` / ``tzcrawl doctor``: what would stop a backup, before one is tried (``tzcrawl.doctor``).

The session is checked with the one current-user request a crawl starts with, sent by a crawler of
its own (``SessionCheckSpider``): the same downloader, cookie, certificate and bot-check handling.
Exit status 0 when nothing fails, 1 otherwise (2 for a usage error).
"""

from __future__ import annotations

import argparse

import scrapy
from scrapy.commands import ScrapyCommand

from tzcrawl import config
from tzcrawl.outcome import EXIT_CONFIG

# tzcrawl.doctor and the session (TLS, Scrapy's downloader) are imported when the command runs: Scrapy
# imports every command's module to list them, and every other command would pay for these.


class SessionCheckSpider(scrapy.Spider):
    """Sends nothing but the session check, and keeps its verdict."""

    name = "doctor_session_check"
    custom_settings = {"ITEM_PIPELINES": {}, "EXTENSIONS": {"tzcrawl.extensions.BackupReport": None,
                                                            "tzcrawl.progress.ProgressReport": None},
                       "LOG_LEVEL": "ERROR"}
    verdict = None

    async def start(self):
        from tzcrawl.session.crawler import Session

        self.verdict = await Session.of(self.crawler).check()
        return
        yield  # an async generator that yields nothing

    def closed(self, reason):
        from tzcrawl.session.crawler import Session

        Session.of(self.crawler).close()


class Command(ScrapyCommand):
    requires_project = True

    def process_options(self, args, opts):
        super().process_options(args, opts)
        # one screen: the session check's crawl logs only what goes wrong (-L INFO shows it all)
        self.settings.set("LOG_LEVEL", self.settings.get("LOG_LEVEL") if opts.loglevel else "ERROR",
                          priority="cmdline")

    def syntax(self) -> str:
        return ""

    def short_desc(self) -> str:
        return "Say what would stop a backup before one is tried (settings, session, disk, browser, keyring)"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args:
            print("tzcrawl: doctor takes no arguments")
            self.exitcode = EXIT_CONFIG
            return
        from tzcrawl import doctor

        settings = self.settings
        found = [doctor.website(settings), doctor.cookie(settings)]
        check = None
        if all(f.status != doctor.FAIL for f in found):
            crawler = self.crawler_process.create_crawler(SessionCheckSpider)
            self.crawler_process.crawl(crawler)
            self.crawler_process.start()
            check = crawler.spider.verdict
        found += [doctor.session(check, str(config.lookup(settings, "SERVICE_WEBSITE", "the site"))),
                  doctor.backup_dir(settings), doctor.chromium(settings), doctor.keyring_backend(settings),
                  doctor.notify(settings)]
        scrapyd = doctor.scrapyd()
        if scrapyd is not None:
            found.append(scrapyd)
        screen, self.exitcode = doctor.report(found)
        print(screen)
