"""The `mcp` tool type in requests to `stepwell serve`, through the official
`openai` client: servers the operator declares or allows, `mcp_list_tools`
and `mcp_call` items and their events, approvals, and headers that reach the
MCP server and nothing else."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agents
import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from openai import BadRequestError
from openai.types.responses import ResponseStreamEvent
from openai.types.responses import response_output_item as items
from pydantic import TypeAdapter
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
    tool_call_chunks,
)

from .test_mcp_tools import HttpMcpServer
from .test_server import Server

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ITEM_MODELS = {
    "mcp_call": items.McpCall,
    "mcp_list_tools": items.McpListTools,
    "mcp_approval_request": items.McpApprovalRequest,
}


def sum_model(request: UpstreamRequest) -> Any:
    """Calls the `add` tool it is offered for 20 + 22, then says what it got."""
    stream = bool(request.body.get("stream"))
    messages = request.body["messages"]
    if messages[-1]["role"] == "tool":
        text = f"Told: {messages[-1]['content']}"
        return StreamReply(text_chunks([text])) if stream else JsonReply(chat_completion(text))
    offered = [t["function"]["name"] for t in request.body.get("tools") or []]
    name = next(n for n in offered if n.endswith("__add"))
    call = {"id": "call_1", "name": name, "arguments": '{"a": 20, "b": 22}'}
    if stream:
        return StreamReply(tool_call_chunks([call], pieces=3))
    return JsonReply(chat_completion(tool_calls=[call]))


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpMcpServer]:
    server = HttpMcpServer()
    yield server
    server.stop()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(sum_model) as scripted:
        yield scripted


@pytest.fixture
def server(
    http_server: HttpMcpServer, upstream: ScriptedUpstream, tmp_path: Path
) -> Iterator[Server]:
    declared = tmp_path / "mcp.toml"
    declared.write_text(
        f'[servers.calc]\nurl = "{http_server.url}"\n[allow]\nserver_urls = ["{http_server.url}"]\n'
    )
    running = Server(upstream.endpoint, tmp_path / "s.db", "--mcp", str(declared))
    yield running
    running.stop()


def calc(**fields: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "calc", **fields}


def assert_valid_items(output: list[dict[str, Any]]) -> None:
    """Each MCP item parses as the official client's model of it."""
    for item in output:
        model = ITEM_MODELS.get(item["type"])
        if model is not None:
            assert model.model_validate(item).model_dump(exclude_unset=True)


async def test_a_declared_server_streams_its_listing_and_calls(server: Server) -> None:
    client = server.client()
    stream = await client.responses.create(
        model="m", input="20 + 22?", tools=[calc(require_approval="never")], stream=True
    )
    events = [event.to_dict() async for event in stream]
    kinds = [e["type"] for e in events]
    for kind in (
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ):
        assert kind in kinds
    assert kinds.index("response.mcp_call_arguments.done") < kinds.index(
        "response.mcp_call.completed"
    )
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        if "mcp" in event["type"]:
            # Each MCP event parses as the official client's model of it.
            assert EVENTS.validate_python(event).type == event["type"]
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert_valid_items(final["output"])
    listing, call, answer = final["output"]
    assert listing["server_label"] == "calc"
    assert {t["name"] for t in listing["tools"]} == {"add", "refuse", "hidden"}
    assert call["name"] == "add" and call["server_label"] == "calc"
    assert json.loads(call["arguments"]) == {"a": 20, "b": 22}
    assert call["output"] == '{"result":42}' and call["status"] == "completed"
    assert answer["content"][0]["text"] == 'Told: {"result":42}'
    streamed = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert streamed == final["output"]
    kept = await client.responses.retrieve(final["id"])
    assert kept.to_dict()["output"] == final["output"]
    assert kept.tools[0].type == "mcp"


