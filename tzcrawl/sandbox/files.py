"""The sandbox's file host: the public host (``files.<domain>`` on the real service) that media live on.

It listens on other loopback addresses than the API (127.0.0.2, and a mirror on 127.0.0.3 that the
``redirect`` fault sends clients to), so a cookie meant for the API's origin has no business here:
every request that carries a ``Cookie`` or ``Authorization`` header is counted, and tests assert
there were none. Any path ending in .png, .jpg, .mp3 or .ogg is a file; its bytes and size follow
from the path (``media.make``). Faults (``media_fault``) hit a fixed share of paths, chosen by hash.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from typing import TYPE_CHECKING, Mapping
from urllib.parse import urlsplit

from . import media
from .app import Response, error, html_response, redirect

if TYPE_CHECKING:
    from .app import App

FLAKY_FAILURES = 2  # the flaky fault answers 503 this many times per path, then the file


def _fraction(path: str) -> float:
    digest = hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32


class FileHost:
    """Serves media for one ``App`` (its knobs and config); ``mirror=True`` answers without faults."""

    def __init__(self, app: "App"):
        self.app = app
        self.mirror_base = ""
        self.lock = threading.Lock()
        self.flaky: Counter = Counter()  # failures given per path (kept across stats resets)
        self.reset_stats()

    def reset_stats(self) -> None:
        with self.lock:
            self.paths: Counter = Counter()
            self.status: Counter = Counter()
            self.hosts: Counter = Counter()
            self.cookies = 0
            self.credentials = 0

    def stats(self) -> dict:
        with self.lock:
            return {"requests": sum(self.paths.values()), "paths": dict(self.paths),
                    "status": {str(k): v for k, v in sorted(self.status.items())}, "hosts": dict(self.hosts),
                    "requests_with_cookie": self.cookies, "requests_with_credentials": self.credentials}

    def size_of(self, path: str) -> int:
        config = self.app.config
        low, high = sorted((config.media_min_kb * 1024, config.media_max_kb * 1024))
        return low + int(_fraction("size:" + path) * (high - low + 1))

    def handler(self, host: str, mirror: bool):
        """The ``handle`` a ``_Server`` calls, for the host named ``host`` (counted by it)."""

        def handle(method: str, target: str, headers: Mapping[str, str], body: bytes, peer: str) -> Response:
            path = urlsplit(target).path
            response = self._answer(method, path, mirror)
            response.delay = self.app.knobs.media_latency
            with self.lock:
                self.paths[path] += 1
                self.hosts[host] += 1
                self.status[response.status] += 1
                self.cookies += bool(headers.get("Cookie"))
                self.credentials += bool(headers.get("Authorization") or headers.get("Proxy-Authorization"))
            return response

        return handle

    def _answer(self, method: str, path: str, mirror: bool) -> Response:
        ext = path[path.rfind("."):].lower() if "." in path.rsplit("/", 1)[-1] else ""
        if method != "GET":
            return error(405, "method not allowed")
        saved = getattr(self.app.world, "media", None)
        if saved is not None:  # a backup served as the service: its saved files, by their URLs' paths
            found = saved.get(path)
            if found is None:
                return error(404, "no such file in the backup")
            file, content_type = found
            return Response(200, file.read_bytes(), [("Content-Type", content_type or "application/octet-stream")])
        if ext not in media.CONTENT_TYPES:
            return error(404, "no such file")
        knobs = self.app.knobs
        fault = knobs.media_fault if not mirror and _fraction(path) < knobs.media_fault_share else "none"
        if fault in ("404", "410"):
            return error(int(fault), "this file is gone")
        if fault == "500" or (fault == "flaky" and self._count_failure(path)):
            return error(503, "file host overloaded")
        if fault == "429" and self._count_failure(path):
            response = error(429, "slow down")
            response.headers.append(("Retry-After", "0"))
            return response
        if fault == "html":
            return html_response(200, "Not found", "<h1>This file is not available</h1>")
        if fault == "redirect":
            return redirect(self.mirror_base + path)
        size = knobs.media_huge_kb * 1024 if fault == "huge" else self.size_of(path)
        data = media.make(path, size, self.app.config.seed)
        return Response(200, data, [("Content-Type", media.CONTENT_TYPES[ext]), ("Cache-Control", "public, max-age=86400")])

    def _count_failure(self, path: str) -> bool:
        """True while the flaky ``path`` still has failures to give."""
        with self.lock:
            if self.flaky[path] >= FLAKY_FAILURES:
                return False
            self.flaky[path] += 1
            return True


__all__ = ["FileHost"]
