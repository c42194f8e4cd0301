"""Shared fixtures: a scripted upstream on loopback and a configurable tool executor."""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

# The native module's test hooks (a deliberate panic) exist only where asked for.
os.environ.setdefault("STEPWELL_TEST_HOOKS", "1")

from stepwell import RequestContext, ToolKind, ToolSchema, UpstreamTarget
from stepwell.testing import ScriptedUpstream

from . import pg

ToolFn = Callable[[dict[str, Any]], Any | Awaitable[Any]]


class Tools:
    """A ToolExecutor over plain functions; records every call it gets."""

    def __init__(self, **tools: ToolFn | tuple[ToolKind, ToolFn | None]) -> None:
        self.kinds: dict[str, ToolKind] = {}
        self.fns: dict[str, ToolFn] = {}
        for name, spec in tools.items():
            kind, fn = spec if isinstance(spec, tuple) else (ToolKind.HTTP, spec)
            self.kinds[name] = kind
            if fn is not None:
                self.fns[name] = fn
        self.calls: list[tuple[str, str, Any, RequestContext]] = []
        self.tools_calls = 0

    async def tools(self, ctx: RequestContext) -> list[ToolSchema]:
        self.tools_calls += 1
        return [ToolSchema(name, kind) for name, kind in self.kinds.items()]

    async def execute(
        self, tool_name: str, tool_call_id: str, arguments: Any, ctx: RequestContext
    ) -> Any:
        self.calls.append((tool_name, tool_call_id, arguments, ctx))
        result = self.fns[tool_name](arguments)
        if inspect.isawaitable(result):
            result = await result
        return result


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session (see `tests/pg.py`)."""
    yield from pg.server()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh database of its own for the test."""
    return pg.new_database(postgres_server)


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def target(upstream: ScriptedUpstream) -> UpstreamTarget:
    return UpstreamTarget(upstream.endpoint, api_key="sk-test-key")


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(model="scripted")
