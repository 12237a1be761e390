"""The code tarball: real trees with nested .gitignore files, always-excluded folders, read back with GNU tar."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from tzcrawl.snapshot import SnapshotError, archive, codetree
from test_snapshot_support import LAYOUTS, make_db, plain_copy, run_cli, snapshots


def write(root: Path, rel: str, data: bytes | str = "x\n", mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "Codex"
    write(root, ".gitignore", "*.tmp\nbuild/\n!keep.tmp\nsecret.txt\n/rootonly.txt\n")
    write(root, "package.json", '{"name": "codex"}\n')
    write(root, "rootonly.txt")
    write(root, "keep.tmp")
    write(root, "x.tmp")
    write(root, "secret.txt")
    write(root, "build/out.js")
    write(root, "svc/.gitignore", "*.cache\n!important.cache\nlocal/\n")
    write(root, "svc/a.cache")
    write(root, "svc/important.cache")
    write(root, "svc/rootonly.txt")  # /rootonly.txt is anchored to the top folder
    write(root, "svc/local/f.txt")
    write(root, "svc/src/main.ts", "console.log('hi')\n" * 50)
    os.link(root / "svc/src/main.ts", root / "svc/src/main-hardlink.ts")
    write(root, "svc/run.sh", "#!/bin/sh\necho run\n", mode=0o750)
    write(root, "svc/readonly.cfg", "ro\n", mode=0o444)
    (root / "svc/link").symlink_to("src/main.ts")
    (root / "svc/abs-link").symlink_to("/etc/hostname")
    (root / "svc/dangling").symlink_to("does/not/exist")
    write(root, "svc/node_modules/dep/index.js")
    write(root, "svc/dist/bundle.js")
    write(root, "svc/.env", "TOKEN=secret\n")
    write(root, "svc/.env.production", "TOKEN=secret\n")
    write(root, "svc/app.log")
    write(root, "svc/logs/today.txt")
    write(root, "svc/chrome-profile/Default/Cookies")
    write(root, "svc/session-data/Local State", "{}")  # a Chromium profile under another name
    write(root, "svc/session-data/Default/Cookies")
    write(root, "svc/ff/prefs.js")
    write(root, "svc/ff/compatibility.ini")
    write(root, "deep/.gitignore", "!*.tmp\n")  # deeper file wins: re-includes *.tmp below
    write(root, "deep/y.tmp")
    write(root, "deep/build/kept-because-parent-rule-is-dir-only.txt")
    write(root, "node_modules/top.js")
    write(root, ".git/HEAD", "ref: refs/heads/main\n")
    write(root, "space name.txt", "s\n")
    write(root, "unicodé.txt", "u\n")
    write(root, "bin/blob.bin", os.urandom(100_000))
    (root / "empty_dir").mkdir()
    make_db(root / "codex-brain/codex-brain-data/codex-brain.db", rows=20)
    return root


EXPECTED = {
    ".gitignore", "package.json", "keep.tmp",
    "svc", "svc/.gitignore", "svc/important.cache", "svc/rootonly.txt", "svc/src", "svc/src/main.ts",
    "svc/src/main-hardlink.ts", "svc/run.sh", "svc/readonly.cfg", "svc/link", "svc/abs-link", "svc/dangling",
    "deep", "deep/.gitignore", "deep/y.tmp",
    "space name.txt", "unicodé.txt", "bin", "bin/blob.bin", "empty_dir",
    "codex-brain", "codex-brain/codex-brain-data",
}


def names_in_tar(path: Path) -> set[str]:
    out = subprocess.run(["tar", "-tzf", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.rstrip("/") for line in out.splitlines()}


def test_selection_honours_nested_gitignores_and_always_excluded(tree):
    db = tree / "codex-brain/codex-brain-data/codex-brain.db"
    sel = codetree.select(tree, skip=codetree.db_companions(db))
    # deep/build/ is ignored by the root's "build/" rule at any depth
    assert {e.rel for e in sel.entries} == EXPECTED
    assert sel.excluded > 10


def test_built_in_excludes_ignore_case_and_catch_env_files_by_any_name(tmp_path):
    root = tmp_path / "code"
    for rel in ("Node_Modules/x.js", "web/NODE_MODULES/y.js", ".ENV", "svc/.Env.Local", "production.env",
                "config/Staging.ENV", "APP.LOG", "Logs/today.txt", "DIST/bundle.js", ".GIT/HEAD",
                "keep/environment.txt", "keep/envoy.yaml", "keep/main.ts"):
        write(root, rel)
    rels = {e.rel for e in codetree.select(root).entries}
    assert rels == {"keep", "keep/environment.txt", "keep/envoy.yaml", "keep/main.ts", "web", "svc", "config"}


def test_extra_excludes_from_config(tree):
    sel = codetree.select(tree, extra_excludes=["bin/", "*.ts"])
    rels = {e.rel for e in sel.entries}
    assert "bin/blob.bin" not in rels and "svc/src/main.ts" not in rels and "svc/run.sh" in rels


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tarball_extracts_exactly_with_gnu_tar(tree, tmp_path, layout):
    dest = tree / "backups"  # the destination inside the tree is left out of its own tarball
    db = tree / "codex-brain/codex-brain-data/codex-brain.db"
    result = run_cli(tmp_path, "create", "--db", db, "--code", tree, "--dest", dest, "--layout", layout)
    assert result.returncode == 0, result.stderr
    (snap,) = snapshots(dest)
    tarball = plain_copy(snap, tmp_path) / "codex-code.tar.gz"  # dedup: what `export` writes
    assert names_in_tar(tarball) == EXPECTED
    listing = subprocess.run(["tar", "-tzvf", str(tarball)], capture_output=True, text=True, check=True).stdout
    assert all(not name.startswith("/") and ".." not in name.split("/") for name in names_in_tar(tarball))

    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(out)], check=True)
    for rel in EXPECTED:
        src, got = tree / rel, out / rel
        s, g = src.lstat(), got.lstat()
        assert stat.S_IFMT(s.st_mode) == stat.S_IFMT(g.st_mode), rel
        assert stat.S_IMODE(s.st_mode) == stat.S_IMODE(g.st_mode), rel
        if stat.S_ISLNK(s.st_mode):
            assert os.readlink(src) == os.readlink(got), rel
        elif stat.S_ISREG(s.st_mode):
            assert src.read_bytes() == got.read_bytes(), rel
            assert int(s.st_mtime) == int(g.st_mtime), rel
    assert os.stat(out / "svc/src/main.ts").st_ino == os.stat(out / "svc/src/main-hardlink.ts").st_ino
    assert "svc/src/main.ts link to svc/src/main-hardlink.ts" in listing  # name order: the first one is stored


def test_in_process_compressor_makes_the_same_tree(tree, tmp_path):
    entries = codetree.select(tree).entries
    a, b = tmp_path / "prog.tar.gz", tmp_path / "py.tar.gz"
    archive.write_tarball(str(a), entries, compressor=archive.resolve_compressor("gzip"))
    archive.write_tarball(str(b), entries, compressor=None)
    assert names_in_tar(a) == names_in_tar(b)
    # same tar stream inside, whichever gzip made it
    assert subprocess.run(["gzip", "-dc", str(a)], capture_output=True).stdout == \
        subprocess.run(["gzip", "-dc", str(b)], capture_output=True).stdout


def test_missing_code_folder(tmp_path):
    with pytest.raises(SnapshotError, match="code folder not found"):
        codetree.select(tmp_path / "nope")


def hostile_tarball(path: Path, name: str, linkname: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        ti = tarfile.TarInfo(name)
        if linkname:
            ti.type, ti.linkname = tarfile.SYMTYPE, linkname
            tar.addfile(ti)
        else:
            ti.size = 4
            tar.addfile(ti, io.BytesIO(b"evil"))


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "a/../../escape.txt"])
def test_hostile_member_names_are_refused(tmp_path, name):
    bad = tmp_path / "bad.tar.gz"
    hostile_tarball(bad, name)
    with pytest.raises(SnapshotError, match="unsafe"):
        archive.read_through(str(bad))
    with pytest.raises(SnapshotError):
        archive.extract(str(bad), str(tmp_path / "out"))
    assert not (tmp_path / "escape.txt").exists() and not Path("/abs.txt").exists()


def test_extract_does_not_write_through_an_existing_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    target = tmp_path / "target"
    target.mkdir()
    (target / "config.txt").symlink_to(outside)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        ti = tarfile.TarInfo("config.txt")
        ti.size = 8
        tar.addfile(ti, io.BytesIO(b"restored"))
    archive.extract(str(good), str(target))
    assert outside.read_text() == "precious\n"
    assert not (target / "config.txt").is_symlink() and (target / "config.txt").read_text() == "restored"


def test_damaged_tarball_is_reported(tmp_path):
    good = tmp_path / "t.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        ti = tarfile.TarInfo("f.bin")
        data = os.urandom(200_000)
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    good.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="damaged"):
        archive.read_through(str(good))
    good.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(SnapshotError, match="damaged"):
        archive.read_through(str(good))


def test_a_hard_link_renamed_while_the_tarball_is_written_keeps_its_content(tmp_path):
    """h/a and h/b are one file; h/a is renamed between being looked at and being read (stopped at
    that moment with a profile hook, not by timing). The archive must hold the content under h/b."""
    import sys

    root = tmp_path / "code"
    write(root, "h/a", "the only copy of this content\n")
    os.link(root / "h/a", root / "h/b")
    entries = codetree.select(root).entries

    def rename_when_looked_at(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "_tarinfo" and frame.f_locals["entry"].rel == "h/a":
            os.rename(root / "h/a", root / "h/c")

    sys.setprofile(rename_when_looked_at)
    try:
        stats = archive.write_tarball(str(tmp_path / "code.tar.gz"), entries, compressor=None)
    finally:
        sys.setprofile(None)
    assert stats.vanished == 1
    with tarfile.open(tmp_path / "code.tar.gz") as tar:
        member = tar.getmember("h/b")
        assert member.isreg() and tar.extractfile(member).read() == b"the only copy of this content\n"
    archive.read_through(str(tmp_path / "code.tar.gz"))  # and it verifies
    out = tmp_path / "out"
    archive.extract(str(tmp_path / "code.tar.gz"), str(out))
    assert (out / "h/b").read_text() == "the only copy of this content\n"


def test_verify_refuses_a_hard_link_to_a_member_the_archive_does_not_hold(tmp_path):
    path = tmp_path / "code.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        link = tarfile.TarInfo("h/b")
        link.type, link.linkname = tarfile.LNKTYPE, "h/a"
        tar.addfile(link)
    with pytest.raises(SnapshotError, match="'h/b' is a hard link to 'h/a', which the archive does not hold"):
        archive.read_through(str(path))


def test_a_folder_deleted_during_the_walk_is_tolerated_like_a_vanished_file(tmp_path):
    """The folder goes between its parent's listing and its own (a profile hook, not timing)."""
    import shutil
    import sys

    root = tmp_path / "code"
    write(root, "keep/a.txt")
    write(root, "gone/deep/b.txt")

    def delete_when_reached(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "_scan" and frame.f_locals.get("rel") == "gone":
            shutil.rmtree(root / "gone")

    sys.setprofile(delete_when_reached)
    try:
        sel = codetree.select(root)
    finally:
        sys.setprofile(None)
    assert {e.rel for e in sel.entries} == {"keep", "keep/a.txt"} and sel.vanished == 1
