"""The unattended login's credentials, for runs nobody watches: can the crawl log in again by itself
(``TZCRAWL_EMAIL`` plus ``TZCRAWL_PASSWORD`` or the system keyring)?

The password is never a job argument and never logged. The keyring (the ``keyring`` library: the
desktop's Secret Service, macOS Keychain, ...) holds it under the service name ``tzcrawl:<website>``
once ``scrapy crawl login -a save=1`` logged in with it; a machine without a keyring backend says so
in one line and the environment is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from tzcrawl.session.browser import PASSWORD_ENV
from tzcrawl.config import lookup

EMAIL_ENV = "TZCRAWL_EMAIL"


@dataclass(frozen=True)
class Credentials:
    email: str
    password: str = ""  # repr shows no password
    source: str = ""  # "environment" or "keyring"

    def __repr__(self) -> str:
        return f"Credentials({self.email!r}, from {self.source})"


def keyring_service(website: str) -> str:
    return f"tzcrawl:{website}"


def credentials(settings, website: str, env: Mapping[str, str] | None = None) -> tuple[Credentials | None, str]:
    """The unattended login's credentials, or None and one line saying why there are none."""
    env = os.environ if env is None else env
    email = (lookup(settings, EMAIL_ENV) or env.get(EMAIL_ENV) or "").strip()
    if not email:
        return None, f"unattended login is not set up ({EMAIL_ENV} is not set)"
    if env.get(PASSWORD_ENV):
        return Credentials(email, env[PASSWORD_ENV], "environment"), ""
    password, problem = keyring_password(website, email)
    if password:
        return Credentials(email, password, "keyring"), ""
    return None, problem or (f"no password for {email}: set {PASSWORD_ENV} in the job's environment, or store it "
                             f"in the keyring with scrapy crawl login -a email={email} -a save=1")


def _keyring():
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    return keyring, KeyringError, NoKeyringError


def keyring_password(website: str, email: str) -> tuple[str | None, str]:
    """The stored password (or None) and, when the keyring cannot be used, one line saying so."""
    keyring, KeyringError, NoKeyringError = _keyring()
    try:
        return keyring.get_password(keyring_service(website), email), ""
    except NoKeyringError:
        return None, (f"no keyring backend on this machine (the keyring library found none): set "
                      f"{PASSWORD_ENV} in the job's environment instead")
    except KeyringError as exc:
        return None, f"the keyring could not be read ({exc.__class__.__name__}): set {PASSWORD_ENV} instead"


def store_password(website: str, email: str, password: str) -> str:
    """Keep the password in the keyring; returns "" when stored, else one line saying why not."""
    keyring, KeyringError, NoKeyringError = _keyring()
    try:
        keyring.set_password(keyring_service(website), email, password)
    except NoKeyringError:
        return ("no keyring backend on this machine: the password was not stored (unattended runs need "
                f"{PASSWORD_ENV} in their environment)")
    except KeyringError as exc:
        return f"the keyring refused the password ({exc.__class__.__name__}); it was not stored"
    return ""
