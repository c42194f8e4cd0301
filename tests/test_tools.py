"""The tool executors that ship with stepwell: Python functions, HTTP endpoints
declared in a file (called from the Rust core), and agent tools."""

from __future__ import annotations

import asyncio
import json
import threading
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import pytest
from stepwell import (
    HttpClient,
    InvalidToolArguments,
    RequestContext,
    ToolExecutionError,
    ToolKind,
    ToolNotFound,
    ToolTimeout,
    UpstreamTarget,
)
from stepwell.openresponses import Responses
from stepwell.stores import MemoryStore
from stepwell.testing import JsonReply, ScriptedUpstream, UpstreamRequest, chat_completion
from stepwell.tools import Agent, FunctionTools, HttpTools, Toolbox

CTX = RequestContext(model="m")


class Unit(Enum):
    C = "celsius"
    F = "fahrenheit"


def forecast(  # type: ignore[no-untyped-def]
    city: str,
    days: int = 1,
    unit: Unit = Unit.C,
    tags: list[str] | None = None,
):
    """Forecast for a city.

    Longer explanation that is not the summary.

    Args:
        city: The city to look up.
        days (int): How many days ahead.
    """
    return {"city": city, "days": days, "thread": threading.get_ident()}


async def mode(kind: Literal["fast", "slow"], ctx: RequestContext) -> dict[str, Any]:
    """Echo the mode and the model from the context."""
    return {"kind": kind, "model": ctx.model}


def broken(x: int) -> None:
    """Always fails."""
    raise RuntimeError(f"cannot handle {x}")


async def test_function_schemas_come_from_hints_and_docstrings() -> None:
    tools = FunctionTools(forecast, mode)
    schemas = {s.name: s for s in await tools.tools(CTX)}
    schema = schemas["forecast"]
    assert schema.kind is ToolKind.HTTP
    assert schema.description == "Forecast for a city."
    assert schema.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city to look up."},
            "days": {"type": "integer", "description": "How many days ahead."},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city"],
    }
    # The context parameter is supplied by stepwell, not by the model.
    assert schemas["mode"].parameters["properties"] == {"kind": {"enum": ["fast", "slow"]}}


async def test_sync_functions_run_off_the_event_loop_and_errors_are_typed() -> None:
    tools = FunctionTools(forecast, mode, broken)
    result = await tools.execute("forecast", "c1", {"city": "Oslo", "days": 2}, CTX)
    assert result["city"] == "Oslo" and result["days"] == 2
    assert result["thread"] != threading.get_ident()
    assert await tools.execute("mode", "c2", {"kind": "fast"}, CTX) == {
        "kind": "fast",
        "model": "m",
    }
    with pytest.raises(InvalidToolArguments):
        await tools.execute("forecast", "c3", {"town": "Oslo"}, CTX)
    with pytest.raises(InvalidToolArguments):
        await tools.execute("forecast", "c4", {"_invalid_arguments": "{oops"}, CTX)
    with pytest.raises(ToolExecutionError, match="cannot handle 3"):
        await tools.execute("broken", "c5", {"x": 3}, CTX)
    with pytest.raises(ToolNotFound):
        await tools.execute("nope", "c6", {}, CTX)


@pytest.fixture
def endpoint() -> Any:
    release = threading.Event()

    async def handler(request: UpstreamRequest) -> JsonReply:
        if request.path == "/slow":
            await asyncio.to_thread(release.wait, 10)
        if request.path == "/fail":
            return JsonReply({"error": "no such city"}, 404)
        return JsonReply(
            {
                "got": request.body,
                "call": request.headers.get("x-tool-call-id"),
                "key": request.headers.get("x-key"),
            }
        )

    with ScriptedUpstream(handler) as upstream:
        yield upstream
        release.set()


def write_tools(tmp_path: Path, base: str) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(
        f"""
[[tool]]
name = "lookup"
description = "Look a city up."
url = "{base}/lookup"
timeout = 5
[tool.headers]
X-Key = "k1"
[tool.parameters]
type = "object"
properties = {{ city = {{ type = "string" }} }}

[[tool]]
name = "missing"
url = "{base}/fail"

[[tool]]
name = "slow"
url = "{base}/slow"
timeout = 0.2
"""
    )
    return path


