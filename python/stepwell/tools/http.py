"""`HttpTools`: tools declared in a TOML or JSON file, each call a POST of the
arguments as JSON, fired from the Rust core."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _core
from .._eager import runs_without_task
from ..errors import ToolExecutionError, ToolNotFound, ToolTimeout
from ..types import RequestContext, ToolKind, ToolSchema

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib


@dataclass(frozen=True)
class HttpTool:
    """One declared tool."""

    name: str
    url: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0


class HttpTools:
    """A `ToolExecutor` whose tools are HTTP endpoints.

    The answer's JSON is the tool's result (plain text if it is not JSON); a
    non-2xx answer raises `ToolExecutionError`, no answer in time `ToolTimeout`.
    Calls go through `client` (the shared default `HttpClient` when `None`): the
    model calls' connection pool and timeouts, with each tool's `timeout` on top.
    """

    def __init__(self, tools: list[HttpTool], *, client: _core.HttpClient | None = None) -> None:
        self._tools = {t.name: t for t in tools}
        self._client = client

    @classmethod
    def from_file(cls, path: str | Path, *, client: _core.HttpClient | None = None) -> HttpTools:
        """Reads ``[[tool]]`` tables from TOML, or a JSON list (or ``{"tools": [...]}``)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".toml":
            entries = tomllib.loads(text).get("tool", [])
        else:
            data = json.loads(text)
            entries = data.get("tools", []) if isinstance(data, dict) else data
        tools = []
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("name") or not entry.get("url"):
                raise ValueError(f"{path}: every tool needs a name and a url")
            tools.append(HttpTool(**entry))
        return cls(tools, client=client)

    @runs_without_task
    async def tools(self, ctx: RequestContext) -> list[ToolSchema]:
        return [
            ToolSchema(t.name, ToolKind.HTTP, t.description, t.parameters)
            for t in self._tools.values()
        ]

    @runs_without_task
    async def execute(
        self, tool_name: str, tool_call_id: str, arguments: Any, ctx: RequestContext
    ) -> Any:
        tool = self._tools.get(tool_name)
        if tool is None:
            raise ToolNotFound(tool_name)
        headers = {"X-Tool-Call-Id": tool_call_id, **tool.headers}
        try:
            status, text = await _core.post_json(
                tool.url, json.dumps(arguments), headers, tool.timeout, self._client
            )
        except TimeoutError as error:
            raise ToolTimeout(f"{tool_name}: {error}") from error
        except ConnectionError as error:
            raise ToolExecutionError(f"{tool_name}: {error}") from error
        if not 200 <= status < 300:
            raise ToolExecutionError(f"{tool_name} answered HTTP {status}: {text}")
        try:
            return json.loads(text)
        except ValueError:
            return text
