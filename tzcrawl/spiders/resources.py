"""One spider per resource type (made from the registry), plus ``personality`` (every resource of
the named personalities), ``all_personalities`` (every resource of every personality owned) and
``recent_personalities`` (every personality the user talked to lately, other people's too).

    scrapy crawl memories -a personality=foo[,bar] [-a full=1]
    scrapy crawl personality -a personality=foo,bar
    scrapy crawl all_personalities [-a category=self,recent]
    scrapy crawl recent_personalities
"""

from tzcrawl.config import ConfigError
from tzcrawl.registry import REGISTRY, RESOURCES
from tzcrawl.spiders.base import BackupSpider


def _resource_spider(resource) -> type[BackupSpider]:
    class_name = "".join(part.title() for part in resource.name.split("_")) + "Spider"
    doc = f"The {resource.name.replace('_', ' ')} of the named personalities."
    return type(class_name, (BackupSpider,), {"name": resource.name, "resources": (resource.name,),
                                               "__doc__": doc, "__module__": __name__})


globals().update((spider.__name__, spider) for spider in map(_resource_spider, REGISTRY))


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
            raise ConfigError(f"{cls.name} backs up every personality of its lists; for some, use "
                              "scrapy crawl personality -a personality=NAME[,NAME...]")


class RecentPersonalitiesSpider(AllPersonalitiesSpider):
    """Every personality the user talked to lately (the service's ``recent`` list), other people's too:
    of those, what the service lets a user who is not the owner read (chat history, personalization)."""

    name = "recent_personalities"
    categories = ("recent",)
