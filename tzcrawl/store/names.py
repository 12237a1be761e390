"""Safe directory names for personalities: the API's username never becomes a path unchecked.

A username that is already a plain, portable name is used as is, so backups stay easy to find.
Anything else becomes a lowercase sanitized stem plus ``~`` and 10 hex digits of its SHA-256:
``~`` is outside the clean set, so a sanitized name never equals a clean one, and the hash keeps
distinct usernames apart even on case-insensitive filesystems (every name we produce is lowercase).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

CLEAN_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
STEM_MAX = 40
HASH_CHARS = 10
# Device names Windows refuses as a file or directory name, with or without an extension.
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"com{i}" for i in "123456789¹²³"]
    + [f"lpt{i}" for i in "123456789¹²³"]
)


def is_clean(username: str) -> bool:
    """True when ``username`` can be a directory name on any common filesystem unchanged."""
    return (
        CLEAN_NAME.fullmatch(username) is not None
        and not username.endswith(".")
        and username.split(".", 1)[0] not in WINDOWS_RESERVED
    )


def safe_dir_name(username: str) -> str:
    """The directory name for ``username``: deterministic, one path component, never ``.``/``..``."""
    if not isinstance(username, str):
        raise TypeError(f"username must be a string, not {type(username).__name__}")
    if is_clean(username):
        return username
    digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{_stem(username)}~{digest}"


def _stem(username: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", username).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower())
    stem = stem[:STEM_MAX].strip("._-") or "personality"
    if stem.split(".", 1)[0] in WINDOWS_RESERVED:  # "con.txt~..." is still the device CON
        stem = stem.replace(".", "-")
    return stem


def child_path(root: Path, name: str) -> Path:
    """``root/name``, refusing anything that would not be a direct child of ``root``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"unsafe directory name: {name!r}")
    path = root / name
    if path.parent != root:
        raise ValueError(f"unsafe directory name: {name!r}")
    return path
