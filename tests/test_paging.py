"""Where memory and chat-history paging goes next and where it stops (tzcrawl.paging, pure)."""

from __future__ import annotations

import random

import pytest

from tzcrawl.paging import MAX_PAGES, Fail, Held, Next, Stop, next_before_ts, next_memory_page, reached_held

LIMIT = 50


def key(memory: dict):
    return memory.get("created_at")


def mems(*pairs) -> list[dict]:
    return [{"id": ident, "created_at": ts} for ident, ts in pairs]


# -- reached_held -----------------------------------------------------------------------------------

def test_reached_held_is_false_when_nothing_is_held():
    assert reached_held([(1.0, "a"), (0.0, "b")], Held()) is False
    assert Held().empty and not Held(0.0).empty


def test_reached_held_on_an_older_item():
    held = Held(100.0, frozenset({"h"}))
    assert reached_held([(150.0, "x"), (99.999, "y")], held) is True


def test_reached_held_on_the_held_id_at_the_equal_timestamp():
    held = Held(100.0, frozenset({"h1", "h2"}))
    assert reached_held([(150.0, "x"), (100.0, "h2")], held) is True


def test_not_reached_by_a_new_id_at_the_equal_timestamp():
    held = Held(100.0, frozenset({"h1"}))
    assert reached_held([(150.0, "x"), (100.0, "new")], held) is False


def test_items_without_a_usable_timestamp_say_nothing():
    held = Held(100.0, frozenset({"h"}))
    # "h" is the held id, but without a key it cannot be placed: it must not stop the walk.
    assert reached_held([(None, "h"), (None, "old"), (200.0, "x")], held) is False


# -- memories ---------------------------------------------------------------------------------------

def page_decision(page, items, total_pages=None, *, new_ids=None, held=Held(), full=False):
    return next_memory_page(page, items, total_pages, new_ids=len(items) if new_ids is None else new_ids,
                            held=held, full=full, key=key)


def test_memory_empty_page_stops():
    assert page_decision(1, [], 5) == Stop("empty page")
    assert page_decision(3, [], None, new_ids=0) == Stop("empty page")


def test_memory_next_page_while_pages_remain():
    assert page_decision(1, mems(("a", 10.0)), 3) == Next(2)
    assert page_decision(2, mems(("b", 9.0)), 3) == Next(3)


def test_memory_last_page_by_total_pages():
    assert page_decision(3, mems(("c", 8.0)), 3) == Stop("last page")
    # a page count that shrank under us (memories deleted meanwhile) also stops
    assert page_decision(4, mems(("d", 7.0)), 3) == Stop("last page")


def test_memory_without_page_count_continues_while_pages_bring_new_ids():
    assert page_decision(7, mems(("a", 10.0), ("b", 9.0)), None, new_ids=2) == Next(8)
    # pages shift while memories are written: one new id is enough to go on
    assert page_decision(7, mems(("a", 10.0), ("b", 9.0)), None, new_ids=1) == Next(8)


def test_memory_repeated_page_without_page_count_fails_instead_of_looping():
    decision = page_decision(4, mems(("a", 10.0)), None, new_ids=0)
    assert isinstance(decision, Fail)
    assert "page 4" in decision.reason


def test_memory_repeated_page_with_page_count_is_bounded_by_it():
    # with a page count, a shifted page that brings nothing new is not an error: total_pages bounds the walk
    assert page_decision(2, mems(("a", 10.0)), 5, new_ids=0) == Next(3)


def test_memory_page_bound():
    assert isinstance(page_decision(MAX_PAGES, mems(("a", 1.0)), None), Fail)
    assert page_decision(MAX_PAGES - 1, mems(("a", 1.0)), None) == Next(MAX_PAGES)


def test_memory_incremental_stop_on_an_older_memory():
    held = Held(100.0, frozenset({"h"}))
    items = mems(("n1", 120.0), ("n2", 110.0), ("o", 90.0))
    assert page_decision(1, items, 9, held=held) == Stop("reached the memories already backed up")


def test_memory_incremental_stop_on_the_held_newest_id_at_equal_timestamp():
    held = Held(100.0, frozenset({"h"}))
    items = mems(("n1", 120.0), ("h", 100.0))
    assert page_decision(1, items, 9, held=held) == Stop("reached the memories already backed up")


def test_memory_incremental_continues_past_a_new_id_at_the_held_timestamp():
    held = Held(100.0, frozenset({"h"}))
    items = mems(("n1", 120.0), ("tie", 100.0))
    assert page_decision(1, items, 9, held=held) == Next(2)


def test_memory_incremental_does_not_stop_on_unusable_timestamps():
    held = Held(100.0, frozenset({"h"}))
    items = [{"id": "h", "created_at": None}, {"id": "x", "created_at": None}, {"id": "n", "created_at": 130.0}]
    assert page_decision(1, items, 9, held=held) == Next(2)


def test_memory_incremental_stop_wins_over_a_repeated_page():
    held = Held(100.0, frozenset({"h"}))
    assert page_decision(2, mems(("o", 50.0)), None, new_ids=0, held=held) == Stop(
        "reached the memories already backed up")


