"""Scheduled backups on scrapyd: a real scrapyd on a loopback port, the project deployed as an egg,
``all_personalities`` scheduled through ``scripts/scrapyd/tzcrawl_scrapyd.py`` against the sandbox.

The cookie travels in the cookie file named by scrapyd's environment, never as a job argument: the
test checks that neither ``listjobs.json``, the job log nor scrapyd's own log holds it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import stat
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_login import assert_backup_matches
from tzcrawl.session.jar import save_cookie_text as save_cookie_file
from tzcrawl.outcome import outcome_line

ROOT = Path(__file__).resolve().parents[1]
CTL_PATH = ROOT / "scripts" / "scrapyd" / "tzcrawl_scrapyd.py"
SCRAPYD = Path(sys.executable).parent / "scrapyd"
FAST = ["--setting", "DOWNLOAD_DELAY=0", "--setting", "AUTOTHROTTLE_ENABLED=False",
        "--setting", "BACKUP_PERSONALITY_DELAY=0"]

_spec = importlib.util.spec_from_file_location("tzcrawl_scrapyd", CTL_PATH)
ctl_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ctl_module)


# -- pure decisions --------------------------------------------------------------------------------

def test_job_fields_pass_settings_and_arguments():
    fields = ctl_module.job_fields("all_personalities", ["DOWNLOAD_DELAY=0", "LOG_LEVEL=INFO"], ["full=yes"])
    assert fields == [("project", "tzcrawl"), ("spider", "all_personalities"), ("setting", "DOWNLOAD_DELAY=0"),
                      ("setting", "LOG_LEVEL=INFO"), ("full", "yes")]


@pytest.mark.parametrize("settings, args", [
    (["SERVICE_COOKIE=abc"], []),
    ([], ["cookie=abc"]),
    ([], ["password=hunter2"]),
    (["TZCRAWL_PASSWORD=x"], []),
    (["USER_AGENT=appSession=abc"], []),
    ([], ["api_token=abc"]),
])
def test_secret_job_arguments_are_refused(settings, args):
    with pytest.raises(ctl_module.UsageError, match="listjobs.json"):
        ctl_module.job_fields("all_personalities", settings, args)


@pytest.mark.parametrize("settings, args, message", [
    (["DOWNLOAD_DELAY"], [], "KEY=VALUE"),
    ([], ["=x"], "KEY=VALUE"),
    ([], ["spider=profile"], "schedule.json field"),
])
def test_malformed_job_arguments_are_refused(settings, args, message):
    with pytest.raises(ctl_module.UsageError, match=message):
        ctl_module.job_fields("all_personalities", settings, args)


def test_busy_jobs_sees_pending_and_running_of_the_same_spider_only():
    listjobs = {"pending": [{"id": "p1", "spider": "all_personalities"}, {"id": "p2", "spider": "profile"}],
                "running": [{"id": "r1", "spider": "all_personalities"}],
                "finished": [{"id": "f1", "spider": "all_personalities"}]}
    assert ctl_module.busy_jobs(listjobs, "all_personalities") == ["p1", "r1"]
    assert ctl_module.busy_jobs({"pending": [], "running": []}, "all_personalities") == []


def test_status_shows_the_newest_finished_jobs_whatever_order_scrapyd_lists_them_in():
    jobs = [{"id": f"j{day}", "end_time": f"2026-11-{day:02d} 03:00:00.000001"} for day in (20, 21, 19, 22)]
    assert [j["id"] for j in ctl_module.latest_finished({"finished": jobs}, 1)] == ["j22"]
    assert [j["id"] for j in ctl_module.latest_finished({"finished": jobs[::-1]}, 3)] == ["j22", "j21", "j20"]
    assert ctl_module.latest_finished({"finished": jobs}, 0) == [] and ctl_module.latest_finished({}, 5) == []


def test_job_outcome_reads_the_outcome_line():
    ok = ("2026 [tzcrawl.extensions] INFO: Backup complete: 2 of 2 personalities.\n2026 [tzcrawl.extensions] INFO: "
          + outcome_line(0, "finished", "Backup complete: 2 of 2 personalities.") + "\n {'finish_reason': 'finished'}\n")
    assert ctl_module.job_outcome(ok) == ("ok", "exit code 0, finish_reason finished: Backup complete: 2 of 2 "
                                                "personalities.")
    failed = "ERROR: x\n" + outcome_line(1, "finished", "Backup INCOMPLETE (finished): 1 of 2") + "\n"
    outcome, detail = ctl_module.job_outcome(failed)
    assert outcome == "FAILED" and detail.startswith("exit code 1 (incomplete backup), finish_reason finished")
    login = "ERROR: x\n" + outcome_line(3, "finished", "Authentication failed (401): 0 of 2 personalities") + "\n"
    outcome, detail = ctl_module.job_outcome(login)
    assert outcome == "LOGIN" and detail.startswith("exit code 3 (log in again: the session cookie was refused")
    blocked = "ERROR: x\n" + outcome_line(4, "blocked", "BLOCKED by the site's bot protection (...)") + "\n"
    outcome, detail = ctl_module.job_outcome(blocked)
    assert outcome == "BLOCKED" and detail.startswith("exit code 4 (blocked by the site's bot protection: pass its")
    assert ctl_module.job_outcome("2026 INFO: Scrapy 2.19.0 started\n")[0] == "unknown"
    assert ctl_module.job_outcome("")[0] == "unknown"


# -- a real scrapyd ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScrapydServer:
    """scrapyd started from a temporary directory holding its scrapyd.conf (it has no --config flag)."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.logs_dir = home / "logs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True)
        (home / "scrapyd.conf").write_text(
            "[scrapyd]\n"
            "bind_address = 127.0.0.1\n"
            f"http_port = {self.port}\n"
            f"eggs_dir = {home / 'eggs'}\n"
            f"logs_dir = {self.logs_dir}\n"
            "items_dir =\n"
            f"dbs_dir = {home / 'dbs'}\n"
            "poll_interval = 1.0\n"
            "max_proc = 2\n"
            "jobstorage = scrapyd.jobstorage.SqliteJobStorage\n")
        self.log_path = home / "scrapyd.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([str(SCRAPYD)], cwd=home, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("daemonstatus.json")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"scrapyd did not start: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.3)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/{path}", timeout=10) as answer:
            return json.loads(answer.read())

    def wait_finished(self, jobid: str, timeout: float = 150) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for job in self.get("listjobs.json?project=tzcrawl")["finished"]:
                if job["id"] == jobid:
                    return job
            time.sleep(1)
        raise AssertionError(f"job {jobid} did not finish in {timeout}s; scrapyd log:\n"
                             f"{self.log_path.read_text()[-3000:]}")

    def job_log(self, spider: str, jobid: str) -> str:
        return (self.logs_dir / "tzcrawl" / spider / f"{jobid}.log").read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()


