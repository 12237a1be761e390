"""A tiny urllib client for talking to a sandbox in tests and scripts: no redirects followed,
error statuses returned rather than raised."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENERS: dict[str | None, urllib.request.OpenerDirector] = {None: urllib.request.build_opener(_NoRedirect)}
_TRUSTED: dict[str, str] = {}  # "host:port" of an HTTPS sandbox → its CA file


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def trust(base_url: str, ca_file: str | None) -> None:
    """Verify ``base_url``'s certificate against ``ca_file`` from now on (a sandbox registers itself, and
    forgets itself with ``None`` when it stops: a later sandbox may get the same port)."""
    if ca_file:
        _TRUSTED[_origin(base_url)] = ca_file
    else:
        _TRUSTED.pop(_origin(base_url), None)


def ca_for(base_url: str) -> str | None:
    """The CA file a running sandbox of this process registered for ``base_url`` (None: plain http)."""
    return _TRUSTED.get(_origin(base_url))


def _opener(url: str, ca_file: str | None) -> urllib.request.OpenerDirector:
    ca_file = ca_file or ca_for(url)
    if ca_file not in _OPENERS:
        context = ssl.create_default_context(cafile=ca_file)
        _OPENERS[ca_file] = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    return _OPENERS[ca_file]


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes = field(repr=False)

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def call(base_url: str, path: str, cookie: str | None = None, method: str = "GET", data: bytes | None = None,
         headers: dict | None = None, timeout: float = 10, ca_file: str | None = None) -> Answer:
    """``cookie``: a bare value (sent as ``appSession``, the 2025 form) or ``name=value[; ...]``."""
    all_headers = dict(headers or {})
    if cookie is not None:
        all_headers["Cookie"] = f"theme=dark; {cookie if '=' in cookie else f'appSession={cookie}'}; other=1"
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=all_headers)
    try:
        with _opener(base_url, ca_file).open(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


def post_json(base_url: str, path: str, payload, ca_file: str | None = None) -> Answer:
    return call(base_url, path, method="POST", data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"}, ca_file=ca_file)
