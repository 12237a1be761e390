"""``scrapy verify [-a personality=NAME[,NAME...]] [-a online=1]``: prove what the backup holds.

Offline by default (no network): see ``tzcrawl.verify``. ``-a online=1`` then compares with the
service (``verify_online`` spider, polite like the crawl, never writes). Exit 0 when all is well, 1
when something is damaged or the service holds something the backup lacks, 2 for bad configuration.
"""

from __future__ import annotations

import argparse
import sys

from scrapy.commands import ScrapyCommand

from tzcrawl import config
from tzcrawl.commands import add_arguments_option, parse_arguments
from tzcrawl.config import BackupConfig, ConfigError, ServiceConfig, split_names
from tzcrawl.media import MediaConfig, refs
from tzcrawl.outcome import EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK
from tzcrawl.store import BackupView
from tzcrawl.store.committed import BackupBusy, committed
from tzcrawl.verify import backed_up, verify_personality

ARGUMENTS = ("personality", "online", "wait")


class Command(ScrapyCommand):
    requires_project = True

    def syntax(self) -> str:
        return "[-a personality=NAME[,NAME...]] [-a online=1] [-a wait=SECONDS]"

    def short_desc(self) -> str:
        return "Check the backup: every file whole and consistent (offline), or against the service (online=1)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        add_arguments_option(parser, "personality=NAME[,NAME...] | online=1 | wait=SECONDS")

    def process_options(self, args, opts):
        super().process_options(args, opts)
        self.settings.set("LOG_LEVEL", self.settings.get("LOG_LEVEL") if opts.loglevel else "WARNING",
                          priority="cmdline")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        try:
            if args:
                raise ConfigError("verify takes no positional arguments; use -a NAME=VALUE")
            arguments = parse_arguments(opts.arguments, ARGUMENTS)
            online = bool(config.flag(arguments.get("online"), "-a online="))
            backup_dir = BackupConfig.from_settings(self.settings).backup_dir.expanduser()
            fields = refs.parse_fields(MediaConfig.from_settings(self.settings).fields)
            wait = config.seconds({"-a wait": arguments.get("wait")}, "-a wait", 0.0)
            if not backup_dir.is_dir():
                raise ConfigError(f"BACKUP_DIR {str(backup_dir)!r} does not exist: nothing to verify")
            if online:
                ServiceConfig.from_settings(self.settings)
                config.cookie(self.settings)
        except ConfigError as exc:
            print(f"tzcrawl: {exc}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        view = BackupView(backup_dir)
        names = split_names(arguments.get("personality")) or backed_up(view)
        damaged = incomplete = 0
        for username in names:
            if not view.metadata_path(username).is_file():
                print(f"{username}: DAMAGED  no backup of this personality in {view.root}")
                damaged += 1
                continue
            try:
                with committed(view, username, wait, waiting=lambda pid: print(
                        f"{username}: being backed up now by {f'process {pid}' if pid else 'another run'}; "
                        f"waiting up to {wait:g} s for it to finish", flush=True)) as state:
                    verdict = verify_personality(state.view, username, fields, files=view, live=state.live)
            except BackupBusy as exc:
                print(f"{username}: not checked  {exc}")
                damaged += 1
                continue
            if state.live:
                holder = f"process {state.holder}" if state.holder else "another run"
                live = f"being backed up now by {holder}: checked its last committed state"
                verdict.said = f"{verdict.said}; {live}" if verdict.said else live
            print(verdict.table())
            damaged += verdict.damaged
            incomplete += verdict.incomplete
        print(f"verified: {len(names) - damaged - incomplete} ok, {damaged} damaged"
              + (f", {incomplete} incomplete (media not held yet)" if incomplete else ""))
        self.exitcode = EXIT_INCOMPLETE if damaged or incomplete else EXIT_OK
        if online and names:
            self.exitcode = max(self.exitcode, self._online(view, names))

    def _online(self, view: BackupView, names: list[str]) -> int:
        from tzcrawl.spiders.verify import VerifyOnlineSpider  # the crawl machinery only when it runs

        crawler = self.crawler_process.create_crawler(VerifyOnlineSpider)
        self.crawler_process.crawl(crawler, usernames=names, backup_dir=str(view.root))
        self.crawler_process.start()
        spider = crawler.spider
        lacking_any = 0
        print("online: compared with the service now")
        for username in names:
            lacking, errors = spider.lacking.get(username, []), spider.errors.get(username, [])
            state = "LACKING" if lacking else "INCOMPLETE CHECK" if errors or username not in spider.checked else "ok"
            print(f"{username}: {state}")
            for line in lacking:
                print(f"  {line}")
            for line in errors:
                print(f"  could not check: {line}")
            lacking_any += bool(lacking or errors or username not in spider.checked)
        print(f"online: {len(names) - lacking_any} match the service, {lacking_any} lack something or could not be "
              f"checked")
        return EXIT_INCOMPLETE if lacking_any else EXIT_OK
