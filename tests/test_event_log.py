"""The event log of `stepwell serve`: a finished response's log is sealed (kept
compactly, replayed byte for byte), readers far behind take it a window at a
time, the hub keeps only a tail of a running response, and a log pruned after
its replay window still ends a stream with the response."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stepwell._core import SEALED_LOG, LogSealer, unseal_log
from stepwell.server.log import (
    PIECE_CHARS,
    READ_WINDOW,
    TAIL_CHARS,
    EventLog,
    LogHub,
    follow,
    joined,
)
from stepwell.server.routes import SEND_CHARS, send_pieces
from stepwell.server.serve import load_settings, replay_window
from stepwell.stores import MemoryStore, SQLiteStore
from stepwell.stores._events import sealed
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
)

from .test_server import Server, events_of

PIECES = [f'piece {n} "quoted" é\n' for n in range(300)]


BURST = [f"b{n} " for n in range(6000)]


def model(request: UpstreamRequest) -> StreamReply | JsonReply:
    if "burst" in str(request.body["messages"][-1].get("content")):
        return StreamReply(text_chunks(BURST))
    if request.body.get("stream"):
        return StreamReply(text_chunks(PIECES))
    return JsonReply(chat_completion("".join(PIECES)))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    with ScriptedUpstream(model) as upstream:
        running = Server(upstream.endpoint, tmp_path / "serve.db")
        yield running, tmp_path / "serve.db"
        running.stop()


def _log_rows(db: Path, request_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT frames FROM events WHERE request_id = ? ORDER BY first_sequence",
            (request_id,),
        ).fetchall()
    return [row[0] for row in rows]


async def test_a_finished_log_is_sealed_and_replays_byte_for_byte(
    server: tuple[Server, Path],
) -> None:
    running, db = server
    async with httpx.AsyncClient(base_url=running.url) as http:
        live = await http.post("/v1/responses", json={"model": "m", "input": "q", "stream": True})
        events = events_of(live.text)
        response_id = events[0]["response"]["id"]
        request_id = response_id.removeprefix("resp_")
        # Sealed before the client got the terminal event: one compact row.
        rows = _log_rows(db, request_id)
        assert len(rows) == 1 and rows[0].startswith(SEALED_LOG)
        sent = live.text.removesuffix("data: [DONE]\n\n")
        deltas = sum(len(e["delta"]) for e in events if e["type"].endswith(".delta"))
        assert len(rows[0].encode()) < len(sent.encode()) / 3
        assert len(rows[0]) < deltas * 1.2 + 2 * len(events) + 4096
        for cursor in (-1, 0, 7, len(events) - 2):
            replay = await http.get(
                f"/v1/responses/{response_id}",
                params={"stream": "true", "starting_after": cursor},
            )
            frames = sent.split("\n\n")[cursor + 1 : -1]
            assert replay.text == "".join(f + "\n\n" for f in frames) + "data: [DONE]\n\n"


async def test_a_burst_of_deltas_reaches_the_log_whole(server: tuple[Server, Path]) -> None:
    # Faster than the server frames them: they wait for it, none is dropped.
    running, _ = server
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
        live = await http.post(
            "/v1/responses", json={"model": "m", "input": "burst", "stream": True}
        )
    events = events_of(live.text)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert (
        "".join(deltas)
        == "".join(BURST)
        == events[-1]["response"]["output"][0]["content"][0]["text"]
    )


async def test_a_pruned_log_streams_the_terminal_event_alone(
    server: tuple[Server, Path],
) -> None:
    running, db = server
    async with httpx.AsyncClient(base_url=running.url) as http:
        created = await http.post("/v1/responses", json={"model": "m", "input": "q"})
        response = created.json()
        with sqlite3.connect(db) as connection:  # what the replay window's pruning does
            connection.execute("DELETE FROM events")
        replay = await http.get(f"/v1/responses/{response['id']}", params={"stream": "true"})
    [terminal] = events_of(replay.text)
    assert terminal["type"] == "response.completed"
    assert terminal["sequence_number"] == 0
    assert terminal["response"] == response


async def test_a_reader_behind_the_tail_reads_the_store_a_window_at_a_time() -> None:
    store = MemoryStore()
    hub = LogHub()
    log = EventLog(store, hub)
    frames = [
        f'event: e\ndata: {{"sequence_number":{n},"pad":"{"x" * 90}"}}\n\n' for n in range(3000)
    ]
    for first in range(0, len(frames), 10):
        log.append("r", first, "".join(frames[first : first + 10]))
        await log.flush()
    # The hub holds a tail of the running response, not its whole log.
    held = hub.text_after("r", len(frames) - 2)
    assert held is not None and held[1] == 1
    assert hub.text_after("r", -1) is None
    assert sum(len(b[2]) for b in hub._recent["r"]) <= TAIL_CHARS + len("".join(frames[:10]))

    log.append("r", len(frames), "event: response.completed\ndata: {}\n\n")
    await log.flush()
    hub.ended("r")
    reads: list[int] = []
    read = store.events_after

    async def counted(request_id: str, after: int, *, limit: int | None = None) -> list[str]:
        found = await read(request_id, after, limit=limit)
        reads.append(len(found))
        return found

    store.events_after = counted  # type: ignore[method-assign]
    chunks = [
        chunk
        async for chunk in follow(store, hub, "r", -1, local=lambda: False, ended=lambda: True)
    ]
    assert "".join(chunks) == "".join(frames) + "event: response.completed\ndata: {}\n\n"
    assert max(reads) == READ_WINDOW
    # What a window holds is handed on in pieces, not joined whole.
    assert max(len(chunk) for chunk in chunks) <= PIECE_CHARS
    store.events_after = read  # type: ignore[method-assign]
    # The log was sealed when its terminal event was written.
    assert (await store.events_after("r", -1, limit=1)) == frames[:1]
    assert store._events["r"][0][1].startswith(SEALED_LOG)


async def test_the_readers_a_commit_wakes_find_all_it_wrote_in_memory() -> None:
    store = MemoryStore()
    hub = LogHub()
    log = EventLog(store, hub)
    frame = 'event: e\ndata: {{"sequence_number":{n},"pad":"%s"}}\n\n' % ("x" * 1000)
    log.append("r", 0, frame.format(n=0))
    await log.flush()
    # One commit writes far more than the tail holds, in several batches.
    for first in range(1, 301, 30):
        log.append("r", first, "".join(frame.format(n=n) for n in range(first, first + 30)))
    await log.flush()
    held = hub.text_after("r", 0)
    assert held is not None and held[1] == 300  # none of it is left to the store
    assert hub.text_after("r", -1) is None  # what an earlier commit wrote may be
    # The next commit's tail is bounded again.
    log.append("r", 301, frame.format(n=301))
    await log.flush()
    assert sum(len(b[2]) for b in hub._recent["r"]) <= TAIL_CHARS + len(frame)


async def test_a_reader_of_a_run_here_that_logged_nothing_waits_without_reading_the_store() -> None:
    class Unread(MemoryStore):
        async def events_after(self, *args: object, **kwargs: object) -> list[str]:
            raise AssertionError("the store was read for a log that is still empty")

    store, hub = Unread(), LogHub()
    log = EventLog(store, hub)
    # A run taken over here after three frames logged elsewhere.
    hub.started("r", 3)
    assert hub.text_after("r", 2) == ("", 0)
    # Frames before the run's first are in the store, not here.
    assert hub.text_after("r", 0) is None
    reader = follow(store, hub, "r", 2, local=lambda: True, ended=lambda: False)

    async def run_logs_its_end() -> None:
        log.append("r", 3, "event: response.completed\ndata: {}\n\n")
        await log.flush()

    # Tasks start in order: the reader looks first, finds nothing, and waits.
    first, _ = await asyncio.gather(reader.__anext__(), run_logs_its_end())
    assert first == "event: response.completed\ndata: {}\n\n"


def test_logs_of_every_shape_seal_and_render_back_byte_for_byte() -> None:
    created = 'event: response.created\ndata: {"sequence_number":0,"pad":"%s"}\n\n' % ("x" * 1500)
    deltas = "".join(
        f'event: response.output_text.delta\ndata: {{"sequence_number":{n},"delta":"é{n} "}}\n\n'
        for n in range(1, 40)
    )
    text = "".join(f"é{n} " for n in range(1, 40))
    done = f'event: response.output_text.done\ndata: {{"sequence_number":40,"text":"{text}"}}\n\n'
    # A log without deltas, one with, and one sealed a batch at a time.
    for batches in ([created, created.replace(":0,", ":1,")], [created, deltas, done]):
        whole = "".join(batches)
        row = sealed((0, batch) for batch in [whole])
        assert row is not None and row[2].startswith(SEALED_LOG)
        assert "".join(unseal_log(row[2], 0, -1)) == whole
        sealer = LogSealer(0)
        assert sum(sealer.push(batch) for batch in batches) == whole.count("\n\n")
        assert sealer.finish() == row[2]


async def test_a_reader_behind_when_the_run_ends_finishes_from_memory() -> None:
    class Counting(MemoryStore):
        reads = 0

        async def events_after(self, *args: Any, **kwargs: Any) -> list[str]:
            self.reads += 1
            return await super().events_after(*args, **kwargs)

    store, hub = Counting(), LogHub()
    log = EventLog(store, hub)
    running = {"r"}
    hub.started("r")
    reader = follow(store, hub, "r", -1, local=lambda: "r" in running, ended=lambda: False)
    log.append("r", 0, "event: response.created\ndata: {}\n\n")
    await log.flush()
    assert await reader.__anext__() == "event: response.created\ndata: {}\n\n"
    # The run ends while the reader is busy elsewhere: it was behind by the end.
    log.append("r", 1, "event: response.completed\ndata: {}\n\n")
    await log.flush()
    running.clear()
    hub.ended("r")
    assert [chunk async for chunk in reader] == ["event: response.completed\ndata: {}\n\n"]
    assert store.reads == 0
    # A replay that starts now reads the store.
    replay = follow(store, hub, "r", -1, local=lambda: False, ended=lambda: False)
    assert len([chunk async for chunk in replay]) == 1
    assert store.reads == 1


async def test_sqlite_seals_a_log_in_the_write_that_ends_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    delta = 'event: response.output_text.delta\ndata: {{"sequence_number":{},"delta":"d{}"}}\n\n'
    first = "".join(delta.format(n, n) for n in range(3))
    end = 'event: response.completed\ndata: {"sequence_number":3}\n\n'
    odd = 'event: response.completed\ndata: {"sequence_number":3,"x":"\x1c"}\n\n'
    await store.append_events_many([("a", 0, first), ("b", 0, first), ("c", 0, first)])
    refused, _ = await store.group_commit(
        [("a", 3, end), ("b", 3, delta.format(3, 3)), ("c", 3, odd)], ended=["a", "c"]
    )
    assert refused == []
    # The ended log is one sealed row. The running one is its batches, each
    # sealed on its own (they hold deltas); the one holding what a sealed log
    # cannot keeps that batch as it came.
    assert [row[:1] for row in _log_rows(tmp_path / "log.db", "a")] == [SEALED_LOG]
    running = _log_rows(tmp_path / "log.db", "b")
    assert [row[:1] for row in running] == [SEALED_LOG, SEALED_LOG]
    assert sum(map(len, running)) < len(first + delta.format(3, 3))
    assert _log_rows(tmp_path / "log.db", "c")[1:] == [odd]
    for request_id, last in (("a", end), ("b", delta.format(3, 3)), ("c", odd)):
        assert "".join(await store.events_after(request_id, -1)) == first + last
    assert await store.events_after("b", 1, limit=2) == [delta.format(2, 2), delta.format(3, 3)]


def test_the_replay_window_is_a_duration_or_forever() -> None:
    def settings(value: str) -> object:
        flags = {"upstream": "http://127.0.0.1:1/v1", "no_auth": True, "replay_window": value}
        return load_settings(flags, {}, None)

    assert replay_window(settings("90s")) == 90.0  # type: ignore[arg-type]
    assert replay_window(settings("forever")) is None  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="duration"):
        settings("soon")


def test_long_frames_are_handed_on_in_pieces_that_join_back_whole() -> None:
    short = [f'event: e\ndata: {{"n":{n}}}\n\n' for n in range(5000)]
    long = 'event: response.completed\ndata: {"text":"' + "x" * (3 * SEND_CHARS) + '"}\n\n'
    frames = [*short[:100], long, *short[100:]]
    pieces = joined(frames)
    assert "".join(pieces) == "".join(frames)
    assert long in pieces  # longer than a piece: a piece of its own
    assert all(len(p) <= PIECE_CHARS for p in pieces if p != long)
    assert all(p.endswith("\n\n") for p in pieces)

    batch = "".join(frames)
    sent = list(send_pieces(batch))
    assert "".join(sent) == batch
    assert all(len(p) <= SEND_CHARS for p in sent)
    # Cut after a frame wherever one ends within a piece: only the long frame is cut inside.
    inside = [p for p in sent if not p.endswith("\n\n")]
    assert [len(p) for p in inside] == [SEND_CHARS] * 3
    assert "".join(inside) == long[: 3 * SEND_CHARS]
    assert list(send_pieces(short[0])) == [short[0]]
