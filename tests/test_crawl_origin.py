"""The session cookie goes only to SERVICE_WEBSITE's exact origin (scheme, host, port), and an
answer that a redirect brought from another origin is never saved as backup data.

Real servers on a loopback address of their own: https on 443 (a certificate of a CA made
here) and plain http on 80, so the two differ only in scheme, as ``https://host`` and ``http://host``
do on a real site.
"""

from __future__ import annotations

import json
import random
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import scrapy

from scrapy.utils.test import get_crawler

from crawlhelp import REPO, crawl_cmd
from tzcrawl import api
from tzcrawl.config import CookieSource, ServiceConfig
from tzcrawl.middlewares import SessionCookieMiddleware
from tzcrawl.sandbox.tls import make_certificates
from tzcrawl.session.crawler import Session
from tzcrawl.session.forms import BETTER_AUTH
from tzcrawl.session.jar import Jar

COOKIE = "origin-test-cookie-0123456789abcdef"


def middleware_for(site: str, cookie_text: str) -> SessionCookieMiddleware:
    crawler = get_crawler(scrapy.Spider)
    jar, _ = Jar.from_text(cookie_text)
    return SessionCookieMiddleware(Session(crawler, CookieSource(jar, "test"), api.Endpoints(ServiceConfig(site))))


@pytest.mark.parametrize("url, sent", [
    ("https://service.example.com/api/x", True),
    ("HTTPS://Service.Example.com:443/api/x", True),
    ("http://service.example.com/api/x", False),       # same host, plain http
    ("https://service.example.com:8443/api/x", False),  # another port
    ("https://files.service.example.com/a.png", False),  # the file host
    ("https://service.example.com.evil.test/api/x", False),
])
def test_the_cookie_goes_to_the_exact_origin_only(url, sent):
    middleware = middleware_for("https://service.example.com", f"_ga=1; appSession={COOKIE}")
    request = scrapy.Request(url, headers={"Cookie": "appSession=left-over"})
    middleware.process_request(request)
    assert (request.headers.get("Cookie") == f"appSession={COOKIE}".encode()) == sent
    if not sent:
        assert "Cookie" not in request.headers


def test_the_secure_cookie_is_never_sent_over_http():
    middleware = middleware_for("http://service.example.com", f"{BETTER_AUTH}={COOKIE}; cf_clearance=cf")
    request = scrapy.Request("http://service.example.com/api/x", headers={"Cookie": "left=over"})
    middleware.process_request(request)
    assert request.headers.get("Cookie") == b"cf_clearance=cf"


def test_a_rotation_from_the_origin_updates_the_jar_and_one_from_elsewhere_does_not():
    middleware = middleware_for("https://service.example.com", f"{BETTER_AUTH}={COOKIE}")
    for url, value in (("https://files.service.example.com/a", "foreign"), ("https://service.example.com/api/x", "new")):
        response = scrapy.http.Response(url, headers={"Set-Cookie": [f"{BETTER_AUTH}={value}; Secure; HttpOnly",
                                                                    "_ga=tracking; Path=/"]})
        middleware.process_response(scrapy.Request(url), response)
    request = scrapy.Request("https://service.example.com/api/y")
    middleware.process_request(request)
    assert request.headers.get("Cookie") == f"{BETTER_AUTH}=new".encode()


class Site:
    """https://IP redirects API calls to http://IP (or, for ``same-origin``, to another https path);
    every server records the Cookie headers it received."""

    def __init__(self, tmp_path):
        self.ip = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        self.cookies: dict[str, list] = {"https": [], "http": []}
        site = self

        class Handler(BaseHTTPRequestHandler):
            scheme = "http"

            def do_GET(self):  # noqa: N802 (http.server's name)
                site.cookies[self.scheme].append(self.headers.get("Cookie"))
                if self.scheme == "https" and self.path.startswith("/api/personalities/username/"):
                    same = self.path.endswith("/same-origin")
                    target = f"https://{site.ip}/api/v2/profile" if same else f"http://{site.ip}{self.path}"
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"id": "p1", "username": self.path.rsplit("/", 1)[-1], "prompt": "secret"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Https(Handler):
            scheme = "https"

        self.servers = []
        try:
            plain = ThreadingHTTPServer((self.ip, 80), Handler)
            secure = ThreadingHTTPServer((self.ip, 443), Https)
        except OSError as exc:
            pytest.fail(f"cannot listen on {self.ip}:80/443 (run as root, as CI does): {exc}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca, cert_path, key_path = make_certificates(tmp_path, hosts=(self.ip,))  # the sandbox's own CA maker
        self.ca_file = str(ca)
        context.load_cert_chain(cert_path, key_path)
        secure.socket = context.wrap_socket(secure.socket, server_side=True)
        for server in (plain, secure):
            server.timeout = 1
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
            self.servers.append(server)

    def stop(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    yield site
    site.stop()


def crawl_profile(site, tmp_path, name):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SERVICE_WEBSITE": f"https://{site.ip}",
           "SERVICE_COOKIE": f"appSession={COOKIE}", "BACKUP_DIR": str(tmp_path / "backup"),
           "TZCRAWL_CA_FILE": site.ca_file,
           "TZCRAWL_COOKIE_FILE": str(tmp_path / "no-cookie-file")}
    return subprocess.run(crawl_cmd("profile", "-a", f"personality={name}"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_an_https_to_http_redirect_gets_no_cookie_and_its_answer_is_not_saved(site, tmp_path):
    result = crawl_profile(site, tmp_path, "alice")
    # the service's own origin: yes (the session check, then the profile)
    assert site.cookies["https"] == [f"appSession={COOKIE}"] * 2
    assert site.cookies["http"] == [None]  # same host over plain http: never
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"the answer came from http://{site.ip}/api/personalities/username/alice, not from " \
           f"SERVICE_WEBSITE's origin" in result.stderr
    assert not (tmp_path / "backup" / "alice" / "alice.json").exists()
    assert COOKIE not in result.stderr + result.stdout


def test_a_redirect_within_the_origin_is_followed_with_the_cookie(site, tmp_path):
    result = crawl_profile(site, tmp_path, "same-origin")
    assert result.returncode == 0, result.stderr[-3000:]
    assert site.cookies["https"] == [f"appSession={COOKIE}"] * 3 and site.cookies["http"] == []
    saved = json.loads((tmp_path / "backup" / "same-origin" / "same-origin.json").read_text())
    assert saved["prompt"] == "secret"
