"""The sandbox over real HTTP/1.1 on 127.0.0.1, in daemon threads, with keep-alive.

``Sandbox`` owns one ``App`` and one server thread; it stops on ``stop()``, on leaving its ``with``
block, or by itself after ``max_lifetime`` seconds.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from .app import MAX_BODY, App, Response, error
from .config import SandboxConfig
from .client import trust
from .tls import make_certificates, server_context

HOST = "127.0.0.1"
FILES_HOST = "127.0.0.2"  # the file host: another loopback address, so another origin than the API's
MIRROR_HOST = "127.0.0.3"  # where the file host's redirect fault sends clients


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tzcrawl-sandbox"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is closed after this
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus the client's delayed
    # ACK stall each keep-alive answer by up to 40 ms.
    disable_nagle_algorithm = True

    server: "_Server"

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(error(413 if length > MAX_BODY else 400, "bad or too large body"))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        try:  # http.server reads the request line as latin-1; raw UTF-8 paths are sent by some clients
            target = self.path.encode("iso-8859-1").decode("utf-8")
        except UnicodeError:
            target = self.path
        response = self.server.answer(self.command, target, self.headers, body, self.client_address[0])
        if response.delay and self.server.stopping.wait(response.delay):
            response = Response(0, drop=True)
        if response.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: cookies travel in headers, and tests read stats instead of logs."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], answer: Callable[..., Response], tls: ssl.SSLContext | None = None):
        self.answer = answer  # (method, target, headers, body, peer) -> Response
        self.tls = tls
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self):  # type: ignore[override]
        """With TLS, the handshake happens in the connection's own thread (on its first read), so a
        client that never completes it blocks nobody else."""
        request, address = super().get_request()
        if self.tls is not None:
            request = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        return request, address

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        """Clients hanging up mid-answer are normal here (crawlers stop, drops are a knob)."""
        # A client refusing the certificate (as tzcrawl must when it is not trusted) ends the handshake.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            open_now = list(self._connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(server: _Server, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    return thread


class Sandbox:
    """A running imitation of the service: ``with Sandbox(SandboxConfig(...), port=0) as sb: ...``."""

    def __init__(self, config: SandboxConfig | None = None, port: int = 0, max_lifetime: float | None = None,
                 files: bool = True, world=None, files_port: int = 0, **kwargs: Any):
        """``world``: a backup to serve (``frombackup.BackupWorld``) instead of generated data;
        ``files_port``: the file host's port (0: a free one; a served backup's media URLs name theirs)."""
        if config is not None and kwargs:
            raise TypeError("give either a SandboxConfig or keyword arguments, not both")
        self.config = config or SandboxConfig(**kwargs)
        self.app = App(self.config, world=world)
        self.files_port = files_port
        self.port = port
        self.max_lifetime = max_lifetime
        self.cookie = self.app.mint_cookie()
        self.files = files  # also run the file host (and its mirror) for media
        self._server: _Server | None = None
        self._file_servers: list[_Server] = []
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._tls_dir: str | None = None
        self.ca_file: str | None = None  # the certificate to trust (TZCRAWL_CA_FILE) when serving HTTPS
        self.stopped = threading.Event()

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> "Sandbox":
        if self._server is not None:
            return self
        tls = None
        if self.config.https:
            self._tls_dir = tempfile.mkdtemp(prefix="tzcrawl-sandbox-tls-")
            ca, cert, key = make_certificates(self._tls_dir)
            self.ca_file, tls = str(ca), server_context(cert, key)
        self._server = _Server((HOST, self.port), self.app.handle, tls)
        self.port = self._server.server_address[1]
        if self.ca_file:
            trust(self.base_url, self.ca_file)
        self._thread = _serve(self._server, f"sandbox:{self.port}")
        if self.files:
            host = self.app.files
            try:
                for address in (FILES_HOST, MIRROR_HOST):
                    port = self.files_port if address == FILES_HOST else 0
                    server = _Server((address, port), host.handler(address, mirror=address == MIRROR_HOST))
                    self._file_servers.append(server)
                    _serve(server, f"sandbox-files:{address}")
            except OSError:  # the file host's port is taken: nothing of this sandbox keeps running
                self.stop()
                raise
            self.app.world.files_base = self.files_url
            host.mirror_base = f"http://{MIRROR_HOST}:{self._file_servers[1].server_address[1]}"
        if self.max_lifetime:
            self._timer = threading.Timer(self.max_lifetime, self.stop)
            self._timer.daemon = True
            self._timer.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.app._released.set()  # a held request (hold_chat_after) answers now: nothing waits on it
        for each in [server, *self._file_servers]:
            each.stopping.set()
            each.shutdown()
            each.close_connections()
            each.server_close()
        self._file_servers = []
        if self.ca_file:
            trust(self.base_url, None)
        if self._tls_dir:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
        self.stopped.set()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.config.https else 'http'}://{HOST}:{self.port}"

    @property
    def cookie_header(self) -> str:
        """``self.cookie`` as the browser sends it: ``name=value`` (every part of an Auth0 session)."""
        return self.app.sessions.header(self.cookie)

    @property
    def cookie_names(self) -> list[str]:
        return self.app.sessions.names()

    def clearance(self) -> dict:
        """``{"cookie": "cf_clearance=...", "user_agent": ...}``: what passing the bot check gives a browser."""
        return self.app.clearance_pair()

    @property
    def files_url(self) -> str | None:
        """The file host's base URL (media live there), or None without one."""
        if not self._file_servers:
            return None
        return f"http://{FILES_HOST}:{self._file_servers[0].server_address[1]}"

    @property
    def media_hosts(self) -> str:
        """The file host and its mirror, as BACKUP_MEDIA_PRIVATE_HOSTS lists them: loopback addresses a
        backup refuses to fetch media from unless told (empty without a file host)."""
        return f"{FILES_HOST},{MIRROR_HOST}" if self._file_servers else ""

    def file_stats(self) -> dict:
        """Requests the file host (and mirror) answered, and how many carried a cookie or credentials."""
        return self.app.files.stats()

    # -- the control surface, in process ----------------------------------------------------------
    def stats(self) -> dict:
        return self.app.stats()

    def reset_stats(self) -> None:
        self.app.reset_stats()

    def totals(self) -> dict:
        return self.app.world.totals()

    def export(self, personality: Any) -> dict:
        return self.app.world.export(self._find(personality))

    def add(self, personality: Any, memories: int = 0, messages: int = 0) -> None:
        self.app.world.add(self._find(personality), memories, messages)

    def edit(self, personality: Any, **changes: Any) -> None:
        """Change the service's data: ``profile={...}``, ``knowledge=[...]``, ``memory=(k, {...})`` (the
        k-th newest memory), ``old_memories=n`` (n memories older than all others)."""
        self.app.world.edit(self._find(personality), **changes)

    def expire_cookie(self) -> None:
        """Expire every cookie minted so far (``self.cookie`` included)."""
        self.app.expire_cookies()

    def new_cookie(self) -> str:
        """Mint a fresh valid cookie (as a login would) and make it ``self.cookie``."""
        self.cookie = self.app.mint_cookie()
        return self.cookie

    def set_knobs(self, **changes: Any) -> dict:
        return self.app.set_knobs(**changes)

    def knobs(self) -> dict:
        return self.app.knobs_dict()

    @property
    def personalities(self) -> list[dict]:
        """The owner's personalities as the list endpoint shows them (id, name, username, ...)."""
        return self.app.world.listing("self")

    @property
    def others(self) -> list[dict]:
        """Other owners' personalities the user talked to, as the ``recent`` list shows them."""
        world = self.app.world
        return [world.list_entry(p) for p in world.everyone if not world.owns(p)]

    def _find(self, personality: Any):
        found = self.app.world.find(personality)
        if found is None:
            raise KeyError(f"no such personality: {personality!r}")
        return found
