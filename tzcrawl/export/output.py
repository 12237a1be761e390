"""Where exports go: private files (0600 in 0700 folders, like the backup: they hold the same
conversations), written atomically and only when their bytes changed, plus the export state that
lets an unchanged backup be skipped without rendering anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tzcrawl import jsonio
from tzcrawl.fsutil import atomic_write_bytes, ensure_private_dir

STATE_NAME = ".tzcrawl-export.json"
EXPORT_VERSION = 1  # bump when the output of a format changes: every export is then redone


class Output:
    def __init__(self, root: Path):
        self.root = ensure_private_dir(root, tighten=True)
        self.state_path = self.root / STATE_NAME
        try:
            self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(self.state, dict):
                self.state = {}
        except (OSError, ValueError):
            self.state = {}

    def folder(self, *parts: str) -> Path:
        return ensure_private_dir(self.root.joinpath(*parts))

    def write(self, path: Path, data: bytes | str) -> bool:
        """Replace ``path`` atomically when its bytes differ; True when it was written."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return False
        except OSError:
            pass
        ensure_private_dir(path.parent)
        atomic_write_bytes(path, data)
        return True

    def link(self, source: Path, target: Path) -> None:
        """``target`` holds ``source``'s bytes: a hard link (no extra space), a copy across filesystems."""
        if target.exists():
            if os.path.samefile(source, target):
                return
            target.unlink()
        ensure_private_dir(target.parent)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
            target.chmod(0o600)

    # -- what was exported from what ------------------------------------------------------------
    @staticmethod
    def fingerprint(fmt: str, inputs: list) -> str:
        return hashlib.sha256(jsonio.dumps_bytes([EXPORT_VERSION, fmt, inputs])).hexdigest()

    def unchanged(self, dir_name: str, fmt: str, fingerprint: str) -> bool:
        return self.state.get(dir_name, {}).get(fmt, {}).get("fingerprint") == fingerprint

    def record(self, dir_name: str, fmt: str, fingerprint: str, summary: dict) -> None:
        self.state.setdefault(dir_name, {})[fmt] = {"fingerprint": fingerprint, **summary}

    def forget(self, dir_name: str, fmt: str) -> None:
        self.state.get(dir_name, {}).pop(fmt, None)

    def save_state(self) -> None:
        atomic_write_bytes(self.state_path, jsonio.readable(self.state, indent=1).encode("utf-8"))
