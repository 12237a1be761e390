"""Faults injected into a real crawl, for tests only: an exception at a chosen step.

``TZCRAWL_TEST_FAULT`` says where, as ``<where>:<what>:<resource>``:
- ``spidermw:<Page|Document|ResourceDone>:<resource>``: a spider middleware raises while handing on
  that output of the first personality (the output, and what the callback would yield after it, is lost);
- ``pipeline:<Page|Document|ResourceDone|PersonalityEnd>:<resource>``: an item pipeline raises on that
  item of the first personality (Scrapy drops it for every later pipeline);
- ``callback:start:<resource>``: the spider's own code raises as the walk starts that resource.
Each fires once. Loaded with ``-s`` settings and ``PYTHONPATH`` pointing here.
"""

from __future__ import annotations

import os

from tzcrawl.spiders.resources import AllPersonalitiesSpider


def _fault() -> tuple[str, str, str]:
    where, what, resource = (os.environ.get("TZCRAWL_TEST_FAULT", "::").split(":") + ["", "", ""])[:3]
    return where, what, resource


class Once:
    fired = False

    def hit(self, where: str, item) -> bool:
        want_where, what, resource = _fault()
        if self.fired or where != want_where or type(item).__name__ != what:
            return False
        if resource and getattr(item, "resource", resource) != resource:
            return False
        personality = getattr(item, "personality", {}) or {}
        if not str(personality.get("username", "")).startswith("persona-0-"):
            return False
        self.fired = True
        return True


class RaisingSpiderMiddleware(Once):
    async def process_spider_output(self, response, result):
        async for out in result:
            if self.hit("spidermw", out):
                raise RuntimeError(f"injected in a spider middleware at {out!r}")
            yield out


class RaisingPipeline(Once):
    def process_item(self, item):
        if self.hit("pipeline", item):
            raise RuntimeError(f"injected in an item pipeline at {item!r}")
        return item


class FaultyAllPersonalitiesSpider(AllPersonalitiesSpider):
    """``all_personalities`` whose own code raises once as the walk starts a chosen resource."""

    name = "faulty_all_personalities"
    fired = False

    def _continue(self, walk):
        where, _what, resource = _fault()
        current = walk.current
        if (where == "callback" and not self.fired and current is not None and current.name == resource
                and walk.username.startswith("persona-0-")):
            self.fired = True
            raise RuntimeError(f"injected in the spider as {resource} starts")
        yield from super()._continue(walk)
