"""The seed's own cases: each numbered semantic of DESIGN.md against a real
upstream on loopback and a real in-memory store."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from stepwell import (
    AppendSteps,
    ChainStep,
    Complete,
    EmptyAction,
    ExecutorError,
    Fail,
    LoopConfig,
    LoopFailed,
    MaxIterationsExceeded,
    RequestContext,
    StepDescriptor,
    StepKind,
    StepState,
    StoreError,
    ToolKind,
    UpstreamTarget,
    run_response_loop,
)
from stepwell.stores import MemoryStore
from stepwell.testing import (
    JsonReply,
    RecordingSink,
    ScriptedTransition,
    ScriptedUpstream,
)

from .conftest import Tools

MODEL_REQUEST = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}


async def test_complete_immediately(ctx: RequestContext, target: UpstreamTarget) -> None:
    store = MemoryStore(ScriptedTransition([Complete({"answer": 42})]))
    sink = RecordingSink()
    result = await run_response_loop(store, Tools(), ctx, target, request_id="r1", sink=sink)
    assert result == {"answer": 42}
    assert sink.kinds() == ["response.created", "response.completed"]
    created, completed = sink.events
    assert created.sequence == 0
    assert created.data == {"id": "resp_r1", "object": "response", "status": "in_progress"}
    # No steps were persisted: the terminal sequence is 0 + 1.
    assert completed.sequence == 1
    assert completed.data == {"answer": 42}
    assert await store.steps("r1") == []


async def test_fail_immediately(ctx: RequestContext, target: UpstreamTarget) -> None:
    store = MemoryStore(ScriptedTransition([Fail({"type": "nope", "message": "refused"})]))
    sink = RecordingSink()
    with pytest.raises(LoopFailed) as raised:
        await run_response_loop(store, Tools(), ctx, target, request_id="r1", sink=sink)
    assert raised.value.payload == {"type": "nope", "message": "refused"}
    assert sink.kinds() == ["response.created", "response.failed"]
    assert sink.events[1].data == {"type": "nope", "message": "refused"}


async def test_one_model_call_then_complete(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    def finish(chain: list[ChainStep]) -> Complete:
        return Complete(chain[-1].response_payload)

    store = MemoryStore(
        ScriptedTransition([AppendSteps([StepDescriptor.model_call(MODEL_REQUEST)]), finish])
    )
    sink = RecordingSink()
    result = await run_response_loop(store, Tools(), ctx, target, request_id="r1", sink=sink)

    assert result["choices"][0]["message"]["content"] == "Hello from the scripted upstream."
    [step] = await store.steps("r1")
    assert step.state is StepState.COMPLETED
    assert step.response_payload == result
    [request] = upstream.requests
    assert request.path == "/v1/chat/completions"
    assert request.body == MODEL_REQUEST
    assert request.headers["authorization"] == "Bearer sk-test-key"
    assert request.headers["x-request-id"] == step.sub_request_id
    # A non-streaming call emits no deltas; the terminal event follows the step.
    assert sink.kinds() == ["response.created", "response.completed"]
    assert sink.events[-1].sequence == step.sequence + 1


async def test_no_authorization_header_without_a_key(
    upstream: ScriptedUpstream, ctx: RequestContext
) -> None:
    for key in (None, ""):
        store = MemoryStore(
            ScriptedTransition(
                [AppendSteps([StepDescriptor.model_call(MODEL_REQUEST)]), Complete(None)]
            )
        )
        target = UpstreamTarget(upstream.endpoint, api_key=key)
        await run_response_loop(store, Tools(), ctx, target, request_id="r")
    assert [r.headers.get("authorization") for r in upstream.requests] == [None, None]


async def test_fan_out_siblings_are_chained_and_run_concurrently(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    started: list[float] = []
    finished: list[float] = []
    all_started = asyncio.Event()

    async def slow(args: dict[str, Any]) -> dict[str, Any]:
        started.append(time.monotonic())
        if len(started) == 3:
            all_started.set()
        # Each call waits for the others to start: sequential execution would
        # never get past the first one.
        await asyncio.wait_for(all_started.wait(), timeout=5)
        finished.append(time.monotonic())
        return {"n": args["n"]}

    siblings = [StepDescriptor.tool_call("slow", {"n": n}) for n in range(3)]
    store = MemoryStore(ScriptedTransition([AppendSteps(siblings), Complete("done")]))
    tools = Tools(slow=slow)
    assert await run_response_loop(store, tools, ctx, target, request_id="r") == "done"

    assert max(started) < min(finished)
    steps = await store.steps("r")
    assert [s.sequence for s in steps] == [1, 2, 3]
    assert [s.prev_step_id for s in steps] == [None, steps[0].id, steps[1].id]
    assert [s.response_payload for s in steps] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(s.state is StepState.COMPLETED for s in steps)


async def test_failing_step_is_persisted_and_the_loop_goes_on(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    upstream.handler = lambda request: JsonReply({"error": {"message": "overloaded"}}, 503)
    seen: list[list[ChainStep]] = []

    def after(chain: list[ChainStep]) -> Complete:
        seen.append(chain)
        return Complete("recovered")

    store = MemoryStore(
        ScriptedTransition([AppendSteps([StepDescriptor.model_call(MODEL_REQUEST)]), after])
    )
    assert await run_response_loop(store, Tools(), ctx, target, request_id="r") == "recovered"
    [step] = seen[0]
    assert step.state is StepState.FAILED
    assert step.error["type"] == "executor_error"
    assert step.error["status"] == 503
    assert "overloaded" in step.error["message"]
    assert "sk-test-key" not in str(step.error)


async def test_iteration_cap(ctx: RequestContext, target: UpstreamTarget) -> None:
    def again(chain: list[ChainStep]) -> AppendSteps:
        return AppendSteps([StepDescriptor.tool_call("noop")])

    store = MemoryStore(ScriptedTransition([again] * 10))
    sink = RecordingSink()
    config = LoopConfig(max_response_iterations=3)
    with pytest.raises(MaxIterationsExceeded) as raised:
        await run_response_loop(
            store, Tools(noop=lambda a: {}), ctx, target, request_id="r", sink=sink, config=config
        )
    assert raised.value.payload["type"] == "max_iterations_exceeded"
    assert len(await store.steps("r")) == 3
    failed = sink.of_kind("response.failed")
    assert [e.data for e in failed] == [{"type": "max_iterations_exceeded"}]
    # max(sequence at start) 0 + iterations 3 + 1
    assert failed[0].sequence == 4


async def test_agent_tool_recurses_under_its_step(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    def sub_done(chain: list[ChainStep]) -> Complete:
        return Complete({"sub": chain[-1].response_payload["choices"][0]["message"]["content"]})

    transition = ScriptedTransition(
        top=[
            AppendSteps([StepDescriptor.tool_call("researcher", {"q": "x"})]),
            lambda chain: Complete(chain[-1].response_payload),
        ],
        agent=[AppendSteps([StepDescriptor.model_call(MODEL_REQUEST)]), sub_done],
    )
    store = MemoryStore(transition)
    tools = Tools(researcher=(ToolKind.AGENT, None))
    result = await run_response_loop(store, tools, ctx, target, request_id="r")

    assert result == {"sub": "Hello from the scripted upstream."}
    agent_step, model_step = await store.steps("r")
    assert agent_step.kind is StepKind.TOOL_CALL
    assert agent_step.scope_parent is None
    assert agent_step.response_payload == result
    assert model_step.scope_parent == agent_step.id
    assert model_step.kind is StepKind.MODEL_CALL
    assert tools.calls == []  # agent tools never reach execute
    # Kinds resolved once per loop level: top level + one sub-level.
    assert tools.tools_calls == 2
    assert len(upstream.requests) == 1


async def test_agent_recursion_beyond_max_depth_fails_the_step(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    transition = ScriptedTransition(
        top=[AppendSteps([StepDescriptor.tool_call("researcher")]), Complete("after")],
    )
    store = MemoryStore(transition)
    config = LoopConfig(max_response_step_depth=0)
    tools = Tools(researcher=(ToolKind.AGENT, None))
    assert await run_response_loop(store, tools, ctx, target, request_id="r", config=config) == (
        "after"
    )
    [step] = await store.steps("r")
    assert step.state is StepState.FAILED
    assert step.error["type"] == "max_depth_exceeded"


async def test_http_tools_get_name_step_id_and_args(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    store = MemoryStore(
        ScriptedTransition(
            [
                AppendSteps(
                    [
                        StepDescriptor.tool_call("add", {"a": 1, "b": 2}),
                        StepDescriptor.tool_call("unlisted"),
                    ]
                ),
                Complete(None),
            ]
        )
    )
    tools = Tools(add=lambda a: {"sum": a["a"] + a["b"]})
    tools.fns["unlisted"] = lambda a: {"args": a}  # served, but not listed by tools()
    await run_response_loop(store, tools, ctx, target, request_id="r")
    add_step, unlisted_step = await store.steps("r")
    assert [(n, i, a) for n, i, a, _ in tools.calls] == [
        ("add", add_step.id, {"a": 1, "b": 2}),
        ("unlisted", unlisted_step.id, {}),  # unknown names dispatch as http; args default {}
    ]
    assert tools.calls[0][3] is ctx
    assert add_step.response_payload == {"sum": 3}


async def test_empty_append_steps_fails(ctx: RequestContext, target: UpstreamTarget) -> None:
    store = MemoryStore(ScriptedTransition([AppendSteps([])]))
    with pytest.raises(EmptyAction) as raised:
        await run_response_loop(store, Tools(), ctx, target, request_id="r")
    assert raised.value.payload["type"] == "empty_action"


async def test_resume_chains_onto_the_existing_tail(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    store = MemoryStore(
        ScriptedTransition([AppendSteps([StepDescriptor.tool_call("noop")]), Complete("ok")])
    )
    # A previous worker left one completed step behind.
    earlier = await store.record_step("r", None, None, StepDescriptor.tool_call("noop"))
    await store.mark_step_processing(earlier.id)
    await store.complete_step(earlier.id, {})
    sink = RecordingSink()
    await run_response_loop(store, Tools(noop=lambda a: {}), ctx, target, request_id="r", sink=sink)
    first, second = await store.steps("r")
    assert first.id == earlier.id
    assert second.prev_step_id == earlier.id
    assert second.sequence == 2
    assert sink.events[-1].sequence == 3


async def test_model_call_without_sub_request_id_is_an_executor_error(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    class NoSubRequestId(MemoryStore):
        async def record_step(self, *args: Any) -> Any:
            recorded = await super().record_step(*args)
            return type(recorded)(recorded.id, recorded.sequence, None)

        async def record_steps(self, *args: Any) -> Any:
            return [type(r)(r.id, r.sequence, None) for r in await super().record_steps(*args)]

    class OneByOne(NoSubRequestId):
        record_steps = None  # type: ignore[assignment]

    for kind in (NoSubRequestId, OneByOne):
        store = kind(ScriptedTransition([AppendSteps([StepDescriptor.model_call(MODEL_REQUEST)])]))
        with pytest.raises(ExecutorError, match="sub_request_id"):
            await run_response_loop(store, Tools(), ctx, target, request_id="r")


async def test_request_id_header_name_is_configurable(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    from stepwell import HttpClient

    store = MemoryStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.model_call(MODEL_REQUEST)]), Complete(None)]
        )
    )
    client = HttpClient(request_id_header="X-Fusillade-Request-Id", headers={"X-Extra": "1"})
    await run_response_loop(store, Tools(), ctx, target, request_id="r", client=client)
    [request] = upstream.requests
    [step] = await store.steps("r")
    assert request.headers["x-fusillade-request-id"] == step.sub_request_id
    assert "x-request-id" not in request.headers
    assert request.headers["x-extra"] == "1"


async def test_payloads_cross_as_json_whatever_python_types_carry_them(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    class Named(dict[str, Any]):
        pass

    deep: Any = "bottom"
    for _ in range(300):  # deeper than the plain walk goes
        deep = [deep]
    payload = {
        "tuple": (1, 2.5, True, None),
        "flags": [True, False, 0, 1],
        "big": 2**63 + 1,
        "subclass": Named(a=1),
        "text": "é ✓",
        "deep": deep,
    }
    store = MemoryStore(ScriptedTransition([Complete(payload)]))
    result = await run_response_loop(store, Tools(), ctx, target, request_id="r1")
    assert result == {**payload, "tuple": [1, 2.5, True, None], "subclass": {"a": 1}}
    assert [type(flag) for flag in result["flags"]] == [bool, bool, int, int]
    for bad in ({1: "not a string key"}, {"x": object()}, {"x": "\ud800"}):
        store = MemoryStore(ScriptedTransition([Complete(bad)]))
        with pytest.raises(StoreError, match=r"Complete\.payload is not JSON-serialisable"):
            await run_response_loop(store, Tools(), ctx, target, request_id="r2")


async def test_a_payload_given_as_json_text_goes_out_as_that_json(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    text = '{"model": "scripted", "messages": [{"role": "user", "content": "caf\\u00e9"}]}'
    encoded = StepDescriptor.with_encoded_request(text, kind=StepKind.MODEL_CALL)
    store = MemoryStore(ScriptedTransition([AppendSteps([encoded]), Complete(None)]))
    await run_response_loop(store, Tools(), ctx, target, request_id="r")
    [request] = upstream.requests
    assert request.body == {"model": "scripted", "messages": [{"role": "user", "content": "café"}]}
    # The loop read the text, not a decoded copy of it.
    assert "request_payload" not in encoded.__dict__
    [step] = await store.steps("r")
    assert step.request_payload == request.body

    for bad in ("{", '{"model": NaN}', ""):
        broken = StepDescriptor.with_encoded_request(bad, kind=StepKind.MODEL_CALL)
        store = MemoryStore(ScriptedTransition([AppendSteps([broken])]))
        with pytest.raises(StoreError, match=r"StepDescriptor\.request_payload is not JSON"):
            await run_response_loop(store, Tools(), ctx, target, request_id="r2")
        assert await store.steps("r2") == []
