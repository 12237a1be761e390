"""The browser login: pure decisions first, then real ``scrapy crawl login`` runs with a real Chromium.

The end-to-end tests need Chromium (Debian's ``chromium``; ``.ci/run`` installs it). Without one they
skip and say so in the summary (``-ra``): the decisions above still run.
"""

from __future__ import annotations

import http.server
import json
import os
import pty
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from scrapy.settings import Settings

from crawlhelp import read_terminal
from tzcrawl.config import ConfigError
from tzcrawl.sandbox.client import ca_for
from tzcrawl.session.browser import (DEBIAN_CHROMIUM, QUIET_FLAGS, expiry_iso, find_chromium, has_display,
                                     launch_failure, one_line, plan_login)
from tzcrawl.session.jar import load_jar, save_cookie_text as save_cookie_file


class Stored:
    """A cookie file as the tests read it: the session's one value, its site and expiry."""

    def __init__(self, path):
        jar = load_jar(path)
        self.names = jar.session_names()
        self.value = jar.cookies[self.names[0]].value if self.names else jar.bare
        self.site, self.expires = jar.site, jar.expires()


load_cookie_file = Stored

ROOT = Path(__file__).resolve().parents[1]
SITE = "http://127.0.0.1:8000"


def settings(**values) -> Settings:
    return Settings({"SERVICE_WEBSITE": SITE, **values})


def exe_only(*paths):
    return lambda path: path in paths


# -- pure decisions --------------------------------------------------------------------------------

def test_email_means_headless_with_password_from_env():
    plan = plan_login(settings(), {"email": "me@example.com"}, env={"TZCRAWL_PASSWORD": "pw"},
                      is_executable=exe_only(DEBIAN_CHROMIUM))
    assert (plan.headless, plan.email, plan.password_from, plan.timeout) == (True, "me@example.com", "env", 30.0)
    assert plan.login_url == f"{SITE}/login"
    options = plan.launch_options()
    assert options["executable_path"] == DEBIAN_CHROMIUM and options["headless"] is True
    assert set(QUIET_FLAGS) <= set(options["args"]) and "--disable-background-networking" in options["args"]


def test_headless_prompts_for_the_password_only_on_a_terminal():
    plan = plan_login(settings(), {"email": "me@example.com"}, env={}, stdin_isatty=True,
                      is_executable=exe_only(DEBIAN_CHROMIUM))
    assert plan.password_from == "prompt"
    with pytest.raises(ConfigError, match="TZCRAWL_PASSWORD"):
        plan_login(settings(), {"email": "me@example.com"}, env={}, stdin_isatty=False,
                   is_executable=exe_only(DEBIAN_CHROMIUM))


def test_no_email_means_headed_which_needs_a_display():
    for display in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}):
        plan = plan_login(settings(), {}, env=display, is_executable=exe_only(DEBIAN_CHROMIUM))
        assert (plan.headless, plan.password_from, plan.timeout) == (False, None, 300.0)
    with pytest.raises(ConfigError, match="DISPLAY"):
        plan_login(settings(), {}, env={"DISPLAY": ""}, is_executable=exe_only(DEBIAN_CHROMIUM))
    assert not has_display({}) and has_display({"WAYLAND_DISPLAY": "w"})


def test_headless_flag_overrides_and_needs_an_email():
    with pytest.raises(ConfigError, match="-a email="):
        plan_login(settings(), {"headless": "yes"}, env={"DISPLAY": ":0"}, is_executable=exe_only(DEBIAN_CHROMIUM))
    plan = plan_login(settings(), {"email": "me@example.com", "headless": "no"}, env={"DISPLAY": ":0"},
                      is_executable=exe_only(DEBIAN_CHROMIUM))
    assert plan.headless is False and plan.password_from is None
    with pytest.raises(ConfigError, match="yes or no"):
        plan_login(settings(), {"headless": "maybe"}, env={}, is_executable=exe_only(DEBIAN_CHROMIUM))


def test_a_password_argument_is_refused_whatever_else_is_given():
    with pytest.raises(ConfigError, match="never put the password on the command line"):
        plan_login(settings(), {"email": "me@example.com", "password": "hunter2"},
                   env={"TZCRAWL_PASSWORD": "pw"}, is_executable=exe_only(DEBIAN_CHROMIUM))


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "100000", "nan"])
def test_bad_timeouts_are_refused(raw):
    with pytest.raises(ConfigError, match="timeout"):
        plan_login(settings(), {"email": "e@x", "timeout": raw}, env={"TZCRAWL_PASSWORD": "pw"},
                   is_executable=exe_only(DEBIAN_CHROMIUM))


