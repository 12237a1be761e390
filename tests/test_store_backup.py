"""BackupStore on real files: layout, permissions, metadata, failures that keep what was saved."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone

import pytest

import tzcrawl
from tzcrawl.store import BackupOwnerMismatch, BackupStore, CorruptCollectionError

ALICE = {"id": "p-1", "username": "alice", "name": "Alice"}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def commit(store, resource, *pages, personality=ALICE, requests=1):
    run = store.begin(personality, resource)
    for page in pages:
        run.add(page)
    return run.commit(requests=requests)


@pytest.fixture
def store(tmp_path):
    return BackupStore(tmp_path / "backups")


def test_layout_and_permissions(store):
    store.save_document(ALICE, "profile", {"id": "p-1", "username": "alice", "x": 1}, 1, 1)
    for resource in ("knowledge", "training", "user_data"):
        store.save_document(ALICE, resource, [{"k": resource}], 1, 1)
    commit(store, "memories", [{"id": "m1", "created_at": 1721828935.24231}])
    commit(store, "messages", [{"id": "c1", "ts": 1.5, "message": "hi", "reply": "hello"}])
    directory = store.root / "alice"
    assert sorted(os.listdir(directory)) == [
        ".backup-metadata.json", "alice.json", "alice_knowledge.json", "alice_memories.json",
        "alice_messages.json", "alice_training.json", "alice_user_data.json",
    ]
    assert sorted(os.listdir(store.root)) == [".locks", "alice"]
    assert os.listdir(store.root / ".locks") == ["alice.lock"]  # locks live apart from the data
    assert mode(store.root) == 0o700 and mode(directory) == 0o700 and mode(store.root / ".locks") == 0o700
    assert mode(store.root / ".locks" / "alice.lock") == 0o600
    for name in os.listdir(directory):
        assert mode(directory / name) == 0o600, name
        json.loads((directory / name).read_text(encoding="utf-8"))  # every file is plain JSON


def test_existing_loose_permissions_are_tightened(tmp_path):
    root = tmp_path / "backups"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    store = BackupStore(root)
    assert mode(root) == 0o700
    store.save_document(ALICE, "profile", {}, 1, 1)
    assert mode(root / "alice") == 0o700


def test_documents_are_saved_exactly_as_received(store):
    for payload in [{"a": [1, {"b": None}], "名": "é", "unknown_field": 1.5}, [], "text", 3, None, {}]:
        store.save_document(ALICE, "knowledge", payload, 7, 2)
        assert store.read_document("alice", "knowledge") == payload
    entry = store.metadata("alice")["resources"]["knowledge"]
    assert entry["total"] == 7 and entry["requests"] == 2 and entry["outcome"] == "complete"
    assert store.read_document("alice", "training") is None


def test_incremental_commits_keep_everything_and_count_new(store):
    first = commit(store, "memories", [{"id": "m3", "created_at": 3}, {"id": "m2", "created_at": 2}],
                   [{"id": "m1", "created_at": "1970-01-01T00:00:01Z", "extra": {"nested": [1]}}], requests=2)
    assert (first["total"], first["new"], first["fetched"]) == (3, 3, 3)
    # the service no longer returns m1, and re-sends m3 with a new field
    second = commit(store, "memories", [{"id": "m4", "created_at": 4}, {"id": "m3", "created_at": 3, "v": 2}])
    assert (second["total"], second["new"]) == (4, 1)
    records = list(store.read_collection("alice", "memories"))
    assert records == [
        {"id": "m1", "created_at": "1970-01-01T00:00:01Z", "extra": {"nested": [1]}},
        {"id": "m2", "created_at": 2},
        {"id": "m3", "created_at": 3, "v": 2},
        {"id": "m4", "created_at": 4},
    ]
    text = store.path("alice", "memories").read_text(encoding="utf-8")
    assert text.startswith("[\n{") and text.endswith("}\n]\n") and text.count("\n") == 6
    held = store.held("alice", "memories")
    assert held.exists and held.incremental and held.total == 4
    assert held.newest_key == 4.0 and held.newest_ids == ["m4"]
    assert store.held("alice", "messages").exists is False


def test_messages_metadata(store):
    commit(store, "messages",
           [{"id": "b", "ts": 1721828936.5, "message": "abc", "reply": "de"},
            {"id": "a", "ts": "2024-07-24T13:48:55.242Z", "message": "x", "reply": None}], requests=3)
    meta = store.metadata("alice")
    entry = meta["resources"]["messages"]
    assert entry["oldest_ts"] == "2024-07-24T13:48:55.242Z" and entry["newest_ts"] == 1721828936.5
    assert entry["newest_ids"] == ["b"] and entry["characters"] == 6 and entry["total"] == 2
    assert entry["requests"] == 3 and entry["outcome"] == "complete" and "last_sync" in entry
    assert meta["personality"] == {"id": "p-1", "username": "alice", "name": "Alice", "dir_name": "alice"}
    assert meta["tool_version"] == tzcrawl.__version__
    assert datetime.fromisoformat(meta["last_backup"]).tzinfo is not None


def test_abort_keeps_the_file_byte_for_byte_and_the_last_good_figures(store):
    commit(store, "messages", [{"id": "a", "ts": 1}, {"id": "b", "ts": 2}], requests=4)
    path = store.path("alice", "messages")
    before = path.read_bytes()
    good = store.metadata("alice")["resources"]["messages"]
    run = store.begin(ALICE, "messages")
    run.add([{"id": "c", "ts": 3}])
    run.abort("HTTP 500 on page 2", requests=2)
    assert path.read_bytes() == before
    entry = store.metadata("alice")["resources"]["messages"]
    assert entry["outcome"] == "failed" and entry["error"] == entry["last_error"] == "HTTP 500 on page 2"
    for key in ("total", "newest_key", "newest_ids", "last_sync", "requests", "characters"):
        assert entry[key] == good[key]
    assert entry["last_attempt_requests"] == 2
    assert not (store.root / "alice" / ".staging").exists()
    run.abort("again", 0)  # a second abort is harmless
    # the next good run clears the error but remembers the last one
    commit(store, "messages", [{"id": "c", "ts": 3}])
    entry = store.metadata("alice")["resources"]["messages"]
    assert entry["outcome"] == "complete" and "error" not in entry and entry["last_error"] == "HTTP 500 on page 2"


def test_record_failure_for_documents_keeps_data(store):
    store.save_document(ALICE, "training", {"t": 1}, 1, 1)
    before = store.path("alice", "training").read_bytes()
    store.record_failure(ALICE, "training", "429 after 3 retries", 4)
    assert store.path("alice", "training").read_bytes() == before
    entry = store.metadata("alice")["resources"]["training"]
    assert entry["outcome"] == "failed" and entry["total"] == 1 and entry["last_attempt_requests"] == 4
    store.record_failure(ALICE, "user_data", "boom", 1)  # never saved before: still recorded
    assert store.metadata("alice")["resources"]["user_data"]["outcome"] == "failed"
    with pytest.raises(ValueError):
        store.record_failure(ALICE, "photos", "x", 1)


def test_a_corrupt_saved_collection_is_never_overwritten(store):
    commit(store, "memories", [{"id": "a", "created_at": 1}])
    path = store.path("alice", "memories")
    path.write_text('[\n{"id": "a", "created_at": 1},\n{"id": "b", "creat', encoding="utf-8")
    before = path.read_bytes()
    run = store.begin(ALICE, "memories")
    run.add([{"id": "c", "created_at": 3}])
    with pytest.raises(CorruptCollectionError):
        run.commit(requests=1)
    assert path.read_bytes() == before
    entry = store.metadata("alice")["resources"]["memories"]
    assert entry["outcome"] == "failed" and "not valid JSON" in entry["error"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with store.lock("alice", timeout=0):  # the failed commit released the lock
        pass


def test_hand_edited_pretty_file_is_merged_and_rewritten_line_shaped(store):
    commit(store, "memories", [{"id": "a", "created_at": 1}])
    path = store.path("alice", "memories")
    path.write_text(json.dumps([{"id": "b", "created_at": 2, "note": "added by hand"},
                                {"id": "a", "created_at": 1}], indent=4), encoding="utf-8")
    summary = commit(store, "memories", [{"id": "c", "created_at": 3}])
    assert summary["total"] == 3 and summary["resorted"]
    assert [r["id"] for r in store.read_collection("alice", "memories")] == ["a", "b", "c"]
    assert path.read_text(encoding="utf-8").count("\n") == 5


def test_a_directory_holding_another_personality_is_refused(store):
    store.save_document(ALICE, "profile", {}, 1, 1)
    meta_path = store.metadata_path("alice")
    meta = json.loads(meta_path.read_text())
    meta["personality"]["username"] = "someone-else"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BackupOwnerMismatch):
        store.save_document(ALICE, "profile", {"new": 1}, 1, 1)
    with pytest.raises(BackupOwnerMismatch):
        store.begin(ALICE, "memories")
    assert store.read_document("alice", "profile") == {}


def test_unsafe_usernames_map_to_hashed_directories_and_metadata_keeps_the_original(store):
    evil = {"id": 9, "username": "../../etc", "name": "x"}
    store.save_document(evil, "profile", {"u": "../../etc"}, 1, 1)
    name = store.dir_name("../../etc")
    assert (store.root / name / f"{name}.json").exists()
    assert store.metadata("../../etc")["personality"]["username"] == "../../etc"
    assert store.metadata("../../etc")["personality"]["dir_name"] == name


def test_bad_arguments_are_clear_errors(store):
    with pytest.raises(ValueError, match="not a collection"):
        store.begin(ALICE, "profile")
    with pytest.raises(ValueError, match="not a document"):
        store.save_document(ALICE, "memories", [], 0, 0)
    with pytest.raises(ValueError, match="username"):
        store.begin({"id": 1}, "memories")
    run = store.begin(ALICE, "memories")
    with pytest.raises(TypeError, match="page"):
        run.add({"id": "a single record, not a page"})
    with pytest.raises(RuntimeError, match="already open"):
        store.begin(ALICE, "memories")
    run.commit(requests=0)
    with pytest.raises(RuntimeError, match="closed"):
        run.add([{}])
    with pytest.raises(RuntimeError, match="closed"):
        run.commit(requests=0)


def test_empty_commit_writes_an_empty_array(store):
    summary = commit(store, "messages")
    assert summary["total"] == 0 and store.path("alice", "messages").read_text() == "[]\n"
    assert store.held("alice", "messages").exists and not store.held("alice", "messages").incremental


def test_stale_leftovers_are_discarded_when_the_lock_is_taken(store):
    commit(store, "memories", [{"id": "a", "created_at": 1}])
    directory = store.root / "alice"
    (directory / ".staging" / "memories").mkdir(parents=True)
    (directory / ".staging" / "memories" / "journal.jsonl").write_text('{"id": "zombie"}\n{"id": "to')
    (directory / ".alice_memories.json.abc123.tmp").write_text("[\n{")
    summary = commit(store, "memories", [{"id": "b", "created_at": 2}])
    assert summary["total"] == 2
    assert sorted(os.listdir(directory)) == [".backup-metadata.json", "alice_memories.json"]


def test_two_collections_of_one_personality_can_run_at_once_in_one_store(store):
    with store.lock("alice", timeout=0):
        memories = store.begin(ALICE, "memories")
        messages = store.begin(ALICE, "messages")
        memories.add([{"id": "m", "created_at": 1}])
        messages.add([{"id": "c", "ts": 1}])
        assert messages.commit(requests=1)["total"] == 1
        assert memories.commit(requests=1)["total"] == 1
    other = BackupStore(store.root)
    with other.lock("alice", timeout=0):  # everything released
        pass


def test_clock_is_used_for_sync_times(tmp_path):
    store = BackupStore(tmp_path, clock=lambda: datetime(2024, 7, 24, 13, 48, 55, tzinfo=timezone.utc))
    store.save_document(ALICE, "profile", {}, 1, 1)
    assert store.metadata("alice")["resources"]["profile"]["last_sync"] == "2024-07-24T13:48:55Z"


def test_commits_in_worker_threads_do_not_lose_metadata_updates(store):
    import threading

    runs = [store.begin(ALICE, "memories"), store.begin(ALICE, "messages")]
    for i, run in enumerate(runs):
        run.add([{"id": str(n), "created_at": n, "ts": n} for n in range(2000 * (i + 1))])
    threads = [threading.Thread(target=run.commit, args=(1,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    resources = store.metadata("alice")["resources"]
    assert resources["memories"]["total"] == 2000 and resources["messages"]["total"] == 4000


def test_each_commit_records_the_saved_files_sha256(store):
    import hashlib

    def recorded(resource):
        return store.metadata("alice")["resources"][resource]["sha256"]

    def actual(resource):
        return hashlib.sha256(store.path("alice", resource).read_bytes()).hexdigest()

    store.save_document(ALICE, "profile", {"id": "p-1", "username": "alice"}, 1, 1)
    commit(store, "memories", [{"id": "m2", "created_at": 2.0}, {"id": "m1", "created_at": 1.0}])
    for resource in ("profile", "memories"):
        assert recorded(resource) == actual(resource)
    # a saved file out of order makes the merge start over (seek back, external sort): still exact
    path = store.path("alice", "memories")
    path.write_text('[\n{"id":"m2","created_at":2.0},\n{"id":"m1","created_at":1.0}\n]\n')
    figures = commit(store, "memories", [{"id": "m3", "created_at": 3.0}])
    assert figures["resorted"] and recorded("memories") == actual("memories")


def test_a_lone_surrogate_in_a_document_or_a_name_is_saved_as_an_escape(store):
    odd = {"id": "p-9", "username": "odd", "name": "Zoë \ud800"}
    store.save_document(odd, "profile", {**odd, "bio": "a \udfff b"}, 1, 1)
    assert store.read_document("odd", "profile")["bio"] == "a \udfff b"
    assert store.metadata("odd")["personality"]["name"] == "Zoë \ud800"
    assert "\\ud800" in store.metadata_path("odd").read_text(encoding="utf-8")


def test_whose_it_is_is_recorded_and_outlives_a_run_that_does_not_know(store):
    """``owned``/``owner`` go into the personality block; a named run (whose unknown) keeps them; a
    "not theirs" resource is recorded apart from failures, its folder made."""
    bob = {"id": "t-1", "username": "bob", "name": "Bob", "owned": False, "owner": "owner-2"}
    store.record_not_theirs(bob, "memories", "only its owner may read it (HTTP 404)", 1)
    meta = store.metadata("bob")
    assert meta["personality"]["owned"] is False and meta["personality"]["owner"] == "owner-2"
    assert meta["resources"]["memories"]["outcome"] == "not_theirs"
    assert "HTTP 404" in meta["resources"]["memories"]["reason"]
    assert mode(store.directory("bob")) == 0o700 and store.recorded_owned("bob") is False
    store.save_document({"id": "t-1", "username": "bob", "name": "Bob"}, "user_data", {"a": 1}, 1, 1)
    assert store.metadata("bob")["personality"]["owned"] is False  # the named run did not know: kept
    assert store.metadata("bob")["personality"]["owner"] == "owner-2"
    store.save_document(dict(ALICE, owned=True), "user_data", {"a": 1}, 1, 1)
    assert store.recorded_owned("alice") is True and "owner" not in store.metadata("alice")["personality"]
    assert store.recorded_owned("nobody") is None
