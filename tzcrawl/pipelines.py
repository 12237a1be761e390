"""Hands what the spiders fetched to the store: the crawl's one ``BackupStore``.

Pages are staged as they come; at a resource's ``ResourceDone`` the collection is merged or the
document replaced, or the failure recorded. Merges and metadata writes run in a worker thread
(``asyncio.to_thread``), so downloads, timeouts and AutoThrottle's latency readings go on meanwhile;
an ``asyncio.Lock`` applies items one at a time in the order they arrive, which is the order the
spider fetched them (it yields a page before the request for the next one).
"""

from __future__ import annotations

import asyncio
import logging

from itemadapter import ItemAdapter

from tzcrawl.config import BackupConfig
from tzcrawl.items import NOT_THEIRS, Document, Outcome, Page, PersonalityEnd, ResourceDone
from tzcrawl.signals import resource_finished
from tzcrawl.store import BackupStore

logger = logging.getLogger(__name__)


class BackupPipeline:
    def __init__(self, crawler, store: BackupStore):
        self.crawler = crawler
        self.store = store
        self.runs: dict[tuple[str, str], object] = {}       # open collection runs
        self.documents: dict[tuple[str, str], Document] = {}  # saved at their ResourceDone
        self.received: dict[tuple[str, str], int] = {}  # pages or documents that arrived, per resource
        self.broken: dict[tuple[str, str], str] = {}  # a page that could not be staged: the resource fails
        self._in_order: asyncio.Lock | None = None

    @classmethod
    def from_crawler(cls, crawler):
        backup = BackupConfig.from_settings(crawler.settings)
        return cls(crawler, BackupStore(backup.backup_dir, chunk_size=backup.merge_chunk))

    async def process_item(self, item):
        handler = {Document: self._document, Page: self._page, ResourceDone: self._done,
                   PersonalityEnd: self._end}.get(type(item))
        if handler is not None:
            if self._in_order is None:
                self._in_order = asyncio.Lock()
            async with self._in_order:
                try:
                    await handler(ItemAdapter(item))
                except Exception as exc:  # never drop an item: the resource fails at its end, the walk goes on
                    logger.error("Saving %r failed: %s: %s", item, type(exc).__name__, exc, exc_info=exc)
                    self.crawler.stats.inc_value("backup/errors")
        return item

    def close_spider(self):
        """A crawl stopped mid-resource: those resources failed; every lock is let go."""
        for (_, resource), run in list(self.runs.items()):
            error = "the crawl stopped before this resource was complete"
            run.abort(error, 0)
            self._finished(run.personality, resource, Outcome.failed(error), {})
        self.runs.clear()
        self.store.release_all()

    # -- handlers ---------------------------------------------------------------------------------
    async def _document(self, item: ItemAdapter):
        key = (item["personality"]["username"], item["resource"])
        self.received[key] = self.received.get(key, 0) + 1
        self.documents[key] = item.item

    async def _page(self, item: ItemAdapter):
        key = (item["personality"]["username"], item["resource"])
        self.received[key] = self.received.get(key, 0) + 1
        if key in self.broken:
            return
        try:
            if key not in self.runs:  # staging folder made (and an old one removed) in a worker thread
                self.runs[key] = await asyncio.to_thread(self.store.begin, item["personality"], item["resource"])
            self.runs[key].add(item["records"])  # one short appended line: no need for a thread
        except Exception as exc:  # disk full, an unwritable folder: said once; the resource fails at its end
            self.broken[key] = f"staging a page failed: {exc}"
            logger.error("%s · %s: staging a page failed: %s", key[0], key[1], exc)

    async def _done(self, item: ItemAdapter):
        personality, resource, outcome, requests = (
            item["personality"], item["resource"], item["outcome"], item["requests"])
        key = (personality["username"], resource)
        run, document = self.runs.pop(key, None), self.documents.pop(key, None)
        received, broken = self.received.pop(key, 0), self.broken.pop(key, None)
        if outcome.ok and (broken or received < item["items"]):
            # Committing now would save a hole where the lost page was, and record it as complete.
            outcome = Outcome.failed(broken or f"{item['items'] - received} of {item['items']} pages or documents "
                                              f"never reached the store (see the errors above); nothing saved changed")
        try:
            if outcome.status == NOT_THEIRS:
                if run is not None:  # refused after a first page: what was staged is let go
                    await asyncio.to_thread(run.abort, outcome.reason, requests)
                if self.store.holds(personality["username"]):
                    await asyncio.to_thread(self.store.record_not_theirs, personality, resource, outcome.reason,
                                            requests)
                figures = {"requests": requests}
            elif not outcome.ok:
                if not self.store.holds(personality["username"]):
                    pass  # another run holds this personality: its files are not ours to touch
                elif run is not None:
                    await asyncio.to_thread(run.abort, outcome.reason, requests)
                else:
                    await asyncio.to_thread(self.store.record_failure, personality, resource, outcome.reason,
                                            requests)
                figures = {"requests": requests}
            elif document is not None:
                figures = await asyncio.to_thread(self.store.save_document, personality, resource,
                                                  document.payload, document.count, requests, item["drift"],
                                                  item["media_listed"])
            else:
                run = run or self.store.begin(personality, resource)
                figures = await asyncio.to_thread(run.commit, requests, item["full_read"], item["drift"],
                                                  item["media_listed"])
                outcome = await self._check_total(personality, resource, figures, item["service_total"], outcome)
        except Exception as exc:  # disk full, a corrupt saved file...: this resource failed, say why
            # The report's line for the resource says an OSError (disk full) in full; a bug gets its traceback.
            logger.log(logging.DEBUG if isinstance(exc, OSError) else logging.ERROR, "Saving %s of %s failed",
                       resource, personality["username"], exc_info=exc)
            outcome, figures = Outcome.failed(f"saving failed: {exc}"), {"requests": requests}
        self._finished(personality, resource, outcome, figures)

    async def _check_total(self, personality: dict, resource: str, figures: dict, service_total, outcome: Outcome):
        """After the walk: fewer records held than the service counts means some were missed (they
        moved while pages were read): the resource is incomplete and the next run reads it in full."""
        held = figures.get("total")
        if service_total is None or held is None or held >= service_total:
            return outcome
        missing = service_total - held
        await asyncio.to_thread(self.store.record_shortfall, personality, resource, missing, service_total)
        return Outcome.failed(f"the backup holds {held} {resource}, the service counts {service_total}: {missing} "
                              f"missing (saved what arrived; the next run reads them all again)")

    async def _end(self, item: ItemAdapter):
        username = item["personality"]["username"]
        for key in [k for k in self.runs if k[0] == username]:  # a resource whose end never came: not saved
            self.runs.pop(key).abort("its end never reached the store", 0)
        self.store.release(username)

    def _finished(self, personality, resource, outcome: Outcome, figures: dict):
        self.crawler.signals.send_catch_log(resource_finished, personality=personality, resource=resource,
                                            outcome=outcome, figures=figures)
