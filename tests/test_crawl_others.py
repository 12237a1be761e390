"""Conversations with personalities the user does not own: ``recent_personalities`` and
``all_personalities -a category=self,recent`` against the sandbox, whose ``recent`` list holds
personalities of other owners that refuse their owner-only resources (real crawls over loopback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import SANDBOX_MAX_LIFETIME
from crawlhelp import REPO, assert_matches_sandbox, crawl, crawl_env, metadata, saved
from tzcrawl.sandbox import Sandbox, SandboxConfig
from tzcrawl.sandbox.frombackup import BackupWorld, files_port, round_trip_difference
from tzcrawl.sandbox.server import FILES_HOST
from tzcrawl.verify import backed_up
from tzcrawl.store import BackupView

OWNER_ONLY = ("memories", "knowledge", "training")
READABLE = ("profile", "messages", "user_data")


def scrapy(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scrapy", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env=env)


def assert_others_backed_up(sb, out):
    """Each other owner's personality: what a non-owner may read saved exactly, the rest "not theirs"."""
    owner = sb.app.world.owner_id
    for other in sb.others:
        name = other["username"]
        assert_matches_sandbox(sb, out, name, resources=READABLE)
        meta = metadata(out, name)
        assert meta["personality"]["owned"] is False
        assert meta["personality"]["owner"] not in (None, "", owner)  # the profile names its other owner
        for resource in OWNER_ONLY:
            assert saved(out, name, resource) is None, resource
            assert meta["resources"][resource]["outcome"] == "not_theirs", resource
            assert "only its owner may read it" in meta["resources"][resource]["reason"]
        for resource in READABLE:
            assert meta["resources"][resource]["outcome"] == "complete", resource


