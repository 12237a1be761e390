"""Shared pytest fixtures. The sandbox service fixtures come first; add other fixtures below them."""

from __future__ import annotations

import pytest

from tzcrawl.sandbox import Sandbox, SandboxConfig

# A safety net only: the fixtures stop their sandboxes at teardown.
SANDBOX_MAX_LIFETIME = 900.0


def pytest_configure(config):
    config.addinivalue_line("markers", "sandbox_session(mode): the sandbox fixtures' default session mode "
                                       "(appsession: the 2025 service over plain http)")
    config.addinivalue_line("markers", "sandbox_records(era): the sandbox fixtures' default record shapes "
                                       "(2025: memories with created_at and content, 14-field profiles)")


@pytest.fixture
def sandbox_factory(request):
    """Call with SandboxConfig keyword arguments; returns a started Sandbox, stopped at teardown.
    Today's service (Better Auth over HTTPS, 2026 records) unless the test is marked ``sandbox_session`` or
    ``sandbox_records``."""
    started: list[Sandbox] = []
    defaults = {}
    for name, knob in (("sandbox_session", "session"), ("sandbox_records", "records")):
        marker = request.node.get_closest_marker(name)
        if marker:
            defaults[knob] = marker.args[0]

    def start(**config) -> Sandbox:
        sb = Sandbox(SandboxConfig(**{**defaults, **config}), port=0, max_lifetime=SANDBOX_MAX_LIFETIME).start()
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory) -> Sandbox:
    """A default small sandbox: 3 personalities (the last one empty), 45 memories, 120 messages."""
    return sandbox_factory()
