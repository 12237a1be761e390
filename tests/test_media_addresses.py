"""Where media may come from: the pure decision, and the middleware's check of the address connected."""

from __future__ import annotations

import ipaddress

import pytest
from scrapy import Request
from scrapy.http import Response

from tzcrawl.media import MEDIA_SLOT, manifest
from tzcrawl.media.addresses import MediaAddressMiddleware, MediaRefused, parse_hosts, refusal

NONE = frozenset()


@pytest.mark.parametrize("host, address, said", [
    ("127.0.0.1", None, "loopback"),
    ("127.9.9.9", None, "loopback"),
    ("localhost", None, "this machine"),
    ("files.localhost", "203.0.113.9", "this machine"),
    ("10.1.2.3", None, "private network"),
    ("192.168.0.10", None, "private network"),
    ("172.16.5.5", None, "private network"),
    ("169.254.169.254", None, "link-local"),
    ("[::1]", None, "loopback"),
    ("[fe80::1]", None, "link-local"),
    ("[fd00::1]", None, "private network"),
    ("[::ffff:127.0.0.1]", None, "loopback"),
    ("0.0.0.0", None, "not a host's address"),
    ("cdn.example", "10.0.0.7", "private network"),  # a public name that resolves inside the network
])
def test_addresses_that_are_not_public_are_refused_with_the_reason(host, address, said):
    why = refusal(host, address, NONE)
    assert why is not None and said in why and "BACKUP_MEDIA_PRIVATE_HOSTS" in why


@pytest.mark.parametrize("host, address", [("8.8.8.8", None), ("cdn.example", "93.184.216.34"), ("cdn.example", None),
                                           ("[2606:4700::1111]", None)])
def test_public_addresses_are_fetched(host, address):
    assert refusal(host, address, NONE) is None


def test_listed_hosts_and_addresses_are_allowed_whatever_they_resolve_to():
    allowed = parse_hosts(" 127.0.0.2, NAS.lan ,[::1],::ffff:10.0.0.5,")
    assert allowed == {"127.0.0.2", "nas.lan", "::1", "10.0.0.5"}
    assert refusal("127.0.0.2", None, allowed) is None
    assert refusal("nas.lan", "192.168.1.4", allowed) is None
    assert refusal("files.example", "127.0.0.2", allowed) is None  # listed by address
    assert refusal("[::1]", None, allowed) is None
    assert refusal("10.0.0.5", None, allowed) is None
    assert refusal("127.0.0.3", None, allowed) is not None  # a neighbour of a listed address is not listed


def test_a_refused_entry_is_asked_again_only_when_the_allowed_hosts_change():
    entry = {"status": manifest.REFUSED, "refused_under": "127.0.0.2"}
    assert not manifest.wanted(entry, full=True, file_ok=False, allowed="127.0.0.2")
    assert manifest.wanted(entry, full=False, file_ok=False, allowed="127.0.0.1,127.0.0.2")
    manifest.resolved(entry, {"status": manifest.OK, "path": "media/a.png", "sha256": "x", "size": 1})
    assert "refused_under" not in entry


def _media(url: str) -> Request:
    return Request(url, meta={"download_slot": MEDIA_SLOT})


def test_the_address_an_answer_came_from_is_checked_after_connecting_too():
    # A name that resolved to a public address when asked, then connected to this machine (DNS
    # rebinding), or a redirect hop: the answer's own address decides.
    mw = MediaAddressMiddleware(parse_hosts("127.0.0.2"))
    request = _media("http://cdn.example/a.png")
    moved = Response("http://cdn.example/a.png", request=request, ip_address=ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(MediaRefused, match=r"came from 127\.0\.0\.1.*loopback"):
        mw.process_response(request, moved)
    fine = Response("http://cdn.example/a.png", request=request, ip_address=ipaddress.ip_address("127.0.0.2"))
    assert mw.process_response(request, fine) is fine
    api = Request("https://127.0.0.1/api/x")  # not a media request: not this middleware's business
    answer = Response("https://127.0.0.1/api/x", request=api, ip_address=ipaddress.ip_address("127.0.0.1"))
    assert mw.process_response(api, answer) is answer
