"""The code tarball: written as a tar stream piped through the ``gzip`` program (as GNU ``tar czf``
does), read back to the very end for verification, and extracted without leaving the target.

Members are relative paths (no leading ``/``, no ``..``), modes and symlinks are kept, hard links stay
links, and the result extracts with plain ``tar -xzf``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import grp
import gzip
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

from . import SnapshotError
from .codetree import Entry

COPY_BUFSIZE = 1 << 20


@dataclass
class TarStats:
    members: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes_in: int = 0
    vanished: int = 0


FORMAT_VERSION = 1  # part of the code tree's fingerprint: bump when the same tree would archive differently


def busy_cores(interval: float = 0.1, proc: str = "/proc", loadavg=getattr(os, "getloadavg", None)) -> float:
    """How many of the machine's cores other processes keep busy right now: /proc/stat sampled over
    ``interval``, less this process's own use (the database copy running beside the archive is ours).
    The 1-minute load average lags (it still counts the last snapshot's compression): it is only the
    fallback where /proc is missing (macOS); with neither, 0."""
    def sample() -> tuple[int, int, int]:
        with open(f"{proc}/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        with open(f"{proc}/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])  # utime + stime, in the same clock ticks
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0), own

    try:
        total1, idle1, own1 = sample()
        time.sleep(interval)
        total2, idle2, own2 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return loadavg()[0] if loadavg is not None else 0.0
        except OSError:
            return 0.0
    cpus = os.cpu_count() or 1
    span = max(1, total2 - total1)  # jiffies summed over every cpu
    busy = (span - (idle2 - idle1) - (own2 - own1)) / span
    return max(0.0, busy) * cpus


def free_cores(cores: int | None = None, load: float | None = None,
               affinity=getattr(os, "sched_getaffinity", None)) -> int:
    """Cores of this process not busy right now (``busy_cores``), at least 1. Where the process's CPU
    affinity cannot be asked (macOS), every core counts."""
    if cores is None:
        cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    if load is None:
        load = busy_cores()
    return max(1, min(cores, round(cores - load + 0.25)))


def resolve_compressor(choice: str, cores: int | None = None) -> list[str] | None:
    """Command for an external gzip-compatible compressor, or None to compress in-process.

    ``auto``: ``pigz`` on every free core when more than one is free (one standard .gz stream, read by
    GNU tar and ``gzip -t`` like any other), else ``gzip``, else in-process zlib."""
    if choice == "python":
        return None
    free = free_cores() if cores is None else cores
    candidates = (("pigz", "gzip") if free > 1 else ("gzip", "pigz")) if choice == "auto" else (choice,)
    for prog in candidates:
        path = shutil.which(prog)
        if path:
            return [path, "-p", str(free)] if prog == "pigz" else [path]
    if choice != "auto":
        raise SnapshotError(f"compressor {choice!r} not found on PATH")
    return None


def describe(compressor: list[str] | None, level: int) -> str:
    """``pigz -p 2 -6``, ``gzip -6``, ``python zlib -6``: what made the archive (for the manifest)."""
    if not compressor:
        return f"python zlib -{level}"
    return " ".join([os.path.basename(compressor[0]), *compressor[1:], f"-{level}"])


class _Counter:
    """A write-only stream that knows its position: all TarFile needs besides ``write``."""

    def __init__(self, raw):
        self.raw = raw
        self.pos = 0

    def write(self, data):
        n = self.raw.write(data)
        self.pos += len(data)
        return n

    def tell(self):
        return self.pos


@functools.lru_cache(maxsize=None)
def _owner_name(kind: str, ident: int) -> str:
    """uid/gid → name, looked up once each (tarfile would ask NSS for every file)."""
    try:
        return pwd.getpwuid(ident).pw_name if kind == "user" else grp.getgrgid(ident).gr_name
    except KeyError:
        return ""


def _tarinfo(entry: Entry, st: os.stat_result, links: dict) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(entry.rel)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname, ti.gname = _owner_name("user", st.st_uid), _owner_name("group", st.st_gid)
    ti.mtime = int(st.st_mtime)  # a float would cost a pax header per member
    if stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink(entry.path)
    else:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:  # its content is in the archive already, under that name
            ti.type = tarfile.LNKTYPE
            ti.linkname = links[key]
        else:
            ti.type = tarfile.REGTYPE
            ti.size = st.st_size
    return ti


def _add_entries(tar: tarfile.TarFile, entries: Iterable[Entry], should_stop: Callable[[], bool]) -> TarStats:
    stats, links = TarStats(), {}
    for entry in entries:
        if should_stop():
            raise SnapshotError("stopped before the code tarball was complete")
        try:
            st = os.lstat(entry.path)
            ti = _tarinfo(entry, st, links)
            if ti.type == tarfile.REGTYPE:
                with open(entry.path, "rb") as fh:
                    try:
                        tar.addfile(ti, fh)
                    except OSError as exc:
                        if "unexpected end of data" in str(exc):
                            raise SnapshotError(f"{entry.rel} shrank while it was being read; "
                                                "something is writing the code tree, try again") from None
                        raise
                stats.files += 1
                stats.bytes_in += ti.size
                if st.st_nlink > 1:  # only now, its content written: later links may point at it
                    links.setdefault((st.st_dev, st.st_ino), entry.rel)
            else:
                tar.addfile(ti)
                stats.dirs += ti.type == tarfile.DIRTYPE
                stats.symlinks += ti.type == tarfile.SYMTYPE
                stats.hardlinks += ti.type == tarfile.LNKTYPE
        except FileNotFoundError as exc:
            if exc.filename in (entry.path, None) and not os.path.lexists(entry.path):
                stats.vanished += 1  # deleted since the walk: nothing of it left to save
                continue
            raise
        except PermissionError as exc:
            raise SnapshotError(f"cannot read {entry.rel} in the code tree: {exc.strerror}") from None
        stats.members += 1
    return stats


def write_tarball(out_path: str, entries: Iterable[Entry], *, compressor: list[str] | None, level: int = 6,
                  should_stop: Callable[[], bool] = lambda: False) -> TarStats:
    """Write ``entries`` as a gzip tarball to the new file ``out_path`` (0600); fsynced on success."""
    return write_tarball_with(out_path, lambda tar: _add_entries(tar, entries, should_stop),
                              compressor=compressor, level=level)


def write_tarball_with(out_path: str, fill: Callable[[tarfile.TarFile], object], *,
                       compressor: list[str] | None, level: int = 6):
    """A gzip tarball at the new file ``out_path`` (0600, fsynced) holding what ``fill(tar)`` adds;
    returns what ``fill`` returned."""
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        if compressor is None:
            with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0) as gz:
                result = _write_tar(gz, fill)
        else:
            result = _write_through_program(out, fill, compressor + [f"-{level}", "-c", "-n"])
        out.flush()
        os.fsync(out.fileno())
    return result


def _write_tar(fileobj, fill):
    counter = _Counter(fileobj)
    tar = tarfile.TarFile(fileobj=counter, mode="w", format=tarfile.PAX_FORMAT)
    tar.copybufsize = COPY_BUFSIZE
    result = fill(tar)
    tar.close()
    return result


_FAILED = object()


def _write_through_program(out, fill, argv):
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, bufsize=COPY_BUFSIZE)
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # a 1 MiB pipe: fewer wake-ups of gzip and of us
            with contextlib.suppress(OSError):
                fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, COPY_BUFSIZE)
        try:
            try:
                result = _write_tar(proc.stdin, fill)
                proc.stdin.close()
            except BrokenPipeError:
                result = _FAILED
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            raise
        if rc != 0 or result is _FAILED:
            err.seek(0)
            message = err.read().decode(errors="replace").strip() or _exit_text(rc)
            raise SnapshotError(f"{argv[0]} failed while writing the code tarball: {message}")
    return result


def _exit_text(rc: int) -> str:
    if rc == -signal.SIGXFSZ:
        return "file size limit exceeded (SIGXFSZ)"
    if rc < 0:
        return f"killed by {signal.Signals(-rc).name}"
    return f"exit status {rc}"


class _HashingReader:
    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()
        self.size = 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def unsafe_member_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' in path"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return "special file"
    return None


def read_through(path: str) -> dict:
    """Read the whole tarball (every byte decompressed, gzip CRC checked); return its sha256 and counts.

    Raises SnapshotError for a damaged archive or an unsafe member.
    """
    counts = {"members": 0, "bytes": 0}
    contents: set[str] = set()  # regular files seen so far: what a hard link may point at
    try:
        with open(path, "rb") as raw:
            reader = _HashingReader(raw)
            # gzip.GzipFile checks the CRC and length trailer; tarfile's own "r|gz" would not.
            with gzip.GzipFile(fileobj=reader, mode="rb") as gz:
                with tarfile.open(fileobj=gz, mode="r|") as tar:
                    for member in tar:
                        why = unsafe_member_reason(member)
                        if why:
                            raise SnapshotError(f"tarball member {member.name!r} is unsafe: {why}")
                        counts["members"] += 1
                        if member.islnk() and member.linkname not in contents:
                            raise SnapshotError(f"tarball member {member.name!r} is a hard link to "
                                                f"{member.linkname!r}, which the archive does not hold before it")
                        if member.isreg():
                            contents.add(member.name)
                            fh = tar.extractfile(member)
                            while chunk := fh.read(COPY_BUFSIZE):
                                counts["bytes"] += len(chunk)
                while gz.read(COPY_BUFSIZE):  # to the end: padding, then the trailer check
                    pass
            while reader.read(COPY_BUFSIZE):
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SnapshotError(f"code tarball is damaged: {exc}") from None
    counts["sha256"] = reader.sha.hexdigest()
    counts["size"] = reader.size
    return counts


def _in_the_way(member: tarfile.TarInfo, dest: str) -> str | None:
    """Why ``member`` cannot be extracted into ``dest`` (a real folder where it is not one), or None."""
    target = os.path.join(dest, member.name)
    if os.path.isdir(target) and not os.path.islink(target) and not member.isdir():
        return f"cannot restore {member.name}: a folder is in the way"
    return None


def _make_room(member: tarfile.TarInfo, dest: str) -> None:
    """Like GNU tar: an existing non-folder in the way is unlinked first, so a file is never written
    through a symlink that happens to sit at its path."""
    target = os.path.join(dest, member.name)
    why = _in_the_way(member, dest)
    if why:
        raise SnapshotError(why)
    if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
        os.unlink(target)


def check_extract(path: str, dest: str, skip: Callable[[str], bool] | None = None) -> list[str]:
    """Everything that would stop ``extract`` half way, found before anything is touched."""
    problems = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if skip is not None and skip(member.name):
                    continue
                why = unsafe_member_reason(member)
                if why:
                    problems.append(f"tarball member {member.name!r} is unsafe: {why}")
                elif os.path.isdir(dest):
                    why = _in_the_way(member, dest)
                    if why:
                        problems.append(why)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        problems.append(f"code tarball is damaged: {exc}")
    return problems


def extract(path: str, dest: str, skip: Callable[[str], bool] | None = None) -> int:
    """Extract the tarball into ``dest`` (created if missing); refuses members that would land outside.

    Members for which ``skip(name)`` is true are left in the archive (the database's own files)."""
    os.makedirs(dest, exist_ok=True)

    def guard(member, dest_path):
        why = unsafe_member_reason(member)
        if why:
            raise SnapshotError(f"tarball member {member.name!r} is unsafe: {why}")
        if skip is not None and skip(member.name):
            skipped.append(member.name)
            return None
        _make_room(member, dest_path)  # before the filter, which resolves symlinks in the way
        safe = tarfile.tar_filter(member, dest_path)  # its checks: links that point outside, ...
        if member.isreg() or member.isdir():  # ... but modes as they were, like tar -xp
            safe = safe.replace(mode=member.mode & 0o7777, deep=False)
        return safe

    count, skipped = 0, []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for _ in tar:
                count += 1
            tar.extractall(dest, filter=guard)
    except tarfile.FilterError as exc:
        raise SnapshotError(f"refusing to extract: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise SnapshotError(f"no space left while extracting into {dest}") from None
        raise SnapshotError(f"extracting into {dest} failed: {exc}") from None
    return count - len(skipped)
