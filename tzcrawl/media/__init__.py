"""Media: the files a backup's records point at (avatars, voice replies, attachments), brought home.

``refs`` finds media URLs in records, ``held`` in the records a backup already holds, ``manifest`` keeps
``<name>_media.json`` and decides what to fetch, ``addresses`` refuses hosts that are not public,
``pipeline`` downloads with Scrapy's FilesPipeline. ``MediaAddon`` gives the file host its own
download slot; ``MediaConfig`` reads the ``BACKUP_MEDIA*`` settings once.
"""

from __future__ import annotations

from dataclasses import dataclass

from scrapy.settings import SETTINGS_PRIORITIES

from tzcrawl import config

MEDIA_SLOT = "tzcrawl-media"  # one download slot for every media host, apart from the API's


@dataclass(frozen=True)
class MediaConfig:
    enabled: bool = True
    fields: str = ""  # extra media fields, comma-separated (dotted for nested: "gallery.url")
    max_size: int = 200 * 1024 * 1024
    timeout: float = 120.0
    concurrency: int = 4
    private_hosts: frozenset = frozenset()  # BACKUP_MEDIA_PRIVATE_HOSTS: non-public hosts media may come from

    @property
    def private_hosts_key(self) -> str:
        """The allowed private hosts as one string: a ``refused`` entry is tried again once it changes."""
        return ",".join(sorted(self.private_hosts))

    @classmethod
    def from_settings(cls, settings) -> "MediaConfig":
        from .addresses import parse_hosts  # addresses imports this module

        enabled = config.flag(config.lookup(settings, "BACKUP_MEDIA", "yes"), "BACKUP_MEDIA")
        fields = config.lookup(settings, "BACKUP_MEDIA_FIELDS", "")
        if isinstance(fields, (list, tuple)):
            fields = ",".join(map(str, fields))
        return cls(enabled=enabled, fields=str(fields), max_size=config.whole(settings, "BACKUP_MEDIA_MAX_SIZE", cls.max_size),
                   timeout=config.seconds(settings, "BACKUP_MEDIA_TIMEOUT", cls.timeout),
                   concurrency=config.whole(settings, "BACKUP_MEDIA_CONCURRENCY", cls.concurrency),
                   private_hosts=parse_hosts(config.lookup(settings, "BACKUP_MEDIA_PRIVATE_HOSTS", "")))


class MediaAddon:
    """Give media their own download slot (``BACKUP_MEDIA_CONCURRENCY`` at once, no delay) and room
    for it in ``CONCURRENT_REQUESTS``, while the API keeps one request at a time with its delays."""

    def update_settings(self, settings) -> None:
        try:
            media = MediaConfig.from_settings(settings)
        except config.ConfigError:
            return  # the crawl command reports it in one line
        slots = dict(settings.getdict("DOWNLOAD_SLOTS"))
        slots.setdefault(MEDIA_SLOT, {"concurrency": media.concurrency, "delay": 0.0, "jitter": 0})
        settings.set("DOWNLOAD_SLOTS", slots, priority="addon")
        # The project's CONCURRENT_REQUESTS = 1 is the API's rule: room is added for media, unless the
        # user set it on the command line (then media share those slots with the API).
        wanted = settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") + media.concurrency
        priority = settings.getpriority("CONCURRENT_REQUESTS") or 0
        if settings.getint("CONCURRENT_REQUESTS") < wanted and priority <= SETTINGS_PRIORITIES["project"]:
            settings.set("CONCURRENT_REQUESTS", wanted, priority="project")
