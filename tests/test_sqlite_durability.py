"""SQLiteStore survives SIGKILL: a child process runs a response and is killed at
several points; a new process resumes it to a terminal state, losing no
completed step and duplicating none. Locked and corrupt files give typed errors."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stepwell import (
    AppendSteps,
    StepDescriptor,
    StepKind,
    StepState,
    StoreError,
    UpstreamTarget,
    run_response_loop,
)
from stepwell.openresponses import Responses
from stepwell.stores import SQLiteStore, StoreCorrupt, StoreLocked
from stepwell.testing import (
    JsonReply,
    ScriptedTransition,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
)
from stepwell.tools import FunctionTools, Toolbox

from .conftest import Tools

CHILD = r"""
import asyncio, json, sys
from stepwell import UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.stores import SQLiteStore
from stepwell.tools import FunctionTools, Toolbox

db, endpoint, mode, request_id = sys.argv[1:]

def say(word):
    print(word, flush=True)

async def forecast(city: str) -> dict:
    "The forecast for a city."
    if mode == "kill_in_tool":
        say("IN_TOOL")
        await asyncio.Event().wait()
    return {"city": city, "temp_c": 9}

class Store(SQLiteStore):
    async def complete_step(self, step_id, payload):
        await super().complete_step(step_id, payload)
        if mode == "kill_after_tool" and (await self.step(step_id)).kind.value == "tool_call":
            say("TOOL_DONE")
            await asyncio.Event().wait()

async def main():
    tools = Toolbox(FunctionTools(forecast))
    responses = Responses(Store(db), tools, UpstreamTarget(endpoint))
    body = {"model": "m", "input": "go", "stream": mode == "kill_in_stream"}
    result = await responses.create(body, request_id=request_id)
    say("RESULT " + result["status"])

