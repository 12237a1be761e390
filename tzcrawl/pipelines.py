"""Hands what the spiders fetched to the store, one personality at a time, under its lock."""

from __future__ import annotations

import contextlib
import logging

from tzcrawl.config import BackupConfig
from tzcrawl.items import COLLECTIONS, Document, Page, PersonalityEnd, PersonalityStart, ResourceDone
from tzcrawl.signals import personality_skipped, resource_finished
from tzcrawl.store import BackupLocked, BackupStore

logger = logging.getLogger(__name__)


class BackupPipeline:
    """Save documents whole, stage collection pages, and merge each collection at its ``ResourceDone``.

    A personality's lock is taken at ``PersonalityStart`` (waiting up to BACKUP_LOCK_TIMEOUT) and
    released at ``PersonalityEnd``; a personality whose lock another run holds is skipped whole.
    Synchronous on purpose: pages are written in the order the spider yields them.
    """

    def __init__(self, crawler, store: BackupStore, lock_timeout: float):
        self.crawler = crawler
        self.store = store
        self.lock_timeout = lock_timeout
        self.locks: dict[str, contextlib.ExitStack] = {}
        self.runs: dict[tuple[str, str], object] = {}
        self.documents: dict[tuple[str, str], Document] = {}

    @classmethod
    def from_crawler(cls, crawler):
        backup = BackupConfig.from_settings(crawler.settings)
        return cls(crawler, BackupStore(backup.backup_dir, chunk_size=backup.merge_chunk), backup.lock_timeout)

    def process_item(self, item):
        handler = {
            PersonalityStart: self._start,
            Document: self._document,
            Page: self._page,
            ResourceDone: self._done,
            PersonalityEnd: self._end,
        }.get(type(item))
        if handler is not None:
            handler(item)
        return item

    def close_spider(self):
        for (_, resource), run in list(self.runs.items()):
            run.abort("the crawl stopped before this resource was complete", 0)
            self._finished(run.personality, resource, False, {}, "the crawl stopped before it was complete")
        self.runs.clear()
        for stack in self.locks.values():
            stack.close()
        self.locks.clear()

    # -- handlers ---------------------------------------------------------------------------------
    def _start(self, item: PersonalityStart):
        username = item.personality["username"]
        stack = contextlib.ExitStack()
        try:
            try:
                stack.enter_context(self.store.lock(username, 0))
            except BackupLocked as exc:
                if not self.lock_timeout:
                    raise
                logger.warning("%s; waiting up to %gs (BACKUP_LOCK_TIMEOUT)", exc, self.lock_timeout)
                stack.enter_context(self.store.lock(username, self.lock_timeout))
        except BackupLocked as exc:
            logger.error("Skipping %s: %s", username, exc)
            self.crawler.signals.send_catch_log(personality_skipped, username=username, reason=str(exc))
            return
        self.locks[username] = stack

    def _document(self, item: Document):
        self.documents[(item.personality["username"], item.resource)] = item  # saved at its ResourceDone

    def _page(self, item: Page):
        username = item.personality["username"]
        if username not in self.locks:
            return
        key = (username, item.resource)
        if key not in self.runs:
            self.runs[key] = self.store.begin(item.personality, item.resource)
        self.runs[key].add(item.records)

    def _done(self, item: ResourceDone):
        username = item.personality["username"]
        run = self.runs.pop((username, item.resource), None)
        document = self.documents.pop((username, item.resource), None)
        if username not in self.locks:
            error = item.error or "not backed up: another run holds this personality's lock"
            return self._finished(item.personality, item.resource, False, {}, error)
        try:
            if not item.ok:
                if run is not None:
                    run.abort(item.error, item.requests)
                else:
                    self.store.record_failure(item.personality, item.resource, item.error, item.requests)
                return self._finished(item.personality, item.resource, False, {"requests": item.requests},
                                      item.error)
            if item.resource in COLLECTIONS:
                run = run or self.store.begin(item.personality, item.resource)
                figures = run.commit(item.requests)
            else:
                figures = self.store.save_document(item.personality, item.resource, document.payload,
                                                   document.count, item.requests)
        except Exception as exc:  # disk full, a corrupt saved file...: this resource failed, say why
            logger.exception("Saving %s of %s failed", item.resource, username)
            return self._finished(item.personality, item.resource, False, {"requests": item.requests},
                                  f"saving failed: {exc}")
        self._finished(item.personality, item.resource, True, figures, None)

    def _end(self, item: PersonalityEnd):
        stack = self.locks.pop(item.personality["username"], None)
        if stack is not None:
            stack.close()

    def _finished(self, personality, resource, ok, figures, error):
        self.crawler.signals.send_catch_log(resource_finished, personality=personality, resource=resource,
                                            ok=ok, figures=figures, error=error)
