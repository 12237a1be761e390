"""``snapshot.py`` / ``tzcrawl-snapshot``: create, watch, boot, list, prune, verify, restore, export.

Exit status: 0 done; 1 failed (message on stderr); 2 bad usage; 3 a snapshot does not verify;
75 another snapshot operation holds the lock (try again later).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from . import SnapshotError, UsageError, archive, codetree, dbcopy, deduped, store, watch
from .config import Config, load_config, require
from .lock import LockBusy, dest_lock
from .restore import restore
from .retention import BAD, GOOD, INCOMPLETE, format_duration, parse_duration, plan_prune

EXIT_FAILED, EXIT_USAGE, EXIT_UNVERIFIED, EXIT_BUSY = 1, 2, 3, 75


def say(text: str) -> None:
    print(text, flush=True)


def human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class Stopped(BaseException):
    """SIGTERM during a one-shot command: unwinds like Ctrl-C so nothing half-made is left."""


def _raise_stopped(signum, frame):
    raise Stopped()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dest", help="folder holding the snapshots (SNAPSHOT_DEST)")
    common.add_argument("--config", help="config file (default: $SNAPSHOT_CONFIG or ~/.config/tzcrawl/snapshot.toml)")
    sources = argparse.ArgumentParser(add_help=False)
    sources.add_argument("--db", help="the live SQLite database (SNAPSHOT_DB)")
    sources.add_argument("--code", help="the code tree to archive (SNAPSHOT_CODE)")
    sources.add_argument("--layout", choices=("dedup", "plain"),
                         help="dedup (default): store only the chunks no snapshot has yet, in DEST/.store; "
                              "plain: a database file and a code tarball in every snapshot (SNAPSHOT_LAYOUT)")

    parser = argparse.ArgumentParser(prog="snapshot.py", description="Consistent snapshots of the codex brain "
                                     "database and code tree.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", parents=[common, sources], help="take a snapshot now")
    p.add_argument("--reason", choices=store.REASONS, default="manual")
    p = sub.add_parser("watch", parents=[common, sources], help="snapshot whenever the database has grown")
    p.add_argument("--interval", help="how often to look at the database (default 60s)")
    p.add_argument("--growth", help="growth since the last snapshot that triggers one (default 50KB)")
    sub.add_parser("boot", parents=[common, sources], help="one snapshot for a boot manager; exit status tells")
    p = sub.add_parser("list", parents=[common], help="snapshots with time, reason, sizes and verification")
    p.add_argument("--quick", action="store_true", help="check presence and sizes only (no hashing)")
    p = sub.add_parser("prune", parents=[common], help="delete snapshots outside the retention rules")
    p.add_argument("--keep-last", type=int, help="keep the newest N good snapshots")
    p.add_argument("--max-age", help="keep snapshots younger than this (7d, 12h, 1d12h)")
    p.add_argument("--dry-run", action="store_true", help="print the decisions, change nothing")
    p = sub.add_parser("verify", parents=[common], help="full check of one snapshot (default: all)")
    p.add_argument("snapshot", nargs="?", help="folder path, name under --dest, or 'latest'")
    p = sub.add_parser("restore", parents=[common], help="verify a snapshot, then put it back")
    p.add_argument("snapshot", help="folder path, name under --dest, or 'latest'")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--db-only", action="store_true")
    part.add_argument("--code-only", action="store_true")
    p.add_argument("--target", help="where to put it: the code folder, with the database where the snapshot had "
                                    "it inside the code folder (with --db-only: the database file); default: the "
                                    "configured source, else where the snapshot came from")
    p.add_argument("--db", help="where the database goes when restoring both (default as --target)")
    p.add_argument("--force", action="store_true", help="restore the database even while it is in use")
    p = sub.add_parser("export", parents=[common], help="write a snapshot as codex-brain.db and codex-code.tar.gz "
                                                       "(restore with cp and tar -xzf)")
    p.add_argument("snapshot", help="folder path, name under --dest, or 'latest'")
    p.add_argument("folder", help="where to write the two files (created; existing files are never overwritten)")
    return parser


def _config(args) -> Config:
    cli = {key: getattr(args, key, None) for key in ("db", "code", "dest", "interval", "growth", "layout")}
    if args.command == "restore":
        cli["db"] = None  # restore's --db names the target, not the source
    return load_config(cli, path=args.config)


def cmd_create(cfg: Config, args) -> int:
    path = store.create(cfg, args.reason if args.command == "create" else "boot")
    m = store.read_manifest(path)
    if store.is_dedup(m):
        say(f"snapshot {path} ({m['reason']}): db {human(m['db']['logical_size'])}, code {m['code']['members']} "
            f"entries ({m['code']['files_read']} files read), {m['store']['new_chunks']} new chunks "
            f"({human(m['store']['new_bytes'])} added), {m['timings']['total_s']:.1f}s")
    else:
        say(f"snapshot {path} ({m['reason']}): db {human(m['files']['codex-brain.db']['size'])}, "
            f"code {human(m['files']['codex-code.tar.gz']['size'])} ({m['code']['members']} entries), "
            f"{m['timings']['total_s']:.1f}s")
    for warning in m["code"].get("warnings", []):
        say(f"  warning: {warning}")
    return 0


def cmd_watch(cfg: Config, args) -> int:
    require(cfg, "db", "code", "dest")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    interval = cfg.interval.total_seconds()
    say(f"watching {cfg.db} every {format_duration(cfg.interval)}; a snapshot when more than {human(cfg.growth)} "
        f"of it has changed (grown, or been written in place) since the last one, into {cfg.dest}")
    waiting_said = False
    previous, changed = None, 0  # the last reading, and the changes added up since the last snapshot
    while not stop.is_set():
        try:
            if not cfg.db.exists():
                previous = None
                if not waiting_said:
                    say(f"waiting for {cfg.db} to exist (looking every {format_duration(cfg.interval)})")
                    waiting_said = True
            else:
                waiting_said = False
                now = watch.read(cfg.db, dbcopy.logical_size(cfg.db))
                last = store.latest_db_size(cfg.dest, cfg.db) if cfg.dest.exists() else None
                if previous is None:  # the first look: what grew while nobody watched
                    changed = max(0, now.size - last) if last is not None else 0
                else:
                    changed += watch.changed_bytes(previous, now)
                previous = now
                if last is None or changed > cfg.growth:
                    why = "no snapshot of it yet" if last is None else f"changed by {human(changed)}"
                    say(f"{cfg.db} {why}: taking a snapshot")
                    path = store.create(cfg, "growth", should_stop=stop.is_set, lock_wait=0)
                    say(f"snapshot {path}")
                    changed = 0
        except LockBusy:
            say("another snapshot is being taken; looking again next round")
        except SnapshotError as exc:
            if not stop.is_set():
                print(f"snapshot: error: {exc}", file=sys.stderr, flush=True)
        stop.wait(interval)
    say("watch stopped")
    return 0


def _status_text(snap, problems) -> str:
    if snap.status == INCOMPLETE:
        return "INCOMPLETE (never finished; prune removes it)"
    if snap.status not in (GOOD, BAD):
        return f"UNKNOWN ({snap.detail})"
    if problems is None:
        return "ok (sizes)" if snap.status == GOOD else f"BAD ({snap.detail})"
    return "verified" if not problems else "BAD (" + "; ".join(problems) + ")"


def cmd_list(cfg: Config, args) -> int:
    require(cfg, "dest")
    snaps = store.scan(cfg.dest)
    if not snaps:
        say(f"no snapshots in {cfg.dest}")
        return 0
    say(f"{'SNAPSHOT':<40} {'TIME (UTC)':<23} {'REASON':<7} {'DB':>10} {'CODE':>10} {'ADDS':>10}  "
        f"{'ARCHIVE':<52} STATUS")
    bad = 0
    added = store.space_added(snaps)
    seen: set[bytes] = set()
    for snap in snaps:
        m = snap.manifest or {}
        files = m.get("files", {})
        db_size = files.get("codex-brain.db", {}).get("size") or m.get("db", {}).get("logical_size")
        problems = None
        if snap.status in (GOOD, BAD) and not args.quick:
            problems = store.verify(snap.path, seen)
        bad += bool(problems) or snap.status == BAD
        say(f"{snap.name:<40} {snap.time:%Y-%m-%d %H:%M:%S}.{snap.time.microsecond // 1000:03d} "
            f"{m.get('reason', '-'):<7} {human(db_size):>10} "
            f"{human(files.get('codex-code.tar.gz', {}).get('size')):>10} {human(added.get(snap.name)):>10}  "
            f"{store.archive_origin(snap):<52} {_status_text(snap, problems)}")
    return EXIT_UNVERIFIED if bad else 0


def cmd_prune(cfg: Config, args) -> int:
    require(cfg, "dest")
    keep_last = args.keep_last if args.keep_last is not None else cfg.keep_last
    try:
        max_age = parse_duration(args.max_age) if args.max_age else cfg.max_age
    except ValueError as exc:
        raise UsageError(f"--max-age: {exc}") from None
    now = datetime.now(timezone.utc)
    with dest_lock(cfg.dest, wait=cfg.lock_wait.total_seconds()):
        snaps = store.scan(cfg.dest)
        # Every snapshot that keep-last would count must really be good (the newest good one at
        # least): verify them in full, newest first; a damaged one is not counted.
        wanted, verified = max(keep_last or 0, 1), 0
        for snap in snaps:
            if snap.status == GOOD and verified < wanted:
                problems = store.verify(snap.path)
                if problems:
                    snap.status, snap.detail = BAD, "; ".join(problems)
                else:
                    verified += 1
        try:
            decisions = plan_prune([s.entry() for s in snaps], now, keep_last, max_age)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        by_name = {s.name: s for s in snaps}
        verb = "would prune" if args.dry_run else "prune"
        failed = []
        for d in decisions:
            say(f"{'keep' if d.keep else verb:<11} {d.name}: {d.reason}")
            if not d.keep and not args.dry_run:
                try:
                    store.delete(by_name[d.name])
                except OSError as exc:  # one snapshot that cannot go does not stop the others
                    failed.append(d.name)
                    print(f"snapshot: error: cannot prune {d.name}: {exc.strerror or exc}", file=sys.stderr)
        pruned = sum(not d.keep for d in decisions) - len(failed)
        gone = {d.name for d in decisions if not d.keep} - set(failed)
        freed = deduped.free(cfg.dest, [s for s in snaps if s.name not in gone], dry_run=args.dry_run,
                             name=f"repack-{now:%Y%m%dT%H%M%S}-{os.getpid()}")
        say(f"{len(decisions) - pruned - len(failed)} kept, {pruned} "
            f"{'to prune (dry run: nothing changed)' if args.dry_run else 'pruned'}"
            + (f", {len(failed)} could not be pruned: {', '.join(failed)}" if failed else "")
            + (f"; {human(freed)} of the chunk store {'would be freed' if args.dry_run else 'freed'}"
               if (cfg.dest / ".store").is_dir() else ""))
    return EXIT_FAILED if failed else 0


def cmd_verify(cfg: Config, args) -> int:
    dest = cfg.dest
    if args.snapshot:
        targets = [store.resolve(dest, args.snapshot)]
    else:
        require(cfg, "dest")
        targets = [s.path for s in store.scan(dest) if s.status in (GOOD, BAD)]
        if not targets:
            say(f"no snapshots in {dest}")
            return 0
    failed = 0
    seen: set[bytes] = set()
    for path in targets:
        problems = store.verify(path, seen)
        failed += bool(problems)
        say(f"{path.name}: " + ("ok" if not problems else "BAD: " + "; ".join(problems)))
    return EXIT_UNVERIFIED if failed else 0


def cmd_restore(cfg: Config, args) -> int:
    snapshot = store.resolve(cfg.dest, args.snapshot)
    sources = store.read_manifest(snapshot).get("sources", {})

    def pick(given, configured, recorded, what):
        value = given or configured or recorded
        if not value:
            raise SnapshotError(f"say where to restore the {what} (--target)")
        return Path(value).expanduser().absolute()

    db = code = None
    if args.db_only:
        db = pick(args.target or args.db, cfg.db, sources.get("db"), "database")
    elif args.code_only:
        code = pick(args.target, cfg.code, sources.get("code"), "code")
    else:
        code = pick(args.target, cfg.code, sources.get("code"), "code")
        inside = codetree.relative_inside(sources.get("db"), sources["code"]) if sources.get("code") else None
        if args.target and not args.db and inside:  # --target R: everything under R, the database too
            db = code / inside
        else:
            db = pick(args.db, cfg.db, sources.get("db"), "database")
    # A dedup snapshot is read from its own destination's store (and put together in a scratch folder
    # there, which a create's sweep would remove): that destination's lock, however it was named.
    held = snapshot.parent if store.is_dedup(store.read_manifest(snapshot)) else cfg.dest
    if held is not None and held.is_dir():
        with dest_lock(held, wait=cfg.lock_wait.total_seconds()):
            restore(snapshot, db=db, code=code, force=args.force, log=say)
    else:
        restore(snapshot, db=db, code=code, force=args.force, log=say)
    return 0


def cmd_export(cfg: Config, args) -> int:
    snapshot = store.resolve(cfg.dest, args.snapshot)
    folder = Path(args.folder).expanduser().absolute()
    problems = store.verify(snapshot)
    if problems:
        raise SnapshotError(f"{snapshot.name} does not verify, refusing to export it: " + "; ".join(problems))
    manifest = store.read_manifest(snapshot)
    if store.is_dedup(manifest):
        compressor = archive.resolve_compressor(cfg.compressor)
        with dest_lock(snapshot.parent, wait=cfg.lock_wait.total_seconds()):  # no prune repacks meanwhile
            deduped.export(snapshot, manifest, folder, compressor=compressor, level=cfg.compresslevel)
    else:
        deduped.copy_plain(snapshot, folder)
    say(f"exported {snapshot.name} into {folder}: {store.DB_NAME} (cp it back) and {store.CODE_NAME} (tar -xzf)")
    return 0


COMMANDS = {"create": cmd_create, "boot": cmd_create, "watch": cmd_watch, "list": cmd_list,
            "prune": cmd_prune, "verify": cmd_verify, "restore": cmd_restore,
            "export": cmd_export}


def main(argv: list[str] | None = None, platform: str = sys.platform) -> int:
    from tzcrawl.cli import unsupported

    why = unsupported(platform)
    if why:
        print(f"snapshot: {why}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    if args.command != "watch" and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        cfg = _config(args)
        return COMMANDS[args.command](cfg, args)
    except LockBusy as exc:
        print(f"snapshot: busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except UsageError as exc:
        print(f"snapshot: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SnapshotError, ValueError) as exc:
        print(f"snapshot: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, Stopped):
        print("snapshot: interrupted; nothing half-made was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
