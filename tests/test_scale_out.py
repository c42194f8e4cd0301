"""Many processes on one store: who runs a response is the store's answer
(leases), never one process's memory. Every process here is a real
`stepwell serve` or `stepwell worker`, on a SQLite file or a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
    tool_call_chunks,
)

from . import pg
from .test_server import HOLD, PIECES, Server, model


class Worker:
    """`stepwell worker` in a child process."""

    def __init__(self, upstream: str, store: str, log: Path, *extra: str) -> None:
        self.log = log
        with log.open("a") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stepwell.cli", "worker", "--upstream", upstream,
                 "--store", store, "--lease-ttl", "2", *extra],
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("stepwell worker running as "):
            self.process.kill()
            raise RuntimeError(f"worker did not start: {line!r} {log.read_text()!r}")
        self.owner = line.removeprefix("stepwell worker running as ").strip()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(model) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def test_follow_and_cancel_a_response_from_another_process(
    upstream: ScriptedUpstream, store: str, tmp_path: Path
) -> None:
    """Created (background, streamed) on A, followed, read and cancelled on B:
    the run on A stops (its upstream request closed), and both streams end."""
    a = Server(upstream.endpoint, store, log=tmp_path / "a.log")
    # B takes no queued work: the response can only run on A.
    b = Server(upstream.endpoint, store, "--max-runs", "0", log=tmp_path / "b.log")
    try:
        client_a, client_b = a.client(), b.client()
        live = await client_a.responses.create(model="m", input=HOLD, background=True, stream=True)
        first = await until_delta(live)
        assert [e.type for e in first[:2]] == ["response.created", "response.in_progress"]
        response_id = first[0].response.id
        followed = await client_b.responses.retrieve(response_id, stream=True, starting_after=1)
        seen = await until_delta(followed)
        assert [e.sequence_number for e in seen] == [e.sequence_number for e in first[2:]]
        assert seen[-1].delta == PIECES[0]
        # B shows A's progress, from the store.
        async with httpx.AsyncClient(base_url=b.url) as http:
            now = (await http.get(f"/v1/responses/{response_id}")).json()
            [step] = (await http.get(f"/v1/responses/{response_id}/steps")).json()["data"]
        assert now["status"] == "in_progress"
        assert (step["kind"], step["state"]) == ("model_call", "processing")
        cancelled = await client_b.responses.cancel(response_id)
        assert cancelled.status == "cancelled"
        assert await asyncio.to_thread(upstream.wait_disconnect, 10)
        assert [e.type async for e in followed] == []  # ended, nothing after the deltas
        assert [e.type async for e in live] == []
        assert (await client_a.responses.retrieve(response_id)).status == "cancelled"
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log.read_text() + b.log.read_text()


async def until_delta(stream: Any) -> list[Any]:
    """The events of `stream` up to its first text delta."""
    events = []
    async for event in stream:
        events.append(event)
        if event.type == "response.output_text.delta":
            return events
    raise AssertionError(f"the stream ended without a delta: {events}")


async def tool_model(request: UpstreamRequest) -> Any:
    """A model that calls `lookup` once, slowly, then answers from its result."""
    if request.path == "/tools/lookup":
        return JsonReply({"found": request.body["n"]})
    streamed = bool(request.body.get("stream"))
    if not streamed:
        await asyncio.sleep(0.2)
    messages = request.body["messages"]
    if messages[-1]["role"] == "tool":
        found = json.loads(messages[-1]["content"])["found"]
        pieces = ["Found ", str(found), "."]
        if streamed:
            return StreamReply(text_chunks(pieces), interval=0.05)
        return JsonReply(chat_completion("".join(pieces)))
    n = messages[-1]["content"].removeprefix("lookup ")
    call = {"id": f"call_{n}", "name": "lookup", "arguments": json.dumps({"n": int(n)})}
    if streamed:
        return StreamReply(tool_call_chunks([call], pieces=3), interval=0.05)
    return JsonReply(chat_completion(tool_calls=[call]))


async def rows(url: str, sql: str) -> list[Any]:
    connection = await asyncpg.connect(url)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


async def until(check: Any, what: str, timeout: float = 120) -> Any:
    """Waits for `check()` (async) to hold, looking every 0.2 s, at most `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return found


@pytest.mark.timeout(400)
async def test_workers_killed_and_paused_lose_and_duplicate_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    """Four workers and two servers on one PostgreSQL run 200 background
    responses with a tool step each; one worker is killed, another frozen past
    its lease and then let go. Every response ends; no step runs twice; no
    completed step is lost; the frozen worker writes nothing after its lease
    was taken; every event log is gap-free and replays through the official
    client's accumulator."""
    with ScriptedUpstream(tool_model) as upstream:
        tools = tmp_path / "tools.toml"
        tools.write_text(f'[[tool]]\nname = "lookup"\nurl = "{upstream.endpoint}/tools/lookup"\n')
        extra = ("--tools", str(tools))
        servers = [
            Server(upstream.endpoint, postgres_url, *extra, log=tmp_path / f"serve{n}.log")
            for n in range(2)
        ]
        workers = [
            Worker(upstream.endpoint, postgres_url, tmp_path / f"worker{n}.log", *extra)
            for n in range(4)
        ]
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                created = await asyncio.gather(
                    *(
                        http.post(
                            f"{servers[n % 2].url}/v1/responses",
                            json={"model": "m", "input": f"lookup {n}", "background": True},
                        )
                        for n in range(200)
                    )
                )
            ids = {r.json()["id"].removeprefix("resp_") for r in created}
            assert len(ids) == 200

            async def held_by(worker: Worker) -> list[Any]:
                return await rows(
                    postgres_url,
                    "SELECT request_id FROM responses WHERE output IS NULL "
                    f"AND lease_owner = '{worker.owner}'",
                )

            killed, frozen = workers[0], workers[1]
            await until(lambda: held_by(killed), "the first worker to hold a response")
            killed.process.send_signal(signal.SIGKILL)
            killed_ids = {r[0] for r in await held_by(killed)}
            frozen_ids = {r[0] for r in await until(lambda: held_by(frozen), "a frozen one")}
            frozen.process.send_signal(signal.SIGSTOP)

            async def taken_over() -> bool:
                owners = await rows(
                    postgres_url,
                    "SELECT lease_owner, output IS NOT NULL FROM responses "
                    f"WHERE request_id IN ({', '.join(repr(i) for i in frozen_ids)})",
                )
                return all(done or owner != frozen.owner for owner, done in owners)

            await until(taken_over, "the frozen worker's responses to be taken over")
            frozen.process.send_signal(signal.SIGCONT)
            # Let go, it finds its leases gone; told to stop, it stops cleanly.
            frozen.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(frozen.process.wait, 60) == 0

            async def all_ended() -> bool:
                left = await rows(postgres_url, "SELECT 1 FROM responses WHERE output IS NULL")
                return not left

            try:
                await until(all_ended, "every response to end", timeout=120)
            except AssertionError:
                print(
                    await rows(
                        postgres_url,
                        "SELECT request_id, lease_owner, lease_expires, clock_timestamp(), "
                        "lease_token FROM responses WHERE output IS NULL",
                    )
                )
                raise
            outcomes = {
                r[0]: json.loads(r[1])
                for r in await rows(postgres_url, "SELECT request_id, output FROM responses")
            }
            steps = await rows(
                postgres_url,
                "SELECT request_id, kind, state, response_payload FROM steps ORDER BY sequence",
            )
            tool_calls: dict[int, int] = {}
            for request in upstream.requests:
                if request.path == "/tools/lookup":
                    tool_calls[request.body["n"]] = tool_calls.get(request.body["n"], 0) + 1
            for server in servers:
                async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                    client = server.client()
                    for request_id in sorted(ids)[:100] if server is servers[0] else []:
                        await check_replay(http, client, request_id, outcomes[request_id])
                    for request_id in sorted(ids)[100:] if server is servers[1] else []:
                        await check_replay(http, client, request_id, outcomes[request_id])
        finally:
            for process in [*servers, *workers]:
                if process.process.poll() is None:
                    process.process.send_signal(signal.SIGCONT)
                process.stop()
    # No tool ran twice for one response.
    assert max(tool_calls.values()) == 1
    # A completed step is kept, with its result.
    completed = [s for s in steps if s[2] == "completed"]
    assert all(s[3] is not None for s in completed)
    for request_id, outcome in outcomes.items():
        kinds = [(s[1], s[2]) for s in steps if s[0] == request_id]
        if outcome["status"] == "completed":
            assert kinds == [
                ("model_call", "completed"),
                ("tool_call", "completed"),
                ("model_call", "completed"),
            ]
            assert outcome["output"][-1]["content"][0]["text"].startswith("Found ")
        else:
            # Only a run in flight on the killed or the frozen worker: its step
            # was left in flight, and is not run twice.
            assert outcome["status"] == "failed", outcome
            assert outcome["error"]["code"] == "step_abandoned"
            assert request_id in killed_ids | frozen_ids
    logs = "".join(p.log.read_text() for p in [*servers, *workers])
    assert "Traceback" not in logs


async def _contains(log: Path, words: str) -> bool:
    return words in log.read_text()


async def check_replay(http: httpx.AsyncClient, client: Any, request_id: str, kept: Any) -> None:
    """The event log is gap-free, ends with the kept response, and the official
    client's accumulator takes it."""
    text = (await http.get(f"/v1/responses/resp_{request_id}", params={"stream": "true"})).text
    frames = [f for f in text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    events = [json.loads(f.split("\ndata: ", 1)[1]) for f in frames[:-1]]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == list(range(len(added)))
    assert events[-1]["response"] == kept
    async with client.responses.stream(response_id=f"resp_{request_id}") as stream:
        if kept["status"] == "completed":
            final = await stream.get_final_response()
            assert final.id == f"resp_{request_id}" and final.status == "completed"
        else:
            # The accumulator takes every event; only a completed one has a final.
            assert [e.type async for e in stream][-1] == f"response.{kept['status']}"


@pytest.mark.timeout(300)
async def test_a_restarted_postgresql_is_survived(tmp_path: Path) -> None:
    """PostgreSQL restarted while responses run: the server keeps serving, and
    every response ends completed or failed with a typed error; what was
    persisted is kept."""
    cluster = pg.Cluster()
    try:
        url = pg.new_database(cluster.url)
        with ScriptedUpstream(tool_model) as upstream:
            tools = tmp_path / "tools.toml"
            tools.write_text(
                f'[[tool]]\nname = "lookup"\nurl = "{upstream.endpoint}/tools/lookup"\n'
            )
            server = Server(upstream.endpoint, url, "--tools", str(tools), log=tmp_path / "s.log")
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                    before = await http.post(
                        "/v1/responses", json={"model": "m", "input": "lookup 1"}
                    )
                    assert before.json()["status"] == "completed"
                    running = [
                        asyncio.ensure_future(
                            http.post("/v1/responses", json={"model": "m", "input": f"lookup {n}"})
                        )
                        for n in range(2, 22)
                    ]
                    await until(lambda: _any(upstream), "the runs to reach the upstream")
                    await asyncio.to_thread(cluster.restart)
                    answers = await asyncio.gather(*running)
                    after = await http.post(
                        "/v1/responses", json={"model": "m", "input": "lookup 99"}
                    )
                    kept = await http.get(f"/v1/responses/{before.json()['id']}")

                    # Nothing is left in progress: a run the restart cut short
                    # gave its response up, and it was taken over and ended.
                    async def all_ended() -> bool:
                        return not await rows(url, "SELECT 1 FROM responses WHERE output IS NULL")

                    await until(all_ended, "every response to end")
                    ended = await rows(url, "SELECT output FROM responses")
            finally:
                server.stop()
    finally:
        cluster.stop()
    for answer in answers:
        if answer.status_code == 200:
            body = answer.json()
            assert body["status"] in ("completed", "failed"), body
            if body["status"] == "failed":
                assert body["error"]["code"] in ("store_error", "step_abandoned"), body
        else:
            assert answer.json()["error"]["type"] == "server_error"
    assert after.json()["status"] == "completed"
    assert kept.json() == before.json()
    for (output,) in ended:
        body = json.loads(output)
        assert body["status"] == "completed" or body["error"]["code"] in (
            "store_error",
            "step_abandoned",
        ), body


async def _any(upstream: ScriptedUpstream) -> bool:
    return len(upstream.requests) >= 5
