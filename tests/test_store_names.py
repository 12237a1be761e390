"""Safe directory names: hostile usernames never escape BACKUP_DIR or share a directory."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

from tzcrawl.store import BackupStore
from tzcrawl.store.names import child_path, is_clean, safe_dir_name

HOSTILE = [
    "../x", "..", ".", "a/b", "a\\b", "/etc/passwd", "名前", "x" * 300, ".hidden", "CON", "con",
    "con.txt", "nul", "LPT1", "com1.json", "Foo", "foo", "a\0b", "", " ", "a\nb", "tab\there",
    "trailing.", "-dash", "_under", "émilie", "Émilie", "emilie", "ＦＵＬＬ", "\u202eevil", "a" * 64,
    "a" * 65, "~tilde", "x~0123456789", "..\\..\\win", "dir/../..", "\udcff",
]


@pytest.mark.parametrize("username", HOSTILE)
def test_hostile_names_are_one_safe_component(tmp_path, username):
    name = safe_dir_name(username)
    assert name and name not in (".", "..")
    assert not name.startswith(".")
    assert set(name) <= set(string.ascii_lowercase + string.digits + "._-~")
    assert len(name) <= 64
    assert child_path(tmp_path, name).parent == tmp_path
    store = BackupStore(tmp_path / "b")
    assert store.directory(username).parent == store.root
    assert store.directory(username).resolve().parent == store.root


def test_clean_names_are_kept_as_is():
    for username in ["foo", "alice-bot", "a.b_c-d", "x" * 64, "0day", "con-artist", "console"]:
        assert safe_dir_name(username) == username


def test_unclean_names_get_a_hash_suffix_outside_the_clean_set():
    for username in ["Foo", "../x", "名前", "x" * 65, ".hidden", "CON", "con", "con.txt", "", "trailing."]:
        name = safe_dir_name(username)
        assert "~" in name and not is_clean(name)
        assert len(name.rsplit("~", 1)[1]) == 10


def test_windows_device_names_never_survive_as_the_base_name():
    for username in ["con", "CON", "con.txt", "Nul.json", "lpt9", "com1.x.y"]:
        base = safe_dir_name(username).split(".", 1)[0].split("~", 1)[0]
        assert safe_dir_name(username).split(".", 1)[0] not in {"con", "nul", "lpt9", "com1"}
        assert base in {"con-txt", "con", "nul-json", "lpt9", "com1-x-y"}


def test_deterministic():
    for username in HOSTILE:
        assert safe_dir_name(username) == safe_dir_name(username)


def test_distinct_usernames_never_share_a_directory_even_case_insensitively():
    usernames = HOSTILE + [f"User{i}" for i in range(200)] + [f"user{i}" for i in range(200)]
    usernames = list(dict.fromkeys(usernames))
    folded = {safe_dir_name(u).casefold() for u in usernames}
    assert len(folded) == len(usernames)
    assert safe_dir_name("Foo") != safe_dir_name("foo") == "foo"


def test_sanitized_stem_stays_readable():
    assert safe_dir_name("Émilie").startswith("emilie~")
    assert safe_dir_name("My Bot!").startswith("my-bot~")
    assert safe_dir_name("名前").startswith("personality~")


def test_child_path_refuses_separators_and_dots(tmp_path):
    for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "../x"]:
        with pytest.raises(ValueError):
            child_path(tmp_path, bad)


def test_non_string_username_is_a_clear_error():
    with pytest.raises(TypeError):
        safe_dir_name(None)
    with pytest.raises(TypeError):
        safe_dir_name(42)


def test_nothing_is_created_outside_root(tmp_path):
    root = tmp_path / "backups"
    store = BackupStore(root)
    for username in HOSTILE:
        if username == "\udcff":
            continue  # a lone surrogate cannot come from JSON text; the name itself is still safe
        store.save_document({"id": 1, "username": username, "name": "n"}, "profile", {"u": username}, 1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups"]
    dirs = [p for p in root.iterdir() if p.name != ".locks"]
    assert len(dirs) == len(set(HOSTILE)) - 1
    for d in dirs:
        assert d.is_dir() and d.parent == root
