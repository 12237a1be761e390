"""The backup spiders' parse callbacks on answers recorded from the sandbox service.

Each test replays its own cassette, ``tests/fixtures/cassettes/<test name>.yaml`` (scrapy-mock's
naming), and calls a callback the way Scrapy does: ``callback(response, **response.request.cb_kwargs)``.
Chained tests follow the requests the spider itself yields, so the spider's URLs are checked against
what the service really answered.

Re-recording: delete the cassettes concerned and run this module without ``CI`` set::

    rm tests/fixtures/cassettes/test_memory_page*.yaml
    .venv/bin/python -m pytest tests/test_parse_recorded.py -q

A missing cassette then starts one sandbox (``SANDBOX`` below: fixed seed, small data) on a free
loopback port and records into it. With ``CI`` set the record mode is "none": a missing cassette fails,
nothing touches the network. The cookie is never stored (``filter_headers``, ``Set-Cookie`` dropped):
every recording is checked for the live cookie value, and ``test_cassettes_hold_no_cookie`` scans them all.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from dataclasses import replace
import json
import os
import time
from pathlib import Path

import pytest
import requests
import scrapy
import vcr
import yaml
from scrapy.exceptions import CloseSpider
from scrapy.http import TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.test import get_crawler
from scrapy_mock import slugify
from twisted.python.failure import Failure

from tzcrawl import registry
from tzcrawl.items import Document, Outcome, Page, PersonalityEnd, ResourceDone
from tzcrawl.registry import RESOURCES
from tzcrawl.sandbox import Sandbox, SandboxConfig
from tzcrawl.spiders.resources import AllPersonalitiesSpider, PersonalitySpider
from tzcrawl.store import BackupStore
from tzcrawl.walk import Walk

CASSETTES = Path(__file__).resolve().parent / "fixtures" / "cassettes"
REPLAY_BASE = "http://127.0.0.1:9"  # never contacted: vcr answers from the cassette or raises
PAGE_SIZE, MEMORIES, MESSAGES, KNOWLEDGE, TRAINING = 5, 12, 60, 3, 2

# p0..p2 each speak another pagination spelling and document shapes; p3 is the empty one.
# The cassettes were recorded from the 2025 service (plain http, appSession, 2025 record shapes).
SANDBOX = dict(
    seed=7, personalities=4, memories=MEMORIES, messages=MESSAGES, memory_page_size=PAGE_SIZE,
    session="appsession", records="2025",
    overrides={
        0: dict(pagination="pagination", knowledge_shape="array", training_shape="training",
                knowledge=KNOWLEDGE, training=TRAINING),
        1: dict(pagination="meta", knowledge_shape="story", training_shape="single",
                knowledge=KNOWLEDGE, training=TRAINING),
        2: dict(pagination="camel", knowledge_shape="single", training_shape="items",
                knowledge=KNOWLEDGE, training=TRAINING),
    },
)
# The personalities as the list endpoint shows them: generated from the seed, no socket opened.
PEOPLE = Sandbox(SandboxConfig(**SANDBOX)).personalities


def person(i: int) -> dict:
    return {k: PEOPLE[i][k] for k in ("id", "username", "name")}


def Job(personality: dict, resources, requests: int = 0) -> Walk:  # noqa: N802 (reads like the walk it makes)
    """A walk of ``personality`` through ``resources`` (names), ``requests`` already made for the first."""
    return Walk(dict(personality), tuple(registry.get(r) for r in resources), requests=requests)


def complete(who: dict, resource: str, requests: int, note: str = "", service_total: int | None = None) -> ResourceDone:
    """A resource completed by a walk that started with nothing held: collections were read in full."""
    return ResourceDone(who, resource, Outcome.complete(note), requests, full_read=registry.get(resource).collection,
                        service_total=service_total)


def history_path(i: int, before_ts: str | None = None) -> str:
    pid = PEOPLE[i]["id"]
    return f"/api/personalities/{pid}/chat/history?limit=50&shape_id={pid}" + (
        f"&before_ts={before_ts}" if before_ts is not None else "")


def memories_path(i: int, page: int) -> str:
    return f"/api/memory/{PEOPLE[i]['id']}?page={page}"


# -- scrapy-mock's fixtures, overridden for this module ------------------------------------------
def _drop_set_cookie(response: dict) -> dict:
    response["headers"] = {k: v for k, v in response["headers"].items() if k.lower() != "set-cookie"}
    return response


@pytest.fixture(scope="session")
def vcr_settings():
    """scrapy-mock's settings, but no cookie stored, any port, and the test file's cassette dir."""
    return vcr.VCR(
        serializer="yaml",
        decode_compressed_response=True,
        cassette_library_dir=str(CASSETTES),
        record_mode="none" if os.getenv("CI") else "once",
        filter_headers=["cookie"],
        before_record_response=_drop_set_cookie,
        match_on=("method", "path", "query"),
    )


class LazySandbox:
    """One sandbox for the whole session, started only when a cassette has to be recorded."""

    def __init__(self):
        self.sandbox: Sandbox | None = None

    def get(self) -> Sandbox:
        if self.sandbox is None:
            self.sandbox = Sandbox(SandboxConfig(**SANDBOX), port=0, max_lifetime=300).start()
        return self.sandbox

    def reset(self) -> None:
        """Back to the configured knobs and a valid cookie, for the next recording."""
        defaults = dataclasses.asdict(SandboxConfig(**SANDBOX).knobs())
        self.sandbox.set_knobs(**defaults)
        self.sandbox.new_cookie()


@pytest.fixture(scope="session")
def live_sandbox():
    lazy = LazySandbox()
    yield lazy
    if lazy.sandbox is not None:
        lazy.sandbox.stop()


@pytest.fixture
def knobs() -> dict:
    """Sandbox knobs while recording this test's cassette (parametrize to change)."""
    return {}


