#!/usr/bin/env python3
"""Prove the built package, not the checkout: build the sdist and wheel, check their metadata and
contents, install the wheel into a fresh venv in a temporary folder far from the checkout, and there
run what a user runs: `tzcrawl sandbox` + `tzcrawl crawl all_personalities` + `tzcrawl export` +
`tzcrawl verify` + `tzcrawl snapshot create` / `verify`, checking exit statuses and files. A test that
imports from the source tree cannot see a file the package leaves out; this can. `.ci/run` runs it.

    python3 scripts/prove_wheel.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"prove_wheel: {' '.join(map(str, cmd))} exited {result.returncode}\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def check_wheel(wheel: Path) -> None:
    """Name, version, dependencies and console scripts as pyproject.toml says; the export's templates
    and static files, and every module, inside."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(zf.read(info).decode())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert metadata["Name"] == project["name"] and metadata["Version"] == project["version"], metadata
    required = {r.split(";")[0].replace(" ", "") for r in metadata.get_all("Requires-Dist") or []}
    for dependency in project["dependencies"]:  # the marker aside: the wheel writes it in its own quoting
        assert dependency.split(";")[0].replace(" ", "") in required, f"{dependency} is not in the wheel's Requires-Dist"
    assert "tzcrawl = tzcrawl.cli:main" in entry_points and "tzcrawl-snapshot" in entry_points, entry_points
    source = {str(p.relative_to(ROOT)) for p in (ROOT / "tzcrawl").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".html", ".js", ".css")}
    missing = sorted(source - set(names))
    assert not missing, f"the wheel lacks {missing}"


def serve(venv: Path, work: Path, env: dict) -> tuple[subprocess.Popen, dict]:
    ready = work.parent.parent / "ready.json"
    proc = subprocess.Popen([venv / "bin" / "tzcrawl", "sandbox", "--ready-file", ready, "--max-lifetime", "300"],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("prove_wheel: the installed `tzcrawl sandbox` did not start")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    opts = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tzcrawl-wheel-"))
    try:
        dist, build_env, venv, work = base / "dist", base / "build-env", base / "venv", base / "far" / "away"
        work.mkdir(parents=True)
        run([sys.executable, "-m", "venv", build_env])
        run([build_env / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", "build"])
        run([build_env / "bin" / "python", "-m", "build", "--outdir", dist, ROOT], cwd=base)
        wheel = next(dist.glob("tzcrawl-*.whl"))
        sdist = next(dist.glob("tzcrawl-*.tar.gz"))
        check_wheel(wheel)
        print(f"built and checked: {wheel.name}, {sdist.name}")

        run([sys.executable, "-m", "venv", venv])
        run([venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", wheel])
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SERVICE_", "TZCRAWL_", "BACKUP_", "SCRAPY_", "PYTHON"))}
        env["HOME"] = str(base / "home")
        tz = [venv / "bin" / "tzcrawl"]
        imported = run([venv / "bin" / "python", "-c", "import tzcrawl; print(tzcrawl.__file__)"], cwd=work)
        assert str(venv) in imported.stdout, f"tzcrawl came from {imported.stdout.strip()}, not the venv"

        proc, info = serve(venv, work, env)
        backup = base / "backup"
        try:
            env.update(SERVICE_WEBSITE=info["base_url"], SERVICE_COOKIE=info["cookie_header"], BACKUP_DIR=str(backup),
                       TZCRAWL_CA_FILE=info["ca_file"], BACKUP_MEDIA_PRIVATE_HOSTS=info["media_hosts"],
                       TZCRAWL_COOKIE_FILE=str(base / "cookie.json"))
            crawled = run([*tz, "crawl", "all_personalities", "-s", "DOWNLOAD_DELAY=0", "-s",
                           "AUTOTHROTTLE_ENABLED=False", "-s", "BACKUP_PERSONALITY_DELAY=0"], cwd=work, env=env)
            assert "Backup complete: 3 of 3 personalities." in crawled.stderr, crawled.stderr[-2000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        held = sorted(p.name for p in backup.rglob("*.json"))
        assert sum(name.endswith("_messages.json") for name in held) == 3 and list(backup.rglob("media/*")), held
        verified = run([*tz, "verify"], cwd=work, env=env)
        assert "verified: 3 ok, 0 damaged" in verified.stdout, verified.stdout
        exported = run([*tz, "export", "-a", f"out={base / 'export'}"], cwd=work, env=env)
        assert (base / "export" / "index.html").is_file() and list((base / "export").rglob("*.card.png")), exported.stdout
        assert list((base / "export").rglob("static/*")), "the archive's static files (package data)"

        code, db, snapshots = base / "code", base / "brain.db", base / "snapshots"
        code.mkdir()
        (code / "main.py").write_text("print('hello')\n")
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
            conn.executemany("INSERT INTO notes (text) VALUES (?)", [(f"note {i}",) for i in range(100)])
        where = ["--db", db, "--code", code, "--dest", snapshots]
        run([*tz, "snapshot", "create", *where], cwd=work, env=env)
        run([*tz, "snapshot", "verify", "--dest", snapshots], cwd=work, env=env)
        assert list((snapshots / ".store").glob("*.pack")), "the snapshot's chunks (zstd: backports.zstd before 3.14)"
        plain = base / "plain"
        run([*tz, "snapshot", "export", "latest", plain, "--dest", snapshots], cwd=work, env=env)
        listed = subprocess.run(["tar", "-tzf", plain / "codex-code.tar.gz"], capture_output=True, text=True, check=True)
        assert listed.stdout.split() == ["main.py"], listed.stdout
        with sqlite3.connect(plain / "codex-brain.db") as conn:
            assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 100
        assert not list(work.iterdir()), f"the commands wrote into the folder they ran in: {list(work.iterdir())}"
        print(f"installed wheel, run from {work}: sandbox, crawl (3 of 3), verify, export, "
              "snapshot create/verify/export: ok")
        return 0
    finally:
        if opts.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
