"""The sandbox's world: one owner and their personalities, generated deterministically from a seed,
and the personalities of other owners the user talked to (the ``recent`` list), whose owner-only
resources refuse this user.

Big histories stay cheap: a series keeps only its sorted timestamps (for ``bisect``), and each
memory or message is rebuilt from ``(seed, personality, position)`` when it is served. Added items
(``add``, the growth knob) just extend the timestamps, newest last, so they are generated the same way.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from . import records
from .config import KNOWLEDGE_SHAPES, TRAINING_SHAPES, SandboxConfig

CHAT_MAX = 50  # the service's maximum chat batch; ties are placed on these edges
EPOCH = 1_690_000_000.0

PHRASES = (
    "I remember the café near the station, the one with the blue door.",
    "On a parlé de la déjà-vu pendant des heures, c'était très naïf.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "¿Recuerdas la canción que cantábamos en la playa?",
    "今日は天気がいいですね。散歩に行きましょう。",
    "我喜欢在下雨天读书和喝茶。",
    "오늘 저녁에 뭐 먹을까요?",
    "Let's plan the trip 🚀✨ and pack light 🎒.",
    "The developer 👩‍💻 fixed the bug at 3 a.m. ☕☕☕",
    "Ψυχή and λόγος: a short note on old words.",
    "Привет! Как дела? Давно не виделись.",
    "مرحبا، كيف حالك اليوم؟",
    "Remember: the key is under the flowerpot 🌼, not the mat.",
    "Zoë said the crème brûlée was perfect — façade or not.",
    "Tomorrow I'll try the new recipe: ramen 🍜 with miso.",
    "Quote of the day: “Simplicity is the soul of efficiency.”",
    "Tab\tseparated and line\nbreaks and a backslash \\ and \"quotes\".",
    "Numbers: 3.14159, 2.71828, 1e-9, −42, ½, ⅓.",
)
NAMES = ("Élodie", "Kenji 健二", "Zoë 🌙", "Amara", "Søren", "李白", "Mateus", "Aurélie", "Noor", "Björk")
UNSAFE_USERNAMES = ("../x", "a/b", "名前", "long-" + "x" * 295, ".hidden", "CON", "Sam", "sam")
# What a user who does not own a personality sees of its profile: who it is, how it presents itself, its
# pictures; not its prompts, model settings or other switches (the owner's).
PUBLIC_PROFILE_KEYS = ("id", "name", "username", "avatar", "avatar_url", "created_at", "created_by", "tagline",
                       "search_description", "search_tags_v2", "keywords", "example_prompts", "typical_phrases",
                       "character_universe", "birthday", "banner", "screenshots", "description", "tags")
FILES_BASE = "https://files.example.com"  # until a running sandbox puts its file host here
ATTACHMENT_TYPES = (("image/png", ".png"), ("image/jpeg", ".jpg"), ("audio/mp3", ".mp3"))
HOSTILE_TEXT = ("<script>alert(1)</script> <img src=x onerror=alert(1)> [click me](javascript:alert(1)) "
                "<a href=\"javascript:alert(2)\">two</a> **bold** `code` </li></ol><h1>broken out</h1>")
HOSTILE_MEDIA_URLS = ("file:///etc/passwd", "javascript:alert(1)", "/relative/shot.png",
                      "data:image/gif;base64,R0lGODlhAQABAAAAACw=")


def _seed_int(*parts: Any) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _hex(*parts: Any) -> str:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _corpus(seed: int) -> str:
    rng = random.Random(f"corpus:{seed}")
    parts = list(PHRASES) * 40
    rng.shuffle(parts)
    return " ".join(parts)


class Text:
    """Cheap unicode text of a wanted length: a slice of a shuffled multilingual corpus."""

    def __init__(self, seed: int):
        self.corpus = _corpus(seed)

    def __call__(self, rng: random.Random, low: int, high: int) -> str:
        length = rng.randint(low, high)
        start = rng.randrange(len(self.corpus) - high)
        return self.corpus[start : start + length].strip()


def iso(ts: float, zulu: bool) -> str:
    text = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z") if zulu else text


class Series:
    """Timestamps sorted oldest first, plus a builder turning ``(origin, ts)`` into an item; ``origin``
    is the item's position when it was made, so deleting items leaves the others as they were."""

    def __init__(self, times: list[float], build: Callable[[int, float], dict]):
        self._generated = times
        self.times = list(times)
        self.origins = list(range(len(times)))
        self._next = len(times)
        self._build = build

    def __len__(self) -> int:
        return len(self.times)

    def item(self, position: int) -> dict:
        return self._build(self.origins[position], self.times[position])

    def newest_first(self, hi: int, lo: int) -> list[dict]:
        return [self.item(p) for p in range(hi - 1, lo - 1, -1)]

    def append_newest(self, count: int) -> None:
        for _ in range(count):
            last = self.times[-1] if self.times else EPOCH
            self.times.append(round(last + 1.0 + (len(self.times) % 97) / 100.0, 5))
            self.origins.append(self._next)
            self._next += 1

    def insert_oldest(self, count: int) -> None:
        """Add ``count`` items older than every other (an import of old memories, say)."""
        first = self.times[0] if self.times else EPOCH
        for k in range(count, 0, -1):
            self.times.insert(0, round(first - 60.0 * k, 5))
            self.origins.insert(0, self._next)
            self._next += 1

    def delete_newest(self, count: int) -> None:
        """Remove the ``count`` newest items: every older one moves up ``count`` places."""
        keep = max(0, len(self.times) - count)
        del self.times[keep:], self.origins[keep:]

    def set_ties(self, on: bool) -> None:
        """Make small groups share one ts across each 50-item edge of the natural newest-first paging."""
        n = len(self._generated)
        times = list(self._generated)
        if on:
            for k, edge in enumerate(range(n - CHAT_MAX, 0, -CHAT_MAX)):
                left, right = 1 + k % 3, 1 + (k + 1) % 3
                if edge - left < 0 or edge + right > n:
                    continue
                times[edge - left : edge + right] = [times[edge - left]] * (left + right)
        self.times[:n] = times[: len(self.times)]