def test_recent_personalities_backs_up_the_users_and_others_chats(sandbox_factory, tmp_path):
    """Owning 2, talking to 3 others: 5 folders, every chat history complete, the others' owner-only
    resources "not yours" (exit 0); then an incremental run costs what one costs today."""
    sb = sandbox_factory(personalities=2, others=3, empty_last=False)
    out = tmp_path / "backup"
    result = crawl(sb, "recent_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Backup complete: 5 of 5 personalities (3 of them other people's" in result.stderr
    assert sorted(backed_up(BackupView(out))) == sorted(p["username"] for p in sb.personalities + sb.others)
    for mine in sb.personalities:
        assert_matches_sandbox(sb, out, mine["username"])
        assert metadata(out, mine["username"])["personality"]["owned"] is True
        assert "owner" not in metadata(out, mine["username"])["personality"]
    assert_others_backed_up(sb, out)
    summary = result.stderr[result.stderr.index("Backup summary"):]
    for other in sb.others:
        line = next(line for line in summary.splitlines() if line.startswith(other["username"]))
        assert line.count("not yours") == 3 and "FAILED" not in line
    routes = sb.stats()["routes"]
    assert routes["list"] == 2  # the owned list (whose is whose), then the recent one

    # incremental: a few requests per personality, as for the user's own today; none retried
    target = sb.others[0]["username"]
    sb.add(target, messages=10)
    sb.reset_stats()
    again = crawl(sb, "recent_personalities", out)
    assert again.returncode == 0, again.stderr[-3000:]
    routes, people = sb.stats()["routes"], 5
    assert routes["list"] == 2 and routes["users_info"] == 1
    assert routes["profile"] == routes["memory"] == routes["story"] == routes["training"] == routes["user"] == people
    assert routes["chat_history"] <= 2 * people
    assert len(saved(out, target, "messages")) == len(sb.export(target)["messages"])
    assert metadata(out, target)["resources"]["messages"]["new"] == 10
    assert_others_backed_up(sb, out)

    # verify says whose it is and why resources are absent; the export takes it in its stride
    env = crawl_env(sb, out)
    checked = scrapy("verify", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("not yours: only its owner may read it") == 9
    assert checked.stdout.count("(someone else's, owned by ") == 3
    sb.reset_stats()
    online = scrapy("verify", "-a", "online=1", env=env)  # compares only what a non-owner may read
    assert online.returncode == 0, online.stdout + online.stderr
    assert "online: 5 match the service, 0 lack something" in online.stdout, online.stdout
    assert sb.stats()["route_status"]["memory"] == {"200": 2}  # the others' memories are not asked for
    exported = scrapy("export", "-a", f"out={tmp_path / 'export'}", env=env)
    assert exported.returncode == 0, exported.stderr[-3000:]
    page = (tmp_path / "export" / BackupView(out).dir_name(target) / "index.html").read_text(encoding="utf-8")
    assert "Someone else&#39;s personality" in page or "Someone else's personality" in page
    chat = (tmp_path / "export" / BackupView(out).dir_name(target) / "chat.md").read_text(encoding="utf-8")
    assert chat.strip()


def test_category_self_and_recent_backs_each_personality_up_once(sandbox_factory, tmp_path):
    """``all_personalities -a category=self,recent``: every owned one and every other one, those in
    both lists once; plain ``all_personalities`` still means the owned ones only."""
    sb = sandbox_factory(personalities=3, others=2)
    out = tmp_path / "backup"
    result = crawl(sb, "all_personalities", out, "-a", "category=self,recent")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Backup complete: 5 of 5 personalities" in result.stderr
    routes = sb.stats()["routes"]
    assert routes["profile"] == 5 and routes["list"] == 2  # the two owned ones in both lists: once each
    assert_others_backed_up(sb, out)
    only_owned = tmp_path / "owned"
    result = crawl(sb, "all_personalities", only_owned)
    assert result.returncode == 0 and "Backup complete: 3 of 3 personalities." in result.stderr
    assert sorted(backed_up(BackupView(only_owned))) == sorted(p["username"] for p in sb.personalities)


def test_a_refusal_of_the_users_own_personality_still_fails(sandbox_factory, tmp_path):
    """A 403 on an owned personality's resource, while the session holds: that resource FAILED, exit
    1, not "log in again"; the same refusal of someone else's owner-only resource is "not yours"."""
    sb = sandbox_factory(personalities=2, others=1, forbidden_route="story")
    out = tmp_path / "backup"
    result = crawl(sb, "recent_personalities", out)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "refused, though the session is accepted" in result.stderr
    assert "Log in again" not in result.stderr and "Authentication failed" not in result.stderr
    for mine in sb.personalities:
        meta = metadata(out, mine["username"])
        assert meta["resources"]["knowledge"]["outcome"] == "failed"
        assert all(meta["resources"][r]["outcome"] == "complete" for r in ("profile", "memories", "messages"))
    other = metadata(out, sb.others[0]["username"])
    assert other["resources"]["knowledge"]["outcome"] == "not_theirs"
    # the owned one's 403 asked the current-user call once each (one at the start, one per refusal)
    assert sb.stats()["routes"]["users_info"] == 1 + len(sb.personalities)


def test_a_lost_session_or_a_bot_check_among_others_is_not_not_theirs(sandbox_factory, tmp_path):
    """Refusals that are not about ownership keep their meaning on someone else's personality: an
    expired cookie is "log in again" (3), the site's bot check is a bot check (4)."""
    sb = sandbox_factory(personalities=1, others=2, messages=60)
    out = tmp_path / "backup"
    sb.set_knobs(cookie_max_requests=16)  # expires at the first other's chat history, after its memories
    expired = crawl(sb, "recent_personalities", out)
    assert expired.returncode == 3, expired.stderr[-3000:]
    assert "Authentication failed" in expired.stderr
    for other in sb.others:  # whatever anyone may read is never "not yours", whoever owns it
        resources = metadata(out, other["username"]).get("resources", {})
        assert all(resources.get(r, {}).get("outcome") != "not_theirs" for r in READABLE), resources
    first = metadata(out, sb.others[0]["username"])["resources"]
    assert first["memories"]["outcome"] == "not_theirs"  # refused while the session held: rightly not theirs
    assert first["messages"]["outcome"] == "failed" and "401" in first["messages"]["error"]
    sb.set_knobs(cookie_max_requests=None, bot_check="cloudflare", bot_check_from=8)
    blocked = crawl(sb, "recent_personalities", tmp_path / "other", cookie=sb.new_cookie())
    assert blocked.returncode == 4, blocked.stderr[-3000:]
    assert "BLOCKED by the site's bot protection" in blocked.stderr


def test_a_named_personality_keeps_whose_it_is(sandbox_factory, tmp_path):
    """``crawl personality -a personality=<someone else's>`` after a recent run: the backup recorded it
    as someone else's, so its owner-only resources are "not yours" again (exit 0), not failures."""
    sb = sandbox_factory(personalities=1, others=1)
    out = tmp_path / "backup"
    assert crawl(sb, "recent_personalities", out).returncode == 0
    name = sb.others[0]["username"]
    sb.add(name, messages=3)
    result = crawl(sb, "personality", out, "-a", f"personality={name}")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = metadata(out, name)
    assert meta["personality"]["owned"] is False and meta["resources"]["messages"]["new"] == 3
    assert all(meta["resources"][r]["outcome"] == "not_theirs" for r in OWNER_ONLY)


def test_a_private_profile_path_falls_back_to_the_public_profile(sandbox_factory, tmp_path):
    """With PROFILE_INFO_PRIVATE_PATH distinct from the public path, someone else's profile is refused
    there and read from ``{jargon}/username/{slug}``; one extra request, nothing failed."""
    sb = sandbox_factory(personalities=1, others=1, profile_path="personalities/private")
    out = tmp_path / "backup"
    env = crawl_env(sb, out, PROFILE_INFO_PRIVATE_PATH="personalities/private")
    result = subprocess.run([sys.executable, "-m", "scrapy", "crawl", "recent_personalities", "-s", "DOWNLOAD_DELAY=0",
                             "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "BACKUP_PERSONALITY_DELAY=0"],
                            cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    name = sb.others[0]["username"]
    assert saved(out, name, "profile") == sb.export(name)["profile"]
    assert sb.stats()["route_status"]["profile"] == {"200": 2, "403": 1}


@pytest.mark.parametrize("spider, args", [("recent_personalities", ()),
                                          ("all_personalities", ("-a", "category=self,recent"))])
def test_a_served_backup_with_others_gives_back_the_same_files(sandbox_factory, tmp_path, spider, args):
    """The served backup (issue 21) lists someone else's personality under ``recent`` only and refuses its
    owner-only resources as the service did: a crawl of it gives back the same files and whose is whose."""
    sb = sandbox_factory(personalities=2, others=2)
    original, again = tmp_path / "original", tmp_path / "again"
    assert crawl(sb, spider, original, *args).returncode == 0
    sb.stop()
    world = BackupWorld(original)
    served = Sandbox(SandboxConfig(), port=0, max_lifetime=SANDBOX_MAX_LIFETIME, world=world,
                     files_port=files_port(world, FILES_HOST)).start()
    try:
        assert len(served.personalities) == 2 and len(served.others) == 2
        result = crawl(served, spider, again, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "(2 of them other people's" in result.stderr
    finally:
        served.stop()
    files, difference = round_trip_difference(original, again)
    assert difference is None and files > 10, difference


def test_a_profile_refused_on_every_path_is_not_yours_and_the_chat_still_comes(sandbox_factory, tmp_path):
    """Someone else's profile refused (403 on the one profile path): "not yours", and its chat history
    is backed up all the same (the list gave its id); the same refusal of the user's own profile fails."""
    sb = sandbox_factory(personalities=1, others=1, forbidden_route="profile")
    out = tmp_path / "backup"
    result = crawl(sb, "recent_personalities", out)
    assert result.returncode == 1, result.stderr[-3000:]  # the user's own profile: refused while the session holds
    other = sb.others[0]["username"]
    meta = metadata(out, other)
    assert meta["resources"]["profile"]["outcome"] == "not_theirs"
    assert "its profile is not shown to you" in meta["resources"]["profile"]["reason"]
    assert saved(out, other, "profile") is None
    assert_matches_sandbox(sb, out, other, resources=("messages", "user_data"))
    mine = sb.personalities[0]["username"]
    assert f"{mine} · profile: FAILED (HTTP 403" in result.stderr and "refused, though the session is accepted" \
        in result.stderr
    assert metadata(out, mine)["resources"]["messages"]["outcome"] == "complete"  # the list gave its id too
