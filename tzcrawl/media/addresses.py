"""Where media may be fetched from: public addresses only, unless BACKUP_MEDIA_PRIVATE_HOSTS lists the host.

A record's media URL is the service's (or anyone's) to choose: ``http://127.0.0.1:8080/admin`` or
``http://169.254.169.254/...`` would make the backup fetch this machine's or its network's pages and
keep them as media. ``refusal`` is the pure decision; ``MediaAddressMiddleware`` applies it to every
media request twice: before connecting, on the address the host name resolves to (through Scrapy's
own resolver and its cache, which the connection then uses), and after, on the address the answer
actually came from (``response.ip_address``), for each hop of a redirect.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future

from . import MEDIA_SLOT, MediaConfig

logger = logging.getLogger(__name__)


class MediaRefused(IgnoreRequest):
    """A media URL whose address is not public and not listed in BACKUP_MEDIA_PRIVATE_HOSTS."""


def parse_hosts(value) -> frozenset[str]:
    """BACKUP_MEDIA_PRIVATE_HOSTS: comma-separated host names or addresses, compared lowercased;
    addresses in their normal form (``::ffff:127.0.0.2`` is ``127.0.0.2``)."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())
    out = set()
    for part in (str(p).strip().strip("[]").lower() for p in parts):
        if part:
            out.add(normal_address(part) or part.rstrip("."))
    return frozenset(out)


def normal_address(text: str) -> str | None:
    """``text`` as an IP address in its normal form, or None when it is not an address."""
    try:
        address = ipaddress.ip_address(str(text).strip("[]"))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def kind_of(address: str) -> str | None:
    """What makes ``address`` not public, in words; None for a public address."""
    ip = ipaddress.ip_address(address)
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if ip.is_loopback:
        return "a loopback address (this machine)"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "not a host's address"
    if ip.is_private:
        return "a private network address"
    return None


def refusal(host: str, address: str | None, allowed: frozenset[str]) -> str | None:
    """Why a media request to ``host`` connecting to ``address`` must not be made; None when it may.

    ``localhost`` and ``*.localhost`` are this machine whatever they resolve to. A listed host name
    or address is allowed whatever its address."""
    name = host.strip("[]").lower().rstrip(".")
    literal = normal_address(name)
    address = normal_address(address) if address else literal
    if name in allowed or (address is not None and address in allowed):
        return None
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is this machine; list it in BACKUP_MEDIA_PRIVATE_HOSTS to allow it"
    if address is None:
        return None
    why = kind_of(address)
    if why is None:
        return None
    shown = host if literal else f"{host} ({address})"
    return f"{shown} is {why}; list it in BACKUP_MEDIA_PRIVATE_HOSTS to allow it"


class MediaAddressMiddleware:
    """Refuse media requests to addresses that are not public (``refusal``), before and after connecting."""

    def __init__(self, allowed: frozenset[str]):
        self.allowed = allowed

    @classmethod
    def from_crawler(cls, crawler):
        media = MediaConfig.from_settings(crawler.settings)
        if not media.enabled:
            raise NotConfigured  # the media pipeline says media are off, once
        return cls(media.private_hosts)

    @staticmethod
    def _is_media(request: Request) -> bool:
        return request.meta.get("download_slot") == MEDIA_SLOT

    async def process_request(self, request: Request):
        if not self._is_media(request):
            return None
        host = urlsplit(request.url).hostname or ""
        address = normal_address(host)
        if address is None and refusal(host, None, self.allowed) is None and host not in self.allowed:
            from twisted.internet import reactor  # the one Scrapy installed: never import it before

            try:  # Scrapy's resolver caches the answer: the connection uses the address checked here
                address = await maybe_deferred_to_future(reactor.resolve(host))
            except Exception:  # the download fails on it with its own reason
                return None
        why = refusal(host, address, self.allowed)
        if why:
            raise MediaRefused(why)
        return None

    def process_response(self, request: Request, response):
        if self._is_media(request) and response.ip_address is not None:
            why = refusal(urlsplit(response.url).hostname or "", str(response.ip_address), self.allowed)
            if why:
                raise MediaRefused(f"the answer came from {response.ip_address}: {why}")
        return response
