"""Decisions behind the browser login: which Chromium, headed or headless, where the password comes from.

Pure functions over plain values (settings, spider arguments, the environment), so each refusal is
unit-tested without a browser and reads as one line: what is missing and what to install or set.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Callable, Mapping

from tzcrawl.config import ConfigError, flag, lookup, website

DEBIAN_CHROMIUM = "/usr/bin/chromium"
PASSWORD_ENV = "TZCRAWL_PASSWORD"
HEADED_TIMEOUT = 300.0
HEADLESS_TIMEOUT = 30.0

# No network beyond the site itself: keep Chromium from phoning home for updates, sync and the like.
QUIET_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
)



def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_chromium(configured: str | None = None, which: Callable[[str], str | None] = shutil.which,
                  is_executable: Callable[[str], bool] = _is_executable) -> str:
    """The Chromium to launch: ``TZCRAWL_CHROMIUM`` if set, else Debian's, else one on PATH."""
    if configured:
        path = os.path.expanduser(str(configured))
        resolved = path if os.sep in path else which(path)
        if not resolved or not is_executable(resolved):
            raise ConfigError(f"TZCRAWL_CHROMIUM={configured!r} is not an executable file: "
                              f"point it at a Chromium binary, or unset it to use {DEBIAN_CHROMIUM}")
        return resolved
    if is_executable(DEBIAN_CHROMIUM):
        return DEBIAN_CHROMIUM
    for name in ("chromium", "chromium-browser"):
        found = which(name)
        if found and is_executable(found):
            return found
    raise ConfigError("no Chromium found for the browser login: install it (sudo apt-get install chromium) "
                      "or set TZCRAWL_CHROMIUM=/path/to/chromium")


def has_display(env: Mapping[str, str]) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def _flag(spargs: Mapping[str, str], name: str) -> bool | None:
    raw = spargs.get(name)
    return True if raw is not None and not str(raw).strip() else flag(raw, f"-a {name}=")


@dataclass(frozen=True)
class LoginPlan:
    """How this login runs; built once from settings, spider arguments and the environment."""

    website: str
    login_url: str
    chromium: str
    headless: bool
    email: str | None
    password_from: str | None  # "env" or "prompt" when headless; None when the user types in the browser
    timeout: float

    @property
    def mode(self) -> str:
        return "headless" if self.headless else "headed"

    def launch_options(self) -> dict:
        return {"executable_path": self.chromium, "headless": self.headless, "args": list(QUIET_FLAGS)}


def plan_login(settings, spargs: Mapping[str, str], env: Mapping[str, str] | None = None,
               stdin_isatty: bool = False, which: Callable[[str], str | None] = shutil.which,
               is_executable: Callable[[str], bool] = _is_executable) -> LoginPlan:
    """Decide everything before a browser starts; a ``ConfigError`` says what to fix.

    Headless when ``-a email=`` is given (the password then comes from ``TZCRAWL_PASSWORD`` or a
    terminal prompt), headed otherwise; ``-a headless=yes|no`` overrides. A password given as a spider
    argument is refused: command lines end up in shell history, ``ps`` and scrapyd's job logs.
    """
    env = os.environ if env is None else env
    if "password" in spargs:
        raise ConfigError(f"never put the password on the command line (shell history, ps, logs): "
                          f"export {PASSWORD_ENV}=... or run in a terminal to be prompted")
    site = website(settings)
    email = (spargs.get("email") or "").strip() or None
    headless = _flag(spargs, "headless")
    if headless is None:
        headless = email is not None
    if headless and not email:
        raise ConfigError("a headless login needs the account's email: -a email=you@example.com "
                          f"(the password comes from {PASSWORD_ENV} or a prompt)")
    if not headless and not has_display(env):
        raise ConfigError("a headed login needs a display and neither DISPLAY nor WAYLAND_DISPLAY is set: "
                          f"run it in a desktop session, or log in headless with -a email=... and {PASSWORD_ENV}")
    password_from = None
    if headless:
        if env.get(PASSWORD_ENV):
            password_from = "env"
        elif stdin_isatty:
            password_from = "prompt"
        else:
            raise ConfigError(f"no password for the headless login: export {PASSWORD_ENV}=... "
                              "or run it in a terminal to be prompted")
    default_timeout = HEADLESS_TIMEOUT if headless else HEADED_TIMEOUT
    raw_timeout = spargs.get("timeout", default_timeout)
    try:
        timeout = float(raw_timeout)
    except (TypeError, ValueError):
        raise ConfigError(f"-a timeout= takes a number of seconds, not {raw_timeout!r}") from None
    if not 0 < timeout <= 24 * 3600:
        raise ConfigError(f"-a timeout= must be between 0 and 86400 seconds, not {raw_timeout!r}")
    chromium = find_chromium(lookup(settings, "TZCRAWL_CHROMIUM"), which=which, is_executable=is_executable)
    return LoginPlan(website=site, login_url=f"{site}/login", chromium=chromium, headless=headless,
                     email=email, password_from=password_from, timeout=timeout)