def test_memory_full_run_never_stops_early():
    held = Held(100.0, frozenset({"h"}))
    items = mems(("h", 100.0), ("o", 10.0))
    assert page_decision(1, items, 9, held=held, full=True) == Next(2)
    assert page_decision(9, items, 9, held=held, full=True) == Stop("last page")
    assert isinstance(page_decision(2, items, None, new_ids=0, held=held, full=True), Fail)


# -- chat history: single decisions ---------------------------------------------------------------

def ts_decision(batch_ts, before_ts=None, held=Held(), full=False, limit=LIMIT):
    return next_before_ts(batch_ts, limit=limit, before_ts=before_ts, held=held, full=full)


def test_history_empty_batch_stops():
    assert ts_decision([]) == Stop("empty batch")
    assert ts_decision([], before_ts=5.0, held=Held(1.0)) == Stop("empty batch")


@pytest.mark.parametrize("batch", [[100.0, 90.0], [99.0, 95.0, 100.0]])
def test_history_batch_at_or_after_before_ts_fails(batch):
    decision = ts_decision(batch, before_ts=100.0)
    assert isinstance(decision, Fail)
    assert "before_ts=100.0" in decision.reason


def test_history_short_batch_next_before_ts_is_its_oldest():
    assert ts_decision([30.0, 20.0, 20.0, 10.5]) == Next(10.5)
    assert ts_decision([30.0, 20.0, 10.5], before_ts=31.0) == Next(10.5)


def test_history_full_batch_next_before_ts_is_the_second_smallest_distinct_ts():
    batch = [float(100 - i) for i in range(47)] + [53.0, 53.0, 53.0]  # 100..54, then a cut group at 53
    assert len(batch) == LIMIT and min(batch) == 53.0
    assert ts_decision(batch) == Next(54.0)


def test_history_full_batch_ties_at_the_edge_are_refetched():
    # 40 messages at 20.0 and 10 at 10.0; the server may hold more at 10.0 beyond the limit
    batch = [20.0] * 40 + [10.0] * 10
    assert ts_decision(batch) == Next(20.0)  # asks ts < 20.0: the whole 10.0 group again


def test_history_full_batch_of_one_single_ts_fails():
    decision = ts_decision([7.0] * LIMIT)
    assert isinstance(decision, Fail)
    assert "7.0" in decision.reason


def test_history_incremental_stop_only_strictly_below_held_newest():
    held = Held(100.0, frozenset({"h"}))
    # oldest equals the held newest: the held ts group may be cut, keep going
    assert ts_decision([120.0, 110.0, 100.0], held=held) == Next(100.0)
    # full batch whose oldest equals the held newest: keep going too
    full_batch = [float(150 - i) for i in range(49)] + [100.0]
    assert ts_decision(full_batch, held=held) == Next(102.0)
    # strictly below: everything older was taken by the last complete run
    assert ts_decision([120.0, 99.9], held=held) == Stop("reached the messages already backed up")
    assert ts_decision([120.0] * 49 + [99.9], held=held) == Stop("reached the messages already backed up")


def test_history_full_run_ignores_held():
    held = Held(100.0, frozenset({"h"}))
    assert ts_decision([120.0, 99.9], held=held, full=True) == Next(99.9)


# -- chat history: walking a simulated server ------------------------------------------------------

class HistoryServer:
    """The service's history endpoint: newest first, ``ts < before_ts``, at most ``limit``."""

    def __init__(self, messages: list[tuple[float, str]]):
        self.messages = sorted(messages, key=lambda m: (m[0], m[1]), reverse=True)
        self.calls = 0

    def add(self, messages):
        self.__init__(self.messages + list(messages))

    def history(self, before_ts: float | None, limit: int = LIMIT) -> list[tuple[float, str]]:
        self.calls += 1
        return [m for m in self.messages if before_ts is None or m[0] < before_ts][:limit]


def walk(server: HistoryServer, held: Held, full: bool, max_steps: int):
    got: dict[str, float] = {}
    before_ts = None
    for step in range(1, max_steps + 1):
        batch = server.history(before_ts)
        got.update({ident: ts for ts, ident in batch})
        decision = next_before_ts([ts for ts, _ in batch], limit=LIMIT, before_ts=before_ts, held=held, full=full)
        if isinstance(decision, Stop):
            return got, step, decision
        assert isinstance(decision, Next), decision
        assert before_ts is None or decision.value < before_ts  # strictly decreasing: the walk ends
        before_ts = decision.value
    raise AssertionError(f"the walk did not end within {max_steps} requests")


def make_history(rng: random.Random, groups: int, start: float = 1_700_000_000.0, prefix: str = "m"):
    messages, ts = [], start
    for g in range(groups):
        ts += rng.choice([0.001, 0.5, 1.0, 3.25])
        for i in range(rng.choice([1, 1, 1, 2, 3, 5, 10])):  # many ties, each group at most 10
            messages.append((ts, f"{prefix}{g}-{i}"))
    return messages