async def test_a_continued_chain_reuses_the_listing(server: Server) -> None:
    client = server.client()
    tools = [calc(require_approval="never", allowed_tools=["add"])]
    first = await client.responses.create(model="m", input="20 + 22?", tools=tools)
    assert [i.type for i in first.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert [t.name for t in first.output[0].tools] == ["add"]
    second = await client.responses.create(
        model="m", input="Again?", tools=tools, previous_response_id=first.id
    )
    assert [i.type for i in second.output] == ["mcp_call", "message"]


async def test_names_the_server_does_not_declare_or_allow_are_refused(server: Server) -> None:
    client = server.client()
    with pytest.raises(BadRequestError) as refused:
        await client.responses.create(
            model="m", input="x", tools=[{"type": "mcp", "server_label": "elsewhere"}]
        )
    assert refused.value.param == "tools[0].server_label"
    with pytest.raises(BadRequestError) as refused:
        await client.responses.create(
            model="m",
            input="x",
            tools=[{"type": "mcp", "server_label": "x", "server_url": "http://127.0.0.1:9/mcp"}],
        )
    assert refused.value.param == "tools[0].server_url"


async def test_an_approved_call_runs_and_a_refused_one_is_told(
    server: Server, upstream: ScriptedUpstream
) -> None:
    client = server.client()
    asked = await client.responses.create(model="m", input="20 + 22?", tools=[calc()])
    assert [i.type for i in asked.output] == ["mcp_list_tools", "mcp_approval_request"]
    assert_valid_items([i.to_dict() for i in asked.output])
    request = asked.output[1]
    assert request.name == "add" and json.loads(request.arguments) == {"a": 20, "b": 22}
    calls_before = len(upstream.requests)

    approved = await client.responses.create(
        model="m",
        previous_response_id=asked.id,
        tools=[calc()],
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id,
                "approve": True}],
    )  # fmt: skip
    assert [i.type for i in approved.output] == ["mcp_call", "message"]
    call = approved.output[0]
    assert call.approval_request_id == request.id and call.output == '{"result":42}'
    sent = upstream.requests[calls_before].body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == request.id
    assert sent[-1] == {"role": "tool", "tool_call_id": request.id, "content": '{"result":42}'}

    refused = await client.responses.create(
        model="m",
        previous_response_id=asked.id,
        tools=[calc()],
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id,
                "approve": False, "reason": "not today"}],
    )  # fmt: skip
    assert [i.type for i in refused.output] == ["message"]
    told = upstream.requests[-1].body["messages"][-1]
    assert told["role"] == "tool" and "not today" in told["content"]


async def test_request_headers_reach_the_allowed_server_alone(
    server: Server, http_server: HttpMcpServer, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    client = server.client()
    tool = {
        "type": "mcp",
        "server_label": "adhoc",
        "server_url": http_server.url,
        "headers": {"X-Secret": "hdr-secret-77"},
        "authorization": "tok-secret-88",
        "require_approval": "never",
    }
    response = await client.responses.create(model="m", input="20 + 22?", tools=[tool])
    assert [i.type for i in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert response.output[1].server_label == "adhoc"
    offered = [t["function"]["name"] for t in upstream.requests[0].body["tools"]]
    assert "adhoc__add" in offered
    seen = http_server.headers[-1]
    assert seen.get("x-secret") == "hdr-secret-77"
    assert seen.get("authorization") == "Bearer tok-secret-88"
    steps = await client.get(f"/responses/{response.id}/steps", cast_to=dict)
    kept = await client.responses.retrieve(response.id)
    async with httpx.AsyncClient(base_url=server.url) as http:
        replayed = await http.get(f"/v1/responses/{response.id}", params={"stream": "true"})
    # Every row the store holds: the request, its steps, its event log.
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("s.db*"))
    assert b"adhoc__add" in stored  # the request and its steps are in there
    for secret in ("hdr-secret-77", "tok-secret-88"):
        assert secret not in response.to_json()
        assert secret not in kept.to_json()
        assert secret not in json.dumps(steps)
        assert secret not in replayed.text
        assert secret not in server.log.read_text()
        assert secret.encode() not in stored


async def test_the_agents_sdk_hosted_mcp_tool_with_approvals(server: Server) -> None:
    agents.set_tracing_disabled(True)
    approvals: list[str] = []

    def approve(request: Any) -> dict[str, Any]:
        approvals.append(request.data.name)
        return {"approve": True}

    model = agents.OpenAIResponsesModel(model="m", openai_client=server.client())
    agent = agents.Agent(
        name="calculator",
        model=model,
        tools=[
            agents.HostedMCPTool(
                tool_config={"type": "mcp", "server_label": "calc", "require_approval": "always"},
                on_approval_request=approve,
            )
        ],
    )
    result = await agents.Runner.run(agent, "20 + 22?")
    assert approvals == ["add"]
    assert result.final_output == 'Told: {"result":42}'


async def test_a_server_killed_during_an_mcp_call_never_calls_it_twice(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []
    hanging = MCPServer("hang-test")

    @hanging.tool()
    def add(a: int, b: int) -> int:
        """Adds, once let go."""
        calls.append("add")
        entered.set()
        release.wait(30)
        return a + b

    mcp_server = HttpMcpServer(hanging.streamable_http_app())
    declared = tmp_path / "mcp.toml"
    declared.write_text(f'[servers.calc]\nurl = "{mcp_server.url}"\n')
    db = tmp_path / "killed.db"
    with ScriptedUpstream(sum_model) as upstream:
        first = Server(upstream.endpoint, db, "--mcp", str(declared))
        try:
            async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
                tools = [calc(require_approval="never")]
                body = {"model": "m", "input": "20 + 22?", "background": True, "tools": tools}
                started = await http.post("/v1/responses", json=body)
                response_id = started.json()["id"]
                assert await asyncio.to_thread(entered.wait, 30)
        finally:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
        release.set()
        second = Server(upstream.endpoint, db, "--mcp", str(declared))
        try:
            async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
                params = {"stream": "true"}
                replay = (await http.get(f"/v1/responses/{response_id}", params=params)).text
        finally:
            second.stop()
            mcp_server.stop()
    assert calls == ["add"]
    assert '"code":"step_abandoned"' in replay.replace(" ", "")
    assert "event: response.failed" in replay