@pytest.fixture
def cookie_expired() -> bool:
    """Record with a cookie the sandbox no longer accepts (parametrize to change)."""
    return False


@dataclasses.dataclass
class Service:
    """Fetches through the test's cassette: recorded from a live sandbox, or replayed."""

    base: str
    cookie: str | None
    session: requests.Session

    def url(self, path: str) -> str:
        return self.base + path

    def fetch(self, request: scrapy.Request) -> TextResponse:
        """The answer to ``request`` as Scrapy would hand it over: real status, headers and body."""
        cookies = {"appSession": self.cookie} if self.cookie else None
        answer = self.session.get(request.url, cookies=cookies, allow_redirects=False, timeout=10)
        return TextResponse(url=request.url, status=answer.status_code, headers=dict(answer.headers),
                            body=answer.content, request=request)


@pytest.fixture
def service(request, vcr_settings, live_sandbox, knobs, cookie_expired):
    name = f"{slugify(request)}.yaml"
    path = CASSETTES / name
    recording = not path.exists()
    if recording and os.getenv("CI"):
        pytest.fail(f"cassette {path} is missing; record it by running this module without CI set")
    base, cookie = REPLAY_BASE, None
    if recording:
        sandbox = live_sandbox.get()
        sandbox.set_knobs(**knobs)
        base, cookie = sandbox.base_url, sandbox.cookie
        if cookie_expired:
            sandbox.expire_cookie()
    try:
        with vcr_settings.use_cassette(name), requests.Session() as session:
            yield Service(base, cookie, session)
    finally:
        if recording:
            live_sandbox.reset()
    if recording:
        text = path.read_text(encoding="utf-8")
        assert cookie not in text and "appSession" not in text, f"{path} holds the session cookie"


@pytest.fixture
def cb_kwargs() -> dict:
    return {}


