"""The Python/Rust boundary: errors, cancellation, panics, concurrency, and the
event loop staying free."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
from typing import Any

import pytest
import stepwell._core as core
from stepwell import (
    AppendSteps,
    Complete,
    LoopError,
    RequestContext,
    StepDescriptor,
    StepState,
    StoreError,
    ToolNotFound,
    UpstreamTarget,
    run_response_loop,
)
from stepwell.stores import MemoryStore
from stepwell.testing import (
    JsonReply,
    RecordingSink,
    ScriptedTransition,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
)

from .conftest import Tools

STREAM_REQUEST = {"model": "scripted", "stream": True, "messages": []}


def one_model_call(payload: Any = None) -> MemoryStore:
    request = payload or {"model": "scripted", "messages": []}
    return MemoryStore(
        ScriptedTransition(
            [
                AppendSteps([StepDescriptor.model_call(request)]),
                lambda chain: Complete(chain[-1].response_payload),
            ]
        )
    )


class Boom(RuntimeError):
    pass


async def test_store_exception_becomes_store_error_with_cause(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    class BrokenStore(MemoryStore):
        record_steps = None  # type: ignore[assignment]  # steps one by one

        async def mark_step_processing(self, step_id: str) -> None:
            raise Boom("disk on fire")

    class BrokenBatches(MemoryStore):
        async def record_steps(self, *args: Any) -> Any:
            raise Boom("disk on fire")

    for kind, persisted in ((BrokenStore, [StepState.PENDING]), (BrokenBatches, [])):
        store = kind(
            ScriptedTransition([AppendSteps([StepDescriptor.tool_call("t")]), Complete(None)])
        )
        with pytest.raises(StoreError) as raised:
            await run_response_loop(store, Tools(t=lambda a: {}), ctx, target, request_id="r")
        assert isinstance(raised.value.__cause__, Boom)
        assert "disk on fire" in str(raised.value)
        assert raised.value.payload["type"] == "store_error"
        # What was persisted before the failure is still there.
        assert [step.state for step in await store.steps("r")] == persisted


async def test_store_answer_of_the_wrong_shape_is_a_store_error(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    class WrongShape(MemoryStore):
        async def next_action_for(self, request_id: str, scope_parent: str | None) -> Any:
            return {"complete": True}

    with pytest.raises(StoreError, match="AppendSteps, Complete or Fail") as raised:
        await run_response_loop(
            WrongShape(lambda *a: Complete(None)), Tools(), ctx, target, request_id="r"
        )
    assert isinstance(raised.value.__cause__, TypeError)


async def test_tool_raising_plain_exception_fails_only_its_step(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    def broken(args: Any) -> Any:
        raise ValueError("bad tool")

    def missing(args: Any) -> Any:
        raise ToolNotFound("missing")

    store = MemoryStore(
        ScriptedTransition(
            [
                AppendSteps(
                    [
                        StepDescriptor.tool_call("broken"),
                        StepDescriptor.tool_call("missing"),
                        StepDescriptor.tool_call("fine"),
                    ]
                ),
                Complete("went on"),
            ]
        )
    )
    tools = Tools(broken=broken, missing=missing, fine=lambda a: {"ok": True})
    assert await run_response_loop(store, tools, ctx, target, request_id="r") == "went on"
    broken_step, missing_step, fine_step = await store.steps("r")
    assert broken_step.state is StepState.FAILED
    assert broken_step.error["type"] == "executor_error"
    assert "bad tool" in broken_step.error["message"]
    assert missing_step.error["message"] == "response loop executor error: tool not found: missing"
    assert fine_step.state is StepState.COMPLETED


async def test_cancel_mid_stream_closes_the_upstream_and_cancels_store_coroutines(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    upstream.handler = lambda request: StreamReply(
        text_chunks(["first"])[:2], done=False, after="hold"
    )
    blocked = asyncio.Event()
    store_cancelled = asyncio.Event()
    active = 0

    class BlockingStore(MemoryStore):
        async def complete_step(self, step_id: str, payload: Any) -> None:
            nonlocal active
            if (await self.step(step_id)).request_payload.get("name") != "quick":
                return await super().complete_step(step_id, payload)
            active += 1
            blocked.set()
            try:
                await asyncio.Event().wait()  # never set: only cancellation ends this
            except asyncio.CancelledError:
                store_cancelled.set()
                raise
            finally:
                active -= 1

    store = BlockingStore(
        ScriptedTransition(
            [
                AppendSteps(
                    [StepDescriptor.model_call(STREAM_REQUEST), StepDescriptor.tool_call("quick")]
                )
            ]
        )
    )
    sink = RecordingSink()
    task = asyncio.ensure_future(
        run_response_loop(store, Tools(quick=lambda a: {}), ctx, target, request_id="r", sink=sink)
    )
    await asyncio.wait_for(sink.wait_for("response.output_text.delta"), 5)
    await asyncio.wait_for(blocked.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(upstream.wait_disconnect, 1.0)
    await asyncio.wait_for(store_cancelled.wait(), 1.0)
    assert active == 0


async def test_two_hundred_loops_at_once_on_one_event_loop(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    def reply(request: UpstreamRequest) -> JsonReply:
        return JsonReply(chat_completion(request.body["messages"][0]["content"]))

    upstream.handler = reply

    async def one(n: int) -> Any:
        request = {"model": "m", "messages": [{"role": "user", "content": f"#{n}"}]}
        return await run_response_loop(
            one_model_call(request), Tools(), ctx, target, request_id=f"r{n}"
        )

    results = await asyncio.gather(*(one(n) for n in range(200)))
    assert [r["choices"][0]["message"]["content"] for r in results] == [f"#{n}" for n in range(200)]
    assert len({r.headers["x-request-id"] for r in upstream.requests}) == 200


async def test_event_loop_stays_free_while_the_core_waits(
    upstream: ScriptedUpstream, ctx: RequestContext, target: UpstreamTarget
) -> None:
    arrived = threading.Event()
    release = threading.Event()

    def held(request: UpstreamRequest) -> JsonReply:
        arrived.set()
        release.wait(10)
        return JsonReply(chat_completion("late"))

    async def held_async(request: UpstreamRequest) -> JsonReply:
        return await asyncio.to_thread(held, request)

    upstream.handler = held_async
    task = asyncio.ensure_future(
        run_response_loop(one_model_call(), Tools(), ctx, target, request_id="r")
    )
    # This await needs the event loop to run while the core waits on the upstream.
    assert await asyncio.to_thread(arrived.wait, 5)
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0)
        ticks += 1
    assert not task.done()
    release.set()
    result = await task
    assert ticks == 10
    assert result["choices"][0]["message"]["content"] == "late"


async def test_context_variables_reach_store_methods(
    ctx: RequestContext, target: UpstreamTarget
) -> None:
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")
    seen: list[str] = []

    def decide(chain: Any, request_id: str, scope_parent: str | None) -> Complete:
        seen.append(tenant.get("unset"))
        return Complete(None)

    tenant.set("acme")
    await run_response_loop(MemoryStore(decide), Tools(), ctx, target, request_id="r")
    assert seen == ["acme"]


async def test_a_rust_panic_becomes_a_loop_error() -> None:
    with pytest.raises(LoopError, match="panicked") as raised:
        await core._panic_probe()
    assert raised.value.payload["type"] == "internal_error"


async def test_connection_refused_fails_the_step_without_leaking_the_key(
    ctx: RequestContext,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = UpstreamTarget(f"http://127.0.0.1:{port}", api_key="sk-very-secret")
    store_result = MemoryStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.model_call({"model": "m"})]), Complete("after")]
        )
    )
    assert await run_response_loop(store_result, Tools(), ctx, target, request_id="r") == "after"
    [step] = await store_result.steps("r")
    assert step.state is StepState.FAILED
    assert step.error["type"] == "executor_error"
    assert "transport" in step.error["message"]
    assert "sk-very-secret" not in repr(step.error)
    assert "sk-very-secret" not in repr(target)
