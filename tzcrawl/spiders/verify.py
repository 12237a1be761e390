"""``verify_online``: compare what the backup holds with what the service reports right now; never writes.

Per personality, politely (the crawl's settings, one request at a time): the profile, memory page 1
(the service's totals and newest memory), the newest chat-history batch, and the documents; of someone
else's personality (``owned: false`` in its metadata) only what a non-owner may read (the public
profile, the chat history, your personalization). Run by
``scrapy verify -a online=1``, which prints ``lacking`` (what the service has that the backup does
not: exit 1) and ``notes`` (the backup holds more, e.g. records deleted upstream) per personality.
"""

from __future__ import annotations

import scrapy
from scrapy.exceptions import CloseSpider

from tzcrawl import api, registry
from tzcrawl.config import ServiceConfig
from tzcrawl.session.crawler import OK, UNREACHABLE, Session
from tzcrawl.store import BackupView

PROFILE = registry.get("profile")
DOCUMENTS = tuple(r for r in registry.REGISTRY if not r.collection and r != PROFILE)  # compared after the rest


def differing_fields(saved, live) -> list[str]:
    if isinstance(saved, dict) and isinstance(live, dict):
        return sorted(str(k) for k in set(saved) | set(live) if saved.get(k) != live.get(k))
    return []


def compare_document(name: str, saved, live) -> list[str]:
    """What the service's ``name`` has that the saved copy does not (empty when equal)."""
    if saved == live:
        return []
    if saved is None:
        return [f"{name}: the service has it, the backup does not"]
    fields = differing_fields(saved, live)
    return [f"{name} differs from the backup" + (f" (fields: {', '.join(fields[:8])})" if fields else "")]


def compare_memories(page: api.MemoryPage, held_ids: set[str], held_total: int) -> list[str]:
    lacking = []
    total = page.total
    if total is not None and total > held_total:
        lacking.append(f"{total - held_total} memories on the service are not in the backup "
                       f"(service {total}, backup {held_total})")
    missing = [str(m.get("id")) for m in page.items if isinstance(m, dict) and str(m.get("id")) not in held_ids]
    if missing:
        lacking.append(f"{len(missing)} of the {len(page.items)} newest memories on the service are not in the "
                       f"backup (newest missing: {missing[0]})")
    return lacking


def compare_messages(batch: list[dict], held_ids: set[str]) -> list[str]:
    missing = [str(m.get("id")) for m in batch if str(m.get("id")) not in held_ids]
    if not missing:
        return []
    return [f"{len(missing)} of the {len(batch)} newest messages on the service are not in the backup "
            f"(newest missing: {missing[0]})"]


