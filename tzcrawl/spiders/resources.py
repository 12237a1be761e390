"""One spider per resource type (made from the registry), plus ``personality`` (every resource of
the named personalities) and ``all_personalities`` (every resource of every personality owned).

    scrapy crawl memories -a personality=foo[,bar] [-a full=1]
    scrapy crawl personality -a personality=foo,bar
    scrapy crawl all_personalities
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
            raise ConfigError("all_personalities backs up every personality; for some, use "
                              "scrapy crawl personality -a personality=NAME[,NAME...]")
