"""The session with the service, end to end, in one package:

- ``forms``: the cookie's names and pasted forms, ``Set-Cookie`` lines (pure);
- ``jar``: the crawl's jar of session cookies and the 0600 cookie file it is kept in;
- ``botcheck``: is an answer the site's bot protection (pure);
- ``tls``: certificate verification and a private CA (``TZCRAWL_CA_FILE``);
- ``crawler``: ``Session``, built once per crawl: the session check, rotation, recovery;
- ``browser``: the browser login (``scrapy crawl login`` and unattended recovery);
- ``credentials``: the unattended login's email and password (environment or keyring).

Nothing here is imported by this file: ``tzcrawl.config`` imports ``forms`` and ``jar`` without the rest.
"""
