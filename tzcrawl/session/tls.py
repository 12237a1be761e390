"""Every HTTPS connection is verified; a private CA is trusted through ``TZCRAWL_CA_FILE``.

Scrapy 2.19 verifies no certificate unless ``DOWNLOAD_VERIFY_CERTIFICATES`` is on (tzcrawl's settings
turn it on). Its verifying path trusts OpenSSL's default paths, which honour ``SSL_CERT_FILE``; this
context factory adds the certificates of ``TZCRAWL_CA_FILE`` to them (the sandbox's certificate, a
company's private CA), so one client, with one set of rules, speaks to the API, the login and media.
"""

from __future__ import annotations

import base64
import hashlib
import re
import warnings
from pathlib import Path

from OpenSSL import SSL  # the pyopenssl distribution (declared: its module is named OpenSSL)
from scrapy.core.downloader.contextfactory import _ScrapyClientContextFactory
from twisted.internet._sslverify import IOpenSSLTrustRoot, optionsForClientTLS
from zope.interface import implementer

CA_FILE_SETTING = "TZCRAWL_CA_FILE"
_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def ca_file(settings) -> str | None:
    """The configured CA file, checked to hold at least one PEM certificate; ConfigError otherwise."""
    from tzcrawl.config import ConfigError, lookup

    raw = lookup(settings, CA_FILE_SETTING)
    if not raw:
        return None
    path = Path(str(raw)).expanduser()
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{CA_FILE_SETTING}={str(raw)!r} cannot be read: {exc.strerror or exc}") from None
    if not _PEM_RE.search(pem):
        raise ConfigError(f"{CA_FILE_SETTING}={str(raw)!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return str(path)


def spki_hashes(path: str) -> list[str]:
    """base64 sha256 of each certificate's public key: what Chromium's
    ``--ignore-certificate-errors-spki-list`` takes to trust exactly these keys and no others."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    hashes = []
    for pem in _PEM_RE.findall(Path(path).read_bytes()):
        key = x509.load_pem_x509_certificate(pem).public_key()
        der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        hashes.append(base64.b64encode(hashlib.sha256(der).digest()).decode())
    return hashes


@implementer(IOpenSSLTrustRoot)
class _PlatformAndFile:
    """OpenSSL's default trust (SSL_CERT_FILE honoured) plus a CA file."""

    def __init__(self, path: str):
        self.path = path

    def _addCACertsToContext(self, context: SSL.Context) -> None:  # noqa: N802 - Twisted's interface
        context.set_default_verify_paths()
        context.load_verify_locations(self.path.encode())


class CAFileContextFactory(_ScrapyClientContextFactory):
    """Scrapy's verifying context factory (``DOWNLOAD_VERIFY_CERTIFICATES``), trusting ``TZCRAWL_CA_FILE``
    besides OpenSSL's default paths. Installed by ``TlsAddon`` only when that setting is given: Scrapy
    2.19 deprecates ``DOWNLOADER_CLIENTCONTEXTFACTORY`` but offers no other way to add a CA file."""

    ca_path: str | None = None

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        factory = super().from_crawler(crawler, *args, **kwargs)
        factory.ca_path = ca_file(crawler.settings)
        factory._verify_certificates = True  # never relaxed, whatever DOWNLOAD_VERIFY_CERTIFICATES says
        return factory

    def creatorForNetloc(self, hostname: bytes, port: int):  # noqa: N802 - Twisted's interface
        if not self.ca_path:
            return super().creatorForNetloc(hostname, port)
        return optionsForClientTLS(hostname=hostname.decode("ascii"), trustRoot=_PlatformAndFile(self.ca_path),
                                   extraCertificateOptions=self._get_cert_options_kwargs())


class TlsAddon:
    """Certificates are always verified; with ``TZCRAWL_CA_FILE`` (a setting or the environment) the
    downloader trusts that file too. A bad CA file is reported by the crawl command's configuration check."""

    def update_settings(self, settings) -> None:
        settings.set("DOWNLOAD_VERIFY_CERTIFICATES", True, priority="addon")
        try:
            path = ca_file(settings)
        except ValueError:
            return  # the crawl command's check_config names the problem in one line
        if path:
            settings.set("DOWNLOADER_CLIENTCONTEXTFACTORY", f"{__name__}.CAFileContextFactory", priority="addon")
            warnings.filterwarnings("ignore", message="The 'DOWNLOADER_CLIENTCONTEXTFACTORY' setting is deprecated")


def tls_problem(exc: BaseException) -> str | None:
    """Why a connection failed its TLS verification, in a few words; None for any other failure.

    Scrapy raises ``DownloadFailedError`` from Twisted's ``ResponseNeverReceived`` whose ``reasons``
    (Failures) hold OpenSSL's ``SSL.Error`` (certificate verify failed) or service_identity's
    ``VerificationError`` (the certificate names another host)."""
    seen: list[BaseException] = []
    pending = [exc]
    while pending and len(seen) < 20:
        current = pending.pop()
        seen.append(current)
        for reason in getattr(current, "reasons", None) or ():
            value = getattr(reason, "value", reason)
            if isinstance(value, BaseException):
                pending.append(value)
        for linked in (current.__cause__, current.__context__):
            if linked is not None and linked not in seen:
                pending.append(linked)
    for current in seen:
        kind = type(current).__name__
        module = type(current).__module__
        if kind == "VerificationError" and "service_identity" in module:
            return f"the certificate is not for this host ({current})"
        if isinstance(current, SSL.Error):
            text = " ".join(str(part) for part in _flatten(current.args))
            if "certificate verify failed" in text or "verify" in text:
                return "certificate verify failed: no trusted authority vouches for it"
            return f"the TLS handshake failed ({text[:160] or kind})"
    return None


def _flatten(value):
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _flatten(item)
    elif value not in (None, ""):
        yield value
