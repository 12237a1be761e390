"""One spider per resource type, plus ``personality`` (all of them) and ``all_personalities``.

    scrapy crawl memories -a personality=foo[,bar] [-a full=1]
    scrapy crawl personality -a personality=foo,bar
    scrapy crawl all_personalities
"""

from tzcrawl.config import ConfigError
from tzcrawl.items import RESOURCES
from tzcrawl.spiders.base import BackupSpider


class ProfileSpider(BackupSpider):
    name = "profile"
    resources = ("profile",)


class MemoriesSpider(BackupSpider):
    name = "memories"
    resources = ("memories",)


class MessagesSpider(BackupSpider):
    """The chat history."""

    name = "messages"
    resources = ("messages",)


class KnowledgeSpider(BackupSpider):
    name = "knowledge"
    resources = ("knowledge",)


class TrainingSpider(BackupSpider):
    name = "training"
    resources = ("training",)


class UserDataSpider(BackupSpider):
    """The user's personalization of a personality."""

    name = "user_data"
    resources = ("user_data",)


class PersonalitySpider(BackupSpider):
    """Every resource of the named personalities."""

    name = "personality"
    resources = RESOURCES


class AllPersonalitiesSpider(BackupSpider):
    """Every resource of every personality the cookie's owner owns."""

    name = "all_personalities"
    resources = RESOURCES
    bulk = True

    @classmethod
    def check_config(cls, settings, spargs: dict) -> None:
        super().check_config(settings, spargs)
        if spargs.get("personality"):
            raise ConfigError("all_personalities backs up every personality; for some, use "
                              "scrapy crawl personality -a personality=NAME[,NAME...]")
