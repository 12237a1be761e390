"""Keep Scrapy's start-up lists (versions, settings, add-ons, middlewares, extensions, pipelines) and its stats
dump out of a normal run's console: they go to the log at DEBUG, so ``-s LOG_LEVEL=DEBUG`` still
shows them to someone debugging. ``TZCRAWL_QUIET_STARTUP``: ``auto`` (quiet when stderr is a terminal
and there is no ``LOG_FILE``: job logs keep them at INFO, where tools read the stats), ``yes``, ``no``.
"""

from __future__ import annotations

import logging
import sys

from tzcrawl import config

NOISY = {
    "scrapy.utils.log": ("Versions:",),
    "scrapy.crawler": ("Overridden settings",),
    "scrapy.addons": ("Enabled addons",),
    "scrapy.middleware": ("Enabled ",),
    "scrapy.statscollectors": ("Dumping Scrapy stats",),
}


class _Demote(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(self.prefixes):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_installed: list[tuple[logging.Logger, logging.Filter]] = []


def quiet_wanted(settings) -> bool:
    raw = str(config.lookup(settings, "TZCRAWL_QUIET_STARTUP", "auto")).strip().lower()
    if raw == "auto":
        return sys.stderr.isatty() and not settings.get("LOG_FILE")
    return bool(config.flag(raw, "TZCRAWL_QUIET_STARTUP"))


def install(settings) -> bool:
    """Demote the start-up lists to DEBUG when wanted; True when installed."""
    if _installed or not quiet_wanted(settings):
        return bool(_installed)
    for name, prefixes in NOISY.items():
        log = logging.getLogger(name)
        demote = _Demote(prefixes)
        log.addFilter(demote)
        _installed.append((log, demote))
    return True
