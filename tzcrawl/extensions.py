"""Progress lines, the closing summary, and the exit status that cron and scrapyd rely on."""

from __future__ import annotations

import logging

from scrapy import signals

from tzcrawl.config import cookie_file, lookup
from tzcrawl.items import BLOCKED, FAILED, NOT_THEIRS, Outcome
from tzcrawl.session.botcheck import remedy
from tzcrawl.outcome import EXIT_CODE_STAT, exit_status, outcome_line
from tzcrawl.registry import COLLECTIONS, CONVERSATION, RESOURCES
from tzcrawl.signals import resource_finished

logger = logging.getLogger(__name__)


MEDIA = "media"  # reported like a resource, from the media pipeline; not one of the API's resources
NOT_YOURS = "not yours"  # how the summary shows a resource only the personality's owner may read


def media_cell(cell: dict) -> str:
    """``held (+new)``, then how many are gone, refused (not a public address) and failed, when any."""
    text = f"{cell.get('total', 0)} (+{cell.get('new', 0)})"
    if cell.get("gone"):
        text += f", {cell['gone']} gone"
    if cell.get("refused"):
        text += f", {cell['refused']} refused"
    if cell.get("failed"):
        text += f", {cell['failed']} FAILED"
    return text


def summary_table(rows: dict[str, dict[str, dict]]) -> str:
    """One line per personality: each resource's total (``new`` in brackets), FAILED, SKIPPED or "not
    yours" (only its owner may read it); the media column (when media were backed up) says held (+new),
    gone and failed files."""
    columns = [r for r in (*RESOURCES, MEDIA) if any(r in res for res in rows.values())]
    header = ["personality", *columns, "characters"]
    lines = [header]
    for username, resources in rows.items():
        line = [username]
        for resource in columns:
            cell = resources.get(resource)
            if cell is None:
                line.append("-")
            elif resource == MEDIA:
                line.append(media_cell(cell))
            elif cell["outcome"].status == NOT_THEIRS:
                line.append(NOT_YOURS)
            elif not cell["outcome"].ok:
                line.append(cell["outcome"].status.upper())
            elif resource in COLLECTIONS:
                deleted = (cell.get("deleted_upstream") or {}).get("count") if cell.get("last_full_read") else 0
                line.append(f"{cell.get('total', 0)} (+{cell.get('new', 0)})"
                            + (f", {cell['deleted']} flagged deleted" if cell.get("deleted") else "")
                            + (f", {deleted} deleted upstream" if deleted else ""))
            else:
                line.append(str(cell.get("total", 0)))
        line.append(str(resources.get(CONVERSATION, {}).get("characters", "-")))
        lines.append(line)
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)


def drift_lines(rows: dict[str, dict[str, dict]]) -> list[str]:
    """One line per resource whose answers lacked keys today's service sends (``drift`` in the figures)."""
    seen: dict[tuple[str, tuple], list[str]] = {}
    for user, cells in rows.items():
        for resource, cell in cells.items():
            if cell.get("drift"):
                seen.setdefault((resource, tuple(cell["drift"])), []).append(user)
    return [f"Drift: the service's {resource} answers lack {', '.join(keys)} ({len(users)} of {len(rows)} "
            f"personalities): it may have changed; saved as received, noted in .backup-metadata.json"
            for (resource, keys), users in seen.items()]


