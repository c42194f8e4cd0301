"""`McpTools`: real MCP servers built with the official SDK, one over
streamable HTTP on loopback and one over stdio, listed and called as any
other executor's tools."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import mcp_types
import pytest
import uvicorn
from mcp.server.lowlevel import Server as LowLevelServer
from mcp.server.mcpserver import MCPServer
from stepwell import RequestContext, ToolExecutionError, ToolNotFound, UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.stores import MemoryStore
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    UpstreamRequest,
    chat_completion,
)
from stepwell.tools.mcp import McpServer, McpTools

from .test_server import Server

STDIO_SERVER = Path(__file__).parent / "mcp_servers" / "stdio_server.py"
CTX = RequestContext(model="m")


class HttpMcpServer:
    """An MCP server over streamable HTTP on a loopback port, in a thread,
    that records the headers of every request it gets."""

    def __init__(self, inner: Any = None) -> None:
        self.headers: list[dict[str, str]] = []
        inner = inner or self._calculator()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await inner(scope, receive, send)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        # A thread's start is not an event to wait on: poll uvicorn's flag.
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.01)

    @staticmethod
    def _calculator() -> Any:
        mcp = MCPServer("http-test")

        @mcp.tool()
        def add(a: int, b: int) -> int:
            """Adds two numbers."""
            return a + b

        @mcp.tool()
        def refuse(reason: str) -> str:
            """Fails with `reason`."""
            raise ValueError(reason)

        @mcp.tool()
        def hidden() -> str:
            """Not allowed to the model in these tests."""
            return "seen"

        return mcp.streamable_http_app()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpMcpServer]:
    server = HttpMcpServer()
    yield server
    server.stop()


@pytest.fixture
async def tools(http_server: HttpMcpServer) -> AsyncIterator[McpTools]:
    servers = [
        McpServer(
            "calc",
            url=http_server.url,
            headers={"Authorization": "Bearer mcp-secret"},
            allowed_tools=frozenset({"add", "refuse"}),
        ),
        McpServer("local", command=sys.executable, args=[str(STDIO_SERVER)]),
    ]
    async with McpTools(servers) as executor:
        yield executor


async def test_tools_of_every_server_are_listed_under_their_label(tools: McpTools) -> None:
    listed = {schema.name: schema for schema in await tools.tools(CTX)}
    assert sorted(listed) == ["calc__add", "calc__refuse", "local__die", "local__echo"]
    assert listed["calc__add"].description == "Adds two numbers."
    assert listed["calc__add"].parameters["required"] == ["a", "b"]


async def test_calls_reach_the_server_with_its_headers(
    tools: McpTools, http_server: HttpMcpServer
) -> None:
    assert await tools.execute("calc__add", "c1", {"a": 2, "b": 3}, CTX) == {"result": 5}
    assert await tools.execute("local__echo", "c2", {"text": "hé"}, CTX) == {"result": "hé"}
    assert http_server.headers
    assert all(h.get("authorization") == "Bearer mcp-secret" for h in http_server.headers)


async def test_an_error_result_and_an_unknown_tool_fail_the_step(tools: McpTools) -> None:
    with pytest.raises(ToolExecutionError) as failed:
        await tools.execute("calc__refuse", "c1", {"reason": "no"}, CTX)
    assert "refuse" in str(failed.value)
    with pytest.raises(ToolNotFound):
        await tools.execute("calc__hidden", "c2", {}, CTX)
    with pytest.raises(ToolNotFound):
        await tools.execute("elsewhere__add", "c3", {}, CTX)


async def test_a_server_that_dies_mid_call_fails_the_call_and_is_started_again(
    tools: McpTools,
) -> None:
    assert await tools.execute("local__echo", "c1", {"text": "before"}, CTX) == {"result": "before"}
    with pytest.raises(ToolExecutionError) as failed:
        await tools.execute("local__die", "c2", {}, CTX)
    assert "local" in str(failed.value)
    assert await tools.execute("local__echo", "c3", {"text": "after"}, CTX) == {"result": "after"}


async def test_a_server_that_cannot_be_reached_fails_the_listing() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = McpServer("gone", url=f"http://127.0.0.1:{port}/mcp", timeout=5)
    async with McpTools([server]) as tools:
        with pytest.raises(ToolExecutionError) as failed:
            await tools.tools(CTX)
    assert "gone" in str(failed.value)


async def test_the_model_calls_an_mcp_tool_through_responses(tools: McpTools) -> None:
    def model(request: UpstreamRequest) -> Any:
        messages = request.body["messages"]
        if messages[-1]["role"] == "tool":
            return JsonReply(chat_completion(f"The sum is {messages[-1]['content']}."))
        names = [t["function"]["name"] for t in request.body["tools"]]
        assert "calc__add" in names
        call = {"id": "call_1", "name": "calc__add", "arguments": '{"a": 20, "b": 22}'}
        return JsonReply(chat_completion(tool_calls=[call]))

    with ScriptedUpstream(model) as upstream:
        responses = Responses(MemoryStore(), tools, UpstreamTarget(upstream.endpoint))
        response = await responses.create({"model": "m", "input": "20 + 22?"})
    outputs = [i for i in response["output"] if i["type"] == "function_call_output"]
    assert json.loads(outputs[0]["output"]) == {"result": 42}
    assert response["output"][-1]["content"][0]["text"] == 'The sum is {"result":42}.'


def sum_model(request: UpstreamRequest) -> Any:
    """Calls `calc__add` for 20 + 22, then says what it got."""
    messages = request.body["messages"]
    if messages[-1]["role"] == "tool":
        return JsonReply(chat_completion(f"The sum is {messages[-1]['content']}."))
    call = {"id": "call_1", "name": "calc__add", "arguments": '{"a": 20, "b": 22}'}
    return JsonReply(chat_completion(tool_calls=[call]))


async def test_servers_declared_for_serve_reach_the_openai_client(
    http_server: HttpMcpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Bearer serve-secret-4242"
    monkeypatch.setenv("CALC_MCP_TOKEN", secret)
    declared = tmp_path / "mcp.toml"
    declared.write_text(
        f'[servers.calc]\nurl = "{http_server.url}"\n'
        'headers_env = { Authorization = "CALC_MCP_TOKEN" }\nallowed_tools = ["add"]\n'
    )
    with ScriptedUpstream(sum_model) as upstream:
        server = Server(upstream.endpoint, tmp_path / "s.db", "--mcp", str(declared))
        try:
            client = server.client()
            response = await client.responses.create(model="m", input="20 + 22?")
            assert response.output_text == 'The sum is {"result":42}.'
            offered = [t["function"]["name"] for t in upstream.requests[0].body["tools"]]
            assert offered == ["calc__add"]
            steps = await client.get(f"/responses/{response.id}/steps", cast_to=dict)
        finally:
            server.stop()
    assert any(h.get("authorization") == secret for h in http_server.headers)
    # The header reached the server alone: not the log, the steps, the response.
    assert secret not in server.log.read_text()
    assert secret not in json.dumps(steps)
    assert secret not in response.to_json()


async def test_a_server_serves_only_the_tenants_it_names(http_server: HttpMcpServer) -> None:
    server = McpServer("calc", url=http_server.url, tenants=frozenset({"acme"}))
    async with McpTools([server]) as tools:
        assert await tools.tools(RequestContext(tenant="globex")) == []
        with pytest.raises(ToolNotFound):
            await tools.execute("calc__add", "c", {"a": 1, "b": 1}, RequestContext(tenant="globex"))
        listed = await tools.tools(RequestContext(tenant="acme"))
        assert "calc__add" in [t.name for t in listed]
        acme = RequestContext(tenant="acme")
        assert await tools.execute("calc__add", "c", {"a": 1, "b": 1}, acme) == {"result": 2}


def test_a_declaration_names_its_secrets_by_variable(tmp_path: Path) -> None:
    declared = tmp_path / "mcp.toml"
    declared.write_text(
        '[servers.docs]\nurl = "http://127.0.0.1:9/mcp"\n'
        'headers_env = { Authorization = "DOCS_TOKEN" }\ntenants = ["acme"]\ntimeout = 5\n'
        '[servers.files]\ncommand = "python"\nargs = ["files.py"]\n'
    )
    tools = McpTools.from_file(declared, {"DOCS_TOKEN": "Bearer t"})
    docs, files = tools.servers["docs"], tools.servers["files"]
    assert docs.headers == {"Authorization": "Bearer t"}
    assert docs.tenants == frozenset({"acme"}) and docs.timeout == 5
    assert "Bearer t" not in repr(docs)
    assert files.command == "python" and list(files.args) == ["files.py"]
    with pytest.raises(ValueError, match="DOCS_TOKEN"):
        McpTools.from_file(declared, {})
    declared.write_text('[servers.x]\nurl = "http://127.0.0.1:9/mcp"\nheaders = {A = "b"}\n')
    with pytest.raises(ValueError, match="unknown keys"):
        McpTools.from_file(declared, {})


def paged_server() -> Any:
    """A low-level MCP server that lists its five tools two per page."""
    names = [f"t{n}" for n in range(5)]

    async def list_tools(ctx: Any, params: Any) -> Any:
        start = int(params.cursor) if params is not None and params.cursor else 0
        tools = [
            mcp_types.Tool(name=n, description=f"tool {n}", input_schema={"type": "object"})
            for n in names[start : start + 2]
        ]
        more = start + 2 < len(names)
        return mcp_types.ListToolsResult(tools=tools, next_cursor=str(start + 2) if more else None)

    async def call_tool(ctx: Any, params: Any) -> Any:
        text = mcp_types.TextContent(type="text", text=f"ran {params.name}")
        return mcp_types.CallToolResult(content=[text])

    server = LowLevelServer("paged", on_list_tools=list_tools, on_call_tool=call_tool)
    return server.streamable_http_app()


async def test_a_listing_follows_every_page() -> None:
    server = HttpMcpServer(paged_server())
    try:
        async with McpTools([McpServer("paged", url=server.url)]) as tools:
            listed = [t.name for t in await tools.tools(CTX)]
            assert listed == [f"paged__t{n}" for n in range(5)]
            assert await tools.execute("paged__t4", "c", {}, CTX) == {"text": "ran t4"}
    finally:
        server.stop()
