"""Tools served by Model Context Protocol servers, through the official `mcp`
SDK (the `mcp` extra).

`McpTools` is a `ToolExecutor` over any number of MCP servers, each reached
over streamable HTTP (a URL, with the headers and timeout given for it) or
stdio (a command it starts). Each server's tools are offered as
`<label>__<tool>` (only its `allowed_tools`, when given), listed page by page
once per session.
A call that the server answers with an error (`is_error`), or refuses, fails
its step with the server's message, which the model sees; so does a server
that cannot be reached or dies during the call. One session per server is
kept open and shared by every call; a session that broke is dropped, and the
next call opens a new one. A call is never sent twice: one that failed on a
broken session is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

from ..errors import ToolExecutionError, ToolNotFound
from ..types import JSON, MCP_SEPARATOR, RequestContext, ToolKind, ToolSchema

log = logging.getLogger("stepwell.tools.mcp")

SEPARATOR = MCP_SEPARATOR
"""Between a server's label and a tool's name in the names the model sees."""
_MAX_PAGES = 100  # a server whose listing never ends is cut off here


@dataclass(frozen=True)
class McpServer:
    """One MCP server: its `label` and either its streamable HTTP `url` (with
    `headers` sent to it alone) or the `command` (and `args`, `env`) that
    starts it over stdio. `allowed_tools`, when given, are the only tools of
    it that are offered; `tenants`, when given, the only tenants it serves;
    `timeout` bounds each request to it, in seconds."""

    label: str
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    command: str | None = None
    args: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    allowed_tools: frozenset[str] | None = None
    tenants: frozenset[str] | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if (self.url is None) == (self.command is None):
            raise ValueError(f"MCP server {self.label!r}: give either a url or a command")
        if not self.label or SEPARATOR in self.label:
            raise ValueError(f"MCP server label {self.label!r} must be non-empty, without '__'")

    def __repr__(self) -> str:
        # Headers carry credentials: never in a repr, a log line or an error.
        where = self.url or self.command
        return f"McpServer(label={self.label!r}, at={where!r})"


class _Session:
    """One open session with a server, owned by a task of its own: the SDK's
    client is entered and left in that task (its cancel scopes require it),
    while calls from any task share it."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self._ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._owner = asyncio.create_task(self._own(), name=f"mcp session {server.label}")

    async def client(self) -> Any:
        """The connected client; raises what connecting raised."""
        return await asyncio.shield(self._ready)

    async def close(self) -> None:
        """Ends the session and waits for its task."""
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._owner

    async def _own(self) -> None:
        try:
            async with _connect(self.server) as client:
                self._ready.set_result(client)
                await self._stop.wait()
        except BaseException as error:
            if not self._ready.done():
                self._ready.set_exception(
                    error if isinstance(error, Exception) else ConnectionError()
                )
            if not isinstance(error, Exception):
                raise
            log.info("MCP server %s: session ended: %s", self.server.label, type(error).__name__)


def _connect(server: McpServer) -> Any:
    """The SDK's client for `server`, not yet entered."""
    from mcp import Client, StdioServerParameters

    if server.command is not None:
        parameters = StdioServerParameters(
            command=server.command, args=list(server.args), env=dict(server.env or {}) or None
        )
        return Client(parameters, read_timeout_seconds=server.timeout)
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers=dict(server.headers), timeout=server.timeout)
    transport = streamable_http_client(str(server.url), http_client=http)
    return Client(transport, read_timeout_seconds=server.timeout)


