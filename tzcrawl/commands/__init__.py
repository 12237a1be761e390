"""tzcrawl's Scrapy commands (``crawl``, ``sandbox``, ``export``, ``verify``) and what they share."""

from __future__ import annotations

import argparse

from tzcrawl.config import ConfigError


def add_arguments_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``-a NAME=VALUE``, as ``scrapy crawl`` spells its spider arguments."""
    parser.add_argument("-a", dest="arguments", action="append", default=[], metavar="NAME=VALUE", help=help_text)


def parse_arguments(pairs: list[str], names: tuple[str, ...]) -> dict[str, str]:
    """``-a name=value`` pairs → a dict; a ConfigError for a malformed or unknown one."""
    values: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or name.strip() not in names:
            raise ConfigError(f"-a {pair!r}: expected one of {', '.join(n + '=...' for n in names)}")
        values[name.strip()] = value.strip()
    return values