@pytest.mark.parametrize("seed", range(8))
def test_history_walk_returns_every_message_in_bounded_steps(seed):
    rng = random.Random(seed)
    messages = make_history(rng, groups=rng.randint(150, 400))
    server = HistoryServer(messages)
    n = len(messages)
    # every full batch brings >= LIMIT - 10 messages not seen before (only the last, ≤10-message group repeats)
    bound = n // (LIMIT - 10) + 3
    got, steps, decision = walk(server, Held(), full=False, max_steps=bound)
    assert decision == Stop("empty batch")
    assert set(got) == {ident for _, ident in messages}
    assert steps <= bound


def test_history_walk_with_groups_straddling_every_edge():
    # groups of 7 messages: every 50-message batch cuts a group in two
    messages = [(1000.0 - g, f"g{g}-{i}") for g in range(60) for i in range(7)]
    server = HistoryServer(messages)
    got, steps, _ = walk(server, Held(), full=False, max_steps=100)
    assert len(got) == len(messages) == 420
    assert steps <= 420 // (LIMIT - 7) + 3


def test_history_walk_fails_on_a_group_larger_than_the_limit():
    messages = [(500.0, "new")] + [(400.0, f"tie{i}") for i in range(LIMIT + 5)] + [(300.0, "old")]
    server = HistoryServer(messages)
    before_ts, decisions = None, []
    for _ in range(5):
        batch = server.history(before_ts)
        decision = next_before_ts([ts for ts, _ in batch], limit=LIMIT, before_ts=before_ts, held=Held(), full=False)
        decisions.append(decision)
        if not isinstance(decision, Next):
            break
        before_ts = decision.value
    assert decisions[0] == Next(500.0)
    assert isinstance(decisions[-1], Fail) and len(decisions) == 2


@pytest.mark.parametrize("seed", range(6))
def test_history_incremental_walk_fetches_all_new_messages_and_stops_early(seed):
    rng = random.Random(100 + seed)
    old = make_history(rng, groups=300)
    server = HistoryServer(old)
    first, full_steps, _ = walk(server, Held(), full=False, max_steps=1000)
    assert len(first) == len(old)

    newest = max(ts for ts, _ in old)
    held = Held(newest, frozenset(ident for ts, ident in old if ts == newest))
    # new messages: some at exactly the held newest ts (written in the same instant), the rest newer
    new = [(newest, f"late{i}") for i in range(rng.randint(1, 3))]
    new += make_history(rng, groups=rng.randint(20, 60), start=newest, prefix="n")
    server.add(new)

    got, steps, decision = walk(server, held, full=False, max_steps=1000)
    assert decision == Stop("reached the messages already backed up")
    assert {ident for _, ident in new} <= set(got)
    assert steps < full_steps
    assert steps <= len(new) // (LIMIT - 10) + 3


def test_memory_page_ids_come_from_the_ident_function():
    held = Held(5.0, frozenset({"u5"}))
    items = [{"uuid": "u5", "created_at": 5.0}]
    by_uuid = next_memory_page(1, items, 3, new_ids=1, held=held, full=False,
                               key=lambda m: m["created_at"], ident=lambda m: m["uuid"])
    assert by_uuid == Stop("reached the memories already backed up")
    by_id = next_memory_page(1, items, 3, new_ids=1, held=held, full=False, key=lambda m: m["created_at"])
    assert by_id == Next(2)  # "None" is not a held id


# -- 2026: has_next, and the time under metadata.created_at --------------------------------------------

def test_has_next_is_the_services_word_over_the_page_count():
    items = mems(("a", 3.0), ("b", 2.0))
    common = dict(new_ids=2, held=Held(), full=False, key=key)
    assert next_memory_page(1, items, None, has_next=True, **common) == Next(2)
    assert next_memory_page(1, items, None, has_next=False, **common) == Stop("last page")
    assert next_memory_page(1, items, 5, has_next=False, **common) == Stop("last page")  # no empty page asked
    assert next_memory_page(5, items, 5, has_next=True, **common) == Next(6)  # the count may lag new memories
    assert next_memory_page(5, items, 5, **common) == Stop("last page")


def test_an_incremental_walk_stops_on_a_2026_memory_held():
    from tzcrawl import registry
    from tzcrawl.store.timestamps import to_epoch

    memories = registry.get("memories")
    page = [{"id": "x/y", "result": "new", "metadata": {"created_at": 300.0}},
            {"id": "h/h", "result": "held", "metadata": {"created_at": 200.0}}]
    decision = next_memory_page(1, page, None, new_ids=2, held=Held(200.0, frozenset({"h/h"})), full=False,
                                key=lambda m: to_epoch(memories.time_of(m)), has_next=True)
    assert decision == Stop("reached the memories already backed up")
    assert memories.time_of({"created_at": 5.0, "metadata": {"created_at": 7.0}}) == 7.0
    assert memories.time_of({"created_at": 5.0, "metadata": {}}) == 5.0  # the 2025 field when the new is absent
    assert memories.text_of({"result": "r", "content": "c"}) == "r" and memories.text_of({"content": "c"}) == "c"
