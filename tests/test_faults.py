"""Faults on the model-call path: each fails its step with a typed payload
(``type``, ``code``, ``message``, ``status`` where known), never hangs, never
crashes, and never shows the API key."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from stepwell import (
    AppendSteps,
    Complete,
    HttpClient,
    LoopConfig,
    RequestContext,
    StepDescriptor,
    StepState,
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
    text_chunks,
)

from .conftest import Tools

KEY = "sk-never-shown"
DEFAULT_CONFIG = LoopConfig()
STREAM_REQUEST = {"model": "m", "stream": True, "messages": []}


async def run_one(
    target: UpstreamTarget,
    client: HttpClient | None = None,
    request: dict[str, Any] | None = None,
    sink: RecordingSink | None = None,
    config: LoopConfig = DEFAULT_CONFIG,
) -> MemoryStore:
    store = MemoryStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.model_call(request or STREAM_REQUEST)]), Complete("end")]
        )
    )
    result = await run_response_loop(
        store,
        Tools(),
        RequestContext(),
        target,
        request_id="r",
        client=client,
        sink=sink,
        config=config,
    )
    assert result == "end"
    return store


async def failed_step(store: MemoryStore) -> dict[str, Any]:
    [step] = await store.steps("r")
    assert step.state is StepState.FAILED
    assert step.error["type"] == "executor_error"
    assert KEY not in json.dumps(step.error)
    return step.error  # type: ignore[no-any-return]


@pytest.fixture
def keyed_target(upstream: ScriptedUpstream) -> UpstreamTarget:
    return UpstreamTarget(upstream.endpoint, api_key=KEY)


async def test_non_sse_error_body_is_kept_verbatim(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    upstream.handler = lambda r: JsonReply({"error": {"message": "bad model", "code": 400}}, 404)
    error = await failed_step(await run_one(keyed_target))
    assert error["code"] == "upstream_error"
    assert error["status"] == 404
    assert '{"error": {"message": "bad model", "code": 400}}' in error["message"]


async def test_first_chunk_timeout(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    never = asyncio.Event()

    async def silent(request: UpstreamRequest) -> JsonReply:
        await never.wait()
        raise AssertionError("unreachable")

    upstream.handler = silent
    client = HttpClient(first_chunk_timeout=0.2)
    error = await failed_step(await run_one(keyed_target, client))
    assert error["code"] == "first_chunk_timeout"


async def test_headers_without_a_first_event_hit_the_first_chunk_timeout(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    upstream.handler = lambda r: StreamReply([], done=False, after="hold")
    client = HttpClient(first_chunk_timeout=0.2, chunk_timeout=30)
    error = await failed_step(await run_one(keyed_target, client))
    assert error["code"] == "first_chunk_timeout"


async def test_idle_timeout_between_chunks(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    upstream.handler = lambda r: StreamReply(text_chunks(["a"])[:2], done=False, after="hold")
    sink = RecordingSink()
    client = HttpClient(chunk_timeout=0.2)
    error = await failed_step(await run_one(keyed_target, client, sink=sink))
    assert error["code"] == "chunk_timeout"
    # What arrived before the silence was still streamed live.
    assert sink.text() == "a"


async def test_whole_body_timeout(upstream: ScriptedUpstream, keyed_target: UpstreamTarget) -> None:
    upstream.handler = lambda r: StreamReply(text_chunks(["x"] * 50), interval=0.05)
    client = HttpClient(chunk_timeout=5, body_timeout=0.4)
    error = await failed_step(await run_one(keyed_target, client))
    assert error["code"] == "body_timeout"


@pytest.fixture
def unread_socket() -> Iterator[int]:
    """A port that accepts connections and never reads a byte from them."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.listen(8)
        yield server.getsockname()[1]


async def test_upload_stall_timeout(unread_socket: int) -> None:
    target = UpstreamTarget(f"http://127.0.0.1:{unread_socket}", api_key=KEY)
    # Far more than loopback socket buffers hold, so the upload must stall.
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * (64 * 1024 * 1024)}]}
    client = HttpClient(upload_stall_timeout=0.3, first_chunk_timeout=60, body_timeout=60)
    error = await failed_step(await run_one(target, client, request=big))
    assert error["code"] == "upload_stall_timeout"


