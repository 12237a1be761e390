"""The offline archive: static HTML any browser opens from disk, no server, no network.

Per personality: ``index.html`` (the profile, every field), ``chat.html`` (months → pages) and
``chat-NNNN.html`` (1,000 messages a page, oldest first, ``id="m-<id>"``), ``memories.html`` and
``memories-NNNN.html`` (``id="mem-<id>"``), one page per document, ``search.html`` with its text
shards (``search/*.js``: script files, since a page opened from ``file://`` cannot fetch), and
``media/`` (hard links to the backup's files). Jinja2 autoescapes every value; message text goes
through ``text.markdown``. Pages are rendered while the collection streams: one page in memory.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from jinja2 import Environment, PackageLoader, select_autoescape

from tzcrawl import jsonio, registry

from .output import Output


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


def environment() -> Environment:
    env = Environment(loader=PackageLoader("tzcrawl.export", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    memories = registry.get("memories")
    env.filters.update(md=markdown, iso=iso, clean=clean, media_kind=media_kind,
                       memory_time=memories.time_of, memory_text=memories.text_of)
    return env


@dataclass
class Page:
    number: int
    items: list[dict]
    more: bool  # a later page follows


def paged(records: Iterator[dict], size: int = PAGE_SIZE) -> Iterator[Page]:
    """Pages of ``size`` records; each knows whether another follows (one page read ahead)."""
    number, current = 0, []
    for record in records:
        if len(current) == size:
            number += 1
            yield Page(number, current, True)
            current = []
        current.append(record)
    if current or number == 0:
        yield Page(number + 1, current, False)


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
        for resource in PAGES:
            counts[resource] = self._collection(p, folder, base, resource, shards)
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
                "others": bool(p.whose)}

    def _collection(self, p: Personality, folder: Path, base: dict, resource: str, shards: list[str]) -> int:
        """Write a collection's pages and search shards while it streams; returns how many records."""
        described = registry.get(resource)
        shown = PAGES[resource]
        prefix, kind = shown.prefix, shown.kind
        months: list[dict] = []
        total = 0
        for page in paged(p.records(resource)):
            name = f"{prefix}-{page.number:04d}.html"
            pages = range(1, page.number + 2 if page.more else page.number + 1)
            template = shown.template
            self.out.write(folder / name, self.render(
                template, title=f"{prefix.capitalize()} {page.number} · {p.name}", items=page.items, pages=pages,
                current=page.number, total=p.total(resource), **base))
            rows = []
            for record in page.items:
                total += 1
                at = moment(described.time_of(record))
                month = at.strftime("%Y-%m") if at else "unknown"
                if not months or months[-1]["month"] != month:
                    months.append({"month": month, "page": name, "first_id": str(record.get("id")), "count": 0})
                months[-1]["count"] += 1
                text = " ".join(clean(record.get(k)) for k in described.text_paths if record.get(k))
                rows.append([str(record.get("id")), text])
            shard = f"{prefix}-{page.number:04d}.js"
            shards.append(shard)
            self.out.write(folder / "search" / shard,
                           f"tzSearch.add({jsonio.dumps(name)}, {jsonio.dumps(kind)}, {jsonio.dumps(rows)});\n")
        label = shown.label
        self.out.write(folder / f"{prefix}.html", self.render(
            "collection_index.html", title=f"{label} · {p.name}", heading=label, kind=resource, months=months,
            total=total, page_size=PAGE_SIZE, **base))
        return total
