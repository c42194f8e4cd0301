"""`stepwell serve` as a subprocess on loopback, spoken to by the official
`openai` client and by raw HTTP, over a scripted upstream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import (
    APIStatusError,
    AsyncOpenAI,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
)
from stepwell import UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.server import create_app
from stepwell.server.serve import load_settings
from stepwell.stores import MemoryStore, SQLiteStore
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
    tool_call_chunks,
)
from stepwell.tools import HttpTools

from .test_openresponses import RESPONSE, as_sent, assert_valid_stream

PIECES = ["The ", "answer ", "is ", "forty-", "two."]
HOLD = "hold the stream open"
BROKEN = "make the upstream fail"


def model(request: UpstreamRequest) -> Any:
    last = str(request.body["messages"][-1].get("content"))
    if last.startswith("client "):
        # Each client gets an answer naming it, in pieces.
        return StreamReply(text_chunks([f"{last} ", "is ", "answered."]))
    if any(BROKEN in str(m.get("content")) for m in request.body["messages"]):
        return JsonReply({"error": {"message": "overloaded"}}, 503)
    if any(HOLD in str(m.get("content")) for m in request.body["messages"]):
        # Two pieces, then nothing until the client goes away.
        return StreamReply(text_chunks(PIECES)[:2], done=False, after="hold")
    if request.body.get("stream"):
        return StreamReply(text_chunks(PIECES))
    return JsonReply(chat_completion("".join(PIECES)))


class Server:
    """`stepwell serve` in a child process, until stopped. `db` is a SQLite
    file, or the URL of a store (its log then goes to `log`)."""

    def __init__(self, upstream: str, db: Path | str, *extra: str, log: Path | None = None) -> None:
        command = [sys.executable, "-m", "stepwell.cli", "serve", "--port", "0"]
        auth = [] if "--keys" in extra else ["--no-auth"]
        # A dead process's responses are taken over two seconds after its
        # last renewal, not ten: the tests that kill one wait that long.
        lease = [] if "--lease-ttl" in extra else ["--lease-ttl", "2"]
        store = db if isinstance(db, str) else f"sqlite:{db}"
        self.log = log or Path(db).with_suffix(".log")
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                [*command, "--upstream", upstream, "--store", store, *auth, *lease, *extra],
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert self.process.stdout is not None
        # Printed once the socket listens: connections made after it queue.
        line = self.process.stdout.readline()
        if not line.startswith("stepwell serving on "):
            self.process.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.log.read_text()!r}")
        self.url = line.removeprefix("stepwell serving on ").strip()

    def client(self, key: str = "unused") -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(model) as server:
        yield server


@pytest.fixture
def server(upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[Server]:
    running = Server(upstream.endpoint, tmp_path / "serve.db", "--max-body", "4096")
    yield running
    running.stop()


def events_of(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body, checking its framing on the way."""
    frames = [f for f in text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    events = []
    for frame in frames[:-1]:
        head, data = frame.split("\n", 1)
        assert head.startswith("event: ") and data.startswith("data: ")
        assert "id:" not in frame
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        events.append(event)
    return events


async def test_create_then_retrieve(server: Server) -> None:
    client = server.client()
    response = await client.responses.create(model="m", input="question?")
    assert response.status == "completed"
    assert response.output_text == "".join(PIECES)
    again = await client.responses.retrieve(response.id)
    assert again.to_dict() == response.to_dict()


async def test_stream_final_response_equals_retrieve(server: Server) -> None:
    client = server.client()
    deltas = []
    async with client.responses.stream(model="m", input="question?") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert deltas == PIECES
    stored = await client.responses.retrieve(final.id)
    assert stored.status == "completed"
    assert as_sent(final) == stored.to_dict()
    assert list(RESPONSE.iter_errors(stored.to_dict())) == []


async def test_replay_from_any_cursor_equals_the_live_tail(
    server: Server, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        live = await http.post("/v1/responses", json={"model": "m", "input": "q", "stream": True})
        assert live.headers["content-type"].startswith("text/event-stream")
        events = events_of(live.text)
        # What the server sends is the specification's stream.
        assert_valid_stream([*events, {"type": "[DONE]"}])
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] == "response.completed"
        response_id = events[0]["response"]["id"]
        for cursor in (-1, 0, 3, len(events) - 2):
            replay = await http.get(
                f"/v1/responses/{response_id}",
                params={"stream": "true", "starting_after": cursor},
            )
            assert events_of(replay.text) == events[cursor + 1 :]
    # The official client reads the same replay.
    client = server.client()
    replayed = [e async for e in await client.responses.retrieve(
        response_id, stream=True, starting_after=2
    )]  # fmt: skip
    assert [e.sequence_number for e in replayed] == [e["sequence_number"] for e in events[3:]]

    # And so does a new server process on the same store, after the first was killed.
    server.stop()
    restarted = Server(upstream.endpoint, tmp_path / "serve.db")
    try:
        async with httpx.AsyncClient(base_url=restarted.url) as http:
            replay = await http.get(
                f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": 1}
            )
        assert events_of(replay.text) == events[2:]
    finally:
        restarted.stop()


async def test_background_response_runs_detached(server: Server) -> None:
    client = server.client()
    started = await client.responses.create(model="m", input="q", background=True)
    assert started.status == "in_progress"
    assert started.background is True
    # Follow its event log to the end, then read the result.
    events = [e async for e in await client.responses.retrieve(started.id, stream=True)]
    assert events[-1].type == "response.completed"
    done = await client.responses.retrieve(started.id)
    assert done.status == "completed"
    assert done.output_text == "".join(PIECES)


async def test_errors_have_openai_s_shape(server: Server) -> None:
    client = server.client()
    with pytest.raises(BadRequestError) as bad:
        await client.responses.create(model="", input="q")
    assert bad.value.status_code == 400
    assert bad.value.body == {
        "message": "'model' is required and must be a non-empty string",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
    with pytest.raises(BadRequestError) as unknown:
        await client.responses.create(model="m", input="q", previous_response_id="resp_nope")
    assert unknown.value.body["param"] == "previous_response_id"
    with pytest.raises(NotFoundError) as missing:
        await client.responses.retrieve("resp_nope")
    assert missing.value.body["message"] == "Response with id 'resp_nope' not found."

    async with httpx.AsyncClient(base_url=server.url) as http:
        malformed = await http.post(
            "/v1/responses", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"]["type"] == "invalid_request_error"
        too_large = await http.post("/v1/responses", json={"model": "m", "input": "x" * 5000})
        assert too_large.status_code == 413
        assert set(too_large.json()["error"]) == {"message", "type", "param", "code"}
        nowhere = await http.get("/v1/nothing")
        assert nowhere.status_code == 404
        assert "error" in nowhere.json()
        health = await http.get("/healthz")
        assert health.json()["status"] == "ok"


async def test_cancel_stops_a_background_response(
    server: Server, upstream: ScriptedUpstream
) -> None:
    client = server.client()
    started = await client.responses.create(model="m", input=HOLD, background=True)
    stream = await client.responses.retrieve(started.id, stream=True)
    first = [await stream.__anext__() for _ in range(3)]
    assert first[0].type == "response.created"
    cancelled = await client.responses.cancel(started.id)
    assert cancelled.status == "cancelled"
    # The upstream request was closed, and the follower's stream ended.
    assert await asyncio.to_thread(upstream.wait_disconnect, 10)
    assert [e.type async for e in stream][-1] == "response.output_text.delta"
    assert (await client.responses.retrieve(started.id)).status == "cancelled"
    # Idempotent; and a finished or foreground response is a 409.
    assert (await client.responses.cancel(started.id)).status == "cancelled"
    done = await client.responses.create(model="m", input="q", background=True)
    async for _ in await client.responses.retrieve(done.id, stream=True):
        pass
    foreground = await client.responses.create(model="m", input="q")
    for response_id in (done.id, foreground.id):
        with pytest.raises(ConflictError) as conflict:
            await client.responses.cancel(response_id)
        assert conflict.value.status_code == 409
        assert conflict.value.body["type"] == "invalid_request_error"


async def test_a_cancelled_response_keeps_what_it_did(tmp_path: Path) -> None:
    """Cancelled while its tool runs, a response keeps the output of the model
    call that finished before: its function call."""
    never = asyncio.Event()
    tool_called = threading.Event()

    async def slow_tool(request: UpstreamRequest) -> Any:
        if request.path == "/tools/slow":
            tool_called.set()
            await never.wait()  # the tool never answers: the cancel comes first
        call = {"id": "call_1", "name": "slow", "arguments": "{}"}
        return StreamReply(tool_call_chunks([call]))

    with ScriptedUpstream(slow_tool) as upstream:
        tools = tmp_path / "tools.toml"
        tools.write_text(f'[[tool]]\nname = "slow"\nurl = "{upstream.endpoint}/tools/slow"\n')
        server = Server(upstream.endpoint, tmp_path / "c.db", "--tools", str(tools))
        try:
            client = server.client()
            started = await client.responses.create(model="m", input="go", background=True)
            # The tool is called once the model call's step completed.
            assert await asyncio.to_thread(tool_called.wait, 30)
            cancelled = await client.responses.cancel(started.id)
            assert cancelled.status == "cancelled"
            assert [(i.type, getattr(i, "name", None)) for i in cancelled.output] == [
                ("function_call", "slow")
            ]
            again = await client.responses.retrieve(started.id)
            assert again.to_dict() == cancelled.to_dict()
        finally:
            server.stop()


async def test_input_tokens_are_counted_by_the_upstream_s_tokenizer(tmp_path: Path) -> None:
    """`responses.input_tokens.count` sends the first model call's messages and
    tools to the upstream's `/tokenize` and answers its count; an upstream
    without one makes it a 501 in OpenAI's shape."""

    def tokenizer(request: UpstreamRequest) -> Any:
        if request.path == "/tokenize":
            return JsonReply({"count": 17, "max_model_len": 4096, "tokens": list(range(17))})
        return JsonReply({"error": {"message": "no such route"}}, 404)

    with ScriptedUpstream(tokenizer) as upstream:
        server = Server(upstream.endpoint, tmp_path / "t.db")
        try:
            client = server.client()
            counted = await client.responses.input_tokens.count(
                model="m",
                input="How many?",
                instructions="Count.",
                tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            )
            assert counted.input_tokens == 17 and counted.object == "response.input_tokens"
            [sent] = upstream.requests
            assert sent.body["messages"] == [
                {"role": "system", "content": "Count."},
                {"role": "user", "content": "How many?"},
            ]
            assert sent.body["model"] == "m"
            assert [t["function"]["name"] for t in sent.body["tools"]] == ["f"]
            with pytest.raises(BadRequestError) as refused:
                await client.responses.input_tokens.count(model="m", input=[{"type": "nope"}])
            assert refused.value.param is not None
            upstream.handler = lambda r: JsonReply({"error": {"message": "no"}}, 404)
            with pytest.raises(APIStatusError) as unavailable:
                await client.responses.input_tokens.count(model="m", input="How many?")
            assert unavailable.value.status_code == 501
            assert unavailable.value.body["code"] == "no_tokenizer"
            assert "tokenizer" in unavailable.value.body["message"]
        finally:
            server.stop()


async def test_a_streaming_client_that_leaves_cancels_its_response(
    server: Server, upstream: ScriptedUpstream
) -> None:
    response_id = ""
    async with httpx.AsyncClient(base_url=server.url) as http:
        body = {"model": "m", "input": HOLD, "stream": True}
        async with http.stream("POST", "/v1/responses", json=body) as live:
            async for line in live.aiter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    response_id = event.get("response", {}).get("id", response_id)
                    # Leave once the model is mid-stream.
                    if event["type"] == "response.output_text.delta":
                        break
        # The client has closed its connection: the upstream's is closed too...
        assert await asyncio.to_thread(upstream.wait_disconnect, 10)
        # ...and once the run has stopped, the response is kept as cancelled.
        follow = await http.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        assert follow.text.endswith("data: [DONE]\n\n")
        kept = await http.get(f"/v1/responses/{response_id}")
        assert kept.json()["status"] == "cancelled"


async def test_delete_forgets_a_response(server: Server) -> None:
    client = server.client()
    response = await client.responses.create(model="m", input="q")
    deleted = await client.responses.delete(response.id)
    assert deleted is None  # the SDK returns nothing for a 200
    with pytest.raises(NotFoundError):
        await client.responses.retrieve(response.id)
    with pytest.raises(NotFoundError):
        await client.responses.delete(response.id)


async def test_a_response_made_with_store_false_is_not_kept(server: Server, tmp_path: Path) -> None:
    """`store: false`: the answer comes back, JSON or streamed, and then the
    response is gone: GET is a 404, it cannot be continued, and the store
    keeps nothing of it. It cannot run in the background."""
    client = server.client()
    response = await client.responses.create(model="m", input="q", store=False)
    assert response.status == "completed" and response.store is False
    assert response.output_text == "".join(PIECES)
    with pytest.raises(NotFoundError):
        await client.responses.retrieve(response.id)
    with pytest.raises(BadRequestError) as refused:
        await client.responses.create(model="m", input="on", previous_response_id=response.id)
    assert refused.value.param == "previous_response_id"
    async with client.responses.stream(model="m", input="q", store=False) as stream:
        final = await stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(PIECES)
    with pytest.raises(NotFoundError):
        await client.responses.retrieve(final.id)
    with pytest.raises(BadRequestError) as refused:
        await client.responses.create(model="m", input="q", store=False, background=True)
    assert refused.value.param == "background"
    with sqlite3.connect(tmp_path / "serve.db") as db:
        for table in ("responses", "steps", "events"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


async def test_replay_after_a_kill_mid_response_equals_the_live_stream(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "killed.db"
    first = Server(upstream.endpoint, db)
    try:
        async with httpx.AsyncClient(base_url=first.url) as http:
            started = await http.post(
                "/v1/responses", json={"model": "m", "input": HOLD, "background": True}
            )
            response_id = started.json()["id"]
            live = []
            params = {"stream": "true"}
            async with http.stream("GET", f"/v1/responses/{response_id}", params=params) as s:
                async for line in s.aiter_lines():
                    if line.startswith("data: "):
                        live.append(json.loads(line[6:]))
                        if live[-1]["type"] == "response.output_text.delta":
                            break
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    # A new process resumes it: the step in flight when the first died is not
    # run twice, so the response fails as abandoned, and its log says so last.
    second = Server(upstream.endpoint, db)
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
            replay = events_of((await http.get(f"/v1/responses/{response_id}", params=params)).text)
            kept = (await http.get(f"/v1/responses/{response_id}")).json()
    finally:
        second.stop()
    assert replay[: len(live)] == live
    assert [e["sequence_number"] for e in replay] == list(range(len(replay)))
    assert replay[-1]["type"] == "response.failed"
    assert replay[-1]["response"]["error"]["code"] == "step_abandoned"
    assert kept == replay[-1]["response"]


async def test_sigterm_leaves_background_responses_to_the_next_start(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "term.db"
    first = Server(upstream.endpoint, db)
    client = first.client()
    started = await client.responses.create(model="m", input=HOLD, background=True)
    stream = await client.responses.retrieve(started.id, stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    first.process.send_signal(signal.SIGTERM)
    # Graceful: the background run stops at once, so its follower's stream ends
    # cleanly (an abrupt exit would break the connection instead)...
    rest = [event.type async for event in stream]
    assert "response.completed" not in rest
    # ...and the process exits without waiting out the grace period. uvicorn
    # re-raises the signal once it has shut down.
    assert first.process.wait(timeout=20) in (0, -signal.SIGTERM)
    # Not marked cancelled or failed: left unfinished for the next start.
    store = SQLiteStore(db)
    assert await store.outcome(started.id.removeprefix("resp_")) is None
    assert started.id.removeprefix("resp_") in await store.unfinished_responses()


async def test_keys_tenants_and_cross_tenant_reads(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"sk-acme-secret" = "acme"\n"sk-globex-secret" = "globex"\n')
    db = tmp_path / "tenants.db"
    server = Server(upstream.endpoint, db, "--keys", str(keys))
    try:
        acme, globex = server.client("sk-acme-secret"), server.client("sk-globex-secret")
        mine = await acme.responses.create(model="m", input="q")
        assert (await acme.responses.retrieve(mine.id)).id == mine.id
        # Another tenant's response does not exist for globex, whatever it asks.
        for attempt in (
            globex.responses.retrieve(mine.id),
            globex.responses.retrieve(mine.id, stream=True),
            globex.responses.cancel(mine.id),
            globex.responses.delete(mine.id),
        ):
            with pytest.raises(NotFoundError):
                await attempt
        # As a previous_response_id it is as unknown as one that never existed.
        with pytest.raises(BadRequestError) as previous:
            await globex.responses.create(model="m", input="q", previous_response_id=mine.id)
        with pytest.raises(BadRequestError) as never:
            await globex.responses.create(model="m", input="q", previous_response_id="resp_0")
        assert previous.value.body["param"] == never.value.body["param"]
        assert previous.value.body["param"] == "previous_response_id"
        # acme can build on its own response.
        follow_up = await acme.responses.create(
            model="m", input="and?", previous_response_id=mine.id
        )
        assert follow_up.status == "completed"
        with pytest.raises(AuthenticationError) as refused:
            await server.client("sk-wrong").responses.retrieve(mine.id)
        assert refused.value.status_code == 401
        assert refused.value.body["code"] == "invalid_api_key"
        assert "sk-wrong" not in refused.value.body["message"]
        async with httpx.AsyncClient(base_url=server.url) as http:
            anonymous = await http.post("/v1/responses", json={"model": "m", "input": "q"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "invalid_api_key"
    finally:
        server.stop()
    # No key reached the log or any stored row.
    wal = Path(f"{db}-wal")
    kept = db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    for secret in (b"sk-acme-secret", b"sk-globex-secret", b"sk-wrong"):
        assert secret not in kept
        assert secret not in server.log.read_bytes()


async def test_metrics_count_requests_steps_and_upstream_calls(server: Server) -> None:
    client = server.client()
    await client.responses.create(model="m", input="q")
    failed = await client.responses.create(model="m", input=BROKEN)
    assert failed.status == "failed"
    with pytest.raises(NotFoundError):
        await client.responses.retrieve("resp_nope")
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    requests = 'stepwell_http_requests_total{{route="{}",status="{}"}}'
    assert samples[requests.format("POST /v1/responses", 200)] == 2
    assert samples[requests.format("GET /v1/responses/{response_id}", 404)] == 1
    assert samples["stepwell_responses_in_flight"] == 0
    assert samples['stepwell_upstream_seconds_count{status="200"}'] == 1
    assert samples['stepwell_upstream_errors_total{code="upstream_error"}'] == 1
    assert samples['stepwell_step_seconds_count{kind="model_call",state="failed"}'] == 1
    assert samples["stepwell_dropped_events_total"] == 0


async def test_a_retry_with_the_same_idempotency_key_gets_the_first_response(
    server: Server, upstream: ScriptedUpstream
) -> None:
    client = server.client()
    retry = {"Idempotency-Key": "order-17"}
    first = await client.responses.create(model="m", input="q", extra_headers=retry)
    again = await client.responses.create(model="m", input="q", extra_headers=retry)
    assert again.id == first.id
    assert again.to_dict() == first.to_dict()
    assert len(upstream.requests) == 1
    # Streamed: the retry is streamed again from the event log, event for event.
    body = {"model": "m", "input": "q", "stream": True}
    async with httpx.AsyncClient(base_url=server.url) as http:
        streamed = events_of(
            (await http.post("/v1/responses", json=body, headers={"Idempotency-Key": "s"})).text
        )
        replayed = events_of(
            (await http.post("/v1/responses", json=body, headers={"Idempotency-Key": "s"})).text
        )
    assert replayed == streamed
    assert len(upstream.requests) == 2
    # Another key is another response.
    other = await client.responses.create(
        model="m", input="q", extra_headers={"Idempotency-Key": "order-18"}
    )
    assert other.id != first.id


async def test_input_items_pages_and_the_step_tree(server: Server) -> None:
    client = server.client()
    given = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "one"}]},
        {"type": "message", "role": "assistant", "content": "two", "id": "msg_mine"},
        {"role": "user", "content": "three"},
    ]
    response = await client.responses.create(model="m", input=given)  # type: ignore[arg-type]
    first = await client.responses.input_items.list(response.id, limit=2, order="asc")
    prefix = f"msg_{response.id.removeprefix('resp_')}_in"
    assert [item.id for item in first.data] == [f"{prefix}0", f"{prefix}1"]
    assert first.has_more is True
    assert first.data[0].status == "completed"
    assert first.data[0].content[0].text == "Be brief."  # type: ignore[union-attr]
    second = await client.responses.input_items.list(
        response.id, limit=2, order="asc", after=first.last_id
    )
    assert [item.id for item in second.data] == ["msg_mine", f"{prefix}3"]
    assert second.has_more is False
    newest = await client.responses.input_items.list(response.id, limit=1)
    assert newest.data[0].id == f"{prefix}3"
    # Newest first by default.
    async with httpx.AsyncClient(base_url=server.url) as http:
        raw = (await http.get(f"/v1/responses/{response.id}/input_items")).json()
        assert [i["id"] for i in raw["data"]] == [i.id for i in reversed(first.data + second.data)]
        bad = await http.get(f"/v1/responses/{response.id}/input_items", params={"limit": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
        tree = (await http.get(f"/v1/responses/{response.id}/steps")).json()["data"]
    [step] = tree
    assert (step["kind"], step["state"], step["steps"]) == ("model_call", "completed", [])
    assert step["updated_at"] >= step["created_at"] > 0


async def test_a_thousand_concurrent_streaming_clients(server: Server) -> None:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
    timeout = httpx.Timeout(120)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as http:

        async def one(n: int) -> tuple[int, str, str]:
            body = {"model": "m", "input": f"client {n}", "stream": True}
            events = events_of((await http.post("/v1/responses", json=body)).text)
            text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
            return n, text, events[-1]["type"]

        results = await asyncio.gather(*(one(n) for n in range(1000)))
    assert len(results) == 1000
    for n, text, last in results:
        assert (text, last) == (f"client {n} is answered.", "response.completed")


async def test_a_500_never_shows_internals(caplog: pytest.LogCaptureFixture) -> None:
    """The app mounted in-process over a store that breaks: the client gets
    OpenAI's shape with a generic message; the details go to the log only."""

    class BrokenStore(MemoryStore):
        async def load_request(self, request_id: str, *, tenant: str | None = None) -> Any:
            raise RuntimeError("disk on fire at /var/secret/path")

    responses = Responses(BrokenStore(), HttpTools([]), UpstreamTarget("http://127.0.0.1:9"))
    transport = httpx.ASGITransport(app=create_app(responses), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://stepwell.test") as http:
        answer = await http.get("/v1/responses/resp_x")
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["type"] == "server_error"
    assert "disk" not in error["message"] and "secret" not in error["message"]
    assert any("disk on fire" in r.getMessage() or r.exc_info for r in caplog.records)


def test_settings_come_from_flags_then_environment_then_file(tmp_path: Path) -> None:
    config = tmp_path / "stepwell.toml"
    config.write_text('upstream = "http://file/v1"\nport = 9001\nmax_body = 10\n')
    settings = load_settings(
        {"upstream": None, "port": "9002", "max_body": None, "no_auth": True},
        {"STEPWELL_MAX_BODY": "20", "STEPWELL_UPSTREAM": "http://env/v1"},
        str(config),
    )
    assert (settings.upstream, settings.port, settings.max_body) == ("http://env/v1", 9002, 20)
    assert settings.store == "sqlite:./stepwell.db"
    with pytest.raises(SystemExit, match="API keys are needed"):
        load_settings({"upstream": "http://x/v1"}, {}, None)
    with pytest.raises(SystemExit, match="unknown settings"):
        bad = tmp_path / "bad.toml"
        bad.write_text("colour = 'red'\n")
        load_settings({}, {}, str(bad))


def test_the_http_server_is_one_of_the_named_ways() -> None:
    flags = {"upstream": "http://127.0.0.1:1/v1", "no_auth": True}
    assert load_settings(flags, {}, None).server == "uvicorn"
    for server in ("uvicorn-h11", "uvicorn-uvloop"):
        assert load_settings({**flags, "server": server}, {}, None).server == server
    with pytest.raises(SystemExit, match="--server is one of uvicorn, uvicorn-h11"):
        load_settings({**flags, "server": "gunicorn"}, {}, None)
