"""``scrapy sandbox``: run the local imitation of the service until SIGINT/SIGTERM (or --max-lifetime).

Every ``SandboxConfig`` field is a flag (``--memory-page-size``, ``--rate-limit``, ``--ts-ties`` ...),
generated from the dataclass so the command never lags behind the knobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from typing import Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from tzcrawl.fsutil import atomic_write_text
from tzcrawl.sandbox import Sandbox, SandboxConfig
from tzcrawl.sandbox.frombackup import BackupWorld, files_port
from tzcrawl.sandbox.server import FILES_HOST
from tzcrawl.sandbox.config import coerce_knobs, KNOB_NAMES

_TYPES = {"float": float, "int": int, "str": str}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per SandboxConfig field; defaults stay None so the dataclass keeps its own."""
    group = parser.add_argument_group("sandbox data and knobs")
    for f in dataclasses.fields(SandboxConfig):
        if f.name == "overrides":
            continue
        flags = ["--" + f.name.replace("_", "-")]
        if f.name == "memory_page_size":
            flags.append("--page-size")
        kind = str(f.type).split(" ")[0]
        help_text = f"{f.metadata.get('help', '')} [default {f.default}]".replace(":", " ")
        if kind == "bool":
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(*flags, dest=f.name, type=_TYPES[kind], default=None, choices=f.metadata.get("choices"),
                               metavar=f.name.upper(), help=help_text)
    group.add_argument("--overrides", metavar="JSON", default=None,
                       help="JSON object mapping a personality index to its settings (memories, messages, knowledge, "
                            "training, knowledge_shape, training_shape, pagination, user_empty, username, name)")


def config_from_options(opts: argparse.Namespace) -> SandboxConfig:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SandboxConfig):
        value = getattr(opts, f.name, None)
        if value is not None and f.name != "overrides":
            values[f.name] = value
    try:
        values.update(coerce_knobs({k: v for k, v in values.items() if k in KNOB_NAMES}))
        if opts.overrides:
            values["overrides"] = {int(k): dict(v) for k, v in json.loads(opts.overrides).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(str(exc), print_help=False) from None
    for name in ("personalities", "others", "memories", "messages"):
        if values.get(name, 0) < 0:
            raise UsageError(f"--{name} must be >= 0", print_help=False)
    return SandboxConfig(**values)


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options]"

    def short_desc(self) -> str:
        return "Run the local sandbox imitation of the personality service (loopback only)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
        parser.add_argument("--ready-file", metavar="PATH", help='write {"base_url", "cookie", "cookie_header", "ca_file", "files_url", "media_hosts"} here (0600) once serving')
        parser.add_argument("--max-lifetime", type=float, default=None, metavar="SECONDS", help="stop by itself after this long")
        parser.add_argument("--from-backup", metavar="DIR", default=None,
                            help="serve this backup (a BACKUP_DIR) as the service, read-only, instead of generated data")
        add_config_flags(parser)

    @staticmethod
    def _start(config, opts, world, port: int) -> Sandbox:
        """The sandbox; a served backup's file host on the port its media URLs name, else a free one."""
        try:
            return Sandbox(config, port=opts.port, max_lifetime=opts.max_lifetime, world=world, files_port=port).start()
        except OSError:
            if not port:
                raise
            print(f"sandbox: the backup's media URLs name port {port} on {FILES_HOST}, which is taken; the file "
                  f"host listens on another (tools must map the host)", file=sys.stderr)
            return Sandbox(config, port=opts.port, max_lifetime=opts.max_lifetime, world=world).start()

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args:
            raise UsageError("sandbox takes no positional arguments")
        config = config_from_options(opts)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        world, port = None, 0
        if opts.from_backup:
            try:
                world = BackupWorld(opts.from_backup)
            except OSError as exc:
                print(f"sandbox: cannot serve {opts.from_backup}: {exc}", file=sys.stderr)
                self.exitcode = 2
                return
            port = files_port(world, FILES_HOST)
        try:
            sandbox = self._start(config, opts, world, port)
        except OSError as exc:  # the port is taken (or not ours to use)
            print(f"sandbox: cannot listen on 127.0.0.1:{opts.port}: {exc.strerror or exc}; "
                  "pick another --port, or leave it out for a free one", file=sys.stderr)
            self.exitcode = 2
            return
        try:
            if opts.ready_file:  # the socket is listening already: a reader of this file can connect
                atomic_write_text(opts.ready_file, json.dumps({
                    "base_url": sandbox.base_url, "cookie": sandbox.cookie, "cookie_header": sandbox.cookie_header,
                    "ca_file": sandbox.ca_file, "files_url": sandbox.files_url,
                    "media_hosts": sandbox.media_hosts}))
            print(f"tzcrawl sandbox service: {sandbox.base_url}")
            print(f"base_url: {sandbox.base_url}")
            print(f"session: {config.session}  cookie: {sandbox.cookie_header}")
            if sandbox.ca_file:
                print(f"certificate: {sandbox.ca_file}  (export TZCRAWL_CA_FILE={sandbox.ca_file})")
            print(f"file host: {sandbox.files_url}  (media; it counts requests that carry a cookie; "
                  f"export BACKUP_MEDIA_PRIVATE_HOSTS={sandbox.media_hosts} to let a backup fetch from it)")
            print(f"login: {config.email} / {config.password}")
            print(f"jargon: {config.jargon}  profile path: {config.profile_prefix}")
            if world is not None:
                print(f"serving the backup {world.view.root}: {len(world.personalities)} personalities, "
                      f"{len(world.media)} media files, read-only")
            print(f"totals: {json.dumps(sandbox.totals()['sum'])}")
            print("serving until SIGINT/SIGTERM" + (f" or {opts.max_lifetime:g} s" if opts.max_lifetime else ""))
            sys.stdout.flush()
            while not stop.is_set() and not sandbox.stopped.is_set():
                stop.wait(0.5)
        finally:
            sandbox.stop()
        print("sandbox stopped")
