"""The offline archive: static HTML any browser opens from disk, no server, no network.

Per personality: ``index.html`` (the profile, every field), ``chat.html`` (months → pages) and
``chat-NNNN.html`` (1,000 messages a page, oldest first, ``id="m-<id>"``), ``memories.html`` and
``memories-NNNN.html`` (``id="mem-<id>"``), one page per document, ``search.html`` with its text
shards (``search/*.js``: script files, since a page opened from ``file://`` cannot fetch), and
``media/`` (hard links to the backup's files). Jinja2 autoescapes every value; message text goes
through ``text.markdown``. Pages are rendered while the collection streams: one page in memory.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from tzcrawl import jsonio, registry

from .output import EXPORT_VERSION, Output
from .segments import Looked, Segment, key, reusable


@dataclass(frozen=True)
class Shown:
    """How the archive shows a collection: file prefix, search kind, page template, heading."""

    prefix: str
    kind: str
    template: str
    label: str


# The profile page's sections: today's ~173 fields grouped as the service's dashboard does; the rest after.
GROUPS = (
    ("identity", "Identity", ("id", "name", "username", "avatar", "avatar_url", "tagline", "created_by", "user_id",
                              "created_at", "birthday", "timezone")),
    ("prompting", "Prompting", ("jailbreak", "user_prompt", "shape_settings", "error_message", "wack_message",
                                "sleep_message")),
    ("personality", "Personality", ("personality_",)),
    ("model", "Model", ("engine_", "fallback_engine_model")),
    ("memory", "Memory", ("stm_", "ltm_")),
    ("voice", "Voice and image", ("voice_", "image_")),
)


def profile_groups(profile) -> list[dict]:
    """The profile's fields in sections (a name ending in ``_`` is a prefix); everything else under "Other"."""
    if not isinstance(profile, dict):
        return [{"slug": "all", "title": "Profile", "fields": profile}]
    left, groups = dict(profile), []
    for slug, title, names in GROUPS:
        fields = {k: left.pop(k) for k in list(left)
                  if any(k.startswith(n) if n.endswith("_") else k == n for n in names)}
        if fields:
            groups.append({"slug": slug, "title": title, "fields": fields})
    if left:
        groups.append({"slug": "other", "title": "Other settings" if groups else "Profile", "fields": left})
    return groups


# The archive's pages per collection of the registry (what a page of records looks like is the exporter's).
PAGES = {"messages": Shown("chat", "message", "chat_page.html", "Chat"),
         "memories": Shown("memories", "memory", "memories_page.html", "Memories")}
assert set(PAGES) == set(registry.COLLECTIONS), "every collection of the registry has pages in the archive"
from .source import Personality, clean
from .text import iso, markdown, media_kind, moment

PAGE_SIZE = 1000
DOCUMENTS = ("knowledge", "training", "user_data")
HEADINGS = {"knowledge": "Knowledge", "training": "Training", "user_data": "Your personalization"}


def when(ts) -> Markup:
    """A record's time as a ``<time>`` element (UTC). A Python function, not a Jinja macro: it is called
    for every message, and a macro call costs ten times more."""
    at = iso(ts)
    if at:
        return Markup(f'<time datetime="{at}">{at.replace("T", " ").replace("Z", " UTC")}</time>')
    return Markup('<time class="unknown">unknown time</time>')


def media(url, declared, media_map, label) -> Markup:
    """A media file of a record: shown (image, audio) or linked when the backup holds it, else a link to
    the service's file host, marked remote. Every value escaped (``markupsafe.escape``, as Jinja's own)."""
    if not url:
        return Markup("")
    local = media_map.get(url)
    kind = media_kind(url, declared)
    if local and kind == "image":
        return Markup('<figure class="media"><a href="{0}"><img src="{0}" alt="{1}" loading="lazy"></a></figure>'
                      ).format(local, label)
    if local and kind == "audio":
        return Markup('<figure class="media"><audio controls preload="none" src="{0}"></audio><figcaption>{1}'
                      '</figcaption></figure>').format(local, label)
    if local:
        return Markup('<a class="media file" href="{0}">{1}</a>').format(local, label)
    return Markup('<a class="media remote" href="{0}" rel="noopener noreferrer nofollow" target="_blank" '
                  "title=\"not in the backup: a link to the service's file host\">{1} (remote)</a>").format(url, label)


