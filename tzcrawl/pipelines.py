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
from tzcrawl.items import Document, Outcome, Page, PersonalityEnd, ResourceDone
from tzcrawl.signals import resource_finished
from tzcrawl.store import BackupStore

logger = logging.getLogger(__name__)


class BackupPipeline:
    def __init__(self, crawler, store: BackupStore):
        self.crawler = crawler
        self.store = store
        self.runs: dict[tuple[str, str], object] = {}       # open collection runs
        self.documents: dict[tuple[str, str], Document] = {}  # saved at their ResourceDone
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
                await handler(ItemAdapter(item))
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
        self.documents[(item["personality"]["username"], item["resource"])] = item.item

    async def _page(self, item: ItemAdapter):
        key = (item["personality"]["username"], item["resource"])
        if key not in self.runs:
            self.runs[key] = self.store.begin(item["personality"], item["resource"])
        self.runs[key].add(item["records"])  # one short appended line: no need for a thread

    async def _done(self, item: ItemAdapter):
        personality, resource, outcome, requests = (
            item["personality"], item["resource"], item["outcome"], item["requests"])
        key = (personality["username"], resource)
        run, document = self.runs.pop(key, None), self.documents.pop(key, None)
        try:
            if not outcome.ok:
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
                                                  document.payload, document.count, requests, item["drift"])
            else:
                run = run or self.store.begin(personality, resource)
                figures = await asyncio.to_thread(run.commit, requests, item["full_read"], item["drift"])
                outcome = await self._check_total(personality, resource, figures, item["service_total"], outcome)
        except Exception as exc:  # disk full, a corrupt saved file...: this resource failed, say why
            logger.exception("Saving %s of %s failed", resource, personality["username"])
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
        self.store.release(item["personality"]["username"])

    def _finished(self, personality, resource, outcome: Outcome, figures: dict):
        self.crawler.signals.send_catch_log(resource_finished, personality=personality, resource=resource,
                                            outcome=outcome, figures=figures)