@pytest.fixture
def response(service, url, cb_kwargs) -> TextResponse:
    """The recorded answer to ``url`` (a path), its request carrying (a fresh copy of) ``cb_kwargs``."""
    return service.fetch(scrapy.Request(service.url(url), cb_kwargs=copy.deepcopy(cb_kwargs)))


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture
def make_spider(service, tmp_path):
    def make(cls=PersonalitySpider, **args):
        crawler = get_crawler(cls, {
            "SERVICE_WEBSITE": service.base,
            "SERVICE_COOKIE": "unit-test-cookie-never-sent",
            "BACKUP_DIR": str(tmp_path / "backup"),
            "BACKUP_PERSONALITY_DELAY": "0.5",
        })
        spider = cls.from_crawler(crawler, **args)
        spider.store = BackupStore(tmp_path / "backup")  # the pipeline's store, in a crawl
        return spider

    return make


def drain(output):
    """Everything an async callback yields, and the CloseSpider it raised, if any."""
    async def collect():
        out = []
        try:
            async for thing in output:
                out.append(thing)
        except CloseSpider as exc:
            return out, exc
        return out, None

    return asyncio.run(collect())


def call(callback, response):
    """Run a callback as Scrapy does; return what it yielded and the CloseSpider it raised, if any."""
    return drain(callback(response, **response.request.cb_kwargs))


def kinds(out) -> list[str]:
    return [type(x).__name__ for x in out]


def body(response):
    return json.loads(response.body)


def assert_request(request, spider, url: str, callback, job, position=None):
    assert isinstance(request, scrapy.Request)
    assert request.url == url
    assert request.callback == callback and request.errback == spider.on_error
    assert request.cb_kwargs == {"walk": job, "position": position}
    assert request.dont_filter


# -- the personality list and a profile ------------------------------------------------------------
@pytest.mark.parametrize("url", ["/api/personalities?category=self"], ids=["self"])
def test_personality_list_starts_the_first_profile(response, make_spider, service):
    spider = make_spider(AllPersonalitiesSpider)
    out, closed = call(spider.parse_list, response)
    listed = body(response)
    assert closed is None and [p["username"] for p in listed] == [p["username"] for p in PEOPLE]
    assert kinds(out) == ["Request"]
    job = out[0].cb_kwargs["walk"]
    assert_request(out[0], spider, service.url(f"/api/personalities/username/{listed[0]['username']}"),
                   spider.parse_profile, job)
    # the owned list's entries, marked as the user's own (the recent list's others are not)
    assert job.personality == dict(listed[0], owned=True) and job.planned == registry.REGISTRY and job.requests == 1
    assert spider.store.holds(listed[0]["username"])  # claimed before its profile is asked for
    assert not spider.store.holds(listed[1]["username"])
    assert [j.username for j in spider.queue] == [p["username"] for p in listed[1:]]
    assert spider.crawler.stats.get_value("backup/personalities/requested") == len(PEOPLE)
    assert spider.crawler.stats.get_value("backup/resources/requested") == len(PEOPLE) * len(RESOURCES)


@pytest.mark.parametrize("url, cb_kwargs", [(
    f"/api/personalities/username/{PEOPLE[0]['username']}",
    {"walk": Job({"username": PEOPLE[0]["username"]}, RESOURCES, requests=1), "position": None},
)], ids=["p0"])
def test_profile_then_memories(response, make_spider, service):
    spider = make_spider(personality=PEOPLE[0]["username"])
    job = response.request.cb_kwargs["walk"]
    out, closed = call(spider.parse_profile, response)
    assert closed is None
    assert kinds(out) == ["Document", "ResourceDone", "Request"]
    assert out[0] == Document(person(0), "profile", body(response), 1)
    assert out[0].payload["settings"]["behaviour"]["nested"]  # the whole profile, nested parts included
    # a 2025 profile lacks what today's service sends: noted as drift, saved as received
    assert out[1] == replace(complete(person(0), "profile", 1), drift=registry.get("profile").missing_keys(body(response)))
    assert "jailbreak" in out[1].drift
    assert_request(out[2], spider, service.url(memories_path(0, 1)), spider.parse_page, job, position=1)
    assert job.current.name == "memories" and job.requests == 1


# -- memory pages in every pagination spelling -----------------------------------------------------
SPELLINGS = {0: "pagination", 1: "meta", 2: "camel"}


