"""`Toolbox`: several executors and agent tools as one `ToolExecutor`."""

from __future__ import annotations

from typing import Any

from ..errors import ToolNotFound
from ..openresponses.transition import Agent
from ..protocols import ToolExecutor
from ..types import RequestContext, ToolKind, ToolSchema


class Toolbox:
    """Serves the tools of every executor given, plus `agents` (run as sub-loops)."""

    def __init__(self, *executors: ToolExecutor, agents: tuple[Agent, ...] | list[Agent] = ()):
        self.executors = executors
        self.agents = tuple(agents)

    async def _routes(self, ctx: RequestContext) -> dict[str, tuple[ToolSchema, Any]]:
        routes: dict[str, tuple[ToolSchema, Any]] = {}
        for executor in self.executors:
            for schema in await executor.tools(ctx):
                routes.setdefault(schema.name, (schema, executor))
        return routes

    async def aclose(self) -> None:
        """Closes the executors that hold something open (`aclose`)."""
        for executor in self.executors:
            close = getattr(executor, "aclose", None)
            if close is not None:
                await close()

    async def tools(self, ctx: RequestContext) -> list[ToolSchema]:
        schemas = [schema for schema, _ in (await self._routes(ctx)).values()]
        schemas += [
            ToolSchema(a.name, ToolKind.AGENT, a.description, a.parameters) for a in self.agents
        ]
        return schemas

    async def execute(
        self, tool_name: str, tool_call_id: str, arguments: Any, ctx: RequestContext
    ) -> Any:
        route = (await self._routes(ctx)).get(tool_name)
        if route is None:
            raise ToolNotFound(tool_name)
        return await route[1].execute(tool_name, tool_call_id, arguments, ctx)
