#!/usr/bin/env python3
"""Deploy tzcrawl to scrapyd, schedule a backup on it, and read how its jobs ended.

    tzcrawl_scrapyd.py deploy                  # egg built in a temporary copy: no setup.py/build/ left here
    tzcrawl_scrapyd.py schedule                # POST schedule.json for all_personalities (what the timer runs)
    tzcrawl_scrapyd.py status                  # recent jobs and their outcome, read from each job's log

scrapyd has no timer (a systemd timer or cron runs ``schedule``) and ``listjobs.json`` does not say how a
job ended: ``status`` reads the outcome line every crawl logs last (``tzcrawl.outcome``).
Job arguments and ``setting=`` fields are shown by ``listjobs.json`` and written to the job log and
scrapyd's own log, so anything that looks like the cookie or a password is refused here: the cookie
reaches jobs through the cookie file or scrapyd's environment.

Standard library and ``tzcrawl.outcome`` only. Environment: ``SCRAPYD_URL`` (default http://127.0.0.1:6800), ``SCRAPYD_USERNAME``
and ``SCRAPYD_PASSWORD`` when scrapyd has basic auth. Exit status: 0 ok (or skipped), 1 scrapyd said no
or a job failed, 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:6800"
PROJECT = "tzcrawl"
SPIDER = "all_personalities"
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tzcrawl.outcome import read_outcome  # noqa: E402  (standard library only, like this tool)
_SECRET_KEY_RE = re.compile(r"cookie|passw|secret|token|appsession", re.IGNORECASE)
_SECRET_VALUE_RE = re.compile(r"appsession\s*=", re.IGNORECASE)
_LOG_TAIL_BYTES = 64 * 1024


class UsageError(Exception):
    """Bad arguments; exit 2."""


class ScrapydError(Exception):
    """scrapyd cannot be reached or refused; exit 1."""


# -- pure decisions ----------------------------------------------------------------------------------

def job_fields(spider: str, settings: list[str], args: list[str], project: str = PROJECT) -> list[tuple[str, str]]:
    """The schedule.json form; refuses anything secret-looking, since scrapyd publishes job arguments."""
    fields = [("project", project), ("spider", spider)]
    for kind, pairs in (("setting", settings), ("arg", args)):
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--{kind} takes KEY=VALUE, not {pair!r}")
            if _SECRET_KEY_RE.search(key) or _SECRET_VALUE_RE.search(value):
                raise UsageError(f"refusing --{kind} {key}=...: scrapyd shows job arguments in listjobs.json and "
                                 "writes them to the job log; give the cookie through the cookie file "
                                 "(TZCRAWL_COOKIE_FILE) or scrapyd's environment instead")
            if kind == "arg" and key in ("project", "spider", "jobid", "_version", "setting", "priority"):
                raise UsageError(f"--arg {key}= is a schedule.json field name, not a spider argument")
            fields.append(("setting", f"{key}={value}") if kind == "setting" else (key, value))
    return fields


def busy_jobs(listjobs: dict, spider: str) -> list[str]:
    """Ids of pending or running jobs of ``spider``: a new run would only queue behind them."""
    return [job["id"] for state in ("pending", "running") for job in listjobs.get(state, [])
            if job.get("spider") == spider]


def latest_finished(listjobs: dict, last: int) -> list[dict]:
    """The ``last`` finished jobs, newest first, by end time (scrapyd's own order is not promised:
    1.6 lists them newest first, so taking the tail showed the oldest)."""
    finished = sorted(listjobs.get("finished", []), key=lambda job: str(job.get("end_time") or ""), reverse=True)
    return finished[:max(last, 0)]


EXIT_MEANINGS = {0: "complete", 1: "incomplete backup", 2: "configuration problem (or an untrusted certificate)",
                 3: "log in again: the session cookie was refused and could not be renewed",
                 4: "blocked by the site's bot protection: pass its check in your browser, then set the Cookie "
                    "header and USER_AGENT of that browser"}
WORDS = {0: "ok", 3: "LOGIN", 4: "BLOCKED"}


def job_outcome(log_tail: str) -> tuple[str, str]:
    """(``ok`` | ``LOGIN`` | ``BLOCKED`` | ``FAILED`` | ``unknown``, detail) from the crawl's outcome line
    at the end of its log. Exit codes: 0 complete, 1 incomplete, 2 configuration, 3 log in again
    (``LOGIN``), 4 bot protection (``BLOCKED``)."""
    found = read_outcome(log_tail)
    if found is None:
        return "unknown", ("no outcome line in the job log: the job was killed or stopped before crawling "
                           "(scrapyd's own log says 'Process died: exitstatus=N' and why)")
    code, reason, summary = found["exit"], found.get("finish_reason", "?"), found.get("summary", "")
    meaning = EXIT_MEANINGS.get(code)
    detail = (f"exit code {code}" + (f" ({meaning})" if meaning and code else "") + f", finish_reason {reason}"
              + (f": {summary}" if summary else ""))
    return WORDS.get(code, "FAILED"), detail


# -- scrapyd over HTTP -------------------------------------------------------------------------------

class Scrapyd:
    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout: float = 30):
        self.url = url.rstrip("/") + "/"
        self.timeout = timeout
        self.headers = {}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def _open(self, path: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
        request = urllib.request.Request(urllib.parse.urljoin(self.url, path.lstrip("/")), data=data,
                                         headers={**self.headers, **(headers or {})}, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise ScrapydError(f"scrapyd at {self.url} answered HTTP {exc.code} to {path}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ScrapydError(f"cannot reach scrapyd at {self.url} ({reason}): is it running? "
                               "(systemctl --user status tzcrawl-scrapyd)") from None

    def call(self, endpoint: str, fields: list[tuple[str, str]] | None = None, query: dict | None = None) -> dict:
        path = endpoint + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        with self._open(path, data) as answer:
            reply = json.loads(answer.read().decode("utf-8"))
        if reply.get("status") != "ok":
            raise ScrapydError(f"scrapyd refused {endpoint}: {reply.get('message', reply)}")
        return reply

    def wait_until_up(self, seconds: float) -> None:
        """At boot the timer can fire before scrapyd listens: retry for a bounded while."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.call("daemonstatus.json")
                return
            except ScrapydError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(2)

    def log_tail(self, log_url: str) -> str:
        """The end of a job log. (Twisted answers 500 to a suffix range longer than the file: ask its size.)"""
        try:
            with self._open(log_url, method="HEAD") as answer:
                size = int(answer.headers.get("Content-Length") or 0)
            headers = {"Range": f"bytes={size - _LOG_TAIL_BYTES}-"} if size > _LOG_TAIL_BYTES else {}
            with self._open(log_url, headers=headers) as answer:
                return answer.read().decode("utf-8", "replace")
        except (ScrapydError, ValueError):
            return ""


