"""Sinks that stall or fail never hold a response: the loop returns once the
response is terminal and persisted, gives queued events `sink_drain_timeout`
seconds, counts what the sink never received, and detaches a sink that raises."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from stepwell import (
    AppendSteps,
    Complete,
    LoopConfig,
    LoopEvent,
    RequestContext,
    RunStats,
    StepDescriptor,
    UpstreamTarget,
    run_response_loop,
)
from stepwell.stores import MemoryStore
from stepwell.testing import RecordingSink, ScriptedTransition, ScriptedUpstream, StreamReply
from stepwell.testing.upstream import text_chunks

from .conftest import Tools

PIECES = [f"piece{i} " for i in range(300)]
EXPECTED = "".join(PIECES)
REQUEST = {"model": "scripted", "stream": True, "messages": []}
# Short, so the suite stays quick; the loop must return once it runs out.
DRAIN = 0.2


def store() -> MemoryStore:
    return MemoryStore(
        ScriptedTransition(
            [
                AppendSteps([StepDescriptor.model_call(REQUEST)]),
                lambda chain: Complete(chain[-1].response_payload),
            ]
        )
    )


async def run(
    sink: Any, target: UpstreamTarget, ctx: RequestContext, **config: Any
) -> tuple[Any, RunStats]:
    stats = RunStats()
    config.setdefault("sink_drain_timeout", DRAIN)
    # A hang guard only: the loop must come back by itself well before this.
    result = await asyncio.wait_for(
        run_response_loop(
            store(),
            Tools(),
            ctx,
            target,
            request_id="r",
            sink=sink,
            config=LoopConfig(**config),
            stats=stats,
        ),
        timeout=60,
    )
    return result, stats


def text(result: Any) -> str:
    content: str = result["choices"][0]["message"]["content"]
    return content


async def event_count(target: UpstreamTarget, ctx: RequestContext) -> int:
    """How many events this response sends to a sink that takes everything."""
    sink = RecordingSink()
    result, stats = await run(sink, target, ctx, bridge_overflow="block")
    assert text(result) == EXPECTED
    assert stats.dropped_events == 0
    return len(sink.events)


def no_other_task_left() -> bool:
    current = asyncio.current_task()
    return all(task is current or task.done() for task in asyncio.all_tasks())


@pytest.fixture(autouse=True)
def long_answer(upstream: ScriptedUpstream) -> None:
    upstream.handler = lambda request: StreamReply(text_chunks(PIECES))


@pytest.mark.parametrize("batched", [True, False])
async def test_a_sink_that_never_returns_from_its_first_call(
    target: UpstreamTarget, ctx: RequestContext, batched: bool
) -> None:
    total = await event_count(target, ctx)
    cancelled = asyncio.Event()

    async def never(*_: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    class Stalled:
        emit = staticmethod(never)

    class StalledBatches(Stalled):
        emit_many = staticmethod(never)

    result, stats = await run(StalledBatches() if batched else Stalled(), target, ctx)
    assert text(result) == EXPECTED
    # Not one call returned: every event counts as never received.
    assert stats.dropped_events == total
    assert not stats.sink_detached
    # The pending sink call was cancelled, and nothing of the run is left running.
    await asyncio.wait_for(cancelled.wait(), timeout=10)
    assert no_other_task_left()


async def test_a_sink_that_stalls_after_n_events(
    target: UpstreamTarget, ctx: RequestContext
) -> None:
    total = await event_count(target, ctx)
    taken: list[LoopEvent] = []
    cancelled = asyncio.Event()

    class StallsAfterTen:
        async def emit(self, event: LoopEvent) -> None:
            if len(taken) == 10:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.set()
                    raise
            taken.append(event)

    result, stats = await run(StallsAfterTen(), target, ctx, bridge_capacity=16)
    assert text(result) == EXPECTED
    assert [e.kind for e in taken][:2] == ["response.created", "response.output_text.delta"]
    assert len(taken) == 10
    assert stats.dropped_events == total - 10
    await asyncio.wait_for(cancelled.wait(), timeout=10)
    assert no_other_task_left()


@pytest.mark.parametrize("batched", [True, False])
async def test_a_sink_that_raises_is_reported_once_and_detached(
    target: UpstreamTarget,
    ctx: RequestContext,
    batched: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    total = await event_count(target, ctx)
    calls: list[int] = []

    class Raising:
        async def emit(self, event: LoopEvent) -> None:
            calls.append(1)
            raise RuntimeError("client gone")

    class RaisingBatches(Raising):
        async def emit_many(self, events: list[LoopEvent]) -> None:
            calls.append(len(events))
            raise RuntimeError("client gone")

    with caplog.at_level(logging.WARNING, logger="stepwell"):
        result, stats = await run(
            RaisingBatches() if batched else Raising(), target, ctx, bridge_overflow="block"
        )
    assert text(result) == EXPECTED
    # Called once, never again after it raised; nothing it was given arrived.
    assert len(calls) == 1
    assert stats.sink_detached
    assert stats.sink_error is not None and "client gone" in stats.sink_error
    assert stats.dropped_events == total
    detached = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(detached) == 1
    assert no_other_task_left()


async def test_without_a_drain_timeout_the_loop_waits_for_the_sink(
    target: UpstreamTarget, ctx: RequestContext
) -> None:
    release = asyncio.Event()
    delivered: list[str] = []

    class Slow:
        async def emit_many(self, events: list[LoopEvent]) -> None:
            await release.wait()
            delivered.extend(e.kind for e in events)

    task = asyncio.ensure_future(run(Slow(), target, ctx, sink_drain_timeout=None))
    # The response completes and persists while the sink is held...
    done, _ = await asyncio.wait({task}, timeout=DRAIN * 5)
    assert not done
    release.set()
    result, stats = await task
    # ...and once released, the sink gets every event, the terminal one last.
    assert text(result) == EXPECTED
    assert delivered[-1] == "response.completed"
    assert stats.dropped_events == 0


async def test_a_sink_slower_than_the_stream_leaves_the_event_loop_to_other_tasks(
    target: UpstreamTarget, ctx: RequestContext
) -> None:
    # The core has the next batch ready before each call returns; the loop
    # thread still goes back to its other tasks between calls, rather than
    # running the sink's calls back to back for the whole stream.
    turns = 0
    seen: list[int] = []
    running = True

    async def count_turns() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    class Slow:
        def emit_many(self, events: list[LoopEvent]) -> None:
            seen.append(turns)
            time.sleep(0.002)  # the sink's own work: slower than the upstream

    counter = asyncio.ensure_future(count_turns())
    result, stats = await run(Slow(), target, ctx, bridge_capacity=4, bridge_overflow="block")
    running = False
    await counter
    assert text(result) == EXPECTED
    assert stats.dropped_events == 0
    assert len(seen) > 20
    assert len(set(seen)) == len(seen)  # every call on a turn of its own
