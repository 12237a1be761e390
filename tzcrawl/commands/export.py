"""``scrapy export [-a personality=NAME[,NAME...]] [-a format=html,md,card,st] [-a out=DIR]``.

Offline: reads only BACKUP_DIR. Exit 0 when everything asked for was exported, 1 when some
personality could not be (the others still were), 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, ClassVar

from scrapy.commands import ScrapyCommand

from tzcrawl import config
from tzcrawl.commands import add_arguments_option, parse_arguments
from tzcrawl.config import BackupConfig, ConfigError, split_names
from tzcrawl.export import FORMATS, run
from tzcrawl.outcome import EXIT_CONFIG

ARGUMENTS = ("personality", "format", "out", "wait")


def parse_formats(raw: str | None) -> list[str]:
    formats = split_names(raw) or list(FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format {', '.join(unknown)}; choose from {','.join(FORMATS)}")
    return formats


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[-a personality=NAME[,NAME...]] [-a format=html,md,card,st] [-a out=DIR] [-a wait=SECONDS]"

    def short_desc(self) -> str:
        return "Export the backup: an offline HTML archive, Markdown transcripts, character cards, SillyTavern chats"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        add_arguments_option(parser, "personality=NAME[,NAME...] | format=html,md,card,st | out=DIR | wait=SECONDS")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        try:
            if args:
                raise ConfigError(f"export takes no positional arguments (got {' '.join(args)}); use -a NAME=VALUE")
            arguments = parse_arguments(opts.arguments, ARGUMENTS)
            formats = parse_formats(arguments.get("format"))
            wait = config.seconds({"-a wait": arguments.get("wait")}, "-a wait", 0.0)
            backup_dir = BackupConfig.from_settings(self.settings).backup_dir.expanduser()
            if not backup_dir.is_dir():
                raise ConfigError(f"BACKUP_DIR {str(backup_dir)!r} does not exist: nothing to export")
            out = Path(arguments.get("out") or backup_dir.resolve().parent / "export").expanduser()
            if out.resolve() == backup_dir.resolve() or backup_dir.resolve() in out.resolve().parents:
                raise ConfigError(f"-a out={out} is inside BACKUP_DIR: choose a folder outside the backup")
            try:
                website = config.website(self.settings)
            except ConfigError:
                website = "the service"
            report = run(backup_dir, out, formats, split_names(arguments.get("personality")) or None, website,
                         say=lambda line: print(line, flush=True), wait=wait)
        except ConfigError as exc:
            print(f"tzcrawl: {exc}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        except OSError as exc:
            print(f"tzcrawl: cannot write the export: {exc}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        if report.index is not None:
            print(f"archive: {report.index.resolve().as_uri()}")
        if report.failed:
            print(f"export INCOMPLETE: {', '.join(report.failed)} (see above)", file=sys.stderr)
        self.exitcode = report.exit_code
