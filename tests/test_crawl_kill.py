"""kill -9 in the middle of a large crawl: every saved file stays valid and nothing is lost; the
next run completes the backup."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from crawlhelp import MEMORY_TIME, REPO, crawl, crawl_cmd, crawl_env, oldest_first, saved


def all_files_valid(out) -> dict[str, object]:
    """Parse every JSON file under the backup (data and metadata); a torn file raises."""
    return {str(p.relative_to(out)): json.loads(p.read_text(encoding="utf-8")) for p in out.rglob("*.json")}


def test_kill_9_at_any_moment_leaves_previous_backup_intact(sandbox_factory, tmp_path):
    sb = sandbox_factory(personalities=2, memories=1500, messages=6000, empty_last=False)
    out = tmp_path / "b"
    assert crawl(sb, "all_personalities", out).returncode == 0
    baseline = all_files_valid(out)
    baseline_ids = {rel: {r["id"] for r in data} for rel, data in baseline.items()
                    if rel.endswith(("_memories.json", "_messages.json"))}
    for p in sb.personalities:
        sb.add(p["username"], memories=300, messages=700)

    env = crawl_env(sb, out)
    killed = 0
    for delay in (0.6, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.5):
        proc = subprocess.Popen(crawl_cmd("all_personalities", "-a", "full=1"), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        now = all_files_valid(out)  # every file parses: nothing torn
        for rel, ids in baseline_ids.items():
            assert ids <= {r["id"] for r in now[rel]}, f"{rel} lost records after kill at {delay}s"
        for rel in baseline:
            assert rel in now, f"{rel} vanished after kill at {delay}s"
    assert killed >= 4, "the crawl should have been killed mid-way most times; make the data larger"

    result = crawl(sb, "all_personalities", out)
    assert result.returncode == 0, result.stderr[-3000:]
    for p in sb.personalities:
        truth = sb.export(p["username"])
        assert saved(out, p["username"], "memories") == oldest_first(truth["memories"], MEMORY_TIME)
        assert saved(out, p["username"], "messages") == oldest_first(truth["messages"], "ts")
    assert not list(out.rglob(".staging")) and not list(out.rglob(".*.tmp")), "leftovers cleaned"