async def test_large_bodies_upload_in_pieces_intact(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    upstream.handler = lambda r: JsonReply({"echo": len(r.body["messages"][0]["content"])})
    big = {"model": "m", "messages": [{"role": "user", "content": "y" * (3 * 1024 * 1024 + 7)}]}
    store = await run_one(keyed_target, request=big)
    [step] = await store.steps("r")
    assert step.response_payload == {"echo": 3 * 1024 * 1024 + 7}


@pytest.mark.parametrize("after", ["close", "reset"])
async def test_connection_lost_mid_stream(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget, after: str
) -> None:
    upstream.handler = lambda r: StreamReply(text_chunks(["a", "b"])[:2], done=False, after=after)
    error = await failed_step(await run_one(keyed_target))
    assert error["code"] == "transport_error"


async def test_invalid_utf8_fails_the_step(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    upstream.handler = lambda r: StreamReply([text_chunks(["a"])[0], b'{"bad": "\xff\xfe"}'])
    error = await failed_step(await run_one(keyed_target))
    assert error["code"] == "invalid_stream"
    assert "UTF-8" in error["message"]


async def test_oversized_event_fails_instead_of_growing(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    huge = text_chunks(["z" * 10_000])
    upstream.handler = lambda r: StreamReply(huge)
    error = await failed_step(await run_one(keyed_target, HttpClient(max_event_bytes=4096)))
    assert error["code"] == "invalid_stream"
    assert "larger than 4096" in error["message"]


async def test_stream_truncated_before_done_and_finish_reason(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    chunks = text_chunks(["a", "b"])
    upstream.handler = lambda r: StreamReply(chunks[:2], done=False)
    error = await failed_step(await run_one(keyed_target))
    assert error["code"] == "stream_truncated"


async def test_finished_stream_without_done_still_completes(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    upstream.handler = lambda r: StreamReply(text_chunks(["a", "b"]), done=False)
    store = await run_one(keyed_target)
    [step] = await store.steps("r")
    assert step.state is StepState.COMPLETED
    assert step.response_payload["choices"][0]["message"]["content"] == "ab"


async def test_streamable_paths_stream_without_the_flag(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    upstream.handler = lambda r: StreamReply(text_chunks(["p", "q"]))
    sink = RecordingSink()
    client = HttpClient(streamable_paths=["/v1/chat/completions"])
    store = await run_one(keyed_target, client, request={"model": "m"}, sink=sink)
    assert sink.text() == "pq"
    assert upstream.requests[0].headers["accept"] == "text/event-stream"
    [step] = await store.steps("r")
    assert step.response_payload["choices"][0]["message"]["content"] == "pq"


async def test_block_overflow_delivers_every_delta_to_a_slow_sink(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    pieces = [f"{i} " for i in range(200)]
    upstream.handler = lambda r: StreamReply(text_chunks(pieces))

    class SlowSink(RecordingSink):
        async def emit(self, event: Any) -> None:
            await asyncio.sleep(0)  # a slow client: one event per loop turn
            await super().emit(event)

    sink = SlowSink(batched=False)
    config = LoopConfig(bridge_capacity=1, bridge_overflow="block")
    await run_one(keyed_target, sink=sink, config=config)
    assert sink.text() == "".join(pieces)
    assert sink.kinds()[-1] == "response.completed"


async def test_drop_newest_never_holds_the_read_for_a_stalled_sink(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    pieces = [f"{i} " for i in range(200)]
    upstream.handler = lambda r: StreamReply(text_chunks(pieces))
    step_done = asyncio.Event()

    class GatedStore(MemoryStore):
        async def complete_step(self, step_id: str, payload: Any) -> None:
            await super().complete_step(step_id, payload)
            step_done.set()

    class StalledSink(RecordingSink):
        async def emit(self, event: Any) -> None:
            # Takes nothing more until the model's answer was read and stored.
            await step_done.wait()
            await super().emit(event)

    store = GatedStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]), Complete("end")]
        )
    )
    sink = StalledSink(batched=False)
    config = LoopConfig(bridge_capacity=8, bridge_overflow="drop_newest")
    result = await run_response_loop(
        store, Tools(), RequestContext(), keyed_target, request_id="r", sink=sink, config=config
    )
    assert result == "end"
    [step] = await store.steps("r")
    assert step.response_payload["choices"][0]["message"]["content"] == "".join(pieces)
    deltas = sink.of_kind("response.output_text.delta")
    assert 0 < len(deltas) < len(pieces)
    # Control events are never dropped.
    assert sink.kinds()[0] == "response.created"
    assert sink.kinds()[-1] == "response.completed"


async def test_reasoning_deltas_are_streamed(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    chunks: list[Any] = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": "think "}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "hard"}}]},
        *text_chunks(["done"]),
    ]
    upstream.handler = lambda r: StreamReply(chunks)
    sink = RecordingSink()
    store = await run_one(keyed_target, sink=sink)
    reasoning = sink.of_kind("response.reasoning.delta")
    assert [e.data["delta"] for e in reasoning] == ["think ", "hard"]
    [step] = await store.steps("r")
    assert step.response_payload["choices"][0]["message"]["reasoning_content"] == "think hard"


async def test_connections_are_pooled_across_steps_and_loops(
    upstream: ScriptedUpstream, keyed_target: UpstreamTarget
) -> None:
    client = HttpClient()
    for _ in range(3):
        store = MemoryStore(
            ScriptedTransition(
                [
                    AppendSteps([StepDescriptor.model_call({"model": "m"})]),
                    AppendSteps([StepDescriptor.model_call(STREAM_REQUEST)]),
                    Complete("end"),
                ]
            )
        )
        upstream.handler = lambda r: (
            StreamReply(text_chunks(["s"])) if r.body.get("stream") else JsonReply({"ok": 1})
        )
        await run_response_loop(
            store, Tools(), RequestContext(), keyed_target, request_id="r", client=client
        )
    assert len(upstream.requests) == 6
    assert upstream.connections == 1