def _timeline(rng: random.Random, count: int, start: float, mean_gap: float) -> list[float]:
    times, t = [], start
    for _ in range(count):
        t += rng.expovariate(1.0 / mean_gap) + 0.01
        times.append(round(t, 5))
    return times


@dataclass
class Personality:
    index: int
    id: str
    name: str
    username: str
    created_at: float
    knowledge_shape: str
    training_shape: str
    pagination: str | None
    knowledge: list[dict]
    training: list[dict]
    user: dict
    profile_extra: dict
    memories: Series = field(repr=False)
    messages: Series = field(repr=False)
    fixed_username: bool = False
    owner_id: str = ""  # another owner's id: a personality the user talked to but does not own
    memory_edits: dict[int, dict] = field(default_factory=dict)  # origin -> fields changed on the service


class World:
    """All generated data plus the mutations the control surface offers; thread-safe."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.lock = threading.RLock()
        self.text = Text(config.seed)
        self.iso_share = config.iso_dates  # the iso_dates knob, read while rendering memories
        self.hostile_media = config.hostile_media_urls  # likewise, read while rendering profiles
        self.extra_media = [u.strip() for u in config.extra_media_urls.split(",") if u.strip()]
        self.hostile_text = config.hostile_text
        self.drift = config.drift
        self.today = config.records == "2026"  # the record shapes of today's service, else 2025's
        self.files_base = FILES_BASE
        rng = random.Random(f"owner:{config.seed}")
        self.owner_id = _uuid(rng)
        self.personalities = [self._make(i) for i in range(config.personalities)]
        # others' personalities come after the owner's in index (their data does not move the owner's)
        self.others = [self._make(i, _uuid(random.Random(f"other-owner:{config.seed}:{i}")))
                       for i in range(config.personalities, config.personalities + config.others)]
        self._unsafe = False
        self._ties = False
        self._by_username: dict[str, Personality] = {}
        self.set_unsafe_usernames(config.unsafe_usernames)
        self.set_ties(config.ts_ties)

    # -- generation ---------------------------------------------------------------------------
    def _make(self, i: int, owner_id: str = "") -> Personality:
        cfg = self.config
        spec = dict(cfg.overrides.get(i, {}))
        empty = cfg.empty_last and cfg.personalities >= 2 and i == cfg.personalities - 1
        rng = random.Random(_seed_int(cfg.seed, i, "personality"))
        pid = _uuid(rng)
        name = spec.get("name") or f"{NAMES[i % len(NAMES)]}{'' if i < len(NAMES) else f' {i}'}"
        username = spec.get("username") or f"{'shared' if owner_id else 'persona'}-{i}-{rng.randrange(16**4):04x}"
        n_memories = int(spec.get("memories", 0 if empty else cfg.memories))
        n_messages = int(spec.get("messages", 0 if empty else cfg.messages))
        k_shape = spec.get("knowledge_shape") or ("items" if empty else KNOWLEDGE_SHAPES[i % len(KNOWLEDGE_SHAPES)])
        t_shape = spec.get("training_shape") or ("array" if empty else TRAINING_SHAPES[i % len(TRAINING_SHAPES)])
        n_knowledge = 1 if k_shape == "single" else int(spec.get("knowledge", 0 if empty else 2 + i % 4))
        n_training = 1 if t_shape == "single" else int(spec.get("training", 0 if empty else 1 + i % 3))
        start = EPOCH + i * 3600.0
        memory_base = _seed_int(cfg.seed, i, "memory")
        message_base = _seed_int(cfg.seed, i, "message")
        return Personality(
            index=i,
            id=pid,
            name=name,
            username=username,
            created_at=round(start - 86400.0, 5),
            knowledge_shape=k_shape,
            training_shape=t_shape,
            pagination=spec.get("pagination"),
            knowledge=[self._knowledge_entry(rng, start, pid) for _ in range(n_knowledge)],
            training=[self._training_entry(rng) for _ in range(n_training)],
            user={} if spec.get("user_empty", empty) else self._user(rng),
            profile_extra=self._profile_extra(rng, name, i, owner_id or self.owner_id),
            memories=Series(_timeline(rng, n_memories, start, 3600.0),
                            lambda p, t: self._edited(i, self._memory(memory_base, p, t, pid), p)),
            messages=Series(_timeline(rng, n_messages, start, 600.0), lambda p, t: self._message(message_base, p, t)),
            fixed_username="username" in spec,
            owner_id=owner_id,
        )

    def _knowledge_entry(self, rng: random.Random, start: float, pid: str) -> dict:
        if self.today:
            return records.knowledge_entry(rng, uuid=_uuid, text=self.text, shape_id=pid, start=start)
        return {
            "id": _uuid(rng),
            "title": self.text(rng, 10, 60),
            "content": self.text(rng, 100, 1500),
            "created_at": round(start - rng.uniform(0, 86400), 5),
            "source_url": rng.choice([None, "https://docs.example.com/page"]),
            "x_tokens": rng.randint(10, 900),
        }

    def _training_entry(self, rng: random.Random) -> dict:
        return {
            "id": _uuid(rng),
            "question": self.text(rng, 10, 200),
            "answer": self.text(rng, 50, 800),
            "x_weight": round(rng.random(), 3),
        }

    def _user(self, rng: random.Random) -> dict:
        if self.today:
            return records.personalization(rng, self.text)
        return {
            "nickname": rng.choice(("Sam", "Élo", "小明", "K")),
            "about_me": self.text(rng, 40, 400),
            "preferences": {"language": rng.choice(("en", "fr", "ja")), "tone": {"formal": rng.random() < 0.5}},
            "x_custom_fields": [{"key": "favourite_colour", "value": "bleu 💙"}],
        }

    def _profile_extra(self, rng: random.Random, name: str, index: int, owner_id: str) -> dict:
        if self.today:
            avatar_path = f"/avatars/{rng.getrandbits(32):08x}.png"
            fields = records.profile_fields(rng, self.text, name=name, owner_id=owner_id,
                                            avatar=FILES_BASE + avatar_path, files=FILES_BASE, index=index)
            return {**fields, "avatar_path": avatar_path}
        return {
            "description": self.text(rng, 50, 500),
            "avatar_path": f"/avatars/{rng.getrandbits(32):08x}.png",
            "tags": rng.sample(["friend", "coach", "writer", "日本語", "🎲"], 2),
            "settings": {
                "model": {"name": rng.choice(("gpt-x", "claude-y", "local-z")), "temperature": round(rng.random(), 2)},
                "voice": {"enabled": rng.random() < 0.5, "voice_id": f"v-{rng.randrange(100)}"},
                "behaviour": {
                    "initial_message": self.text(rng, 20, 200),
                    "custom_instructions": self.text(rng, 100, 1200),
                    "nested": {"deep": {"list": [1, 2.5, {"k": "ünïcödé"}, None, True]}},
                },
            },
            "x_experimental": {"flags": ["a", "b"], "since": "2024-01-01"},
        }

    def _edited(self, index: int, item: dict, origin: int) -> dict:
        edits = self.personalities[index].memory_edits if index < len(getattr(self, "personalities", [])) else {}
        return {**item, **edits[origin]} if origin in edits else item

    def _memory(self, base: int, position: int, ts: float, pid: str) -> dict:
        rng = random.Random(base + position)
        share = self.iso_share
        iso_date = bool(share and (position * 2654435761 % 1000) < share * 1000)
        if self.today:
            return records.memory(rng, uuid=_uuid, text=self.text, shape_id=pid, owner_id=self.owner_id,
                                  position=position, ts=ts, created_at=iso(ts, zulu=position % 2 == 0) if iso_date else ts,
                                  result=HOSTILE_TEXT if self.hostile_text and position == 0 else None)
        item: dict[str, Any] = {
            "id": _uuid(rng),
            "created_at": ts,
            "content": self.text(rng, 30, 600),
            "kind": rng.choice(("fact", "preference", "event")),
            "importance": round(rng.random(), 3),
            "x_embedding": {"model": "emb-3", "dim": 768},
        }
        if iso_date:
            item["created_at"] = iso(ts, zulu=position % 2 == 0)
        if self.hostile_text and position == 0:
            item["content"] = HOSTILE_TEXT
        return item

    def _message(self, base: int, position: int, ts: float) -> dict:
        rng = random.Random(base + position)
        mid = _uuid(rng)
        attachment = rng.random() < self.config.attachments
        kind, ext = ATTACHMENT_TYPES[int(_hex(mid, "type"), 16) % len(ATTACHMENT_TYPES)]
        files = self.files_base
        hostile = self.hostile_text and position == 0
        return {
            "id": mid,
            "message": "" if rng.random() < 0.02 else HOSTILE_TEXT if hostile else self.text(rng, 10, 300),
            "reply": HOSTILE_TEXT if hostile else self.text(rng, 40, 1500),
            "ts": ts,
            "voice_reply_url": f"{files}/voice/{mid}.mp3" if rng.random() < self.config.voice_replies else None,
            "attachment_url": f"{files}/att/{mid}{ext}" if attachment else None,
            "attachment_type": kind if attachment else None,
            "regenerated_replies": [self.text(rng, 40, 300)] if rng.random() < 0.1 else [],
            "fallback_model_used": rng.random() < 0.05,
            "x_meta": {"tokens": rng.randint(5, 900), "reaction": rng.choice((None, "👍", "❤️"))},
        }

    # -- knob-driven data changes ---------------------------------------------------------------
    def set_ties(self, on: bool) -> None:
        with self.lock:
            if on != self._ties:
                for p in self.personalities:
                    p.messages.set_ties(on)
                self._ties = on

    def set_unsafe_usernames(self, on: bool) -> None:
        with self.lock:
            self._unsafe = on
            self._by_username = {self.username(p): p for p in self.everyone}

    @property
    def everyone(self) -> list[Personality]:
        """The owner's personalities, then the others' the user talked to."""
        return self.personalities + self.others

    def owns(self, p: Personality) -> bool:
        return not p.owner_id

    def username(self, p: Personality) -> str:
        if self._unsafe and self.owns(p) and not p.fixed_username and p.index < len(UNSAFE_USERNAMES):
            return UNSAFE_USERNAMES[p.index]
        return p.username

    # -- look-ups -------------------------------------------------------------------------------
    def by_id(self, pid: str) -> Personality | None:
        return next((p for p in self.everyone if p.id == pid), None)

    def by_username(self, username: str) -> Personality | None:
        return self._by_username.get(username)

    def find(self, key: Any) -> Personality | None:
        """A personality by id, username or index (control surface convenience)."""
        if isinstance(key, int) and not isinstance(key, bool):
            return self.everyone[key] if 0 <= key < len(self.everyone) else None
        return self.by_id(str(key)) or self.by_username(str(key))

    # -- answers --------------------------------------------------------------------------------
    def list_entry(self, p: Personality) -> dict:
        return {
            "id": p.id,
            "name": p.name,
            "username": self.username(p),
            "avatar_url": self.files_base + p.profile_extra["avatar_path"],
            "created_at": p.created_at,
            "x_badges": ["owner"] if self.owns(p) else [],
        }

    def listing(self, category: str | None) -> list[dict]:
        """``self``: the owner's; ``recent``: the two the user talked to last of their own, then the others'."""
        mine = [self.list_entry(p) for p in self.personalities]
        if category in (None, "", "self"):
            return mine
        if category == "recent":
            return mine[:2] + [self.list_entry(p) for p in self.others]
        return []

    def profile(self, p: Personality) -> dict:
        """The whole profile for its owner; the public part of it for anyone else."""
        if not self.owns(p):
            return {k: v for k, v in self.owned_profile(p).items() if k in PUBLIC_PROFILE_KEYS}
        return self.owned_profile(p)

    def owned_profile(self, p: Personality) -> dict:
        extra = {k: v for k, v in p.profile_extra.items() if k != "avatar_path"}
        profile = {
            "id": p.id,
            "name": p.name,
            "username": self.username(p),
            "user_id": self.owner_id,
            "created_at": p.created_at,
            **extra,
            **self.profile_media(p),
        }
        return records.drifted(profile) if self.today and self.drift else profile

    def profile_media(self, p: Personality) -> dict:
        """The profile's media fields, on the file host (the same URL twice, as the service does)."""
        files, h = self.files_base, _hex(p.id, "media")
        avatar = files + p.profile_extra["avatar_path"]
        shots = [{"id": f"shot-{k}", "url": f"{files}/shots/{h}-{k}.png", "caption": f"Screenshot {k}"}
                 for k in (1, 2)]
        if self.hostile_media and p.index == 0:
            shots += [{"id": f"odd-{k}", "url": url, "caption": "odd"} for k, url in enumerate(HOSTILE_MEDIA_URLS)]
            secret = files.replace("://", "://sandbox-user:s3cr3t-pass@", 1)  # a real file, behind credentials
            shots.insert(-1, {"id": "odd-credentials", "url": f"{secret}/shots/{h}-secret.png", "caption": "odd"})
        if p.index == 0:
            shots += [{"id": f"extra-{k}", "url": url, "caption": "extra"} for k, url in enumerate(self.extra_media)]
        return {"avatar_url": avatar, "avatar": avatar, "banner": f"{files}/banners/{h}.jpg",
                "voice_file": f"{files}/voices/{h}.ogg", "screenshots": shots}

    def memory_page(self, p: Personality, page: int, per_page: int, style: str) -> dict:
        if self.today:
            per_page = min(per_page, records.MEMORY_PAGE_MAX)  # whatever limit asks
        with self.lock:
            total = len(p.memories)
            hi = max(0, total - (page - 1) * per_page)
            items = p.memories.newest_first(hi, max(0, hi - per_page))
        pages = math.ceil(total / per_page)
        if self.today and style == "pagination":  # as the service sends them now
            pagination: dict[str, Any] = {"page": page, "total_pages": pages, "has_next": page < pages}
            if p.index % 3 == 2:  # some answers give no page count
                del pagination["total_pages"]
            return {"memories" if p.index % 2 else "items": items, "pagination": pagination}
        if style == "camel":
            return {"items": items, "pagination": {"page": page, "totalPages": pages, "total": total, "perPage": per_page}}
        snake = {"page": page, "total_pages": pages, "total": total, "per_page": per_page}
        if style == "meta":
            return {"items": items, "meta": {"pagination": snake}}
        return {"items": items, "pagination": snake}

    def chat_history(self, p: Personality, before_ts: float | None, limit: int) -> list[dict]:
        with self.lock:
            times = p.messages.times
            hi = len(times) if before_ts is None else bisect.bisect_left(times, before_ts)
            return p.messages.newest_first(hi, max(0, hi - limit))

    @staticmethod
    def shaped(entries: list[dict], shape: str) -> Any:
        if shape == "array":
            return list(entries)
        if shape == "single":
            return dict(entries[0]) if entries else {}
        if shape == "items":
            return {"items": list(entries), "total": len(entries), "x_version": 2}
        return {shape: list(entries), "x_version": 2}

    def knowledge_entries(self, p: Personality) -> list[dict]:
        """Knowledge as served: every other entry (by id) carries an image on the file host."""
        return [dict(e, image_url=f"{self.files_base}/kb/{e['id']}.png") if int(_hex(e["id"]), 16) % 2 else dict(e)
                for e in p.knowledge]

    def knowledge(self, p: Personality) -> Any:
        return self.shaped(self.knowledge_entries(p), p.knowledge_shape)

    def training(self, p: Personality) -> Any:
        return self.shaped(p.training, p.training_shape)

    # -- mutations and ground truth --------------------------------------------------------------
    def add(self, p: Personality, memories: int = 0, messages: int = 0) -> None:
        with self.lock:
            p.memories.append_newest(memories)
            p.messages.append_newest(messages)

    def grow(self) -> None:
        with self.lock:
            for p in self.personalities:
                self.add(p, 1, 1)

    def edit(self, p: Personality, profile: dict | None = None, knowledge: list | None = None,
             memory: tuple[int, dict] | None = None, old_memories: int = 0) -> None:
        """Change what the service holds, as its owner would: profile fields, the knowledge entries,
        one memory (``(position from the newest, fields)``), or memories older than all others."""
        with self.lock:
            if profile:
                p.profile_extra.update(profile)
            if knowledge is not None:
                p.knowledge = list(knowledge)
            if memory is not None:
                position, fields = memory
                p.memory_edits[p.memories.origins[len(p.memories) - 1 - position]] = dict(fields)
            if old_memories:
                p.memories.insert_oldest(old_memories)

    def delete_memories(self, count: int) -> None:
        """Delete the ``count`` newest memories of every personality (as a user deleting them would)."""
        with self.lock:
            for p in self.personalities:
                p.memories.delete_newest(count)

    def totals(self) -> dict:
        with self.lock:
            rows = [
                {
                    "id": p.id,
                    "username": self.username(p),
                    "name": p.name,
                    "memories": len(p.memories),
                    "messages": len(p.messages),
                    "knowledge": len(p.knowledge),
                    "training": len(p.training),
                    "user_keys": len(p.user),
                }
                for p in self.everyone
            ]
        mine, others = rows[: len(self.personalities)], rows[len(self.personalities):]
        sums = {k: sum(r[k] for r in mine) for k in ("memories", "messages", "knowledge", "training", "user_keys")}
        return {"personalities": mine, "sum": dict(sums, personalities=len(mine)), "others": others}

    def export(self, p: Personality) -> dict:
        """The whole truth about one personality, newest first, as the API would serve it."""
        with self.lock:
            return {
                "list_entry": self.list_entry(p),
                "profile": self.profile(p),
                "memories": p.memories.newest_first(len(p.memories), 0),
                "messages": p.messages.newest_first(len(p.messages), 0),
                "knowledge": self.knowledge(p),
                "knowledge_entries": self.knowledge_entries(p),
                "training": self.training(p),
                "training_entries": list(p.training),
                "user": dict(p.user),
            }
