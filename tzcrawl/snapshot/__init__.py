"""Consistent snapshots of the codex brain database and its code tree.

Pure pieces (``naming``, ``retention``, ``manifest``, ``config``) take plain data and a clock; thin I/O
pieces (``dbcopy``, ``codetree``, ``archive``, ``lock``, ``store``) do the work; ``cli`` wires them up.
"""

DB_NAME = "codex-brain.db"
CODE_NAME = "codex-code.tar.gz"
DB_LIST = "db.chunks"  # a deduplicated snapshot's database: digests of its page-list pieces
TREE_LIST = "code.tree"  # a deduplicated snapshot's code tree: one record per entry, zstd
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".snapshot.lock"


class SnapshotError(Exception):
    """A failure with a message meant for the user; the CLI prints it and exits non-zero."""


class UsageError(SnapshotError):
    """The command or its configuration is wrong (exit status 2): nothing was tried."""