def spelled(payload: dict, style: str) -> bool:
    if style == "meta":
        return "pagination" not in payload and payload["meta"]["pagination"]["total_pages"] == 3
    key = "totalPages" if style == "camel" else "total_pages"
    return "meta" not in payload and payload["pagination"][key] == 3


@pytest.mark.parametrize("url, cb_kwargs", [
    (memories_path(i, page), {"walk": Job(person(i), ["memories", "messages"], requests=page), "position": page})
    for i in SPELLINGS for page in (1, 2, 3, 4)
], ids=[f"{SPELLINGS[i]}-page{page}" for i in SPELLINGS for page in (1, 2, 3, 4)])
def test_memory_page(response, make_spider, service):
    spider = make_spider(personality="x")
    job, page = response.request.cb_kwargs["walk"], response.request.cb_kwargs["position"]
    i = next(k for k, p in enumerate(PEOPLE) if p["id"] == job.personality["id"])
    payload = body(response)
    assert response.status == 200 and spelled(payload, SPELLINGS[i])
    out, closed = call(spider.parse_page, response)
    assert closed is None
    expected_records = {1: PAGE_SIZE, 2: PAGE_SIZE, 3: MEMORIES - 2 * PAGE_SIZE, 4: 0}[page]
    assert len(payload["items"]) == expected_records
    if page < 3:  # first and middle page: this page, then the next one
        assert kinds(out) == ["Page", "Request"]
        assert_request(out[1], spider, service.url(memories_path(i, page + 1)), spider.parse_page, job,
                       position=page + 1)
        assert job.current.name == "memories" and job.requests == page + 1
    else:  # last page, or past the end: memories complete, on to the chat history
        note = "last page" if page == 3 else "empty page"
        assert kinds(out) == (["Page"] if page == 3 else []) + ["ResourceDone", "Request"]
        # the service's count: "total" where it says (camel spells it too), none when only pages are counted
        total = payload.get("pagination", payload.get("meta", {}).get("pagination", {})).get("total")
        assert out[-2] == complete(person(i), "memories", page, note, service_total=total)
        assert_request(out[-1], spider, service.url(history_path(i)), spider.parse_page, job)
        assert job.current.name == "messages" and job.requests == 1
    if expected_records:
        pages = payload.get("pagination", payload.get("meta", {}).get("pagination", {}))
        assert out[0] == Page(person(i), "memories", payload["items"], pages.get("total_pages", pages.get("totalPages")))


# -- chat history ----------------------------------------------------------------------------------
def history_job(i: int) -> Walk:
    return Job(person(i), ["messages", "knowledge"], requests=1)


def second_smallest_ts(batch: list[dict]):
    return sorted({m["ts"] for m in batch})[1]


def walk_history(spider, service, i: int):
    """Follow the spider's own history requests from the first batch to its end."""
    request = scrapy.Request(service.url(history_path(i)), cb_kwargs={"walk": history_job(i), "position": None})
    steps = []
    for _ in range(10):  # 60 messages take 3 requests: a bound, not a guess
        response = service.fetch(request)
        out, closed = call(spider.parse_page, response)
        assert closed is None
        steps.append((response, out))
        follow = [x for x in out if isinstance(x, scrapy.Request) and x.callback == spider.parse_page]
        if not follow:
            return steps
        request = follow[0]
    pytest.fail("the history walk did not end")


