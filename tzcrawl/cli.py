"""``tzcrawl``: the project's commands from any folder, like any installed tool.

``scrapy crawl ...`` works only inside the checkout (Scrapy finds a project by its ``scrapy.cfg``);
``tzcrawl crawl ...`` names the project's settings itself (``SCRAPY_SETTINGS_MODULE``) and hands the
rest to Scrapy's own command line, so options, settings, output and exit statuses are the same.
``tzcrawl login`` is ``scrapy crawl login``; ``tzcrawl snapshot ...`` is the snapshot tool.
"""

from __future__ import annotations

import os
import sys

from tzcrawl import __version__

SETTINGS = "tzcrawl.settings"

HELP = f"""tzcrawl {__version__}: back up your AI personalities to plain JSON on your own disk.

Usage: tzcrawl <command> [options]     (every command: tzcrawl <command> -h)

Back up
  crawl all_personalities            every personality you own: profile, memories, chat history,
                                     knowledge, training, your personalization, and their media
  crawl recent_personalities         every personality you talked to lately, other people's too: the
                                     chat history and your personalization (-a category=self,recent
                                     on all_personalities: both lists, each personality once)
  crawl personality -a personality=NAME[,NAME]   some of them
  crawl memories -a personality=NAME             one resource (also messages, knowledge, training,
                                                 user_data, profile)
      -a full=1   read everything again      -a media=0   text only
  login                              log in with a browser and keep the session cookie

Check and use a backup
  doctor                             what would stop a backup, before one is tried (one request)
  verify [-a online=1]               is every file whole, and (online) is anything missing?
  export [-a format=html,md,card,st] an offline archive, transcripts, character cards, SillyTavern chats
  sandbox [--from-backup DIR]        the bundled imitation of the service, or a backup served as it

Local brain database and code
  snapshot ...                       snapshots with triggers, retention, verify and restore
                                     (tzcrawl snapshot -h)

Settings come from the environment or -s NAME=VALUE: SERVICE_WEBSITE, BACKUP_DIR, SERVICE_COOKIE or
TZCRAWL_COOKIE_FILE, and the rest in the README. Exit status: 0 complete, 1 incomplete, 2 bad
configuration, 3 log in again, 4 blocked by the site's bot protection.
"""


def unsupported(platform: str = sys.platform) -> str | None:
    """Why this platform cannot run tzcrawl yet, in one line; None where it can (Linux, macOS)."""
    if platform.startswith(("win", "cygwin", "msys")):
        return ("tzcrawl does not run on Windows yet: its locks (flock) and private file modes (0600/0700) work "
                "differently there; use WSL (Linux) instead")
    return None


def main(argv: list[str] | None = None, platform: str = sys.platform) -> int:
    why = unsupported(platform)
    if why:
        print(f"tzcrawl: {why}", file=sys.stderr)
        return 2
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0
    if args[0] in ("-V", "--version", "version"):
        print(f"tzcrawl {__version__}")
        return 0
    if args[0] == "snapshot":
        from tzcrawl.snapshot.cli import main as snapshot

        return snapshot(args[1:])
    if args[0] == "login":
        args = ["crawl", "login", *args[1:]]
    # Our settings wherever we are, even inside another Scrapy project's folder.
    os.environ["SCRAPY_SETTINGS_MODULE"] = SETTINGS
    from scrapy.cmdline import execute

    try:
        execute(["tzcrawl", *args])
    except SystemExit as exc:  # Scrapy ends every command with sys.exit(its exit status)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
