"""Bounded fan-out of sibling steps, and sub-agent events on request."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from stepwell import (
    AppendSteps,
    ChainStep,
    Complete,
    LoopConfig,
    RequestContext,
    StepDescriptor,
    StepState,
    ToolKind,
    UpstreamTarget,
    run_response_loop,
)
from stepwell.openresponses import Agent, Responses
from stepwell.stores import MemoryStore
from stepwell.testing import (
    RecordingSink,
    ScriptedTransition,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    text_chunks,
    tool_call_chunks,
)
from stepwell.tools import FunctionTools, Toolbox

from .conftest import Tools


@pytest.mark.parametrize(("bound", "expected_most"), [(4, 4), (None, 64)])
async def test_sixty_four_siblings_under_a_bound(
    ctx: RequestContext, target: UpstreamTarget, bound: int | None, expected_most: int
) -> None:
    in_flight = 0
    most = 0

    async def tool(args: dict[str, Any]) -> dict[str, Any]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        # Give every sibling the loop lets start a chance to start.
        for _ in range(10):
            await asyncio.sleep(0)
        in_flight -= 1
        return {"n": args["n"]}

    siblings = [StepDescriptor.tool_call("t", {"n": n}) for n in range(64)]
    store = MemoryStore(ScriptedTransition([AppendSteps(siblings), Complete("done")]))
    sink = RecordingSink()
    result = await run_response_loop(
        store,
        Tools(t=tool),
        ctx,
        target,
        request_id="r",
        sink=sink,
        config=LoopConfig(max_concurrent_steps=bound),
    )
    assert result == "done"
    assert most == expected_most
    steps = await store.steps("r")
    assert len(steps) == 64
    assert all(s.state is StepState.COMPLETED for s in steps)
    # Persistence order unchanged: chained in order, each with its own result.
    assert [s.response_payload for s in steps] == [{"n": n} for n in range(64)]
    assert [s.prev_step_id for s in steps[1:]] == [s.id for s in steps[:-1]]
    assert len(sink.of_kind("response.output_item.done")) == 64


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrent_steps must be at least 1"):
        LoopConfig(max_concurrent_steps=0)


@pytest.mark.parametrize("forwarded", [False, True])
async def test_subagent_events_are_opt_in_and_tagged(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget, forwarded: bool
) -> None:
    upstream.handler = lambda request: StreamReply(text_chunks(["sub", "agent"]))

    def sub_done(chain: list[ChainStep]) -> Complete:
        return Complete({"sub": chain[-1].response_payload["choices"][0]["message"]["content"]})

    store = MemoryStore(
        ScriptedTransition(
            top=[AppendSteps([StepDescriptor.tool_call("researcher")]), Complete("done")],
            agent=[
                AppendSteps(
                    [StepDescriptor.model_call({"model": "m", "stream": True, "messages": []})]
                ),
                sub_done,
            ],
        )
    )
    sink = RecordingSink()
    await run_response_loop(
        store,
        Tools(researcher=(ToolKind.AGENT, None)),
        ctx,
        target,
        request_id="r",
        sink=sink,
        config=LoopConfig(subagent_events=forwarded),
    )
    agent_step, model_step = await store.steps("r")
    nested = [e for e in sink.events if e.depth > 0]
    top = [e for e in sink.events if e.depth == 0]
    assert all(e.scope_parent is None for e in top)
    assert [e.kind for e in top] == [
        "response.created",
        "response.output_item.done",
        "response.completed",
    ]
    if not forwarded:
        assert nested == []
        return
    assert {(e.depth, e.scope_parent) for e in nested} == {(1, agent_step.id)}
    deltas = [e for e in nested if e.kind == "response.output_text.delta"]
    assert "".join(e.delta or "" for e in deltas) == "subagent"
    assert {e.sequence for e in deltas} == {model_step.sequence}


async def test_responses_stream_keeps_only_spec_events_with_subagent_events_on() -> None:
    """`ResponsesStream` encodes the top level only: a sub-agent's deltas never
    become items of the client's stream."""

    def model(request: UpstreamRequest) -> StreamReply:
        messages = request.body["messages"]
        if messages[0]["content"] == "You research.":
            return StreamReply(text_chunks(["secret ", "notes"]))
        if messages[-1]["role"] == "tool":
            return StreamReply(text_chunks(["Done."]))
        call = {"id": "call_r", "name": "researcher", "arguments": '{"input": "x"}'}
        return StreamReply(tool_call_chunks([call]))

    def noop() -> None:
        """Does nothing."""

    with ScriptedUpstream(model) as upstream:
        responses = Responses(
            MemoryStore(),
            Toolbox(FunctionTools(noop), agents=[Agent("researcher", "You research.")]),
            UpstreamTarget(upstream.endpoint),
            config=LoopConfig(subagent_events=True),
        )
        text = "".join([frames async for frames in responses.stream({"model": "m", "input": "q"})])
    events = [
        json.loads(frame.split("\ndata: ", 1)[1])
        for frame in text.split("\n\n")
        if frame.startswith("event: ")
    ]
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["Done."]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