class McpTools:
    """A `ToolExecutor` over MCP servers (see the module's doc). Close it with
    `aclose` (or `async with`) when the application stops."""

    @classmethod
    def from_file(cls, path: str | Path, environ: Mapping[str, str] | None = None) -> McpTools:
        """The servers declared in a TOML file, one `[servers.<label>]` table
        each: `url` (with `headers_env`, a table of header name to the
        environment variable holding its value: a secret never sits in the
        file) or `command` (with `args` and `env`), and optionally
        `allowed_tools`, `tenants` and `timeout`; and an `[allow]` table whose
        `server_urls` are the servers a request may name by `server_url` (see
        `admits`). Raises `ValueError` for a malformed file or a variable
        that is not set."""
        environ = os.environ if environ is None else environ
        text = tomllib.loads(Path(path).read_text())
        declared = text.get("servers", {})
        allow = text.get("allow", {})
        if not isinstance(declared, dict) or not isinstance(allow, dict):
            raise ValueError(f"{path}: [servers.<label>] and [allow] must be tables")
        urls = allow.get("server_urls", [])
        if set(allow) - {"server_urls"} or not all(isinstance(u, str) for u in urls):
            raise ValueError(f"{path}: [allow] takes server_urls, a list of URLs")
        known = {"url", "headers_env", "command", "args", "env", "allowed_tools", "tenants",
                 "timeout"}  # fmt: skip
        servers = []
        for label, entry in declared.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: servers.{label} must be a table")
            unknown = set(entry) - known
            if unknown:
                raise ValueError(f"{path}: servers.{label}: unknown keys {sorted(unknown)}")
            headers = {}
            for header, variable in (entry.get("headers_env") or {}).items():
                if not environ.get(variable):
                    raise ValueError(f"{path}: servers.{label}: ${variable} is not set")
                headers[header] = environ[variable]
            listed = {k: frozenset(entry[k]) for k in ("allowed_tools", "tenants") if k in entry}
            servers.append(
                McpServer(
                    label,
                    url=entry.get("url"),
                    headers=headers,
                    command=entry.get("command"),
                    args=tuple(entry.get("args") or ()),
                    env=entry.get("env"),
                    timeout=float(entry.get("timeout", 60.0)),
                    **listed,
                )
            )
        return cls(servers, allowed_urls=urls)

    def __init__(self, servers: Iterable[McpServer], *, allowed_urls: Iterable[str] = ()) -> None:
        self.servers = {s.label: s for s in servers}
        self.allowed_urls = tuple(allowed_urls)
        self._sessions: dict[str, _Session] = {}
        # Each server's listing, kept while its session lasts: every request
        # (and a Toolbox, every call) asks for the tools.
        self._listed: dict[str, list[Any]] = {}
        self._lock = asyncio.Lock()

    def admits(self, url: str) -> bool:
        """Whether a request may name the server at `url`: one of
        `allowed_urls` exactly, or under one that ends with `/`. Nothing else
        is admitted: a request never makes this server connect wherever it
        says."""
        return any(
            url == allowed or (allowed.endswith("/") and url.startswith(allowed))
            for allowed in self.allowed_urls
        )

    async def __aenter__(self) -> McpTools:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes every open session."""
        sessions, self._sessions = list(self._sessions.values()), {}
        self._listed.clear()
        for session in sessions:
            await session.close()

    async def tools(self, ctx: RequestContext) -> Sequence[ToolSchema]:
        """The tools (allowed ones) of every server that serves the request's
        tenant, as `<label>__<tool>`."""
        schemas: list[ToolSchema] = []
        for server in self.servers.values():
            if server.tenants is not None and ctx.tenant not in server.tenants:
                continue
            for tool in await self.list_tools(server.label):
                schemas.append(
                    ToolSchema(
                        f"{server.label}{SEPARATOR}{tool.name}",
                        ToolKind.HTTP,
                        tool.description or "",
                        dict(tool.input_schema or {"type": "object"}),
                    )
                )
        return schemas

    async def list_tools(self, label: str) -> list[Any]:
        """The tools the server `label` offers (its allowed ones), every page."""
        server = self.servers[label]
        if label in self._listed:
            return self._listed[label]
        try:
            found = await self._list(server)
        except Exception as first:
            # Listing sends nothing that acts: on a broken session, once more on a new one.
            await self._drop(label)
            try:
                found = await self._list(server)
            except Exception as error:
                raise ToolExecutionError(
                    f"MCP server {label!r} could not list its tools: {_describe(error)}"
                ) from first
        allowed = server.allowed_tools
        listed = [t for t in found if allowed is None or t.name in allowed]
        if label in self._sessions:
            self._listed[label] = listed
        return listed

    async def _list(self, server: McpServer) -> list[Any]:
        client = await self._client(server.label)
        found: list[Any] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            found += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    async def execute(
        self, tool_name: str, tool_call_id: str, arguments: JSON, ctx: RequestContext
    ) -> JSON:
        """Calls `<label>__<tool>` on its server; the step fails with the
        server's message on an error result, a refusal or a broken session."""
        label, _, name = tool_name.partition(SEPARATOR)
        server = self.servers.get(label)
        if server is None or not name:
            raise ToolNotFound(f"no MCP tool {tool_name!r}")
        if server.tenants is not None and ctx.tenant not in server.tenants:
            raise ToolNotFound(f"no MCP tool {tool_name!r}")
        if server.allowed_tools is not None and name not in server.allowed_tools:
            raise ToolNotFound(f"MCP tool {name!r} of {label!r} is not allowed")
        return await self.call(label, name, arguments if isinstance(arguments, dict) else {})

    async def call(self, label: str, name: str, arguments: dict[str, Any]) -> JSON:
        """The result of the tool `name` of the server `label`: its structured
        content when it gives one, else its text."""
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            client = await self._client(label)
            result = await client.call_tool(name, arguments)
        except MCPError as refused:
            if refused.code == CONNECTION_CLOSED:
                await self._drop(label)
                message = f"MCP server {label!r} closed the connection during the call"
            else:
                message = f"MCP server {label!r} refused the call: {refused}"
            raise ToolExecutionError(message) from None
        except Exception as error:
            await self._drop(label)
            raise ToolExecutionError(
                f"MCP server {label!r} failed during the call: {_describe(error)}"
            ) from None
        text = "\n".join(_text(part) for part in result.content)
        if result.is_error:
            raise ToolExecutionError(text or f"MCP tool {name!r} failed")
        if result.structured_content is not None:
            return result.structured_content
        return {"text": text}

    async def _client(self, label: str) -> Any:
        async with self._lock:
            session = self._sessions.get(label)
            if session is None:
                session = self._sessions[label] = _Session(self.servers[label])
        try:
            return await session.client()
        except Exception:
            await self._drop(label, session)
            raise

    async def _drop(self, label: str, session: _Session | None = None) -> None:
        """Forgets the session of `label` (only `session`, if given) and closes it."""
        current = self._sessions.get(label)
        if current is None or (session is not None and current is not session):
            return
        del self._sessions[label]
        self._listed.pop(label, None)
        await current.close()


def _text(part: Any) -> str:
    """A content part as the model reads it."""
    if getattr(part, "type", None) == "text":
        return str(part.text)
    return f"[{getattr(part, 'type', 'content')}]"


def _describe(error: BaseException) -> str:
    """What failed, without a URL's query or a header: the error's kind and,
    for an MCP error, its message."""
    message = str(error) if type(error).__name__ == "MCPError" else ""
    return f"{type(error).__name__}{': ' + message if message else ''}"
