"""Snapshots of an unchanged code tree share one archive (a hard link); any change archives anew;
pruning, verifying and restoring stay right for every snapshot that shares; pigz writes a standard
.gz stream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from test_snapshot_e2e import make_setup, manifest
from test_snapshot_support import create, flip, run_cli, snapshots
from tzcrawl.snapshot import archive


@pytest.fixture
def setup(tmp_path):
    return make_setup(tmp_path, "plain")  # sharing a whole archive is the plain layout's way


@pytest.fixture
def tree(setup):
    """test_snapshot_e2e's code tree and database, plus a script, a binary blob and a symlink."""
    code = setup[0]
    (code / "svc/run.sh").write_text("#!/bin/sh\necho hi\n")
    (code / "blob.bin").write_bytes(os.urandom(200_000))
    os.symlink("svc/src/main.ts", code / "entry")
    return setup


def test_an_unchanged_tree_shares_the_archive_and_adds_only_the_database(tree, tmp_path):
    code, db, dest, env = tree
    first = create(tmp_path, env)
    second = create(tmp_path, env)
    a, b = first / "codex-code.tar.gz", second / "codex-code.tar.gz"
    assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(b).st_nlink == 2, "one archive, two names"
    m1, m2 = manifest(first), manifest(second)
    assert m2["code"]["fingerprint"] == m1["code"]["fingerprint"]
    assert m2["code"]["archive"] == {"from": first.name, "shared": "hardlink"}
    assert m1["code"]["archive"] == {"from": None, "shared": None}
    assert m2["files"]["codex-code.tar.gz"] == m1["files"]["codex-code.tar.gz"]
    assert (second / "codex-brain.db").stat().st_ino != (first / "codex-brain.db").stat().st_ino, "a full DB copy"
    listing = subprocess.run(["tar", "-tzf", str(b)], capture_output=True, text=True, check=True).stdout
    assert "svc/src/main.ts" in listing and "entry" in listing
    result = run_cli(tmp_path, "list", env=env)
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "new" in lines[first.name] and f"shared with {first.name}" in lines[second.name]
    assert "verified" in lines[second.name]
    adds = [line.split()[8:10] for line in (lines[first.name], lines[second.name])]
    size = lambda parts: float(parts[0]) * {"B": 1, "KiB": 1024, "MiB": 1 << 20}[parts[1]]  # noqa: E731
    db_size = (second / "codex-brain.db").stat().st_size
    assert size(adds[1]) <= db_size + 1024 * 1024 and size(adds[1]) < size(adds[0])


def change_file(code, tmp_path):
    (code / "svc/src/main.ts").write_text("export const x = 2;\n")


def new_file(code, tmp_path):
    (code / "svc/src/extra.ts").write_text("export {};\n")


def removed_file(code, tmp_path):
    (code / "package.json").unlink()


def changed_symlink(code, tmp_path):
    (code / "entry").unlink()
    os.symlink("svc/run.sh", code / "entry")


def changed_mode(code, tmp_path):
    os.chmod(code / "svc/run.sh", 0o755)


def touched(code, tmp_path):  # the same bytes, a new mtime: archived again (correctness first)
    os.utime(code / "package.json", ns=(1_000_000_000, 1_000_000_000))


@pytest.mark.parametrize("change", [change_file, new_file, removed_file, changed_symlink, changed_mode, touched])
def test_any_change_to_the_tree_archives_anew(tree, tmp_path, change):
    code, db, dest, env = tree
    first = create(tmp_path, env)
    change(code, tmp_path)
    second = create(tmp_path, env)
    assert manifest(second)["code"]["archive"]["from"] is None
    assert manifest(second)["code"]["fingerprint"] != manifest(first)["code"]["fingerprint"]
    assert os.stat(first / "codex-code.tar.gz").st_ino != os.stat(second / "codex-code.tar.gz").st_ino