@pytest.fixture
def scrapyd_factory(tmp_path):
    servers: list[ScrapydServer] = []

    def start(**env_extra: str) -> ScrapydServer:
        env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_COOKIE", "SERVICE_WEBSITE", "BACKUP_DIR")}
        env.update(env_extra)
        server = ScrapydServer(tmp_path / f"scrapyd{len(servers)}", env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def ctl(server: ScrapydServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CTL_PATH), "--url", server.url, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def schedule(server: ScrapydServer, *args: str) -> str:
    run = ctl(server, "schedule", *args)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.strip().rsplit("job ", 1)[1]


def install_units(home: Path) -> Path:
    """Run the installer into a scratch home; returns the user unit directory."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    run = subprocess.run(["sh", str(ROOT / "scripts" / "scrapyd" / "install-user-units.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "systemctl --user enable --now tzcrawl-backup.timer" in run.stdout
    return home / ".config" / "systemd" / "user"


def exec_start(unit: Path) -> list[str]:
    line = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def test_installed_units_point_at_this_checkout_and_systemd_accepts_them(tmp_path):
    home = tmp_path / "home"
    units = install_units(home)
    names = ["tzcrawl-scrapyd.service", "tzcrawl-backup.service", "tzcrawl-backup.timer"]
    for name in names:
        text = (units / name).read_text()
        assert "@TZCRAWL_DIR@" not in text
    assert exec_start(units / "tzcrawl-scrapyd.service") == [str(ROOT / ".venv" / "bin" / "scrapyd")]
    assert exec_start(units / "tzcrawl-backup.service")[:3] == [
        str(ROOT / ".venv" / "bin" / "python"), str(CTL_PATH), "schedule"]
    env_file = home / ".config" / "tzcrawl" / "tzcrawl.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"TZCRAWL_COOKIE_FILE={home}/.config/tzcrawl/cookie.json" in env_file.read_text()
    conf = (home / ".local" / "share" / "tzcrawl" / "scrapyd" / "scrapyd.conf").read_text()
    assert "bind_address = 127.0.0.1" in conf and "items_dir    =\n" in conf
    # A second run keeps the user's edited files.
    env_file.write_text("SERVICE_WEBSITE=https://mine.example\n")
    install_units(home)
    assert env_file.read_text() == "SERVICE_WEBSITE=https://mine.example\n"

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("NO systemd-analyze: the unit files were rendered but not verified by systemd")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verify = subprocess.run([analyze, "verify", "--user", *names], cwd=units, capture_output=True, text=True,
                            env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr


DEPLOY_LEFTOVERS = ("setup.py", "build", "tzcrawl.egg-info", "project.egg-info")


def test_scheduled_backup_on_a_real_scrapyd(sandbox_factory, scrapyd_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=7, messages=12)
    cookie_path = save_cookie_file(tmp_path / "config" / "cookie.json", sb.cookie_header, site=sb.base_url)
    backup_dir = tmp_path / "backup"
    server = scrapyd_factory(SERVICE_WEBSITE=sb.base_url, TZCRAWL_COOKIE_FILE=str(cookie_path),
                             BACKUP_DIR=str(backup_dir), TZCRAWL_CA_FILE=sb.ca_file,
                             BACKUP_MEDIA_PRIVATE_HOSTS=sb.media_hosts)

    leftovers_before = {name: (ROOT / name).exists() for name in DEPLOY_LEFTOVERS}
    deployed = ctl(server, "deploy", "--version", "r1")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert {name: (ROOT / name).exists() for name in DEPLOY_LEFTOVERS} == leftovers_before, \
        "deploy left build output in the work tree"
    spiders = server.get("listspiders.json?project=tzcrawl")["spiders"]
    assert {"all_personalities", "login"} <= set(spiders)

    # A secret as a job argument is refused before anything reaches scrapyd.
    refused = ctl(server, "schedule", "--setting", f"SERVICE_COOKIE={sb.cookie}")
    assert refused.returncode == 2 and "cookie file" in refused.stderr
    assert server.get("daemonstatus.json")["pending"] == 0

    # The first run is scheduled by the exact command the systemd timer's service runs.
    timer_command = exec_start(install_units(tmp_path / "home") / "tzcrawl-backup.service")
    timed = subprocess.run([*timer_command, *FAST], env={**os.environ, "SCRAPYD_URL": server.url},
                           capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert timed.returncode == 0, timed.stdout + timed.stderr
    jobid = timed.stdout.strip().rsplit("job ", 1)[1]
    job = server.wait_finished(jobid)
    assert_backup_matches(backup_dir, sb.totals())
    status = ctl(server, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{jobid}  all_personalities  ok" in status.stdout
    assert "exit code 0, finish_reason finished: Backup complete: 2 of 2 personalities." in status.stdout
    assert f"Process finished: project='tzcrawl' spider='all_personalities' job='{jobid}'" \
        in server.log_path.read_text()
    assert job["log_url"].endswith(f"{jobid}.log")

    # The cookie expires between runs: the next job fails, says so, and nothing saved is lost.
    sb.expire_cookie()
    failed_id = schedule(server, *FAST)
    server.wait_finished(failed_id)
    status = ctl(server, "status")
    assert status.returncode == 3
    failed_line = next(line for line in status.stdout.splitlines() if line.startswith(failed_id))
    assert "LOGIN" in failed_line and "exit code 3 (log in again" in failed_line and "Authentication failed" in failed_line
    assert f"Process died: exitstatus=3 project='tzcrawl' spider='all_personalities' job='{failed_id}'" \
        in server.log_path.read_text()
    assert_backup_matches(backup_dir, sb.totals())

    # A configuration problem: exit 2, its one line in scrapyd's own log (the job's stderr), no final stats.
    broken_id = schedule(server, "personality")
    server.wait_finished(broken_id)
    scrapyd_log = server.log_path.read_text()
    assert f"Process died: exitstatus=2 project='tzcrawl' spider='personality' job='{broken_id}'" in scrapyd_log
    assert "say which personality: scrapy crawl personality -a personality=NAME" in scrapyd_log
    broken_line = next(line for line in ctl(server, "status").stdout.splitlines() if line.startswith(broken_id))
    assert "unknown" in broken_line and "Process died: exitstatus=N" in broken_line

    # The cookie appears nowhere scrapyd publishes or logs.
    published = json.dumps(server.get("listjobs.json?project=tzcrawl"))
    logs = server.job_log("all_personalities", jobid) + server.job_log("all_personalities", failed_id)
    assert "Using session __Secure-better-auth.session_token=" in logs  # named, with a short prefix only
    for text in (published, logs, server.log_path.read_text()):
        assert sb.cookie not in text


def test_two_overlapping_scheduled_runs_keep_the_backup_whole(sandbox_factory, scrapyd_factory, tmp_path):
    """Two jobs of all_personalities at once (scrapyd max_proc = 2): the per-personality lock makes the
    later one wait; both succeed and the backup holds every record exactly once."""
    # Slow answers keep the first job on the first personality long enough for the second to reach it.
    sb = sandbox_factory(personalities=2, memories=100, messages=250, latency=0.4)
    cookie_path = save_cookie_file(tmp_path / "config" / "cookie.json", sb.cookie_header)
    backup_dir = tmp_path / "backup"
    server = scrapyd_factory(SERVICE_WEBSITE=sb.base_url, TZCRAWL_COOKIE_FILE=str(cookie_path),
                             BACKUP_DIR=str(backup_dir), TZCRAWL_CA_FILE=sb.ca_file,
                             BACKUP_MEDIA_PRIVATE_HOSTS=sb.media_hosts)
    deployed = ctl(server, "deploy")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    first = schedule(server, *FAST)
    second = schedule(server, "--allow-overlap", *FAST)
    jobs = {jobid: server.wait_finished(jobid, timeout=240) for jobid in (first, second)}

    starts_and_ends = sorted((job["start_time"], job["end_time"]) for job in jobs.values())
    assert starts_and_ends[1][0] < starts_and_ends[0][1], f"the jobs did not overlap: {starts_and_ends}"
    logs = {jobid: server.job_log("all_personalities", jobid) for jobid in jobs}
    assert any("waiting up to" in log for log in logs.values()), "neither job met the other's lock"
    for jobid, log in logs.items():
        assert ctl_module.job_outcome(log)[0] == "ok", log[-3000:]
    assert_backup_matches(backup_dir, sb.totals())
    for person in sb.totals()["personalities"]:
        name = person["username"]
        for resource in ("memories", "messages"):
            records = json.loads((backup_dir / name / f"{name}_{resource}.json").read_text())
            assert len({r["id"] for r in records}) == len(records), f"{name} {resource} has duplicates"
