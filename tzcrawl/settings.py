"""Scrapy settings for tzcrawl.

Service configuration (SERVICE_WEBSITE, SERVICE_COOKIE, ...) is read by ``tzcrawl.config`` from
``-s`` settings first, then the environment, so the seeds' environment-variable habits keep working.
"""

import os

BOT_NAME = "tzcrawl"
SPIDER_MODULES = ["tzcrawl.spiders"]
NEWSPIDER_MODULE = "tzcrawl.spiders"
COMMANDS_MODULE = "tzcrawl.commands"

# The service is polite-use only: one request at a time per account, 1 s apart, AutoThrottle on.
ROBOTSTXT_OBEY = False
CONCURRENT_REQUESTS = 1
CONCURRENT_REQUESTS_PER_DOMAIN = 1
DOWNLOAD_DELAY = 1.0
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
DOWNLOAD_TIMEOUT = 60

# 5xx, timeouts and dropped connections are retried with backoff by tzcrawl's middleware.
RETRY_ENABLED = True
RETRY_TIMES = 5
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]

# This process holds a session cookie: no remote consoles.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

# The cookie is injected by tzcrawl's middleware; Scrapy's jar would only strip or mix it.
COOKIES_ENABLED = False

# Answers are private JSON: never cache them on disk.
HTTPCACHE_ENABLED = False

# A bot check's clearance (cf_clearance) is bound to the browser it was got in: USER_AGENT, from the
# environment too, like every tzcrawl setting, is that browser's User-Agent then.
USER_AGENT = os.environ.get("USER_AGENT") or "tzcrawl (personal backup tool)"

# Scrapy verifies no certificate by default: tzcrawl sends a session cookie, so every HTTPS connection
# is verified (API, login, media); TZCRAWL_CA_FILE adds a private CA (tzcrawl.session.tls.TlsAddon).
DOWNLOAD_VERIFY_CERTIFICATES = True
REQUEST_FINGERPRINTER_IMPLEMENTATION = "2.7"
FEED_EXPORT_ENCODING = "utf-8"
LOG_LEVEL = "INFO"

DOWNLOADER_MIDDLEWARES = {
    # Above the retry middleware: it reads the Set-Cookie of every answer, retried ones too.
    "tzcrawl.middlewares.SessionCookieMiddleware": 590,
    # Retries wait first (Retry-After, else backoff): replaces Scrapy's RetryMiddleware in its place.
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "tzcrawl.middlewares.BackoffRetryMiddleware": 550,
    # Above the retry middleware, so it sees a 429 before it is retried.
    "tzcrawl.middlewares.AdaptivePacingMiddleware": 560,
    # Below the redirect middleware (600): the address every hop of a media download came from is checked.
    "tzcrawl.media.addresses.MediaAddressMiddleware": 650,
}
# Closest to the engine: an exception in any spider middleware fails one resource, not the walk.
SPIDER_MIDDLEWARES = {"tzcrawl.middlewares.WalkGuardMiddleware": 10}
# Media first: it lists a resource's media in the manifest before the text commit, and finishes a
# personality's downloads before BackupPipeline lets go of its lock.
ITEM_PIPELINES = {"tzcrawl.media.pipeline.MediaFilesPipeline": 200, "tzcrawl.pipelines.BackupPipeline": 300}
# The file host gets its own download slot (BACKUP_MEDIA_CONCURRENCY at once) next to the API's.
ADDONS = {"tzcrawl.media.MediaAddon": 0, "tzcrawl.session.tls.TlsAddon": 0}
# Media may be behind a redirect (to a CDN); the cookie middleware keeps the cookie off other hosts.
MEDIA_ALLOW_REDIRECTS = True
EXTENSIONS = {"tzcrawl.extensions.BackupReport": 500, "tzcrawl.progress.ProgressReport": 510}

# The spider yields one page (or document) and one request per answer; Scrapy would start
# CONCURRENT_ITEMS (100) asyncio tasks for each answer all the same (~300k for a 100k-message
# history). One keeps the order explicit too: items reach the pipeline in the order fetched.
CONCURRENT_ITEMS = 1

# Scrapy re-parses a callback's source on every call to check for `return value` in generators
# (its cache misses on bound methods): ~3 ms per response. tzcrawl's callbacks return no values.
WARN_ON_GENERATOR_RETURN_VALUE = False

# Scrapy varies each delay by ±50 % by default; against a server's rate limit that turns the
# shorter half of the intervals into 429s. ±10 % keeps requests from lining up without that cost.
DOWNLOAD_DELAY_JITTER = 0.1
