"""How a crawl ended, in one place: the exit status rule, its stat key, and the one log line that
carries it to readers of a job log (``scripts/scrapyd/tzcrawl_scrapyd.py status``).

Standard library only, so tools outside Scrapy's environment can import it.
"""

from __future__ import annotations

import json

# 2: configuration (an untrusted certificate too); 3: log in again (the session is gone); 4: the site's bot
# protection stopped the crawl (pass its check in a browser: not a login problem)
EXIT_OK, EXIT_INCOMPLETE, EXIT_CONFIG, EXIT_AUTH, EXIT_BLOCKED = 0, 1, 2, 3, 4
EXIT_CODE_STAT = "tzcrawl/exit_code"
LINE_PREFIX = "tzcrawl outcome: "


def exit_status(finish_reason: str, *, requested: int, complete: int, failed: int, errors: int,
                auth_failed: bool = False, blocked: bool = False, untrusted: bool = False) -> int:
    """0 only when the crawl finished and every requested resource was completely backed up; 2 when the
    service's certificate was not trusted (nothing was sent); 4 when the site's bot protection stopped
    it; 3 when the session was refused and could not be recovered (someone has to log in again)."""
    if untrusted:
        return EXIT_CONFIG
    if blocked:
        return EXIT_BLOCKED
    if auth_failed:
        return EXIT_AUTH
    ok = finish_reason == "finished" and not failed and not errors and complete == requested
    return EXIT_OK if ok else EXIT_INCOMPLETE


def outcome_line(code: int, finish_reason: str, summary: str) -> str:
    """The last line a crawl logs: ``tzcrawl outcome: {"exit": 0, "finish_reason": ..., "summary": ...}``."""
    return LINE_PREFIX + json.dumps({"exit": code, "finish_reason": finish_reason, "summary": summary},
                                    ensure_ascii=False)


def read_outcome(log_text: str) -> dict | None:
    """The last outcome line in a log (``exit``, ``finish_reason``, ``summary``), or None."""
    for line in reversed(log_text.splitlines()):
        at = line.find(LINE_PREFIX)
        if at < 0:
            continue
        try:
            found = json.loads(line[at + len(LINE_PREFIX):])
        except ValueError:
            continue
        if isinstance(found, dict) and isinstance(found.get("exit"), int):
            return found
    return None