asyncio.run(main())
"""


def forecast(city: str) -> dict[str, Any]:
    """The forecast for a city."""
    return {"city": city, "temp_c": 9}


class Model:
    """First call: one tool call (or, streaming, a stream held open); then an answer."""

    def __init__(self) -> None:
        self.first_arrived = threading.Event()

    def __call__(self, request: UpstreamRequest) -> Any:
        if request.body["messages"][-1]["role"] == "tool":
            return JsonReply(chat_completion("It is 9 degrees."))
        self.first_arrived.set()
        if request.body.get("stream"):
            return StreamReply(text_chunks(["still"])[:2], done=False, after="hold")
        call = {"id": "call_1", "name": "forecast", "arguments": '{"city": "Oslo"}'}
        return JsonReply(chat_completion(tool_calls=[call]))


@pytest.fixture
def model() -> Iterator[tuple[ScriptedUpstream, Model]]:
    handler = Model()
    with ScriptedUpstream(handler) as upstream:
        yield upstream, handler


def run_child_until(db: Path, endpoint: str, mode: str, marker: str | None, model: Model) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), endpoint, mode, "r1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if marker is None:
            assert model.first_arrived.wait(30), "the child never called the model"
        else:
            assert child.stdout is not None
            for line in child.stdout:
                if line.strip() == marker:
                    break
            else:
                raise AssertionError(f"the child ended before {marker}")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL


async def links_are_unique(store: SQLiteStore) -> None:
    steps = await store.steps("r1")
    links = [(s.scope_parent, s.prev_step_id, s.kind) for s in steps]
    assert len(set(links)) == len(links)
    assert len({s.sequence for s in steps}) == len(steps)


@pytest.mark.parametrize(
    ("mode", "marker", "status", "states_before"),
    [
        ("kill_in_tool", "IN_TOOL", "failed", [StepState.COMPLETED, StepState.PROCESSING]),
        ("kill_after_tool", "TOOL_DONE", "completed", [StepState.COMPLETED] * 2),
        ("kill_in_stream", None, "failed", [StepState.PROCESSING]),
    ],
)
async def test_sigkill_then_resume(
    model: tuple[ScriptedUpstream, Model],
    tmp_path: Path,
    mode: str,
    marker: str | None,
    status: str,
    states_before: list[StepState],
) -> None:
    upstream, handler = model
    db = tmp_path / "durable.db"
    await asyncio.to_thread(run_child_until, db, upstream.endpoint, mode, marker, handler)

    store = SQLiteStore(db)
    before = await store.steps("r1")
    assert [s.state for s in before] == states_before
    calls_before = len(upstream.requests)

    responses = Responses(
        store, Toolbox(FunctionTools(forecast)), UpstreamTarget(upstream.endpoint)
    )
    response = await responses.resume("r1")

    assert response["status"] == status
    after = await store.steps("r1")
    # Nothing persisted before the kill was lost or changed.
    assert [(s.id, s.state, s.response_payload) for s in after[: len(before)]] == [
        (s.id, s.state, s.response_payload) for s in before
    ]
    await links_are_unique(store)
    if status == "failed":
        assert response["error"]["code"] == "step_abandoned"
        assert len(upstream.requests) == calls_before  # nothing ran twice
    else:
        assert [s.kind for s in after] == [
            StepKind.MODEL_CALL,
            StepKind.TOOL_CALL,
            StepKind.MODEL_CALL,
        ]
        assert response["output"][-1]["content"][0]["text"] == "It is 9 degrees."
        assert json_output(response) == {"city": "Oslo", "temp_c": 9}
    assert await store.outcome("r1") == (status, response)


def json_output(response: dict[str, Any]) -> Any:
    [output] = [i for i in response["output"] if i["type"] == "function_call_output"]
    return json.loads(output["output"])


async def test_locked_database_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreLocked, match="locked"):
            await store.record_step("r", None, None, StepDescriptor.tool_call("t"))
        store.decide = ScriptedTransition([AppendSteps([StepDescriptor.tool_call("t")])])
        with pytest.raises(StoreError) as raised:
            await run_response_loop(
                store, Tools(), None, UpstreamTarget("http://127.0.0.1:9"), request_id="r"
            )
        assert isinstance(raised.value.__cause__, StoreLocked)
    finally:
        blocker.execute("ROLLBACK")
    # Once the lock is gone the store works, and nothing half-written is there.
    assert await store.steps("r") == []
    await store.record_step("r", None, None, StepDescriptor.tool_call("t"))
    assert len(await store.steps("r")) == 1


def test_corrupt_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(StoreCorrupt, match="not a usable SQLite database"):
        SQLiteStore(path)


async def test_a_file_from_before_tenants_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE responses (request_id TEXT PRIMARY KEY, request TEXT NOT NULL, "
            "status TEXT NOT NULL DEFAULT 'in_progress', output TEXT, created_at REAL NOT NULL, "
            "completed_at REAL)"
        )
        db.execute(
            "INSERT INTO responses (request_id, request, created_at) VALUES ('old', '{}', 1)"
        )
    store = SQLiteStore(path)
    # The response kept before tenants existed belongs to the default tenant.
    assert await store.load_request("old", tenant="") == {}
    assert await store.load_request("old", tenant="acme") is None
    await store.save_request("new", {"x": 1}, tenant="acme")
    assert await store.load_request("new", tenant="acme") == {"x": 1}


async def test_a_file_with_payloads_in_its_steps_rows_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE steps (id TEXT PRIMARY KEY, request_id TEXT NOT NULL, "
            "scope_parent TEXT, prev_step_id TEXT, kind TEXT NOT NULL, state TEXT NOT NULL, "
            "sequence INTEGER NOT NULL, request_payload TEXT NOT NULL, response_payload TEXT, "
            "error TEXT, sub_request_id TEXT, created_at REAL NOT NULL, "
            "UNIQUE (request_id, sequence))"
        )
        db.execute(
            "INSERT INTO steps (id, request_id, kind, state, sequence, request_payload, "
            "response_payload, created_at) VALUES "
            "('step_old', 'r', 'tool_call', 'completed', 1, '{\"name\": \"t\"}', '\"done\"', 1)"
        )
    store = SQLiteStore(path)
    [old] = await store.steps("r")
    assert (old.id, old.request_payload, old.response_payload) == (
        "step_old",
        {"name": "t"},
        "done",
    )
    # New steps follow it, and the old column is gone.
    recorded = await store.record_step("r", None, "step_old", StepDescriptor.tool_call("u"))
    assert recorded.sequence == 2
    assert [s.request_payload for s in await store.steps("r")] == [{"name": "t"}, {"name": "u"}]
    store.close()
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(steps)")}
    assert "request_payload" not in columns
    # Opening it again finds nothing more to move.
    again = SQLiteStore(path)
    assert len(await again.steps("r")) == 2
    again.close()


async def test_a_step_is_recorded_into_only_the_indexes_its_reads_use(tmp_path: Path) -> None:
    path = tmp_path / "indexes.db"
    with sqlite3.connect(path) as db:
        # What earlier versions made: an index by scope, which no read uses.
        db.execute(
            "CREATE TABLE steps (id TEXT PRIMARY KEY, request_id TEXT NOT NULL, "
            "scope_parent TEXT, prev_step_id TEXT, kind TEXT NOT NULL, state TEXT NOT NULL, "
            "sequence INTEGER NOT NULL, response_payload TEXT, error TEXT, "
            "sub_request_id TEXT, created_at REAL NOT NULL, updated_at REAL, "
            "UNIQUE (request_id, sequence))"
        )
        db.execute("CREATE INDEX steps_scope ON steps (request_id, scope_parent, sequence)")
    store = SQLiteStore(path)
    indexes = {row[1] for row in store._db.execute("PRAGMA index_list(steps)")}
    assert "steps_scope" not in indexes
    recorded = await store.record_step("r", None, None, StepDescriptor.tool_call("t"))
    # A scope's chain and a response's steps are still read through an index.
    reads: list[str] = []
    store._db.set_trace_callback(reads.append)
    assert [s.id for s in await store.list_chain("r", None)] == [recorded.id]
    assert [s.id for s in await store.steps("r")] == [recorded.id]
    store._db.set_trace_callback(None)
    assert len(reads) == 2
    for read in reads:
        details = [row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {read}")]
        assert any("USING INDEX" in d and "request_id=?" in d for d in details), details
        assert not any(d.startswith("SCAN") or "TEMP B-TREE" in d for d in details), details
    store.close()
