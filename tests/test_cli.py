"""`tzcrawl`, run from a folder far from the checkout: the same commands, settings and exit statuses as
`scrapy ...` inside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from crawlhelp import FAST, REPO, assert_matches_sandbox, crawl_env
from tzcrawl import __version__

CONSOLE = Path(sys.executable).parent / "tzcrawl"  # the console script `make setup` installs


def tzcrawl(*args: str, cwd: Path, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tzcrawl", *args], cwd=cwd, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=timeout)


def settings(values: dict) -> list[str]:
    return [part for name, value in values.items() for part in ("-s", f"{name}={value}")]


def test_help_and_version_say_what_it_is(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    shown = tzcrawl("--help", cwd=tmp_path, env=env)
    assert shown.returncode == 0 and "crawl all_personalities" in shown.stdout and "snapshot" in shown.stdout
    assert "doctor" in shown.stdout
    assert "4 blocked by the site's bot protection" in shown.stdout
    assert tzcrawl("--version", cwd=tmp_path, env=env).stdout.strip() == f"tzcrawl {__version__}"
    listed = tzcrawl("list", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "all_personalities" in listed.stdout.split()
    snapshot = tzcrawl("snapshot", "--help", cwd=tmp_path, env=env)
    assert snapshot.returncode == 0 and "restore" in snapshot.stdout


def test_a_backup_from_any_folder_with_the_same_exit_statuses(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=1, memories=10, messages=40, empty_last=False)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    backup = tmp_path / "backup"
    env = crawl_env(sb, backup)
    done = tzcrawl("crawl", "all_personalities", *settings(FAST), cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Backup complete: 1 of 1 personalities." in done.stderr
    assert_matches_sandbox(sb, backup, sb.personalities[0]["username"])
    checked = tzcrawl("verify", cwd=elsewhere, env=env)
    assert checked.returncode == 0 and "verified: 1 ok, 0 damaged" in checked.stdout
    exported = tzcrawl("export", "-a", f"out={tmp_path / 'export'}", "-a", "format=md", cwd=elsewhere, env=env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert list((tmp_path / "export").rglob("chat.md"))
    refused = tzcrawl("crawl", "all_personalities", *settings(FAST), cwd=elsewhere,
                      env={**env, "SERVICE_COOKIE": "__Secure-better-auth.session_token=not-a-session"})
    assert refused.returncode == 3, refused.stderr[-2000:]
    unknown = tzcrawl("crawl", "no_such_spider", cwd=elsewhere, env=env)
    assert unknown.returncode != 0 and "no_such_spider" in unknown.stderr + unknown.stdout
    assert not list(elsewhere.iterdir()), "nothing written where it was run"


def test_the_console_script_is_the_same_command(tmp_path):
    assert CONSOLE.exists(), "`make setup` (pip install -e) installs the tzcrawl console script"
    shown = subprocess.run([str(CONSOLE), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == f"tzcrawl {__version__}"