# -- commands ----------------------------------------------------------------------------------------

def project_files(root: Path) -> list[Path]:
    """What goes into the egg build: the files git tracks or would track (no venv, backups, build output)."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        raise UsageError(f"deploy builds the egg from the files git lists: {root} must be a git checkout "
                         "(or run scrapyd-deploy yourself from a copy)") from None
    return [Path(name) for name in listed if name and (root / name).is_file()]


def deploy(args, client: Scrapyd) -> int:
    """Build the egg in a temporary copy (scrapyd-deploy leaves setup.py, build/, *.egg-info behind)."""
    tool = shutil.which("scrapyd-deploy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not tool:
        raise UsageError("scrapyd-deploy not found: pip install scrapyd-client (make setup installs it)")
    with tempfile.TemporaryDirectory(prefix="tzcrawl-deploy-") as tmp:
        for name in project_files(ROOT):
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, Path(tmp) / name)
        cfg = configparser.ConfigParser()
        cfg.read(Path(tmp) / "scrapy.cfg")
        if not cfg.has_section("deploy"):
            cfg.add_section("deploy")
        cfg.set("deploy", "url", client.url)
        cfg.set("deploy", "project", args.project)
        if args.username:  # scrapyd-deploy reads credentials from the target; this copy is deleted below
            cfg.set("deploy", "username", args.username)
            cfg.set("deploy", "password", args.password or "")
        with open(Path(tmp) / "scrapy.cfg", "w") as fh:
            cfg.write(fh)
        command = [tool, *(["-v", args.version] if args.version else [])]
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or '"status": "ok"' not in output:
        raise ScrapydError(f"scrapyd-deploy failed (exit {done.returncode}): {output[-2000:]}")
    reply = next((line for line in reversed(output.splitlines()) if '"status"' in line), "")
    print(f"deployed {args.project} to {client.url}: {reply}")
    return 0


def schedule(args, client: Scrapyd) -> int:
    fields = job_fields(args.spider, args.setting, args.arg, args.project)
    if args.wait:
        client.wait_until_up(args.wait)
    if not args.allow_overlap:
        busy = busy_jobs(client.call("listjobs.json", query={"project": args.project}), args.spider)
        if busy:
            print(f"not scheduling {args.spider}: job {', '.join(busy)} is still pending or running "
                  "(--allow-overlap to queue another)")
            return 0
    reply = client.call("schedule.json", fields)
    print(f"scheduled {args.spider} on {client.url}: job {reply['jobid']}")
    return 0


def status(args, client: Scrapyd) -> int:
    jobs = client.call("listjobs.json", query={"project": args.project})
    for state in ("pending", "running"):
        for job in [] if args.failed_only else jobs.get(state, []):
            print(f"{job['id']}  {job['spider']:<18} {state}  since {job.get('start_time', '-')}")
    failed = login = blocked = 0
    for job in latest_finished(jobs, args.last):
        outcome, detail = job_outcome(client.log_tail(job["log_url"]) if job.get("log_url") else "")
        failed += outcome != "ok"
        login += outcome == "LOGIN"
        blocked += outcome == "BLOCKED"
        if args.failed_only and outcome == "ok":
            continue
        print(f"{job['id']}  {job['spider']:<18} {outcome:<7}  ended {job['end_time']}  {detail}")
    return 3 if login else 4 if blocked else 1 if failed else 0  # 3: log in again; 4: pass the bot check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SCRAPYD_URL", DEFAULT_URL), help="scrapyd's address")
    parser.add_argument("--project", default=PROJECT)
    sub = parser.add_subparsers(dest="command", required=True)
    dep = sub.add_parser("deploy", help="build the egg from a temporary copy and upload it")
    dep.add_argument("--version", help="egg version (default: a timestamp)")
    sch = sub.add_parser("schedule", help="POST schedule.json (what the timer and cron run)")
    sch.add_argument("spider", nargs="?", default=SPIDER)
    sch.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="a Scrapy setting (-s)")
    sch.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="a spider argument (-a)")
    sch.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                     help="keep trying this long while scrapyd is not up yet (at boot)")
    sch.add_argument("--allow-overlap", action="store_true",
                     help="queue a run even if one of the same spider is pending or running")
    st = sub.add_parser("status", help="running jobs, and how the last finished ones ended")
    st.add_argument("--last", type=int, default=10, help="how many finished jobs (default 10)")
    st.add_argument("--failed-only", action="store_true",
                    help="print only jobs that did not end well (silent when all is well: for cron mail)")
    args = parser.parse_args(argv)
    args.username = os.environ.get("SCRAPYD_USERNAME")
    args.password = os.environ.get("SCRAPYD_PASSWORD")
    client = Scrapyd(args.url, args.username, args.password)
    try:
        return {"deploy": deploy, "schedule": schedule, "status": status}[args.command](args, client)
    except UsageError as exc:
        print(f"tzcrawl_scrapyd: {exc}", file=sys.stderr)
        return 2
    except ScrapydError as exc:
        print(f"tzcrawl_scrapyd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