def environment() -> Environment:
    env = Environment(loader=PackageLoader("tzcrawl.export", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    memories = registry.get("memories")
    env.filters.update(md=markdown, iso=iso, clean=clean, media_kind=media_kind,
                       memory_time=memories.time_of, memory_text=memories.text_of)
    env.globals.update(when=when, media=media)
    return env


def _sort_key(person: dict) -> str:
    return unicodedata.normalize("NFKD", person.get("name", "")).casefold()


def avatar_of(profile: dict, media: dict[str, str]) -> str | None:
    for field in ("avatar_url", "avatar"):
        url = profile.get(field)
        if isinstance(url, str) and url in media and media_kind(url) == "image":
            return media[url]
    return None


class Archive:
    """Writes the archive of each personality under ``out``, and the shared index and static files."""

    def __init__(self, out: Output, exported_from: str):
        self.out = out
        self.env = environment()
        self.exported_from = exported_from

    def render(self, template: str, **context) -> str:
        return self.env.get_template(template).render(exported_from=self.exported_from, **context)

    def static(self) -> None:
        folder = self.out.folder("static")
        for name in ("style.css", "app.js", "search.js"):
            self.out.write(folder / name, resources.files("tzcrawl.export").joinpath("static", name).read_bytes())

    def index(self, people: list[dict]) -> Path:
        path = self.out.root / "index.html"
        self.out.write(path, self.render("index.html", title="Personalities", root="", person=None,
                                         people=sorted(people, key=_sort_key)))
        return path

    def personality(self, p: Personality) -> dict:
        folder = self.out.folder(p.dir_name)
        media = p.media
        for path in media.values():
            self.out.link(p.directory / path, folder / path)
        person = {"name": p.name, "documents": DOCUMENTS}
        base = {"root": "../", "person": person, "media_map": media}
        counts = {**{name: 0 for name in PAGES}, "media": len(media)}
        shards: list[str] = []
        earlier = self.out.earlier(p.dir_name, "html").get("pages", {})
        kept: dict[str, dict] = {}
        for resource in PAGES:
            counts[resource] = self._collection(p, folder, base, resource, shards, earlier, kept)
        for resource in DOCUMENTS:
            document = p.document(resource)
            count = p.total(resource) if document is not None else 0
            self.out.write(folder / f"{resource}.html", self.render(
                "document.html", title=f"{HEADINGS[resource]} · {p.name}", heading=HEADINGS[resource],
                document=document, count=count, **base))
        self.out.write(folder / "search" / "shards.js", "window.TZ_SHARDS = " + jsonio.dumps(shards) + ";\n")
        self.out.write(folder / "search.html", self.render("search.html", title=f"Search · {p.name}", **base))
        avatar = avatar_of(p.profile, media)
        last_backup = p.metadata.get("last_backup")
        self.out.write(folder / "index.html", self.render(
            "profile.html", title=p.name, profile=p.profile, profile_groups=profile_groups(p.profile), avatar=avatar,
            counts=counts, problems=p.problems, whose=p.whose, **base))
        return {"name": p.name, "dir_name": p.dir_name, "avatar": avatar, "counts": counts, "last_backup": last_backup,
                "others": bool(p.whose), "reused": sum(1 for name in kept if kept[name] is earlier.get(name)),
                "state": {"pages": kept}}

    def _collection(self, p: Personality, folder: Path, base: dict, resource: str, shards: list[str],
                    earlier: dict, kept: dict) -> int:
        """Write a collection's pages and search shards while it streams; returns how many records. A page
        whose records, place and media look-ups are the last export's (``earlier``) is kept as it is
        (``segments``); the others are rendered, on every core when there are several (``Pages``). What
        the next export needs of each page goes into ``kept``."""
        shown = PAGES[resource]
        names: list[str] = []
        with Pages(self, resource, p.name, base) as pages:
            for page in p.segments(resource, PAGE_SIZE):
                name, shard = f"{shown.prefix}-{page.number:04d}.html", f"{shown.prefix}-{page.number:04d}.js"
                names.append(name)
                shards.append(shard)
                page_key = key(page, EXPORT_VERSION, shown.template, p.name, self.exported_from, page.more)
                before = earlier.get(name)
                if reusable(before, page_key, base["media_map"]) and (folder / name).is_file() \
                        and (folder / "search" / shard).is_file():
                    kept[name] = before
                    continue
                pages.render(page, name, page_key, lambda done, name=name, shard=shard: self._write_page(
                    p, folder, name, shard, done, kept))
        months: list[dict] = []
        total = 0
        for name in names:
            for month, first_id, count in kept[name]["months"]:
                if months and months[-1]["month"] == month:
                    months[-1]["count"] += count
                else:
                    months.append({"month": month, "page": name, "first_id": first_id, "count": count})
            total += kept[name]["count"]
        label = shown.label
        self.out.write(folder / f"{shown.prefix}.html", self.render(
            "collection_index.html", title=f"{label} · {p.name}", heading=label, kind=resource, months=months,
            total=total, page_size=PAGE_SIZE, **base))
        return total

    def _write_page(self, p: Personality, folder: Path, name: str, shard: str, done: "Rendered", kept: dict):
        self.out.write(folder / name, done.html)
        self.out.write(folder / "search" / shard, done.shard)
        kept[name] = {"key": done.key, "used": done.used, "months": done.months, "count": done.count}
        if done.torn:  # rendered in a worker: ``Personality.segments`` did not see it
            p.torn(done.resource, (done.number - 1) * PAGE_SIZE + done.count, done.torn)


# -- rendering pages, on every core ------------------------------------------------------------------------
@dataclass
class Rendered:
    """A page as rendered: its HTML, its search shard, and what the next export needs to reuse it."""

    resource: str
    number: int
    key: str
    html: str
    shard: str
    months: list          # [month, first record's id, records of that month on the page]
    used: dict            # the media look-ups it made
    count: int
    torn: str | None


def render_page(env: Environment, exported_from: str, resource: str, person_name: str, base: dict,
                page: Segment, name: str, page_key: str) -> Rendered:
    """One page of a collection and its search shard: a pure function of its arguments (a worker process
    runs it as well as the exporting one, with the same result)."""
    shown, described = PAGES[resource], registry.get(resource)
    looked = Looked(base["media_map"])
    records = page.records
    pages = range(1, page.number + 2 if page.more else page.number + 1)
    html = env.get_template(shown.template).render(
        exported_from=exported_from, title=f"{shown.prefix.capitalize()} {page.number} · {person_name}",
        items=records, pages=pages, current=page.number, **dict(base, media_map=looked))
    months: list[list] = []
    rows = []
    for record in records:
        at = moment(described.time_of(record))
        month = at.strftime("%Y-%m") if at else "unknown"
        if not months or months[-1][0] != month:
            months.append([month, str(record.get("id")), 0])
        months[-1][2] += 1
        text = " ".join(clean(record.get(k)) for k in described.text_paths if record.get(k))
        rows.append([str(record.get("id")), text])
    shard = f"tzSearch.add({jsonio.dumps(name)}, {jsonio.dumps(shown.kind)}, {jsonio.dumps(rows)});\n"
    return Rendered(resource, page.number, page_key, html, shard, months, looked.used, len(records), page.torn)


_WORKER: dict = {}


def _start_worker(exported_from: str, base: dict) -> None:
    _WORKER.update(env=environment(), exported_from=exported_from, base=base)


def _render_in_worker(resource: str, person_name: str, page: Segment, name: str, page_key: str) -> Rendered:
    return render_page(_WORKER["env"], _WORKER["exported_from"], resource, person_name, _WORKER["base"], page, name,
                       page_key)


def workers() -> int:
    """How many processes render pages: the cores this process may use (``TZCRAWL_EXPORT_WORKERS`` to
    choose; 1 renders in the exporting process)."""
    chosen = os.environ.get("TZCRAWL_EXPORT_WORKERS", "").strip()
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS: no affinity
        return max(1, os.cpu_count() or 1)


class Pages:
    """Renders the pages it is given, in this process or, from the second page to render on, in a pool of
    worker processes (one a core); each finished page is handed to its ``then`` in the exporting process,
    which writes it. At most two pages a worker wait in memory."""

    def __init__(self, archive: "Archive", resource: str, person_name: str, base: dict):
        self.archive, self.resource, self.person_name, self.base = archive, resource, person_name, base
        self.count = workers()
        self.pool: ProcessPoolExecutor | None = None
        self.first: tuple | None = None  # the first page to render, kept until a second one says a pool pays
        self.waiting: collections.deque = collections.deque()

    def __enter__(self) -> "Pages":
        return self

    def render(self, page: Segment, name: str, page_key: str, then) -> None:
        job = (page, name, page_key)
        if self.count < 2:
            then(self._here(*job))
            return
        if self.pool is None and self.first is None:
            self.first = (job, then)
            return
        if self.pool is None:
            context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                                  else None)
            self.pool = ProcessPoolExecutor(self.count, mp_context=context, initializer=_start_worker,
                                            initargs=(self.archive.exported_from, self.base))
            first, self.first = self.first, None
            self._submit(*first)
        self._submit(job, then)

    def _here(self, page: Segment, name: str, page_key: str) -> Rendered:
        return render_page(self.archive.env, self.archive.exported_from, self.resource, self.person_name, self.base,
                           page, name, page_key)

    def _submit(self, job: tuple, then) -> None:
        self.waiting.append((self.pool.submit(_render_in_worker, self.resource, self.person_name, *job), then))
        while len(self.waiting) > 2 * self.count:
            future, then_ = self.waiting.popleft()
            then_(future.result())

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                if self.first is not None:  # a single page to render: no pool was worth starting
                    job, then = self.first
                    then(self._here(*job))
                while self.waiting:
                    future, then = self.waiting.popleft()
                    then(future.result())
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
