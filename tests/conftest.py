"""Shared pytest fixtures. The sandbox service fixtures come first; add other fixtures below them."""

from __future__ import annotations

import pytest

from tzcrawl.sandbox import Sandbox, SandboxConfig

# A safety net only: the fixtures stop their sandboxes at teardown.
SANDBOX_MAX_LIFETIME = 900.0


@pytest.fixture
def sandbox_factory():
    """Call with SandboxConfig keyword arguments; returns a started Sandbox, stopped at teardown."""
    started: list[Sandbox] = []

    def start(**config) -> Sandbox:
        sb = Sandbox(SandboxConfig(**config), port=0, max_lifetime=SANDBOX_MAX_LIFETIME).start()
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory) -> Sandbox:
    """A default small sandbox: 3 personalities (the last one empty), 45 memories, 120 messages."""
    return sandbox_factory()