def test_missing_or_bad_website_is_a_config_error(monkeypatch):
    monkeypatch.delenv("SERVICE_WEBSITE", raising=False)
    with pytest.raises(ConfigError, match="SERVICE_WEBSITE"):
        plan_login(Settings(), {"email": "e@x"}, env={"TZCRAWL_PASSWORD": "pw"})
    with pytest.raises(ConfigError, match="SERVICE_WEBSITE"):
        plan_login(Settings({"SERVICE_WEBSITE": "file:///etc"}), {"email": "e@x"}, env={"TZCRAWL_PASSWORD": "pw"})


def test_chromium_lookup_order_and_errors():
    assert find_chromium(None, which=lambda n: None, is_executable=exe_only(DEBIAN_CHROMIUM)) == DEBIAN_CHROMIUM
    on_path = {"chromium-browser": "/opt/bin/chromium-browser"}
    assert find_chromium(None, which=on_path.get, is_executable=exe_only("/opt/bin/chromium-browser")) \
        == "/opt/bin/chromium-browser"
    with pytest.raises(ConfigError, match=r"apt-get install chromium.*TZCRAWL_CHROMIUM"):
        find_chromium(None, which=lambda n: None, is_executable=lambda p: False)
    assert find_chromium("/x/chrome", which=lambda n: None, is_executable=exe_only("/x/chrome")) == "/x/chrome"
    # A configured browser that is not there is an error, never a silent fallback to another one.
    with pytest.raises(ConfigError, match="TZCRAWL_CHROMIUM='/x/none' is not an executable"):
        find_chromium("/x/none", which=lambda n: None, is_executable=exe_only(DEBIAN_CHROMIUM))
    with pytest.raises(ConfigError, match="TZCRAWL_CHROMIUM"):
        plan_login(settings(TZCRAWL_CHROMIUM="/x/none"), {"email": "e@x"}, env={"TZCRAWL_PASSWORD": "pw"})


def test_expiry_and_error_lines():
    assert expiry_iso(-1) is None and expiry_iso(0) is None and expiry_iso(None) is None
    assert expiry_iso(1700000000) == "2023-11-14T22:13:20Z"
    assert expiry_iso(1e20) is None
    assert one_line("Page.goto: net::ERR\nCall log:\n  - navigating") == "Page.goto: net::ERR"
    assert one_line("x" * 500).endswith("…") and len(one_line("x" * 500)) == 200


def test_launch_failure_quotes_the_browsers_own_error():
    headed = ("BrowserType.launch: Target page, context or browser has been closed\nBrowser logs:\n\n"
              "║ Looks like you launched a headed browser without having a XServer running. ║\nCall log:\n"
              "  - <launched> pid=26927\n"
              "  - [pid=26927][err] /usr/bin/chromium: 9: [: 25276502016: unexpected operator\n"
              "  - [pid=26927][err] [26927:26927:1121/210603.466005:ERROR:ui/ozone/platform/x11/"
              "ozone_platform_x11.cc:257] Missing X server or $DISPLAY\n"
              "  - [pid=26927][err] [26927:26927:1121/210603.466470:ERROR:ui/aura/env.cc:253] The platform "
              "failed to initialize.  Exiting.\n")
    assert launch_failure(headed) == "Missing X server or $DISPLAY"
    # Under load Chromium's D-Bus complaints may come first: they are never the reason.
    dbus = ("  - [pid=26927][err] [26927:26944:1121/210603.401:ERROR:dbus/bus.cc:408] Failed to connect to the "
            "bus: Failed to connect to socket /run/dbus/system_bus_socket: No such file or directory\n")
    assert launch_failure(headed.replace("Call log:\n", "Call log:\n" + dbus)) == "Missing X server or $DISPLAY"
    assert launch_failure("BrowserType.launch: closed\n  - [pid=1][err] libnss3.so: cannot open shared object\n") \
        == "libnss3.so: cannot open shared object"
    assert launch_failure("BrowserType.launch: Target closed\nCall log:\n  - <launched> pid=5\n") \
        == "BrowserType.launch: Target closed"


# -- real browser runs -----------------------------------------------------------------------------

def chromium_or_skip() -> str:
    try:
        return find_chromium(os.environ.get("TZCRAWL_CHROMIUM"))
    except ConfigError as exc:
        pytest.skip(f"NO BROWSER, the real login tests did not run: {exc}")


