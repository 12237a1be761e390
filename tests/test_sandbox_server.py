"""The sandbox as a server: concurrent connections, keep-alive, stopping (by hand and by itself)."""

from __future__ import annotations

import http.client
import socket

import pytest

from tzcrawl.sandbox import Sandbox, SandboxConfig
from tzcrawl.sandbox.client import call

# The 2025 service these tests were written for (appSession over plain http, 2025 record shapes); today's
# default has tests of its own (test_sandbox_sessions.py, test_sandbox_records.py).
pytestmark = [pytest.mark.sandbox_session("appsession"), pytest.mark.sandbox_records("2025")]


def test_serves_other_clients_while_one_connection_stalls(sandbox):
    stalled = socket.create_connection(("127.0.0.1", sandbox.port), timeout=5)
    try:
        stalled.sendall(b"GET /api/users/me HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        assert call(sandbox.base_url, "/api/users/me", sandbox.cookie, timeout=10).status == 200
    finally:
        stalled.close()


def test_keep_alive_connection_serves_many_requests(sandbox):
    pid = sandbox.personalities[0]["id"]
    conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
    headers = {"Cookie": f"appSession={sandbox.cookie}"}
    try:
        for page in (1, 2, 3, 4):
            conn.request("GET", f"/api/memory/{pid}?page={page}", headers=headers)
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Connection") != "close"
            response.read()
        sock = conn.sock
        conn.request("GET", "/api/nothing", headers=headers)
        conn.getresponse().read()
        assert conn.sock is sock  # still the same connection
    finally:
        conn.close()
    assert sandbox.stats()["routes"]["memory"] == 4


def test_bad_content_length_is_refused(sandbox):
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


def test_stop_closes_open_connections_and_the_port():
    sb = Sandbox(SandboxConfig(personalities=1, session="appsession"), port=0).start()
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=5)
    conn.request("GET", "/api/users/me", headers={"Cookie": f"appSession={sb.cookie}"})
    assert conn.getresponse().read()
    sb.stop()
    sb.stop()  # idempotent
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("GET", "/api/users/me")
        conn.getresponse()
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sb.port), timeout=5)


def test_max_lifetime_stops_the_server_by_itself():
    with Sandbox(SandboxConfig(personalities=1), port=0, max_lifetime=0.2) as sb:
        assert sb.stopped.wait(10)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", sb.port), timeout=5)


def test_keyword_construction_and_conflicts():
    sb = Sandbox(personalities=1, messages=3)
    assert sb.totals()["sum"]["messages"] == 3
    with pytest.raises(TypeError):
        Sandbox(SandboxConfig(), messages=3)
