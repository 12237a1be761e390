"""Records as today's service sends them (2026; shared/service-api.md, "Records as the service sends them
now"), built from the same seeded randomness as the 2025 shapes in ``data.py``:

- a memory: ``{"id": "<uuid>/<uuid>", "shape_id", "senders", "result", "summary_type", "deleted",
  "metadata": {"start_ts", "end_ts", "created_at", "senders", "discord_channel_id", "discord_guild_id",
  "msg_ids"}}``, no top-level ``created_at``; a few ``deleted: true``, empty channel ids;
- a profile of ~170 fields (identity, prompting, ``personality_*``, ``engine_*``, memory, voice, image...);
- knowledge entries with ``story_type``, ``title``, ``content``; personalization with ``backstory``,
  ``preferred_name``, ``pronouns`` and per-user ``engine_*`` overrides.

``drift`` (a knob) makes a profile lose ``ltm_enabled`` and call ``user_prompt`` ``user_prompt_v2``, as
the service has changed without notice before.
"""

from __future__ import annotations

import random
from typing import Any, Callable

MEMORY_PAGE_MAX = 20  # the service caps a memory page at 20, whatever limit asks
DELETED_EVERY = 17  # one memory in 17 is deleted (kept by the service, flagged)
STORY_TYPES = ("general", "command", "relationship")
PRONOUNS = ("she/her", "he/him", "they/them")
ENGINES = ("openai/gpt-4o", "anthropic/claude-3.5-sonnet", "google/gemini-2.0-flash", "meta/llama-3.3-70b")


def memory(rng: random.Random, *, uuid: Callable[[random.Random], str], text: Callable, shape_id: str,
           owner_id: str, position: int, ts: float, created_at: Any, result: str | None = None) -> dict:
    first, last = uuid(rng), uuid(rng)
    senders = [owner_id, shape_id]
    span = rng.uniform(60, 3600)
    channel = "" if position % 3 else str(10**17 + rng.randrange(10**17))
    return {
        "id": f"{first}/{last}",
        "shape_id": shape_id,
        "senders": senders,
        "result": result if result is not None else text(rng, 30, 600),
        "summary_type": "automatic",
        "deleted": position % DELETED_EVERY == 5,
        "metadata": {
            "start_ts": round(ts - span, 5),
            "end_ts": round(ts - rng.uniform(1, 30), 5),
            "created_at": created_at,
            "senders": senders,
            "discord_channel_id": channel,
            "discord_guild_id": "",
            "msg_ids": [first, *(uuid(rng) for _ in range(rng.randint(0, 3))), last],
        },
    }


