"""The event log's group commit: a served response's outcome is kept in the
commit that writes its terminal event (no statement of its own, no lease to
give up after it), its steps' completions in the commit of the events they
produced, and neither for a run whose lease was taken over; a response's
opening batch shares the commit of the batch after it while others run, and
is committed once its run's first step is recorded when it runs alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from stepwell import UpstreamTarget
from stepwell._core import yield_to_loop
from stepwell.errors import LeaseLost
from stepwell.openresponses import Responses
from stepwell.server import create_app
from stepwell.server import log as event_log
from stepwell.server.log import EventLog, LogHub
from stepwell.stores import IllegalTransition, MemoryStore, SQLiteStore
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
)
from stepwell.tools import HttpTools
from stepwell.types import StepDescriptor, StepState

COMPLETED = 'event: response.completed\ndata: {"sequence_number":1}\n\n'
CREATED = 'event: response.created\ndata: {"sequence_number":0}\n\n'
DELTA = 'event: response.output_text.delta\ndata: {"sequence_number":1,"delta":"hi"}\n\n'
KEPT = {"request": {"model": "m", "input": "hi"}, "created_at": 0}


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    # SQLite keeps outcomes in its sealing write; the memory store, which has
    # none, through `set_outcome` just before the events.
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "outcome.db")
    return MemoryStore()


async def test_an_outcome_waits_for_its_terminal_event_and_is_kept_with_it(store: Any) -> None:
    fence = await store.save_request("r", KEPT, lease=("here", 30.0))
    log = EventLog(store, LogHub())
    log.keep_outcome("r", "completed", {"status": "completed"}, fence)
    log.keep_outcome("r", "failed", {"status": "failed"}, fence)  # the first stands
    assert log.has_outcome("r")
    log.append("r", 0, CREATED, fence)
    await log.flush()
    assert await store.outcome("r") is None  # no terminal event written yet

    log.append("r", 1, COMPLETED, fence, streamed=False)
    await log.flush()
    assert await store.outcome("r") == ("completed", {"status": "completed"})
    assert await store.events_after("r", -1) == [CREATED, COMPLETED]
    assert await log.finish("r") is True
    assert not log.has_outcome("r")
    # Ended with its outcome: the response is nobody's to claim.
    assert await store.claim("r", "elsewhere", 30.0) is None
    assert await store.claimable() == []


async def test_an_outcome_without_a_terminal_event_is_kept_when_its_run_finishes(
    store: Any,
) -> None:
    fence = await store.save_request("r", KEPT, lease=("here", 30.0))
    log = EventLog(store, LogHub())
    log.keep_outcome("r", "failed", {"status": "failed"}, fence)
    assert await log.finish("r") is True
    assert await store.outcome("r") == ("failed", {"status": "failed"})


async def test_an_opening_batch_waits_to_share_the_commit_of_what_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its wait made long, so only the next batch can start the commit.
    monkeypatch.setattr(event_log, "OPENING_WAIT", 3600.0)
    store = SQLiteStore(tmp_path / "opening.db")
    fence = await store.save_request("r", KEPT, lease=("here", 30.0))
    hub = LogHub()
    hub.started("r")
    hub.started("another")  # running here too
    log = EventLog(store, hub)
    log.append("r", 0, CREATED, fence)
    for _ in range(3):
        await asyncio.sleep(0)  # turns of the loop in which a commit would start
    assert await store.events_after("r", -1) == []

    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    changed = hub.changed("r")
    log.append("r", 1, DELTA, fence)
    await changed.wait()  # set once the commit is kept
    store._db.set_trace_callback(None)
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert await store.events_after("r", -1) == [CREATED, DELTA]


async def test_an_opening_batch_committed_early_leaves_no_timer_to_commit_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "stale.db")
    hub = LogHub()
    hub.started("a")
    hub.started("b")
    log = EventLog(store, hub)
    monkeypatch.setattr(event_log, "OPENING_WAIT", 0.0)
    log.append("a", 0, CREATED)
    await log.flush()  # another commit takes it before its wait is over
    monkeypatch.setattr(event_log, "OPENING_WAIT", 3600.0)
    log.append("b", 0, CREATED)
    await asyncio.sleep(0.01)  # past the end of the first opening's wait
    # That wait's end commits nothing: the next response's opening still
    # waits for what follows it.
    assert await store.events_after("a", -1) == [CREATED]
    assert await store.events_after("b", -1) == []


async def test_the_opening_of_the_only_response_running_is_committed_without_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing would share its commit: it goes once the core's first stretch
    # of the run (the next turn's drain) is done, not after a wait.
    monkeypatch.setattr(event_log, "OPENING_WAIT", 3600.0)
    store = SQLiteStore(tmp_path / "alone.db")
    fence = await store.save_request("r", KEPT, lease=("here", 30.0))
    hub = LogHub()
    hub.started("r")
    log = EventLog(store, hub)
    changed = hub.changed("r")
    log.append("r", 0, CREATED, fence)
    await asyncio.sleep(0)  # the turn of the run's first stretch
    assert await store.events_after("r", -1) == []
    await asyncio.sleep(0)  # the commit's task runs (SQLite never suspends)
    assert changed.is_set()
    assert await store.events_after("r", -1) == [CREATED]


async def test_a_run_that_lost_its_lease_keeps_neither_outcome_nor_events(store: Any) -> None:
    # A lease that expired as it was taken: another process takes it over.
    fence = await store.save_request("r", KEPT, lease=("here", -1.0))
    taken = await store.claim("r", "elsewhere", 30.0)
    assert taken is not None and taken != fence
    log = EventLog(store, LogHub())
    log.keep_outcome("r", "completed", {"status": "completed"}, fence)
    log.append("r", 0, CREATED + COMPLETED, fence)
    await log.flush()
    assert await log.finish("r") is False
    assert await store.outcome("r") is None
    assert await store.events_after("r", -1) == []


async def test_sqlite_keeps_an_outcome_in_the_transaction_of_its_batches(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "outcome.db")
    mine = await store.save_request("mine", KEPT, lease=("here", 30.0))
    lost = await store.save_request("lost", KEPT, lease=("here", 30.0))
    assert mine is not None and lost is not None
    done = await store.save_request("done", KEPT)
    await store.set_outcome("done", "completed", {"first": True})
    refused, unmoved = await store.group_commit(
        [("mine", 0, COMPLETED), ("lost", 0, COMPLETED)],
        fences={"mine": mine, "lost": lost + 1},
        outcomes={
            "mine": ("completed", {"id": "mine"}),
            "lost": ("completed", {"id": "lost"}),
            "done": ("failed", {"first": False}),
        },
    )
    assert done is None and refused == ["lost"] and unmoved == []
    assert await store.outcome("mine") == ("completed", {"id": "mine"})
    assert await store.events_after("mine", -1) == [COMPLETED]
    assert await store.outcome("lost") is None
    assert await store.events_after("lost", -1) == []
    assert await store.outcome("done") == ("completed", {"first": True})


async def test_a_streams_first_delta_asks_for_a_commit_of_its_own_only_when_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    yields: list[bool] = []
    monkeypatch.setattr(
        event_log, "yield_to_loop", lambda past_readers: yields.append(past_readers)
    )
    store = SQLiteStore(tmp_path / "first.db")
    hub = LogHub()
    log = EventLog(store, hub)
    hub.started("a")
    alone = event_log.LogWriter(log, "a")
    alone(CREATED)
    alone(DELTA)
    alone(DELTA.replace(":1,", ":2,"))  # not the first delta: no pause
    # The only response running here: the core waits until its delta is sent.
    assert yields == [True]
    # Another stream's batches wait for the same commit: the pause would
    # only split it.
    hub.started("b")
    assert not log.only_queued("b")
    crowded = event_log.LogWriter(log, "b")
    crowded(DELTA.replace(":1,", ":0,"))
    assert yields == [True]
    await log.flush()
    assert log.only_queued("b")
    # Alone in the commit but not running alone: a pause of one turn.
    event_log.LogWriter(log, "c")(DELTA)
    assert yields == [True, False]


async def test_a_drain_stopped_past_readers_goes_on_once_the_commits_readers_ran() -> None:
    # A stream of several chunks answered at once: the core hands its frames
    # over in jobs run one after another, unless one asks to stop.
    order: list[str] = []
    committed = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def commit() -> None:  # the event log's commit: one step, which wakes its readers
        order.append("commit")
        committed.set()

    async def read() -> None:
        await committed.wait()
        order.append("reader")

    def on_frames(frames: str) -> None:
        order.append("frames")
        if ".delta\n" in frames and not tasks:
            tasks.append(asyncio.ensure_future(commit()))
            yield_to_loop(past_readers=True)

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)  # the reader waits for the commit
    pieces = [f"piece {n} " for n in range(200)]
    reply = StreamReply(text_chunks(pieces))
    with ScriptedUpstream(lambda request: reply) as upstream:
        responses = Responses(MemoryStore(), HttpTools([]), UpstreamTarget(upstream.endpoint))
        prepared = await responses.prepare({"model": "m", "input": "hi", "stream": True})
        await responses.drive(prepared, on_frames=on_frames)
    await reader
    first_delta = order.index("commit") - 1
    # The jobs left went on only after the commit and the reader it woke.
    assert order[first_delta:][:3] == ["frames", "commit", "reader"]
    assert order[first_delta + 3 :] and set(order[first_delta + 3 :]) == {"frames"}


async def test_sqlite_reads_the_leases_of_many_responses_at_once(tmp_path: Path) -> None:
    # More responses than one statement reads, and counts that are not
    # powers of two: every stale lease is refused, every held one kept.
    store = SQLiteStore(tmp_path / "leases.db")
    fences = {}
    for n in range(300):
        fence = await store.save_request(f"r{n}", KEPT, lease=("here", 30.0))
        assert fence is not None
        fences[f"r{n}"] = fence if n % 7 else fence + 1
    stale = sorted(r for r in fences if int(r[1:]) % 7 == 0)
    for sequence, some in enumerate((dict(list(fences.items())[:3]), fences)):
        frames = DELTA if sequence else CREATED
        refused, _ = await store.group_commit([(r, sequence, frames) for r in some], fences=some)
        assert sorted(refused) == [r for r in stale if r in some]
    assert await store.events_after("r1", -1) == [CREATED, DELTA]
    assert await store.events_after("r0", -1) == []


async def test_a_step_completes_in_the_commit_of_its_events(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "steps.db")
    fence = await store.save_request("r", KEPT, lease=("here", 30.0))
    assert fence is not None
    call = StepDescriptor.model_call({"messages": []})
    [step] = await store.record_steps("r", None, None, [call], fence=fence)
    log = EventLog(store, LogHub())
    assert log.completes_steps
    log.append("r", 0, CREATED, fence)
    done = log.complete_step(step.id, {"choices": []}, fence)
    assert not done.done()
    await log.flush()
    assert done.done() and done.exception() is None
    kept = await store.step(step.id)
    assert kept.state is StepState.COMPLETED and kept.response_payload == {"choices": []}
    assert await store.events_after("r", -1) == [CREATED]

    # Completed already: the commit moves nothing and the run is told why.
    again = log.complete_step(step.id, {"choices": []}, fence)
    await log.flush()
    with pytest.raises(IllegalTransition):
        again.result()


async def test_a_step_of_a_run_that_lost_its_lease_is_not_completed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "steps.db")
    fence = await store.save_request("r", KEPT, lease=("here", -1.0))
    assert fence is not None
    [step] = await store.record_steps(
        "r", None, None, [StepDescriptor.model_call({"messages": []})], fence=fence
    )
    assert await store.claim("r", "elsewhere", 30.0) is not None
    log = EventLog(store, LogHub())
    done = log.complete_step(step.id, {"choices": []}, fence)
    await log.flush()
    with pytest.raises(LeaseLost):
        done.result()
    assert (await store.step(step.id)).state is StepState.PROCESSING


def answer(request: UpstreamRequest) -> JsonReply:
    return JsonReply(chat_completion("kept with its event"))


async def test_a_served_response_ends_in_one_commit_of_outcome_and_terminal_event(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "serve.db")
    statements: list[str] = []
    with ScriptedUpstream(answer) as upstream:
        responses = Responses(store, HttpTools([]), UpstreamTarget(upstream.endpoint))
        app = create_app(responses)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                store._db.set_trace_callback(statements.append)
                reply = await http.post("/v1/responses", json={"model": "m", "input": "hi"})
                store._db.set_trace_callback(None)
    assert reply.status_code == 200
    assert reply.json()["status"] == "completed"
    assert reply.json()["output"][0]["content"][0]["text"] == "kept with its event"
    ending = [n for n, s in enumerate(statements) if s.startswith("UPDATE responses SET status")]
    assert len(ending) == 1
    # Its transaction: the fence read, the outcome, the terminal event.
    begin = max(n for n in range(ending[0]) if statements[n] == "BEGIN IMMEDIATE")
    commit = statements.index("COMMIT", ending[0])
    inside = statements[begin:commit]
    assert any("response.completed" in s for s in inside if s.startswith("INSERT INTO events"))
    # Nothing after it: the lease ended with the outcome, nothing is read back.
    assert statements[commit + 1 :] == []
    assert await store.outcome(reply.json()["id"].removeprefix("resp_")) is not None


async def test_the_only_streams_opening_is_committed_after_its_model_call_is_sent(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "opening.db")
    statements: list[str] = []
    reply = StreamReply(text_chunks(["Hello", " there"]))
    with ScriptedUpstream(lambda request: reply) as upstream:
        responses = Responses(store, HttpTools([]), UpstreamTarget(upstream.endpoint))
        app = create_app(responses)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                store._db.set_trace_callback(statements.append)
                body = {"model": "m", "input": "hi", "stream": True}
                streamed = await http.post("/v1/responses", json=body)
                store._db.set_trace_callback(None)
    assert streamed.status_code == 200 and "Hello there" in streamed.text.replace('"', "")
    events = [n for n, s in enumerate(statements) if s.startswith("INSERT INTO events")]
    step = next(n for n, s in enumerate(statements) if s.startswith("INSERT INTO steps"))
    # The opening waits for the step (the model asked), then goes alone: the
    # first delta has a commit of its own.
    assert step < events[0]
    assert "response.created" in statements[events[0]]
    assert ".delta" not in statements[events[0]]
    assert ".delta" in statements[events[1]]
