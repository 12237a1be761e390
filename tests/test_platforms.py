"""Platform edges said, not crashed into: the macOS fallbacks run, the launchd agents load, Windows is
refused in one line."""

from __future__ import annotations

import os
import plistlib
import shlex

import pytest

from crawlhelp import REPO
from tzcrawl import cli
from tzcrawl.snapshot import cli as snapshot_cli
from tzcrawl.snapshot.archive import busy_cores, free_cores

AGENTS = REPO / "scripts" / "launchd"


def test_without_proc_the_load_average_stands_in_and_without_it_nothing(tmp_path):
    assert busy_cores(0.0, proc=str(tmp_path), loadavg=lambda: (1.5, 0.0, 0.0)) == 1.5  # macOS: no /proc

    def no_load():
        raise OSError("not available")

    assert busy_cores(0.0, proc=str(tmp_path), loadavg=no_load) == 0.0
    assert busy_cores(0.0, proc=str(tmp_path), loadavg=None) == 0.0


def test_without_cpu_affinity_every_core_counts():
    assert free_cores(load=0.0, affinity=None) == (os.cpu_count() or 1)  # macOS has no sched_getaffinity
    assert free_cores(cores=4, load=3.9) == 1


@pytest.mark.parametrize("label, command, how", [
    ("io.tzcrawl.backup", "crawl all_personalities", "StartCalendarInterval"),
    ("io.tzcrawl.snapshot-watch", "snapshot watch", "KeepAlive"),
    ("io.tzcrawl.snapshot-boot", "snapshot boot", "RunAtLoad"),
])
def test_the_launchd_agents_load_and_run_the_installed_command(label, command, how):
    with open(AGENTS / f"{label}.plist", "rb") as fh:
        agent = plistlib.load(fh)
    assert agent["Label"] == label
    program = agent["ProgramArguments"]
    assert program[:2] == ["/bin/sh", "-c"] and all(isinstance(p, str) for p in program)
    words = shlex.split(program[2].split(";")[-1])
    assert words[0] == "exec" and words[1].endswith("/.local/bin/tzcrawl") and " ".join(words[2:]) == command
    assert agent[how]
    if how == "StartCalendarInterval":
        assert 0 <= agent[how]["Hour"] <= 23 and 0 <= agent[how]["Minute"] <= 59
    if how == "KeepAlive":
        assert agent.get("ThrottleInterval", 0) >= 10, "a crash loop waits between restarts"


def test_windows_is_refused_in_one_line(capsys):
    assert cli.main(["crawl", "all_personalities"], platform="win32") == 2
    assert snapshot_cli.main(["list"], platform="win32") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("does not run on Windows yet" in line and "WSL" in line for line in err)
    assert cli.unsupported("linux") is None and cli.unsupported("darwin") is None