def test_history_first_batch_before_ts_batch_and_empty_end(make_spider, service):
    spider = make_spider(personality="x")
    steps = walk_history(spider, service, 0)
    assert len(steps) == 3
    first, second, last = (body(r) for r, _ in steps)
    job = steps[0][0].request.cb_kwargs["walk"]
    # The first batch is full, so it may have been cut inside its oldest ts group: the next request
    # asks again from the batch's second-smallest distinct ts.
    before = second_smallest_ts(first)
    assert len(first) == 50 and kinds(steps[0][1]) == ["Page", "Request"]
    assert steps[0][1][0] == Page(person(0), "messages", first)
    assert_request(steps[0][1][1], spider, service.url(history_path(0, str(before))), spider.parse_page, job,
                   position=str(before))
    # The before_ts batch: only older messages, starting again at the first batch's oldest message.
    assert steps[1][0].request.cb_kwargs["position"] == str(before)
    assert 0 < len(second) < 50 and all(m["ts"] < before for m in second)
    assert second[0]["id"] == first[-1]["id"]
    # A short batch is whole: next before_ts is its oldest ts; the answer is empty and ends the resource.
    assert steps[2][0].request.cb_kwargs["position"] == str(min(m["ts"] for m in second))
    assert last == []
    out = steps[2][1]
    assert kinds(out) == ["ResourceDone", "Request"]
    assert out[0] == complete(person(0), "messages", 3, "empty batch")
    assert_request(out[1], spider, service.url(f"/api/personalities/{PEOPLE[0]['id']}/story"),
                   spider.parse_document, job)
    ids = [m["id"] for batch in (first, second) for m in batch]
    assert len(set(ids)) == MESSAGES and len(ids) == MESSAGES + 1  # one message came twice, none lost
    assert [x.records for _, out in steps for x in out if isinstance(x, Page)] == [first, second]


@pytest.mark.parametrize("knobs", [{"ts_ties": True}], ids=["ties"])
def test_history_tie_group_straddling_the_edge(make_spider, service):
    spider = make_spider(personality="x")
    steps = walk_history(spider, service, 0)
    first, second = body(steps[0][0]), body(steps[1][0])
    oldest = min(m["ts"] for m in first)
    group_first = {m["id"] for m in first if m["ts"] == oldest}
    group_second = {m["id"] for m in second if m["ts"] == oldest}
    assert len(first) == 50 and len(group_first) >= 2  # the full batch ends inside a tie group
    assert group_second - group_first, "the recording must hold a group cut by the batch edge"
    # The next before_ts is the second-smallest distinct ts, not the group's own ts (which would skip
    # the rest of the group: the service returns only ts < before_ts).
    before = steps[1][0].request.cb_kwargs["position"]
    assert before == str(second_smallest_ts(first)) and float(before) > oldest
    assert group_first <= group_second
    ids = {m["id"] for response, _ in steps for m in body(response)}
    assert len(ids) == MESSAGES
    assert steps[-1][1][0] == complete(person(0), "messages", len(steps), "empty batch")


# -- whole documents in their shapes ---------------------------------------------------------------
DOCUMENTS = [  # resource, personality, path tail, shape check, entry count
    ("knowledge", 0, "story", lambda d: isinstance(d, list), KNOWLEDGE),
    ("knowledge", 1, "story", lambda d: set(d) == {"story", "x_version"}, KNOWLEDGE),
    ("knowledge", 2, "story", lambda d: isinstance(d, dict) and "content" in d, 1),
    ("knowledge", 3, "story", lambda d: d["items"] == [], 0),
    ("training", 0, "training", lambda d: set(d) == {"training", "x_version"}, TRAINING),
    ("training", 1, "training", lambda d: isinstance(d, dict) and "question" in d, 1),
    ("training", 2, "training", lambda d: isinstance(d["items"], list), TRAINING),
    ("training", 3, "training", lambda d: d == [], 0),
    ("user_data", 0, "user", lambda d: isinstance(d, dict) and "nickname" in d, 4),
    ("user_data", 3, "user", lambda d: d == {}, 0),
]


@pytest.mark.parametrize("url, cb_kwargs, shape, count", [
    (f"/api/personalities/{PEOPLE[i]['id']}/{tail}", {"walk": Job(person(i), [resource], requests=1),
                                                      "position": None}, shape, count)
    for resource, i, tail, shape, count in DOCUMENTS
], ids=[f"{resource}-p{i}" for resource, i, *_ in DOCUMENTS])
def test_document(response, make_spider, shape, count):
    spider = make_spider(personality="x")
    job = response.request.cb_kwargs["walk"]
    resource, who = job.current.name, dict(job.personality)
    payload = body(response)
    assert shape(payload)
    out, closed = call(spider.parse_document, response)
    assert closed is None
    assert out == [Document(who, resource, payload, count), complete(who, resource, 1), PersonalityEnd(who)]
    assert job.current is None


