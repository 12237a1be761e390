"""``TZCRAWL_NOTIFY``: tell someone when an unattended crawl did not succeed.

The command (run by ``/bin/sh -c``, so pipes and quoting work as typed) runs once at the end of a
crawl whose exit status is not 0, with the outcome in its environment: ``TZCRAWL_EXIT``,
``TZCRAWL_SUMMARY`` and ``TZCRAWL_OUTCOME`` (the JSON of the final ``tzcrawl outcome:`` line). Nothing
secret: variables naming a cookie, password, token, secret or key are left out of its environment.
It is killed after ``TZCRAWL_NOTIFY_TIMEOUT`` seconds (default 30); a notify command that fails is
logged and never changes the crawl's exit status.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from typing import Mapping

logger = logging.getLogger(__name__)

SECRET_MARKERS = ("COOKIE", "PASSWORD", "PASSWD", "TOKEN", "SECRET", "KEY", "CREDENTIAL", "AUTH")


def notify_environment(base: Mapping[str, str], outcome: dict) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not any(marker in k.upper() for marker in SECRET_MARKERS)}
    env.update(TZCRAWL_EXIT=str(outcome.get("exit")), TZCRAWL_SUMMARY=str(outcome.get("summary", "")),
               TZCRAWL_OUTCOME=json.dumps(outcome, ensure_ascii=False))
    return env


def run_notify(command: str, outcome: dict, timeout: float = 30.0, base_env: Mapping[str, str] | None = None) -> bool:
    """Run the notify command; True when it ran and exited 0. Every problem is logged, never raised."""
    env = notify_environment(os.environ if base_env is None else base_env, outcome)
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        logger.error("TZCRAWL_NOTIFY could not be started: %s", exc)
        return False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a shell's children too
        proc.communicate()
        logger.error("TZCRAWL_NOTIFY did not finish within %gs (TZCRAWL_NOTIFY_TIMEOUT) and was killed", timeout)
        return False
    if proc.returncode != 0:
        tail = output.decode("utf-8", "replace").strip().splitlines()[-1:] if output else []
        logger.error("TZCRAWL_NOTIFY exited with status %s%s", proc.returncode, f": {tail[0]}" if tail else "")
        return False
    logger.info("TZCRAWL_NOTIFY ran (exit %s reported)", outcome.get("exit"))
    return True
