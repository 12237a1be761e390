"""``scrapy export``: turn a backup into things people read and take elsewhere, offline.

Formats: ``html`` (a browsable archive), ``md`` (transcripts), ``card`` (Character Card V3 JSON and
PNG), ``st`` (a SillyTavern chat file). Reads only ``BACKUP_DIR``; writes only the output folder.
Each personality is read as one consistent state (``store.committed``): while a crawl is backing it
up, its last committed state, and the export says so.
A personality and format whose inputs did not change since the last export (each data file's sha256
as the metadata recorded it, in ``.tzcrawl-export.json``) is skipped without rendering anything; one
whose inputs changed renders only the pages and stretches whose records changed (``segments``): after
an incremental backup, the last page of the chat, its search shard and the indexes. The result is byte
for byte a fresh export's: nothing in it depends on the clock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tzcrawl import registry
from tzcrawl.outcome import EXIT_INCOMPLETE, EXIT_OK
from tzcrawl.store import BackupView
from tzcrawl.store.committed import BackupBusy, committed

from . import card, sillytavern, transcript
from .html import Archive
from .output import Output
from .source import Personality, personalities

logger = logging.getLogger(__name__)

FORMATS = ("html", "md", "card", "st")
# The order they run in: the archive last, its pages rendering while the transcripts and the chat file
# the others wrote are made durable in the background (``Output.sync_for``)
RUN_ORDER = ("md", "card", "st", "html")
MARKER = {"html": "index.html", "md": "memories.md", "card": "{}.card.json", "st": "{}.chat.jsonl"}  # proof it exists
# What each format reads (the resources, and whether the media manifest): a format whose inputs did not
# change is skipped (only the chat history changed: the card is not made again)
INPUTS = {"html": (registry.RESOURCES, True), "md": (("profile", "messages", "memories"), True),
          "card": (("profile", "memories", "knowledge", "training", "user_data"), "avatar"),
          "st": (("profile", "messages"), True)}


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    index: Path | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_INCOMPLETE if self.failed else EXIT_OK


def run(backup_dir: Path, out_dir: Path, formats: list[str], names: list[str] | None, website: str,
        say: Callable[[str], None] = print, wait: float = 0.0) -> Report:
    """Export ``names`` (default: every personality in the backup) in ``formats``; one line per step.
    ``wait``: seconds to wait for a running crawl's lock before exporting its last committed state."""
    view = BackupView(backup_dir)
    out = Output(out_dir)
    formats = sorted(formats, key=RUN_ORDER.index)
    report = Report()
    archive = Archive(out, website)
    found, missing = personalities(view, names)
    for name in missing:
        report.failed.append(name)
        say(f"export · {name}: no backup of this personality in {view.root}")
    exporters: dict[str, Callable[[Personality], dict]] = {
        "html": archive.personality,
        "md": lambda p: transcript.export(p, out),
        "card": lambda p: card.export(p, out, website),
        "st": lambda p: sillytavern.export(p, out),
    }
    exported = []
    for listed in found:
        try:
            with committed(view, listed.username, wait, waiting=lambda pid: say(
                    f"export · {listed.username}: being backed up now by "
                    f"{f'process {pid}' if pid else 'another run'}; waiting up to {wait:g} s for it to finish")) \
                    as state:
                p = Personality(state.view, listed.username, state.view.directory(listed.username),
                                state.view.metadata(listed.username), noted=out.cuts(listed.dir_name))
                if state.live:
                    holder = f"process {state.holder}" if state.holder else "another run"
                    say(f"export · {p.name}: being backed up now by {holder}; exporting its last committed state "
                        f"(backup of {p.metadata.get('last_backup') or 'unknown time'})")
                with out.staged(p.dir_name) as stage:
                    if _export(p, formats, exporters, out, report, say) and _settled(p, stage, report, say):
                        out.note_cuts(p.dir_name, p.cuts())
                        stage.keep()
                        exported.append(p)  # a failed one keeps its previous pages, and their date
        except BackupBusy as exc:
            report.failed.append(listed.username)
            say(f"export · {listed.username}: not exported: {exc}")
    for p in exported:  # the index shows each one's last backup, which changes even when nothing else did
        if isinstance(out.state.get(p.dir_name, {}).get("html"), dict):
            out.state[p.dir_name]["html"]["last_backup"] = p.metadata.get("last_backup")
    if "html" in formats:
        archive.static()
        people = [entry["html"] for entry in out.state.values() if isinstance(entry.get("html"), dict)
                  and (out.root / entry["html"].get("dir_name", "") / "index.html").is_file()]
        report.index = archive.index(people)
    out.save_state()
    return report


def _settled(p: Personality, stage, report: Report, say: Callable[[str], None]) -> bool:
    """The files made durable in the background are on disk; else (a full disk can show only at
    fsync) the personality failed and keeps its previous export."""
    try:
        stage.sync.settle()
        return True
    except OSError as exc:
        if p.username not in report.failed:
            report.failed.append(p.username)
        say(f"export · {p.name}: INCOMPLETE: its new files could not be written ({exc.strerror or exc}); "
            f"the previous export is kept")
        return False


def _export(p: Personality, formats: list[str], exporters: dict, out: Output, report: Report,
            say: Callable[[str], None]) -> bool:
    """One personality in each format: skipped when its inputs did not change, else rendered. False
    when a format failed (raised: a full disk, a bug): the personality's new folder is then dropped,
    its previous export kept."""
    ok = True
    for fmt in formats:
        fingerprint = out.fingerprint(fmt, p.inputs(*INPUTS[fmt]))
        marker = out.root / p.dir_name / MARKER[fmt].format(p.dir_name)
        if out.unchanged(p.dir_name, fmt, fingerprint) and marker.is_file():
            say(f"export · {p.name} · {fmt}: unchanged")
            continue
        started = time.perf_counter()
        before = len(p.problems)
        try:
            summary = exporters[fmt](p)
        except Exception as exc:  # one personality's failure never stops the others
            # a full disk is said in the line below; a bug gets its traceback
            logger.log(logging.DEBUG if isinstance(exc, OSError) else logging.ERROR, "exporting %s as %s failed",
                       p.username, fmt, exc_info=exc)
            p.problems.append(f"{fmt}: failed ({exc.__class__.__name__}: {exc})")
            ok = False  # what it wrote is dropped; a torn source file instead exports what is there
            summary = {}
        seconds = time.perf_counter() - started
        shown = {**summary.get("counts", summary), **({"reused": summary["reused"]} if "reused" in summary else {})}
        figures = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shown.items()
                            if isinstance(v, int) and not isinstance(v, bool))
        problems = list(dict.fromkeys(p.problems[before:]))
        if problems:
            out.forget(p.dir_name, fmt)  # done again next time
            if p.username not in report.failed:
                report.failed.append(p.username)
            say(f"export · {p.name} · {fmt}: INCOMPLETE ({figures}; {seconds:.1f} s): " + "; ".join(problems))
        else:
            # html: the index's line for it; every format: the segments the next export may reuse
            out.record(p.dir_name, fmt, fingerprint, {k: v for k, v in summary.items() if fmt == "html" or k == "state"})
            say(f"export · {p.name} · {fmt}: done ({figures}; {seconds:.1f} s)")
    return ok


__all__ = ["FORMATS", "Report", "run"]
