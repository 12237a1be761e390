"""Settings for the snapshot tool, read once: command line > environment > config file > defaults.

The config file is TOML, ``$SNAPSHOT_CONFIG`` or ``$XDG_CONFIG_HOME/tzcrawl/snapshot.toml``
(``~/.config/tzcrawl/snapshot.toml``); relative paths in it are relative to the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path

from . import UsageError
from .retention import parse_duration, parse_size

ENV_PREFIX = "SNAPSHOT_"
PATH_KEYS = ("db", "code", "dest")
LAYOUTS = ("dedup", "plain")


@dataclass(frozen=True)
class Config:
    db: Path | None = None
    code: Path | None = None
    dest: Path | None = None
    interval: timedelta = timedelta(seconds=60)  # watch: how often the database is looked at
    growth: int = 50 * 1024  # watch: growth in bytes that triggers a snapshot
    keep_last: int | None = None  # prune defaults
    max_age: timedelta | None = None
    compressor: str = "auto"  # auto (pigz, else gzip, else in-process), gzip, pigz, python
    compresslevel: int = 6
    lock_wait: timedelta = timedelta(minutes=15)  # create/boot: how long to wait for a running snapshot
    exclude: tuple[str, ...] = field(default=())  # extra gitignore-style patterns always left out
    layout: str = "dedup"  # dedup: changed chunks only, in DEST/.store; plain: a db file and a tarball each time
    source: str = "defaults"  # where the config came from, for messages


def default_config_path(env: dict) -> Path:
    if env.get("SNAPSHOT_CONFIG"):
        return Path(env["SNAPSHOT_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(base).expanduser() / "tzcrawl" / "snapshot.toml"


def _convert(key: str, value, base: Path | None, origin: str):
    try:
        if key in PATH_KEYS:
            path = Path(str(value)).expanduser()
            return (base / path if base and not path.is_absolute() else path).absolute()
        if key in ("interval", "max_age", "lock_wait"):
            return value if isinstance(value, timedelta) else parse_duration(value)
        if key == "growth":
            return parse_size(value)
        if key in ("keep_last", "compresslevel"):
            number = int(value)
            if number < 0 or (key == "compresslevel" and not 1 <= number <= 9):
                raise ValueError(f"out of range: {number}")
            return number
        if key == "exclude":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if key == "layout":
            if value not in LAYOUTS:
                raise ValueError("use dedup or plain")
            return value
        if key == "compressor":
            if value not in ("auto", "gzip", "pigz", "python"):
                raise ValueError("use auto, gzip, pigz or python")
            return value
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad value for {key} in {origin}: {value!r} ({exc})") from None
    raise UsageError(f"unknown setting {key!r} in {origin}")


def load_config(cli: dict | None = None, env: dict | None = None, path: str | os.PathLike | None = None) -> Config:
    """Merge the three sources; ``cli`` holds only what the user actually gave."""
    env = dict(os.environ if env is None else env)
    cfg_path = Path(path).expanduser() if path else default_config_path(env)
    names = {f.name for f in fields(Config)} - {"source"}
    values, origins = {}, []
    explicit = bool(path or env.get("SNAPSHOT_CONFIG"))
    if cfg_path.is_file() or explicit:
        try:
            data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"config file not found: {cfg_path}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config file {cfg_path}: {exc}") from None
        data = data.get("snapshot", data)  # a [snapshot] table or top-level keys
        for key, value in data.items():
            key = key.replace("-", "_")
            if key not in names:
                raise UsageError(f"unknown setting {key!r} in {cfg_path}")
            values[key] = _convert(key, value, cfg_path.parent, str(cfg_path))
        origins.append(str(cfg_path))
    from_env = False
    for key in sorted(names):
        raw = env.get(ENV_PREFIX + key.upper())
        if raw not in (None, ""):
            values[key] = _convert(key, raw, None, f"${ENV_PREFIX}{key.upper()}")
            from_env = True
    if from_env:
        origins.append("environment")
    for key, value in (cli or {}).items():
        if value is not None:
            values[key] = _convert(key, value, None, "the command line")
    return Config(**values, source=", ".join(origins) or "defaults")


def require(cfg: Config, *keys: str) -> None:
    missing = [k for k in keys if getattr(cfg, k) is None]
    if missing:
        hints = ", ".join(f"--{k} / ${ENV_PREFIX}{k.upper()} / {k} = ... in the config file" for k in missing)
        raise UsageError(f"not configured: {hints}")
