"""An exception at any step of the walk (a callback, a spider middleware, an item pipeline) fails the
resource it hit, never the walk: every planned resource gets an outcome, the other personality is
backed up, and nothing saved before is lost. Faults are injected into real crawls (tests/faults.py)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from crawlhelp import REPO, RESOURCES, crawl_cmd, crawl_env, data_files

TESTS = REPO / "tests"
GUARD = {"tzcrawl.middlewares.WalkGuardMiddleware": 10, "faults.RaisingSpiderMiddleware": 500}
PIPELINES = {"tzcrawl.media.pipeline.MediaFilesPipeline": 200, "tzcrawl.pipelines.BackupPipeline": 300}


def summary(stderr: str) -> dict[str, dict[str, str]]:
    """The closing table: cells by personality and column."""
    lines = stderr.split("Backup summary (total (+new) per resource):\n", 1)[1].splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header) or not line.startswith("persona-"):
            break
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def run_with_fault(sb, out, fault: str, pipeline_at: int | None):
    pipelines = dict(PIPELINES)
    if pipeline_at is not None:
        pipelines["faults.RaisingPipeline"] = pipeline_at
    settings = {"SPIDER_MIDDLEWARES": json.dumps(GUARD), "ITEM_PIPELINES": json.dumps(pipelines),
                "SPIDER_MODULES": "tzcrawl.spiders,faults"}
    env = crawl_env(sb, out, TZCRAWL_TEST_FAULT=fault, PYTHONPATH=str(TESTS))
    return subprocess.run(crawl_cmd("faulty_all_personalities", settings=settings), cwd=REPO, capture_output=True,
                          text=True, timeout=180, env=env)


@pytest.mark.parametrize("fault, pipeline_at, failed", [
    ("spidermw:Document:profile", None, {"profile"}),
    ("spidermw:Page:messages", None, {"messages"}),
    ("spidermw:ResourceDone:memories", None, {"memories", "messages"}),
    ("pipeline:Document:profile", 100, {"profile"}),       # before the media pipeline
    ("pipeline:Page:memories", 250, {"memories"}),          # between media and the store
    ("pipeline:ResourceDone:knowledge", 250, {"knowledge"}),
    ("callback:start:messages", None, {"messages"}),
])
def test_an_exception_at_any_step_fails_one_resource_and_the_walk_goes_on(sandbox_factory, tmp_path, fault,
                                                                          pipeline_at, failed):
    sb = sandbox_factory(personalities=2, memories=30, messages=120, empty_last=False)
    out = tmp_path / "b"
    first = run_with_fault(sb, out, "", None)
    assert first.returncode == 0, first.stderr[-3000:]
    before = data_files(out)
    one, two = (p["username"] for p in sb.personalities)
    sb.add(one, memories=10, messages=30)

    result = run_with_fault(sb, out, fault, pipeline_at)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "injected" in result.stderr
    rows = summary(result.stderr)
    assert set(rows) == {one, two}, "every personality asked for is in the summary"
    assert all(rows[two][r] != "-" and "FAILED" not in rows[two][r] for r in RESOURCES), rows[two]
    assert {r for r in RESOURCES if rows[one][r] == "FAILED"} == failed, rows[one]
    assert all(rows[one][r] != "-" for r in RESOURCES), "every planned resource has an outcome"
    assert "Backup INCOMPLETE" in result.stderr and "1 of 2 personalities complete" in result.stderr
    for resource in failed:  # what was saved before is as it was
        name = next(k for k in before if k.startswith(f"{one}/") and k.endswith(
            f"{one}.json" if resource == "profile" else f"_{resource}.json"))
        assert data_files(out)[name] == before[name]
    assert not list(out.glob(f"{one}/.staging*")), "nothing staged is left behind"