def test_a_changed_exclude_rule_archives_anew(tree, tmp_path):
    code, db, dest, env = tree
    first = create(tmp_path, env)
    second = create(tmp_path, {**env, "SNAPSHOT_EXCLUDE": "*.bin"})
    assert manifest(second)["code"]["archive"]["from"] is None
    listing = subprocess.run(["tar", "-tzf", str(second / "codex-code.tar.gz")], capture_output=True, text=True,
                             check=True).stdout
    assert "blob.bin" not in listing and manifest(first)["code"]["fingerprint"] != manifest(second)["code"]["fingerprint"]


def test_pruning_the_first_of_two_sharing_snapshots_leaves_the_second_whole(tree, tmp_path):
    code, db, dest, env = tree
    first = create(tmp_path, env)
    second = create(tmp_path, env)
    first.rename(dest / "codex-backup-2020-01-01T00-00-00-000Z")
    result = run_cli(tmp_path, "prune", "--keep-last", "1", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshots(dest) == [second]
    assert os.stat(second / "codex-code.tar.gz").st_nlink == 1
    verified = run_cli(tmp_path, "verify", second.name, env=env)
    assert verified.returncode == 0, verified.stdout
    target = tmp_path / "restored"
    restored = run_cli(tmp_path, "restore", second.name, "--target", target, env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert (target / "svc/src/main.ts").read_text() == "export const x = 1;\n"


def test_a_damaged_shared_archive_fails_verify_for_every_snapshot_sharing_it(tree, tmp_path):
    code, db, dest, env = tree
    first = create(tmp_path, env)
    second = create(tmp_path, env)
    flip(second / "codex-code.tar.gz")  # in place: the one inode both names point at
    for snap in (first, second):
        result = run_cli(tmp_path, "verify", snap.name, env=env)
        assert result.returncode == 3 and "BAD" in result.stdout, result.stdout
    third = create(tmp_path, env)  # a damaged archive is never shared again: archived anew
    assert manifest(third)["code"]["archive"]["from"] is None
    assert run_cli(tmp_path, "verify", third.name, env=env).returncode == 0


def test_restore_from_a_snapshot_whose_archive_is_shared(tree, tmp_path):
    code, db, dest, env = tree
    create(tmp_path, env)
    second = create(tmp_path, env)
    assert manifest(second)["code"]["archive"]["shared"] == "hardlink"
    target = tmp_path / "restored"
    result = run_cli(tmp_path, "restore", second.name, "--target", target, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "blob.bin").read_bytes() == (code / "blob.bin").read_bytes()
    assert os.readlink(target / "entry") == "svc/src/main.ts"


def test_free_cores_and_the_compressor_chosen():
    assert archive.free_cores(cores=2, load=0.1) == 2 and archive.free_cores(cores=2, load=1.7) == 1
    assert archive.free_cores(cores=2, load=0.6) == 2 and archive.free_cores(cores=2, load=0.8) == 1
    assert 0.0 <= archive.busy_cores(0.05) <= (os.cpu_count() or 1)
    assert archive.free_cores(cores=8, load=30.0) == 1 and archive.free_cores(cores=1, load=0.0) == 1
    if shutil.which("pigz"):
        assert archive.resolve_compressor("auto", cores=2)[1:] == ["-p", "2"]
        assert os.path.basename(archive.resolve_compressor("auto", cores=2)[0]) == "pigz"
    assert archive.resolve_compressor("python") is None
    assert archive.describe(None, 6) == "python zlib -6"
    assert archive.describe(["/usr/bin/pigz", "-p", "2"], 6) == "pigz -p 2 -6"


@pytest.mark.skipif(not shutil.which("pigz") and not os.environ.get("CI"), reason="pigz not installed")
def test_pigz_writes_one_standard_gz_stream(tree, tmp_path):
    code, db, dest, env = tree
    snap = create(tmp_path, {**env, "SNAPSHOT_COMPRESSOR": "pigz"})
    assert manifest(snap)["code"]["compressor"].startswith("pigz -p ")
    path = snap / "codex-code.tar.gz"
    subprocess.run(["gzip", "-t", str(path)], check=True)
    listing = subprocess.run(["tar", "-tzf", str(path)], capture_output=True, text=True, check=True).stdout
    assert "blob.bin" in listing and json.loads((snap / "manifest.json").read_text())["code"]["members"] > 5
