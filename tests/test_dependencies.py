"""The declared dependencies are true: every third-party module tzcrawl imports is declared in
pyproject.toml, and the versions this suite runs with meet every declared floor (so a floor is never
above what was tested, and a package used without being declared is caught)."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crawlhelp import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NEWER_STDLIB = {"compression"}  # compression.zstd: Python 3.14's, imported first, its backport otherwise


def requirements(*extras: str) -> list[Requirement]:
    lines = PROJECT["dependencies"] + [line for extra in extras for line in PROJECT["optional-dependencies"][extra]]
    return [Requirement(line) for line in lines if not line.startswith("tzcrawl")]


def imported_top_level() -> set[str]:
    names = set()
    for path in (REPO / "tzcrawl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names | NEWER_STDLIB and n not in ("tzcrawl", "__future__")}


def test_every_module_tzcrawl_imports_is_a_declared_dependency():
    declared = {canonicalize_name(r.name) for r in requirements()}
    owners = metadata.packages_distributions()
    undeclared = {}
    for module in imported_top_level():
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert undeclared == {}, f"imported but not in pyproject.toml's dependencies: {undeclared}"


def test_the_installed_versions_meet_every_declared_floor():
    for requirement in requirements("scrapyd", "test"):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        installed = metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)
        assert any(spec.operator == ">=" for spec in requirement.specifier) or requirement.name == "setuptools", \
            f"{requirement.name} declares no floor"