# -- authentication failures stop the crawl --------------------------------------------------------
AUTH_MODES = [{"auth_failure": "401"}, {"auth_failure": "html"}]
NOT_ATTEMPTED = Outcome.skipped("not attempted: not authenticated")


@pytest.mark.parametrize("cookie_expired", [True], ids=["expired"])
@pytest.mark.parametrize("knobs", AUTH_MODES, ids=["401", "html"])
@pytest.mark.parametrize("url, cb_kwargs", [(
    memories_path(0, 2), {"walk": Job(person(0), ["memories", "messages", "knowledge"], requests=2), "position": 2},
)], ids=["memories"])
def test_auth_failure_mid_resource(response, make_spider, knobs):
    html = knobs["auth_failure"] == "html"
    assert (response.status, b"<form" in response.body) == ((200, True) if html else (401, False))
    spider = make_spider(personality="x")
    out, closed = call(spider.parse_page, response)
    assert isinstance(closed, CloseSpider) and closed.reason == "auth_failed"
    assert kinds(out) == ["ResourceDone"] * 3 + ["PersonalityEnd"]
    done = out[:3]
    assert [d.resource for d in done] == ["memories", "messages", "knowledge"]
    assert done[0].outcome.status == "failed" and done[0].requests == 2
    assert done[0].outcome.reason.startswith("not authenticated: ")
    assert [d.outcome for d in done[1:]] == [NOT_ATTEMPTED, NOT_ATTEMPTED]
    assert spider.crawler.stats.get_value("backup/auth_failed")
    assert not any(isinstance(x, (Page, scrapy.Request)) for x in out)  # the login page is not data


@pytest.mark.parametrize("cookie_expired", [True], ids=["expired"])
@pytest.mark.parametrize("knobs", [{"auth_failure": "html"}], ids=["html"])
@pytest.mark.parametrize("url, cb_kwargs", [(
    f"/api/personalities/username/{PEOPLE[1]['username']}",
    {"walk": Job({"username": PEOPLE[1]["username"]}, RESOURCES, requests=1), "position": None},
)], ids=["profile"])
def test_auth_failure_on_profile(response, make_spider):
    spider = make_spider(personality=PEOPLE[1]["username"])
    spider.queue.append(Job({"username": PEOPLE[2]["username"]}, RESOURCES))
    out, closed = call(spider.parse_profile, response)
    assert isinstance(closed, CloseSpider) and closed.reason == "auth_failed"
    who = {"username": PEOPLE[1]["username"]}
    reason = f"not authenticated: the login page instead of JSON from {response.url}"
    assert out == [ResourceDone(who, "profile", Outcome.failed(reason), 1)] \
        + [ResourceDone(who, r, NOT_ATTEMPTED) for r in RESOURCES[1:]] \
        + [PersonalityEnd(who)]  # and no request for the next personality
    assert [j.username for j in spider.queue] == [PEOPLE[2]["username"]]


@pytest.mark.parametrize("cookie_expired", [True], ids=["expired"])
@pytest.mark.parametrize("url", ["/api/personalities?category=self"], ids=["401"])
def test_auth_failure_on_the_list(response, make_spider):
    assert response.status == 401
    spider = make_spider(AllPersonalitiesSpider)
    out, closed = call(spider.parse_list, response)
    assert out == [] and isinstance(closed, CloseSpider) and closed.reason == "auth_failed"
    assert spider.crawler.stats.get_value("backup/auth_failed")


# -- a failing answer fails its resource only: the crawl goes on -----------------------------------
MEMORIES_P2 = memories_path(0, 2), {"walk": Job(person(0), ["memories", "messages"], requests=2), "position": 2}


