"""Streaming model calls: live deltas through the bounded bridge, reassembly,
tool-call ids, and what never reaches the user's stream."""

from __future__ import annotations

import json
from typing import Any

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
from stepwell.stores import MemoryStore
from stepwell.testing import (
    RecordingSink,
    ScriptedTransition,
    ScriptedUpstream,
    StreamReply,
    text_chunks,
    tool_call_chunks,
)

from .conftest import Tools

STREAM_REQUEST = {"model": "scripted", "stream": True, "messages": []}


def last_payload(chain: list[ChainStep]) -> Complete:
    return Complete(chain[-1].response_payload)


async def test_text_deltas_and_terminal_events_carry_the_right_sequences(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    pieces = ["Hel", "lo, ", "wor", "ld"]
    upstream.handler = lambda request: StreamReply(text_chunks(pieces))
    store = MemoryStore(
        ScriptedTransition([AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]), last_payload])
    )
    sink = RecordingSink()
    result = await run_response_loop(store, Tools(), ctx, target, request_id="r", sink=sink)

    [step] = await store.steps("r")
    deltas = sink.of_kind("response.output_text.delta")
    assert [d.data for d in deltas] == [{"delta": p} for p in pieces]
    assert {d.sequence for d in deltas} == {step.sequence}
    assert sink.kinds()[0] == "response.created"
    assert sink.kinds()[-1] == "response.completed"
    assert sink.events[-1].sequence == step.sequence + 1
    # The step's payload is one reassembled chat.completion.
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world"}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] == 4
    assert step.response_payload == result
    assert upstream.requests[0].headers["accept"] == "text/event-stream"


async def test_tool_call_argument_deltas_keep_their_call_id(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    calls = [
        {"id": "call_a", "name": "lookup", "arguments": json.dumps({"city": "Paris"})},
        {"id": "call_b", "name": "lookup", "arguments": json.dumps({"city": "Lima"})},
    ]
    upstream.handler = lambda request: StreamReply(tool_call_chunks(calls, pieces=4))
    store = MemoryStore(
        ScriptedTransition([AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]), last_payload])
    )
    sink = RecordingSink()
    result = await run_response_loop(store, Tools(), ctx, target, request_id="r", sink=sink)

    deltas = sink.of_kind("response.function_call_arguments.delta")
    by_id: dict[str, str] = {}
    for delta in deltas:
        by_id[delta.data["call_id"]] = by_id.get(delta.data["call_id"], "") + delta.data["delta"]
    # Only the first chunk of each call named it; every delta still carries its id.
    assert by_id == {"call_a": calls[0]["arguments"], "call_b": calls[1]["arguments"]}
    assert len(deltas) > 2
    merged = result["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in merged] == [
        (c["id"], c["name"], c["arguments"]) for c in calls
    ]


async def test_tool_call_emits_output_item_done(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    store = MemoryStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.tool_call("echo", {"x": 1})]), Complete(None)]
        )
    )
    sink = RecordingSink()
    await run_response_loop(
        store, Tools(echo=lambda a: {"echo": a}), ctx, target, request_id="r", sink=sink
    )
    [step] = await store.steps("r")
    [done] = sink.of_kind("response.output_item.done")
    assert done.sequence == step.sequence
    assert done.data == {
        "type": "function_call_output",
        "call_id": f"call_step_{step.sequence}",
        "name": "echo",
        "arguments": '{"x":1}',
        "output": json.dumps({"echo": {"x": 1}}, separators=(",", ":")),
    }


async def test_non_streaming_call_emits_no_deltas(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    store = MemoryStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.model_call({"model": "m"})]), Complete(None)]
        )
    )
    sink = RecordingSink()
    await run_response_loop(store, Tools(), ctx, target, request_id="r", sink=sink)
    assert sink.kinds() == ["response.created", "response.completed"]


async def test_sub_agent_deltas_never_reach_the_top_level_sink(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    upstream.handler = lambda request: StreamReply(text_chunks(["secret ", "thoughts"]))
    transition = ScriptedTransition(
        top=[AppendSteps([StepDescriptor.tool_call("helper")]), last_payload],
        agent=[AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]), last_payload],
    )
    store = MemoryStore(transition)
    sink = RecordingSink()
    result = await run_response_loop(
        store, Tools(helper=(ToolKind.AGENT, None)), ctx, target, request_id="r", sink=sink
    )
    assert result["choices"][0]["message"]["content"] == "secret thoughts"
    assert sink.of_kind("response.output_text.delta") == []
    # The agent step itself is top-level, so its completion is visible.
    assert sink.kinds() == [
        "response.created",
        "response.output_item.done",
        "response.completed",
    ]


async def test_embedded_stream_error_fails_the_step_with_its_code(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    error = {"error": {"message": "rate limited", "code": 429}}
    upstream.handler = lambda request: StreamReply([text_chunks(["a"])[0], error])
    store = MemoryStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]), Complete(None)]
        )
    )
    await run_response_loop(store, Tools(), ctx, target, request_id="r")
    [step] = await store.steps("r")
    assert step.state is StepState.FAILED
    assert step.error["status"] == 429
    assert "rate limited" in step.error["message"]


async def test_malformed_chunks_are_skipped(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    chunks: list[Any] = text_chunks(["a", "b"])
    chunks.insert(2, "{not json")
    upstream.handler = lambda request: StreamReply(chunks)
    store = MemoryStore(
        ScriptedTransition([AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]), last_payload])
    )
    sink = RecordingSink()
    result = await run_response_loop(store, Tools(), ctx, target, request_id="r", sink=sink)
    assert sink.text() == "ab"
    assert result["choices"][0]["message"]["content"] == "ab"


async def test_sink_batches_arrive_through_emit_many_and_single_emit_works_too(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    pieces = [f"t{i} " for i in range(300)]
    upstream.handler = lambda request: StreamReply(text_chunks(pieces))
    for batched in (True, False):
        store = MemoryStore(
            ScriptedTransition(
                [AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]), Complete(None)]
            )
        )
        sink = RecordingSink(batched=batched)
        config = LoopConfig(bridge_capacity=4096)
        await run_response_loop(
            store, Tools(), ctx, target, request_id="r", sink=sink, config=config
        )
        assert sink.text() == "".join(pieces)
        assert (sum(sink.batches) >= 300) is batched