def profile_fields(rng: random.Random, text: Callable, *, name: str, owner_id: str, avatar: str, files: str,
                   index: int) -> dict:
    """Every field of a 2026 profile but the identity ones the caller adds (``id``, ``name``, ``username``)."""
    def words(low: int, high: int) -> str:
        return text(rng, low, high)

    examples = "\n".join(f"{{{{user}}}}: {words(10, 60)}\n{{{{char}}}}: {words(20, 120)}" for _ in range(2))
    fields: dict[str, Any] = {
        "avatar": avatar, "avatar_url": avatar, "created_by": owner_id, "user_id": owner_id,
        # prompting
        "jailbreak": f"You are {name}. " + words(100, 800),
        "user_prompt": words(100, 1200),
        "personality_traits": words(20, 200), "personality_tone": words(10, 120),
        "personality_age": str(18 + rng.randrange(60)), "personality_appearance": words(20, 300),
        "personality_likes": words(10, 200), "personality_dislikes": words(10, 200),
        "personality_conversational_goals": words(20, 300),
        "personality_conversational_examples": examples,
        "personality_history": words(50, 800),
        # model
        "engine_model": ENGINES[index % len(ENGINES)], "fallback_engine_model": ENGINES[(index + 1) % len(ENGINES)],
        "engine_temperature": round(rng.uniform(0.2, 1.4), 2), "engine_top_p": round(rng.uniform(0.5, 1), 2),
        "engine_top_k": rng.randrange(1, 100), "engine_frequency_penalty": round(rng.uniform(0, 1), 2),
        "engine_presence_penalty": round(rng.uniform(0, 1), 2), "engine_repetition_penalty": round(rng.uniform(1, 1.3), 2),
        "engine_min_p": round(rng.uniform(0, 0.2), 3), "engine_top_a": round(rng.uniform(0, 0.5), 3),
        # memory
        "stm_window": rng.randrange(5, 60), "ltm_enabled": True, "ltm_threshold": round(rng.uniform(0.5, 0.9), 2),
        "ltm_max_retrieved_summaries": rng.randrange(3, 12),
        # voice and image
        "voice_model": "eleven_multilingual_v2", "voice_id": f"v-{rng.randrange(10**6):06d}",
        "voice_file": f"{files}/voices/{rng.getrandbits(32):08x}.ogg", "voice_frequency": round(rng.random(), 2),
        "voice_stability": round(rng.random(), 2), "voice_similarity": round(rng.random(), 2),
        "voice_style": round(rng.random(), 2), "image_model": "flux-1.1-pro", "image_size": "1024x1024",
        # the rest
        "error_message": words(10, 80), "wack_message": words(10, 80), "sleep_message": words(10, 80),
        "birthday": f"{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        "favorite_reacts": rng.sample(["👍", "❤️", "😂", "🔥", "🌙", "✨"], 3),
        "keywords": rng.sample(["friend", "coach", "writer", "日本語", "music", "space"], 3),
        "search_description": words(20, 200), "search_tags_v2": rng.sample(["chat", "rp", "helper", "fun"], 2),
        "tagline": words(10, 60), "typical_phrases": [words(5, 40) for _ in range(3)],
        "example_prompts": [words(10, 60) for _ in range(2)], "character_universe": words(10, 120),
        "character_background": words(30, 300), "timezone": rng.choice(("Europe/Paris", "Asia/Tokyo", "UTC")),
        "shape_settings": {"shape_initial_message": f"Hi, I'm {name}! " + words(10, 120),
                           "status": rng.choice(("online", "away")), "appearance": words(10, 100)},
    }
    # Plausible others, up to the ~173 a real profile has: switches, limits and labels the backup keeps as is.
    for k in range(173 - len(fields) - 3):
        kind = k % 4
        fields[f"setting_{k:03d}"] = (rng.random() < 0.5 if kind == 0 else rng.randrange(1000) if kind == 1
                                      else round(rng.random(), 3) if kind == 2 else words(3, 30))
    return fields


def drifted(profile: dict) -> dict:
    """The profile as after an unannounced change: ``ltm_enabled`` gone, ``user_prompt`` renamed."""
    changed = {k: v for k, v in profile.items() if k not in ("ltm_enabled", "user_prompt")}
    changed["user_prompt_v2"] = profile.get("user_prompt")
    return changed


def knowledge_entry(rng: random.Random, *, uuid: Callable, text: Callable, shape_id: str, start: float) -> dict:
    kind = rng.choice(STORY_TYPES)
    return {
        "id": uuid(rng),
        "shape_id": shape_id,
        "story_type": kind,
        "title": "" if kind == "general" and rng.random() < 0.3 else text(rng, 10, 60),
        "content": text(rng, 100, 1500),
        "metadata": {"created_at": round(start - rng.uniform(0, 86400), 5), "source": rng.choice(("dashboard", "api"))},
    }


def personalization(rng: random.Random, text: Callable) -> dict:
    return {
        "backstory": text(rng, 40, 400),
        "preferred_name": rng.choice(("Sam", "Élo", "小明", "K")),
        "pronouns": rng.choice(PRONOUNS),
        "engine_temperature": round(rng.uniform(0.2, 1.2), 2),
        "engine_model": None,
    }