def crawl_login(site: str, cookie_path: Path, *args: str, password: str | None = None, timeout: float = 120,
                **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SERVICE_COOKIE", "TZCRAWL_PASSWORD", "DISPLAY", "WAYLAND_DISPLAY")}
    env.update(SERVICE_WEBSITE=site, TZCRAWL_COOKIE_FILE=str(cookie_path), **env_extra)
    if ca_for(site):  # an HTTPS sandbox: its own CA, trusted as a private one
        env.setdefault("TZCRAWL_CA_FILE", ca_for(site))
    if password is not None:
        env["TZCRAWL_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "scrapy", "crawl", "login", *args], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def old_cookie(tmp_path) -> tuple[Path, bytes]:
    """An existing cookie file that every failed login must leave exactly as it was."""
    path = save_cookie_file(tmp_path / "config" / "cookie.json", "old-cookie-value", site="http://old")
    return path, path.read_bytes()


def assert_untouched(old_cookie) -> None:
    path, before = old_cookie
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["cookie.json", "cookie.json.lock"], \
        "a temp file was left behind"


FAST = ["-s", "DOWNLOAD_DELAY=0", "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "BACKUP_PERSONALITY_DELAY=0"]


def assert_backup_matches(backup_dir: Path, totals: dict) -> None:
    """Every personality the sandbox holds is on disk with every memory and message, files 0600."""
    for person in totals["personalities"]:
        name = person["username"]
        folder = backup_dir / name
        assert json.loads((folder / ".backup-metadata.json").read_text())["personality"]["id"] == person["id"]
        assert len(json.loads((folder / f"{name}_memories.json").read_text())) == person["memories"]
        assert len(json.loads((folder / f"{name}_messages.json").read_text())) == person["messages"]
        assert stat.S_IMODE((folder / f"{name}_messages.json").stat().st_mode) == 0o600


def test_headless_login_then_a_backup_with_the_saved_cookie(sandbox_factory, tmp_path):
    chromium_or_skip()
    sb = sandbox_factory(personalities=2, memories=7, messages=12)
    cookie_path = tmp_path / "config" / "tzcrawl" / "cookie.json"
    run = crawl_login(sb.base_url, cookie_path, "-a", "email=owner@example.com", password="sandbox-password")
    assert run.returncode == 0, run.stderr[-3000:]
    stored = load_cookie_file(cookie_path)
    assert stat.S_IMODE(cookie_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cookie_path.parent.stat().st_mode) == 0o700
    assert stored.site == sb.base_url and stored.expires and stored.expires.endswith("Z")
    # It says where and until when, with a truncated value only: never the whole cookie.
    assert f"to {cookie_path}" in run.stdout and f"it expires {stored.expires}" in run.stdout
    assert stored.value[:6] in run.stdout
    assert stored.value not in run.stdout + run.stderr
    assert "sandbox-password" not in run.stdout + run.stderr
    assert stored.value != sb.cookie, "the login minted a cookie of its own"
    assert stored.names == ["__Secure-better-auth.session_token"], "today's session cookie, harvested by name"

    # The backup reads the cookie file when SERVICE_COOKIE is unset (crawl_login's environment drops it).
    backup_dir = tmp_path / "backup"
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_COOKIE"}
    env.update(SERVICE_WEBSITE=sb.base_url, TZCRAWL_COOKIE_FILE=str(cookie_path), BACKUP_DIR=str(backup_dir),
               TZCRAWL_CA_FILE=sb.ca_file)
    crawl = subprocess.run([sys.executable, "-m", "scrapy", "crawl", "all_personalities", *FAST], cwd=ROOT,
                           env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert crawl.returncode == 0, crawl.stderr[-3000:]
    assert f"from {cookie_path}" in crawl.stderr
    assert_backup_matches(backup_dir, sb.totals())
    assert stored.value not in crawl.stderr + "".join(p.read_text() for p in backup_dir.rglob("*.json"))


def test_a_login_harvests_auth0_chunks_and_a_crawl_opens_with_them(sandbox_factory, tmp_path):
    chromium_or_skip()
    sb = sandbox_factory(personalities=1, memories=5, messages=5, session="auth0", chunks=3)
    cookie_path = tmp_path / "config" / "cookie.json"
    run = crawl_login(sb.base_url, cookie_path, "-a", "email=owner@example.com", password="sandbox-password")
    assert run.returncode == 0, run.stderr[-3000:]
    jar = load_jar(cookie_path)
    assert jar.session_names() == ["appSession.0", "appSession.1", "appSession.2"]
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_COOKIE"}
    env.update(SERVICE_WEBSITE=sb.base_url, TZCRAWL_COOKIE_FILE=str(cookie_path), BACKUP_DIR=str(tmp_path / "b"),
               TZCRAWL_CA_FILE=sb.ca_file)
    crawl = subprocess.run([sys.executable, "-m", "scrapy", "crawl", "all_personalities", *FAST], cwd=ROOT,
                           env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert crawl.returncode == 0, crawl.stderr[-3000:]
    assert load_jar(cookie_path).header(True) != jar.header(True), "the rotated parts were written back"


def test_wrong_password_writes_nothing(sandbox, old_cookie):
    chromium_or_skip()
    run = crawl_login(sandbox.base_url, old_cookie[0], "-a", "email=owner@example.com", password="wrong")
    assert run.returncode == 1
    assert "the site refused the email and password (the page says: Wrong email or password.)" in run.stderr
    assert "wrong" not in run.stdout + run.stderr.replace("Wrong email", "")
    assert_untouched(old_cookie)


class SmallSite(http.server.BaseHTTPRequestHandler):
    """What the test sites below share: a quiet handler that sends a whole body."""

    def _send(self, body: bytes, status: int = 200, kind: str = "text/html", cookie: str = ""):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class AnonymousFirst(SmallSite):
    """A site that sets an anonymous appSession on every page, and the real one, with Path=/api,
    only for the right password; /api/users/me accepts only the real one."""

    REAL = "real-session-7f3a9c"
    FORM = (b"<form method='post' action='/login'><input type='email' name='email'>"
                              b"<input type='password' name='password'><button type='submit'>Log in</button></form>")

    def do_GET(self):
        if self.path == "/api/users/me":
            ok = f"appSession={self.REAL}" in (self.headers.get("Cookie") or "")
            return self._send(b'{"id": "u1"}' if ok else b'{"error": "unauthorized"}', 200 if ok else 401,
                              "application/json")
        if self.path.startswith("/api/"):  # users/info: this 2025 site has only users/me
            return self._send(b'{"error": "not found"}', 404, "application/json")
        cookie = "" if "appSession=" in (self.headers.get("Cookie") or "") else "appSession=anonym-0001; Path=/"
        self._send(self.FORM if self.path.startswith("/login") else b"<p>Welcome</p>", cookie=cookie)

    def do_POST(self):
        form = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if "password=right-password" in form:
            self.send_response(303)
            self.send_header("Set-Cookie", f"appSession={self.REAL}; Path=/api; HttpOnly")
            self.send_header("Location", "/home")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(b"<p class='error'>Wrong email or password.</p>" + self.FORM)


@pytest.fixture
def anonymous_first():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AnonymousFirst)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_anonymous_cookie_is_never_saved_for_a_wrong_password(anonymous_first, old_cookie):
    chromium_or_skip()
    run = crawl_login(anonymous_first, old_cookie[0], "-a", "email=owner@example.com", password="wrong")
    assert run.returncode == 1, run.stderr[-3000:]
    assert "the site refused the email and password (the page says: Wrong email or password.)" in run.stderr
    assert "anonym" not in run.stdout
    assert_untouched(old_cookie)


def test_the_real_cookie_is_proven_and_found_even_with_path_api(anonymous_first, tmp_path):
    chromium_or_skip()
    path = tmp_path / "cookie.json"
    run = crawl_login(anonymous_first, path, "-a", "email=owner@example.com", password="right-password")
    assert run.returncode == 0, run.stderr[-3000:]
    assert load_cookie_file(path).value == AnonymousFirst.REAL


class NeverLogsIn(SmallSite):
    """A login form whose POST answers "please wait" forever after and never sets the cookie.

    With ``pid_file`` set, the POST kills the browser process whose pid the wrapper wrote there:
    a browser crash in the middle of a login, at a known moment.
    """

    pid_file: Path | None = None
    FORM = (b"<form method='post' action='/login'><input type='email' name='email'>"
            b"<input type='password' name='password'><button type='submit'>Log in</button></form>")

    def do_GET(self):
        self._send(self.FORM)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.pid_file is not None:
            os.kill(int(self.pid_file.read_text()), 9)
        self._send(b"<p>Checking your account, please wait...</p>")


@pytest.fixture
def never_logs_in():
    servers = []

    def start(pid_file: Path | None = None) -> str:
        handler = type("Handler", (NeverLogsIn,), {"pid_file": pid_file})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_site_that_never_sets_the_cookie_times_out(never_logs_in, old_cookie):
    chromium_or_skip()
    run = crawl_login(never_logs_in(), old_cookie[0], "-a", "email=owner@example.com", "-a", "timeout=4",
                      password="pw")
    assert run.returncode == 1
    assert "did not set a session cookie (__Secure-better-auth.session_token, appSession) within 4s (raise it with -a timeout=SECONDS)" in run.stderr
    assert_untouched(old_cookie)


def test_a_browser_crash_mid_login_writes_nothing(never_logs_in, old_cookie, tmp_path):
    chromium = chromium_or_skip()
    pid_file = tmp_path / "chromium.pid"
    wrapper = tmp_path / "chromium-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho $$ > "{pid_file}"\nexec "{chromium}" "$@"\n')
    wrapper.chmod(0o700)
    run = crawl_login(never_logs_in(pid_file), old_cookie[0], "-a", "email=owner@example.com",
                      "-a", "timeout=20", password="pw", TZCRAWL_CHROMIUM=str(wrapper))
    assert run.returncode == 1
    assert "Chromium exited or crashed before the site set a session cookie" in run.stderr
    assert_untouched(old_cookie)


def test_a_browser_that_cannot_start_is_a_clear_failure(sandbox, old_cookie, tmp_path):
    chromium_or_skip()
    broken = tmp_path / "broken-chromium"
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    broken.chmod(0o700)
    run = crawl_login(sandbox.base_url, old_cookie[0], "-a", "email=owner@example.com", password="pw",
                      TZCRAWL_CHROMIUM=str(broken))
    assert run.returncode == 1
    assert f"Chromium ({broken}) did not start (cannot open display); nothing was written" in run.stderr
    assert "Traceback" not in run.stderr
    assert_untouched(old_cookie)


def test_headed_with_a_display_variable_but_no_display_server(sandbox, old_cookie):
    chromium_or_skip()
    run = crawl_login(sandbox.base_url, old_cookie[0], "-a", "timeout=60", DISPLAY=":97")
    assert run.returncode == 1
    assert "did not start (Missing X server or $DISPLAY); nothing was written" in run.stderr
    assert_untouched(old_cookie)


@pytest.mark.parametrize("args, extra, message", [
    ((), {}, "a headed login needs a display and neither DISPLAY nor WAYLAND_DISPLAY is set"),
    (("-a", "email=owner@example.com"), {"TZCRAWL_CHROMIUM": "/nonexistent/chromium", "TZCRAWL_PASSWORD": "pw"},
     "TZCRAWL_CHROMIUM='/nonexistent/chromium' is not an executable file"),
    (("-a", "email=owner@example.com", "-a", "password=sandbox-password"), {},
     "never put the password on the command line"),
    (("-a", "email=owner@example.com"), {"TZCRAWL_PASSWORD": ""}, "no password for the headless login"),
])
def test_configuration_errors_are_one_line_and_exit_2(sandbox, old_cookie, args, extra, message):
    run = crawl_login(sandbox.base_url, old_cookie[0], *args, password=None, timeout=60, **extra)
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert "sandbox-password" not in run.stdout + run.stderr
    assert_untouched(old_cookie)
    assert sandbox.stats()["requests"] == 0, "no browser may start on a configuration error"


def test_headless_login_prompts_for_the_password_on_a_terminal(sandbox, tmp_path):
    """The password typed at the prompt (on a real pseudo-terminal), never echoed or logged."""
    chromium_or_skip()
    cookie_path = tmp_path / "cookie.json"
    env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_COOKIE", "TZCRAWL_PASSWORD", "DISPLAY")}
    env.update(SERVICE_WEBSITE=sandbox.base_url, TZCRAWL_COOKIE_FILE=str(cookie_path), TZCRAWL_CA_FILE=sandbox.ca_file)
    argv = [sys.executable, "-m", "scrapy", "crawl", "login", "-a", "email=owner@example.com", "--nolog"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty, as in an interactive shell
        try:
            os.chdir(ROOT)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    typed = []

    def answer(output: bytes) -> bytes | None:
        if not typed and b"password for owner@example.com at " in output:
            typed.append(True)
            return b"sandbox-password\n"
        return None

    try:
        output = read_terminal(fd, 120, answer)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode("utf-8", "replace")
    assert typed, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "sandbox-password" not in text, "the password was echoed"
    assert f"to {cookie_path}" in text
    assert load_cookie_file(cookie_path).site == sandbox.base_url
