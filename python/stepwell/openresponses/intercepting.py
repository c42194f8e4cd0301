"""An executor that runs some of a response's tool steps itself (compaction,
a request's MCP calls) and hands every other to the executor it wraps."""

from __future__ import annotations

from collections.abc import Sequence

from ..protocols import ToolExecutor
from ..types import JSON, RequestContext, ToolSchema


class Intercepting:
    """A `ToolExecutor` around `tools`: a call `handles` claims runs in
    `run`, any other goes to `tools`. Steps it runs need no listing: the
    core hands a name no executor lists to `execute` all the same."""

    def __init__(self, tools: ToolExecutor) -> None:
        self._tools = tools
        # A Toolbox carries its agents; whoever reads them from here finds them.
        self.agents = getattr(tools, "agents", ())

    def handles(self, tool_name: str) -> bool:
        """Whether the call of `tool_name` runs here."""
        raise NotImplementedError

    async def run(self, tool_name: str, arguments: JSON) -> JSON:
        """Runs a call `handles` claimed."""
        raise NotImplementedError

    async def tools(self, ctx: RequestContext) -> Sequence[ToolSchema]:
        """The wrapped executor's tools."""
        return await self._tools.tools(ctx)

    async def execute(
        self, tool_name: str, tool_call_id: str, arguments: JSON, ctx: RequestContext
    ) -> JSON:
        """Runs the call here, or with the wrapped executor."""
        if self.handles(tool_name):
            return await self.run(tool_name, arguments)
        return await self._tools.execute(tool_name, tool_call_id, arguments, ctx)