async def test_http_tools_from_toml_post_from_rust(
    endpoint: ScriptedUpstream, tmp_path: Path
) -> None:
    tools = HttpTools.from_file(write_tools(tmp_path, endpoint.endpoint))
    schemas = {s.name: s for s in await tools.tools(CTX)}
    assert schemas["lookup"].description == "Look a city up."
    assert schemas["lookup"].parameters["properties"] == {"city": {"type": "string"}}
    result = await tools.execute("lookup", "step_9", {"city": "Oslo"}, CTX)
    assert result == {"got": {"city": "Oslo"}, "call": "step_9", "key": "k1"}
    with pytest.raises(ToolExecutionError, match="HTTP 404"):
        await tools.execute("missing", "s", {}, CTX)
    with pytest.raises(ToolTimeout):
        await tools.execute("slow", "s", {}, CTX)


async def test_http_tools_go_through_the_given_http_client(
    endpoint: ScriptedUpstream, tmp_path: Path
) -> None:
    """The client's headers reach the tool, its pool is reused, and its timeout
    applies on top of the tool's own."""
    client = HttpClient(headers={"X-Key": "from-client"}, body_timeout=0.2)
    path = tmp_path / "tools.json"
    tools_json = [
        {"name": "lookup", "url": f"{endpoint.endpoint}/x"},
        {"name": "slow", "url": f"{endpoint.endpoint}/slow", "timeout": 30},
    ]
    path.write_text(json.dumps(tools_json))
    tools = HttpTools.from_file(path, client=client)
    for n in range(3):
        result = await tools.execute("lookup", f"s{n}", {"n": n}, CTX)
        assert result == {"got": {"n": n}, "call": f"s{n}", "key": "from-client"}
    assert endpoint.connections == 1
    # The client's 0.2 s limit on the whole request wins over the tool's 30 s.
    with pytest.raises(ToolTimeout, match="response not complete"):
        await tools.execute("slow", "s", {}, CTX)


async def test_http_tools_from_json(endpoint: ScriptedUpstream, tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": [{"name": "lookup", "url": f"{endpoint.endpoint}/x"}]}))
    tools = HttpTools.from_file(path)
    assert (await tools.execute("lookup", "s", {"a": 1}, CTX))["got"] == {"a": 1}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "no-url"}]))
    with pytest.raises(ValueError, match="needs a name and a url"):
        HttpTools.from_file(bad)


async def test_agent_tool_runs_a_sub_loop_with_its_own_instructions() -> None:
    def model(request: UpstreamRequest) -> JsonReply:
        messages = request.body["messages"]
        if messages[0]["content"] == "You are a careful researcher.":
            assert messages[1] == {"role": "user", "content": "history of Oslo"}
            return JsonReply(chat_completion("Oslo was founded in 1040."))
        if messages[-1]["role"] == "tool":
            return JsonReply(chat_completion(f"Research says: {messages[-1]['content']}"))
        call = {"id": "call_r", "name": "researcher", "arguments": '{"input": "history of Oslo"}'}
        return JsonReply(chat_completion(tool_calls=[call]))

    researcher = Agent("researcher", "You are a careful researcher.", "Researches a topic.")
    with ScriptedUpstream(model) as upstream:
        store = MemoryStore()
        responses = Responses(
            store,
            Toolbox(FunctionTools(forecast), agents=[researcher]),
            UpstreamTarget(upstream.endpoint),
        )
        response = await responses.create({"model": "m", "input": "tell me about Oslo"})
    assert response["status"] == "completed"
    assert response["output"][-1]["content"][0]["text"] == (
        'Research says: {"output":"Oslo was founded in 1040."}'
    )
    agent_tools = [
        t for t in upstream.requests[0].body["tools"] if t["function"]["name"] == "researcher"
    ]
    assert agent_tools[0]["function"]["description"] == "Researches a topic."
    steps = await store.steps(response["id"].removeprefix("resp_"))
    agent_step = next(s for s in steps if s.request_payload.get("name") == "researcher")
    inner = [s for s in steps if s.scope_parent == agent_step.id]
    assert [s.kind.value for s in inner] == ["model_call"]
    assert agent_step.response_payload == {"output": "Oslo was founded in 1040."}
