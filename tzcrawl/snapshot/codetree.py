"""Which files of the code tree go into the tarball.

Git's rules through pathspec's gitignore matcher: every ``.gitignore`` applies to its own folder and
below, deeper files win, negations work, and a file under an ignored folder cannot be re-included.
Some things never go in, whatever the ``.gitignore`` files say: dependency and build folders, secrets,
browser profiles, logs, the snapshot destination itself, and the live database (it is copied
separately and consistently; a file copy of it would be torn).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import LOCK_NAME, MANIFEST_NAME, SnapshotError
from .chunks import STORE_DIR
from .naming import BUILD_MARKER, PREFIX, TMP_PREFIX

if TYPE_CHECKING:
    import pathspec

# Matched ignoring case (macOS and Windows file systems do: `.ENV` is `.env` there).
ALWAYS_EXCLUDED = (
    ".git/",
    "node_modules/",
    "dist/",
    ".env*",
    "*.env",          # production.env, local.env: secrets by another spelling
    "*.log",
    "logs/",
    "*browser-profile*/",
    "*browser_profile*/",
    "*chrome-profile*/",
    "*chromium-profile*/",
    "user-data-dir/",
)
# A folder holding one of these is a browser profile whatever it is called.
_PROFILE_MARKERS = ({"Local State"}, {"prefs.js", "compatibility.ini"})


@dataclass
class Entry:
    rel: str  # archive name, "/"-separated, relative to the tree root
    path: str  # absolute path on disk
    st: os.stat_result


@dataclass
class Selection:
    entries: list[Entry] = field(default_factory=list)
    excluded: int = 0
    vanished: int = 0  # folders deleted while the tree was walked
    skipped_special: list[str] = field(default_factory=list)


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def excluded_identities(paths) -> set[tuple[int, int]]:
    """(device, inode) of paths to leave out wherever they sit in the tree."""
    return {ident for p in paths if p for ident in [_identity(p)] if ident}


COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")
ASIDE_SUFFIX = ".backup"  # restore moves the previous database to X.backup (or X.backup.<time>)


def db_companions(db: str | os.PathLike) -> list[str]:
    return [str(db)] + [f"{db}{suffix}" for suffix in COMPANION_SUFFIXES]


def relative_inside(path: str | os.PathLike | None, root: str | os.PathLike) -> str | None:
    """``path`` relative to ``root`` ('/'-separated) when it lies inside it, else None."""
    if path is None:
        return None
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return rel.replace(os.sep, "/")


def is_db_file(rel: str, db_rel: str | None) -> bool:
    """True for the database at ``db_rel`` and every file that belongs to it by name: its -wal, -shm
    and -journal (a stale journal restored beside the database is replayed into it by SQLite) and
    the copies restore moved aside, with theirs. These are never archived and never extracted."""
    if not db_rel:
        return False
    if rel == db_rel or rel in {db_rel + suffix for suffix in COMPANION_SUFFIXES}:
        return True
    aside = db_rel + ASIDE_SUFFIX
    return rel == aside or rel.startswith((aside + ".", aside + "-"))


def _is_snapshot_folder(entry: os.DirEntry) -> bool:
    """A snapshot (or a build of one) of this tool: never archived again, wherever DEST is."""
    if not entry.name.startswith((PREFIX, TMP_PREFIX)):
        return False
    return any(os.path.exists(os.path.join(entry.path, name)) for name in (MANIFEST_NAME, BUILD_MARKER))


def _is_browser_profile(names: set[str]) -> bool:
    return any(marker <= names for marker in _PROFILE_MARKERS)


def _scan(path: str, rel: str) -> list[os.DirEntry] | None:
    """The folder's entries by name; None when it was deleted since its parent was listed."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"cannot read folder {rel or '.'} in the code tree: {exc.strerror}") from None