class VerifyOnlineSpider(scrapy.Spider):
    name = "verify_online"
    custom_settings = {"ITEM_PIPELINES": {}, "EXTENSIONS": {"tzcrawl.extensions.BackupReport": None}}
    handle_httpstatus_list = [401, 403, 404]

    def __init__(self, usernames: list[str] | None = None, backup_dir: str | None = None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.usernames = list(usernames or [])
        self.view = BackupView(backup_dir or ".")
        self.lacking: dict[str, list[str]] = {u: [] for u in self.usernames}
        self.errors: dict[str, list[str]] = {u: [] for u in self.usernames}
        self.checked: set[str] = set()
        self.owned: dict[str, bool] = {}  # as each backup's metadata says

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.endpoints = api.Endpoints(ServiceConfig.from_settings(crawler.settings))
        spider.session = Session.of(crawler)
        return spider

    async def start(self):
        check = await self.session.check()  # names a bare value; refused, blocked or untrusted: nothing to compare
        if check.state not in (OK, UNREACHABLE):
            what = {"refused": "not authenticated", "blocked": "stopped by the site's bot protection",
                    "tls": "the service's certificate is not trusted"}.get(check.state, check.state)
            for username in self.usernames:
                self.errors.setdefault(username, []).append(f"{what}: {check.why}")
            return
        for username in self.usernames:
            personality = {"username": username}
            request = self._get(PROFILE, personality, self.parse_profile, username)
            if not self._owned(username):  # the profile as the user sees someone else's
                request = request.replace(url=self.endpoints.public_profile(personality) or request.url)
            yield request

    def _owned(self, username: str) -> bool:
        """Not recorded as someone else's: every resource is compared (owner-only ones too)."""
        if username not in self.owned:
            self.owned[username] = self.view.metadata(username).get("personality", {}).get("owned") is not False
        return self.owned[username]

    def _get(self, resource, personality: dict, callback, username: str, position=None):
        url = self.endpoints.resource(resource, personality, position)
        return scrapy.Request(url, callback=callback, errback=self.on_error, dont_filter=True,
                              cb_kwargs={"username": username, "personality": personality})

    def _answer(self, response):
        if api.origin(response.url) != self.endpoints.origin:
            raise api.BadAnswer(f"the answer came from {response.url} (a redirect)")
        if response.status == 404:
            raise api.BadAnswer(f"HTTP 404 from {response.url}")
        return api.decode(response.status, response.headers.get("Content-Type", b"").decode("latin-1"),
                          response.body, response.url, response.headers)

    def on_error(self, failure):
        username = failure.request.cb_kwargs.get("username")
        self.errors.setdefault(username, []).append(f"{failure.request.url}: {failure.getErrorMessage()}")

    def _checked(self, username: str, call, *args):
        try:
            return call(*args)
        except api.NotAuthenticated as exc:
            self.errors.setdefault(username, []).append(f"not authenticated: {exc}")
            raise CloseSpider("auth_failed") from None
        except api.Blocked as exc:
            self.errors.setdefault(username, []).append(f"stopped by the site's bot protection: {exc}")
            raise CloseSpider("blocked") from None
        except api.BadAnswer as exc:
            self.errors.setdefault(username, []).append(str(exc))
            return None

    def parse_profile(self, response, username: str, personality: dict):
        live = self._checked(username, lambda: api.profile(self._answer(response), username))
        if live is None:
            return
        self.lacking[username] += compare_document("profile", self.view.read_document(username, "profile"), live)
        personality = {"id": live["id"], "username": username}
        if not self._owned(username):  # its memories are only its owner's to read
            yield self._get(registry.get("messages"), personality, self.parse_history, username)
            return
        yield self._get(registry.get("memories"), personality, self.parse_memories, username, 1)

    def parse_memories(self, response, username: str, personality: dict):
        page = self._checked(username, lambda: api.memory_page(self._answer(response)))
        if page is not None:
            ids = {str(m.get("id")) for m in self.view.read_collection(username, "memories") if isinstance(m, dict)}
            self.lacking[username] += compare_memories(page, ids, len(ids))
        yield self._get(registry.get("messages"), personality, self.parse_history, username)

    def parse_history(self, response, username: str, personality: dict):
        batch = self._checked(username, lambda: api.history_batch(self._answer(response)))
        if batch is not None:
            ids = {str(m.get("id")) for m in self.view.read_collection(username, "messages") if isinstance(m, dict)}
            self.lacking[username] += compare_messages(batch, ids)
        yield from self._document(personality, username, 0)

    def _document(self, personality: dict, username: str, index: int):
        while index < len(DOCUMENTS) and DOCUMENTS[index].owner_only and not self._owned(username):
            index += 1  # someone else's: only its owner may read it
        if index < len(DOCUMENTS):
            request = self._get(DOCUMENTS[index], personality, self.parse_document, username)
            request.cb_kwargs["index"] = index
            yield request
        else:
            self.checked.add(username)

    def parse_document(self, response, username: str, personality: dict, index: int):
        resource = DOCUMENTS[index]
        live = self._checked(username, lambda: self._answer(response))
        if live is not None:  # a bad answer is reported by _checked, not compared
            self.lacking[username] += compare_document(resource.name, self.view.read_document(username, resource.name),
                                                       live)
        yield from self._document(personality, username, index + 1)
