#!/usr/bin/env python3
"""Prove the dependency floors: install every dependency at exactly its declared floor (``name==floor``
for each ``>=`` in pyproject.toml, the test extras included) into a fresh venv, and run a chosen set of
tests there: crawls against the sandbox, export, verify, the walk's fault tests, a snapshot, the browser
login and the archive in Chromium, scrapyd and the recorded answers.
`.ci/run` runs it; a floor that no longer works fails CI instead of a user's install.

    python3 scripts/prove_floors.py [--tests "tests/test_crawl_backup.py ..."] [--pin scrapy==2.14.0 ...]

``--pin`` tries another version of a dependency with the others at their floors: how a floor is lowered.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a crawl against the sandbox (the user's own and others'), export, verify, a snapshot, the command; the
# browser login and the archive in Chromium (playwright, scrapy-playwright), scrapyd, recorded answers (vcrpy)
CHOSEN = ["tests/test_crawl_backup.py", "tests/test_crawl_others.py", "tests/test_crawl_unexpected.py",
          "tests/test_verify.py", "tests/test_export.py", "tests/test_from_backup.py", "tests/test_snapshot_e2e.py",
          "tests/test_snapshot_dedup.py",
          "tests/test_cli.py", "tests/test_login.py", "tests/test_export_browser.py", "tests/test_scrapyd.py",
          "tests/test_parse_recorded.py"]


def pinned() -> list[str]:
    """Each requirement with a floor as ``name==floor``; the others (``setuptools<81``) as they are."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [line for extra in ("scrapyd", "test")
                                       for line in project["optional-dependencies"][extra]
                                       if not line.startswith("tzcrawl")]
    out = []
    for line in lines:
        name, sep, floor = line.partition(">=")
        out.append(f"{name.strip()}=={floor.strip()}" if sep else line)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", default=" ".join(CHOSEN))
    parser.add_argument("--pin", action="append", default=[], metavar="NAME==VERSION",
                        help="this version instead of the declared floor (repeatable)")
    opts = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tzcrawl-floors-"))
    base.chmod(0o755)  # a snapshot test runs the tool as another user (nobody): it must read the venv
    try:
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        overrides = {p.split("==")[0].lower(): p for p in opts.pin}
        pins = [overrides.pop(p.split("==")[0].split("<")[0].lower(), p) for p in pinned()] + list(overrides.values())
        print("floors:", " ".join(pins), flush=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *pins],
                       check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "-e", str(ROOT)], check=True)
        check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True)
        # a --pin below tzcrawl's declared floor is the point of trying it: only the others must fit
        conflicts = [line for line in check.stdout.splitlines()
                     if line.strip() and not (opts.pin and line.startswith("tzcrawl "))]
        if check.returncode and conflicts:
            print("prove_floors: the floors do not fit together:\n" + "\n".join(conflicts), file=sys.stderr)
            return 1
        tests = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                *opts.tests.split()], cwd=ROOT)
        return tests.returncode
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