class BackupReport:
    """Log each resource as it completes and a summary at the end; set the crawl's exit status."""

    def __init__(self, crawler):
        self.crawler = crawler
        self.rows: dict[str, dict[str, dict]] = {}
        # The summary and the outcome line show whatever LOG_LEVEL is (up to ERROR): -s LOG_LEVEL=WARNING
        # quiets the progress of a run, not its result.
        level = logging.getLevelName(str(crawler.settings.get("LOG_LEVEL", "INFO")).upper())
        self.visible = min(max(level, logging.INFO), logging.ERROR) if isinstance(level, int) else logging.INFO
        crawler.signals.connect(self.resource_finished, signal=resource_finished)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def resource_finished(self, personality, resource, outcome, figures):
        username = personality["username"]
        stats = self.crawler.stats
        self.rows.setdefault(username, {})[resource] = {**figures, "outcome": outcome}
        if resource == MEDIA:
            self._media(username, outcome, figures)
            return
        if outcome.status == NOT_THEIRS:  # nothing wrong, nothing to save: said once, counted apart
            stats.inc_value("backup/resources/not_theirs")
            stats.inc_value(f"backup/{resource}/not_theirs")
            logger.info("%s · %s: %s: %s", username, resource, NOT_YOURS, outcome.reason)
            return
        if not outcome.ok:
            stats.inc_value(f"backup/resources/{outcome.status}")
            stats.inc_value(f"backup/{resource}/{outcome.status}")
            # A skipped resource follows from a failure already logged (profile, cookie, lock): the
            # summary table shows it; the details only at DEBUG.
            level = logging.ERROR if outcome.status == FAILED else logging.DEBUG
            if outcome.status == BLOCKED:  # one line at the end says what was seen and what to do
                level = logging.DEBUG
            logger.log(level, "%s · %s: %s (%s)", username, resource, outcome.status.upper(), outcome.reason)
            return
        stats.inc_value("backup/resources/complete")
        for figure in ("new", "total", "requests", "characters"):
            if figure in figures:
                stats.inc_value(f"backup/{resource}/{figure}", figures[figure] or 0)
        if figures.get("warning"):
            stats.inc_value("backup/warnings")
            logger.warning("%s · %s: %s", username, resource, figures["warning"])
        if resource in COLLECTIONS:
            extra = ""
            if figures.get("changed"):
                extra += f", {figures['changed']} changed on the service (earlier copies in history/{resource}.jsonl)"
            deleted = (figures.get("deleted_upstream") or {}).get("count")
            if figures.get("last_full_read") and deleted:
                stats.inc_value(f"backup/{resource}/deleted_upstream", deleted)
                extra += f", {deleted} no longer on the service (kept)"
            logger.info("%s · %s: %d new, %d total, %d requests%s", username, resource,
                        figures.get("new", 0), figures.get("total", 0), figures.get("requests", 0), extra)
        else:
            logger.info("%s · %s: saved (%d entries, %d requests)", username, resource,
                        figures.get("total", 0), figures.get("requests", 0))

    def _media(self, username: str, outcome, figures: dict) -> None:
        """Media files are not API resources: counted apart; a failed file makes the run incomplete."""
        if not outcome.ok:
            self.crawler.stats.inc_value("backup/media/personalities_failed")
        logger.log(logging.INFO if outcome.ok else logging.ERROR, "%s · media: %d held, %d new (%d bytes), %d gone, "
                   "%d refused, %d failed%s", username, figures.get("total", 0), figures.get("new", 0),
                   figures.get("bytes", 0), figures.get("gone", 0), figures.get("refused", 0), figures.get("failed", 0),
                   "" if outcome.ok else f" ({outcome.reason})")

    def unreported(self, spider, reason: str) -> None:
        """Every planned resource gets an outcome, even when its walk never reached it or an error
        dropped its end before the store saw it: the summary then counts every personality asked for."""
        for walk in getattr(spider, "walks", ()):
            cells = self.rows.get(walk.username, {})
            for index, resource in enumerate(walk.planned):
                if resource.name in cells:
                    continue
                if index >= walk.index:
                    outcome = (Outcome.blocked("stopped by the site's bot protection") if reason == "blocked" else
                               Outcome.skipped(f"not attempted: the crawl stopped before it got here ({reason})"))
                else:
                    outcome = Outcome.failed("its end never reached the store (see the errors above); "
                                             "its files were left as they were")
                self.resource_finished(walk.personality, resource.name, outcome, {})

    def spider_closed(self, spider, reason):
        self.unreported(spider, reason)
        stats = self.crawler.stats
        complete_people = sum(1 for res in self.rows.values()
                              if res and all(c["outcome"].settled for c in res.values()))
        stats.set_value("backup/personalities/complete", complete_people)
        # A bug of ours or an unexpected answer that raised in a callback: never report success.
        unexpected = sum(v for k, v in stats.get_stats().items()
                         if k.startswith("spider_exceptions/") and isinstance(v, int))
        code = exit_status(reason,
                           requested=stats.get_value("backup/resources/requested", 0),
                           complete=stats.get_value("backup/resources/complete", 0)
                           + stats.get_value("backup/resources/not_theirs", 0),
                           failed=stats.get_value("backup/resources/failed", 0)
                           + stats.get_value("backup/resources/skipped", 0)
                           + stats.get_value("backup/media/personalities_failed", 0),
                           errors=stats.get_value("backup/errors", 0) + unexpected,
                           auth_failed=bool(stats.get_value("backup/auth_failed")),
                           blocked=bool(stats.get_value("backup/blocked")),
                           untrusted=bool(stats.get_value("backup/tls_failed")))
        stats.set_value(EXIT_CODE_STAT, code)
        if self.rows:
            logger.log(self.visible, "Backup summary (total (+new) per resource):\n%s", summary_table(self.rows))
            warnings = [f"  {user} · {res}: {cell['warning']}" for user, cells in self.rows.items()
                        for res, cell in cells.items() if cell.get("warning")]
            if warnings:
                logger.warning("Warnings:\n%s", "\n".join(warnings))
            for line in drift_lines(self.rows):
                stats.inc_value("backup/drift")
                logger.warning("%s", line)
        wanted = stats.get_value("backup/personalities/requested", 0)
        auth, blocked = stats.get_value("backup/auth_failed"), stats.get_value("backup/blocked")
        untrusted = stats.get_value("backup/tls_failed")
        if untrusted:
            summary = (f"Not started: the service's certificate is not trusted ({untrusted}); no request was sent. "
                       f"If it is your own or your company's CA, set TZCRAWL_CA_FILE to its certificate file.")
        elif blocked:
            summary = (f"BLOCKED by the site's bot protection ({blocked}): {complete_people} of {wanted} "
                       f"personalities were completed, nothing saved was changed. This is not a login problem: "
                       f"{remedy(str(lookup(self.crawler.settings, 'SERVICE_WEBSITE', 'the site')))}.")
        elif auth:
            summary = (f"Authentication failed ({auth}): {complete_people} of {wanted} personalities were "
                       f"completed. Log in again: get a fresh session cookie (scrapy crawl login, or set "
                       f"SERVICE_COOKIE / {cookie_file(self.crawler.settings)}) and run again; for unattended "
                       f"runs set TZCRAWL_EMAIL and a password (docs/scheduling.md).")
        elif code:
            summary = (f"Backup INCOMPLETE ({reason}): {complete_people} of {wanted} personalities complete; "
                       f"see the errors above. Files of failed resources were left as they were.")
        else:
            summary = f"Backup complete: {complete_people} of {wanted} personalities."
            others = stats.get_value("backup/personalities/not_owned", 0)
            if others:
                summary = summary[:-1] + (f" ({others} of them other people's: their chat history and your "
                                          f"personalization are here; what only their owners may read is not).")
        stats.set_value("tzcrawl/summary", summary)
        logger.log(logging.ERROR if code else self.visible, "%s", summary)
        logger.log(self.visible, "%s", outcome_line(code, reason, summary))
