"""A tiny urllib client for talking to a sandbox in tests and scripts: no redirects followed,
error statuses returned rather than raised."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


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
         headers: dict | None = None, timeout: float = 10) -> Answer:
    all_headers = dict(headers or {})
    if cookie is not None:
        all_headers["Cookie"] = f"theme=dark; appSession={cookie}; other=1"
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=all_headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


def post_json(base_url: str, path: str, payload) -> Answer:
    return call(base_url, path, method="POST", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
