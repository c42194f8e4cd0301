"""A response's terminal outcome is written once: resuming a finished response
returns it untouched, and when two workers drive one response on one SQLite file,
the one that loses the race never overwrites the winner's outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from stepwell import StepDescriptor, UpstreamTarget
from stepwell.openresponses import Responses, stored
from stepwell.stores import SQLiteStore
from stepwell.testing import JsonReply, ScriptedUpstream, UpstreamRequest, chat_completion
from stepwell.tools import FunctionTools, Toolbox

BODY = {"model": "m", "input": "weather in Oslo?"}
CALL = {"id": "call_1", "name": "forecast", "arguments": '{"city": "Oslo"}'}


def forecast(city: str) -> dict[str, Any]:
    """The forecast for a city.

    Args:
        city: The city.
    """
    return {"city": city, "temp_c": 9}


def model(request: UpstreamRequest) -> JsonReply:
    if request.body["messages"][-1]["role"] == "tool":
        return JsonReply(chat_completion("It is 9 degrees."))
    return JsonReply(chat_completion(tool_calls=[CALL]))


async def killed_after_the_tool(store: SQLiteStore, request_id: str) -> None:
    """What a worker killed right after its tool step committed leaves behind:
    a completed model call and a completed tool call, and no outcome."""
    await store.save_request(request_id, stored(BODY))
    first = await store.record_step(
        request_id, None, None, StepDescriptor.model_call({"model": "m", "messages": []})
    )
    await store.mark_step_processing(first.id)
    await store.complete_step(first.id, chat_completion(tool_calls=[CALL]))
    tool = StepDescriptor.tool_call("forecast", {"city": "Oslo"})
    tool = StepDescriptor(tool.kind, {**tool.request_payload, "call_id": "call_1"})
    second = await store.record_step(request_id, None, first.id, tool)
    await store.mark_step_processing(second.id)
    await store.complete_step(second.id, forecast("Oslo"))


def completed_at(path: Path, request_id: str) -> Any:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT completed_at FROM responses WHERE request_id = ?", (request_id,)
        ).fetchone()[0]


def service(store: SQLiteStore, upstream: ScriptedUpstream) -> Responses:
    return Responses(store, Toolbox(FunctionTools(forecast)), UpstreamTarget(upstream.endpoint))


async def test_resuming_a_finished_response_returns_it_untouched(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with ScriptedUpstream(model) as upstream:
        store = SQLiteStore(path)
        first = await service(store, upstream).create(BODY, request_id="r1")
        assert first["status"] == "completed"
        stamped = completed_at(path, "r1")
        calls = len(upstream.requests)
        again = await service(SQLiteStore(path), upstream).resume("r1")
    assert again == first
    assert len(upstream.requests) == calls
    assert completed_at(path, "r1") == stamped


async def test_the_loser_of_a_race_never_overwrites_the_winner(tmp_path: Path) -> None:
    """Worker B decides on the chain as it stood, then waits while worker A
    finishes the response; B's step is then A's completed step, the store refuses
    to run it again, and B must leave A's outcome as it is."""
    path = tmp_path / "race.db"
    a_finished = asyncio.Event()
    b_waiting = asyncio.Event()

    class HeldBack(SQLiteStore):
        async def record_steps(self, *args: Any) -> Any:
            b_waiting.set()
            await a_finished.wait()
            return await super().record_steps(*args)

    with ScriptedUpstream(model) as upstream:
        await killed_after_the_tool(SQLiteStore(path), "r1")
        loser = asyncio.ensure_future(service(HeldBack(path), upstream).resume("r1"))
        await asyncio.wait_for(b_waiting.wait(), 10)
        winner = await service(SQLiteStore(path), upstream).resume("r1")
        stamped = completed_at(path, "r1")
        a_finished.set()
        lost = await asyncio.wait_for(loser, 10)
    assert winner["status"] == "completed"
    assert winner["output"][-1]["content"][0]["text"] == "It is 9 degrees."
    # The loser reports the outcome that stands, and wrote nothing over it.
    assert lost == winner
    assert await SQLiteStore(path).outcome("r1") == ("completed", winner)
    assert completed_at(path, "r1") == stamped
    # Exactly one final model call ran.
    assert len(upstream.requests) == 1