def _load_gitignore(path: str, rel: str) -> pathspec.GitIgnoreSpec | None:
    import pathspec
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"cannot read {rel or '.'}/.gitignore: {exc.strerror}") from None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _gitignored(stack: list[tuple[str, pathspec.GitIgnoreSpec]], rel: str, is_dir: bool) -> bool:
    """Deepest .gitignore with an opinion decides; within one file the last matching line does."""
    for base, spec in reversed(stack):
        sub = rel[len(base) + 1:] if base else rel
        result = spec.check_file(sub + "/" if is_dir else sub)
        if result.include is not None:
            return result.include
    return False


def select(root: str | os.PathLike, *, skip=(), extra_excludes=(), db=None) -> Selection:
    """Walk ``root`` (not following symlinks) and return what to archive, folders before their content.

    ``skip`` are paths (the destination, the database) left out by identity wherever they are;
    the database ``db``, when inside ``root``, and its companions are also left out by name
    (``is_db_file``), whenever they appear.
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise SnapshotError(f"code folder not found: {root}")
    db_rel = relative_inside(db, root)
    import pathspec  # here, not at the top: a snapshot imports it while its database copy runs
    always = pathspec.GitIgnoreSpec.from_lines(ALWAYS_EXCLUDED)
    # the user's, as written, like .gitignore (none: no matching at all, a third of the walk's time)
    extra = pathspec.GitIgnoreSpec.from_lines(extra_excludes) if extra_excludes else None
    skip_ids = excluded_identities(skip)
    sel = Selection()
    # Each pending folder carries the .gitignore stack of its parent.
    pending: list[tuple[str, str, os.stat_result | None, list]] = [("", root, None, [])]
    while pending:
        rel_dir, abs_dir, dir_st, stack = pending.pop()
        children = _scan(abs_dir, rel_dir)
        if children is None:  # deleted mid-walk, like a file that vanished: nothing of it to save
            sel.vanished += 1
            continue
        names = {e.name for e in children}
        if dir_st is not None:
            if _is_browser_profile(names):
                sel.excluded += 1
                continue
            sel.entries.append(Entry(rel_dir, abs_dir, dir_st))
        if ".gitignore" in names:
            spec = _load_gitignore(os.path.join(abs_dir, ".gitignore"), rel_dir)
            if spec is not None:
                stack = [*stack, (rel_dir, spec)]
        subdirs = []
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished since the listing
            is_dir = stat.S_ISDIR(st.st_mode)
            if ((st.st_dev, st.st_ino) in skip_ids
                    or (is_dir and _is_snapshot_folder(child))
                    or (not is_dir and is_db_file(rel, db_rel))
                    or always.check_file((rel + "/" if is_dir else rel).lower()).include
                    or (extra is not None and extra.check_file(rel + "/" if is_dir else rel).include)
                    or _gitignored(stack, rel, is_dir)):
                sel.excluded += 1
            elif is_dir:
                subdirs.append((rel, child.path, st, stack))
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                sel.entries.append(Entry(rel, child.path, st))
            else:
                sel.skipped_special.append(rel)
        pending.extend(reversed(subdirs))
    return sel


def select_for(cfg) -> Selection:
    """The tree a snapshot of ``cfg`` holds: its code folder less the destination (and the chunk store
    in it, when the destination is the code folder itself), the lock and the live database's files."""
    return select(cfg.code, skip=[cfg.dest, cfg.dest / STORE_DIR, cfg.dest / LOCK_NAME, *db_companions(cfg.db)],
                  extra_excludes=cfg.exclude, db=cfg.db)


def fingerprint(sel: Selection, rules: dict) -> str:
    """What the code archive would hold, from the walk already done: every entry's name, type and
    mode, size, modification time, owner, link target (and inode when hard-linked), plus the exclude
    ``rules`` in force. Equal fingerprints mean an equal archive; a file touched without a change in
    content differs (it is archived again: correctness first)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(rules, sort_keys=True).encode("utf-8"))
    for entry in sel.entries:
        st = entry.st
        target = ""
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(entry.path)
            except OSError:
                target = "?"
        inode = st.st_ino if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) else 0
        digest.update(f"{entry.rel}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_uid}\0{st.st_gid}"
                      f"\0{target}\0{inode}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