def assert_failed_then_history(out, spider, service, job, error_start: str):
    assert kinds(out) == ["ResourceDone", "Request"]
    assert out[0].resource == "memories" and out[0].outcome.status == "failed" and out[0].requests == 2
    assert out[0].outcome.reason.startswith(error_start), out[0].outcome
    assert_request(out[1], spider, service.url(history_path(0)), spider.parse_page, job)
    assert job.current.name == "messages"


@pytest.mark.parametrize("knobs", [{"error_rate": 1.0}], ids=["5xx"])
@pytest.mark.parametrize("entry", ["callback", "errback"])
@pytest.mark.parametrize("url, cb_kwargs", [MEMORIES_P2], ids=["memories"])
def test_server_error_fails_the_resource_and_moves_on(response, make_spider, service, entry):
    assert response.status in (500, 502, 503)
    spider = make_spider(personality="x")
    job = response.request.cb_kwargs["walk"]
    if entry == "callback":
        out, closed = call(spider.parse_page, response)
    else:  # what Scrapy does once retries are spent: HttpErrorMiddleware → errback
        failure = Failure(HttpError(response, "Ignoring non-200 response"))
        failure.request = response.request
        out, closed = drain(spider.on_error(failure))
    assert closed is None
    assert_failed_then_history(out, spider, service, job, f"HTTP {response.status} from {response.url}")


@pytest.mark.parametrize("url, cb_kwargs", [MEMORIES_P2], ids=["memories"])
def test_torn_json_fails_the_resource_and_moves_on(response, make_spider, service):
    assert response.status == 200 and body(response)["items"]
    torn = response.replace(body=response.body[: len(response.body) // 2])
    spider = make_spider(personality="x")
    out, closed = call(spider.parse_page, torn)
    assert closed is None and not any(isinstance(x, Page) for x in out)
    assert_failed_then_history(out, spider, service, response.request.cb_kwargs["walk"], "invalid JSON from")


@pytest.mark.parametrize("knobs", [{"error_rate": 1.0}], ids=["5xx"])
@pytest.mark.parametrize("url, cb_kwargs", [(
    f"/api/personalities/username/{PEOPLE[0]['username']}",
    {"walk": Job({"username": PEOPLE[0]["username"]}, RESOURCES, requests=1), "position": None},
)], ids=["profile"])
def test_profile_server_error_moves_to_the_next_personality(response, make_spider, service):
    spider = make_spider(personality=f"{PEOPLE[0]['username']},{PEOPLE[1]['username']}")
    nxt = Job({"username": PEOPLE[1]["username"]}, RESOURCES)
    spider.queue.append(nxt)
    started = time.monotonic()
    out, closed = call(spider.parse_profile, response)
    assert time.monotonic() - started >= 0.5  # BACKUP_PERSONALITY_DELAY before the next personality
    assert closed is None
    who = {"username": PEOPLE[0]["username"]}
    error = f"HTTP {response.status} from {response.url}"
    rest = Outcome.skipped(f"not attempted: profile unavailable: {error}")
    assert out[:-1] == [ResourceDone(who, "profile", Outcome.failed(error), 1)] \
        + [ResourceDone(who, r, rest) for r in RESOURCES[1:]] + [PersonalityEnd(who)]
    assert_request(out[-1], spider, service.url(f"/api/personalities/username/{PEOPLE[1]['username']}"),
                   spider.parse_profile, nxt)
    assert spider.store.holds(PEOPLE[1]["username"])


# -- the cassettes themselves ----------------------------------------------------------------------
def test_cassettes_hold_no_cookie():
    """Runs last: every committed cassette, whoever recorded it, is free of session cookies."""
    files = sorted(CASSETTES.glob("*.yaml"))
    assert len(files) >= 30, f"expected this module's cassettes in {CASSETTES}"
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "appSession" not in text, path
        for interaction in yaml.safe_load(text)["interactions"]:
            request_headers = {k.lower() for k in interaction["request"]["headers"]}
            response_headers = {k.lower() for k in interaction["response"]["headers"]}
            assert "cookie" not in request_headers and "set-cookie" not in response_headers, path
