"""What only PostgreSQL has to survive: sessions of processes that froze while
they held rows locked, and a server restarted under a listening process."""

from __future__ import annotations

import asyncio
import struct
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from stepwell.stores.postgres import PostgresStore, StoreUnavailable
from stepwell.types import StepDescriptor, StepState

from . import pg


async def test_a_writer_frozen_mid_message_does_not_keep_its_rows_forever(
    postgres_url: str,
) -> None:
    """A process stopped while it sends a statement inside a fenced write
    leaves its session waiting for the rest of the message, its row locks
    held: the server's own timeouts never end a session that waits for input
    inside a transaction before the message is whole. Another process's sweep
    ends that session once its transaction is older than the stalled
    timeout, and takes the lease."""
    store = PostgresStore(postgres_url, stalled_transaction_timeout=1.0)
    try:
        await store.save_request("r1", {"request": {"model": "m", "input": "hi"}})
        fence = await store.claim("r1", "frozen", 0.2)
        assert fence is not None
        stuck = await FrozenWriter.open(postgres_url, "r1")
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            claimable = await store.claimable()
            token = await store.claim("r1", "taker", 5) if "r1" in claimable else None
            if token is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, "the row stayed locked"
            await asyncio.sleep(0.1)
        assert token == fence + 1
        stuck.close()
    finally:
        await store.close()


async def test_readers_are_woken_again_after_a_restart() -> None:
    """The listening connection that wakes readers is opened again when the
    server restarts: a log written after the restart wakes them."""
    cluster = pg.Cluster()
    try:
        url = pg.new_database(cluster.url)
        watcher, writer = PostgresStore(url), PostgresStore(url)
        heard: list[str] = []
        woken = asyncio.Event()

        def on_change(request_id: str) -> None:
            heard.append(request_id)
            woken.set()

        try:
            await watcher.watch(on_change)
            await writer.append_events("before", 0, "data: {}\n\n")
            await asyncio.wait_for(woken.wait(), 10)
            assert heard == ["before"]
            woken.clear()
            await asyncio.to_thread(cluster.restart)
            # Logs written until one wakes the watcher: its listener is back.
            deadline = asyncio.get_running_loop().time() + 30
            n = 0
            while not woken.is_set():
                assert asyncio.get_running_loop().time() < deadline, "nobody was woken"
                try:
                    await writer.append_events(f"after-{n}", 0, "data: {}\n\n")
                except StoreUnavailable:
                    pass  # the writer's own connections broke with the restart
                n += 1
                try:
                    await asyncio.wait_for(woken.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
            assert heard[1].startswith("after-")
        finally:
            await watcher.close()
            await writer.close()
    finally:
        cluster.stop()


class FrozenWriter:
    """A session as a store opens them (the server's timeouts set), left as a
    process stopped mid-write leaves it: inside a transaction that locked a
    response's row, a statement sent without the Sync that would end it. It
    speaks the wire protocol itself, so no driver reads what the server sends
    back or notices anything amiss."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    @classmethod
    async def open(cls, url: str, request_id: str) -> FrozenWriter:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        settings = {
            "user": parts.username or "",
            "database": parts.path.lstrip("/"),
            "application_name": "stepwell",
            "idle_in_transaction_session_timeout": "1000",
            "statement_timeout": "1000",
        }
        body = struct.pack("!i", 196608) + b"".join(
            k.encode() + b"\0" + v.encode() + b"\0" for k, v in settings.items()
        )
        writer.write(struct.pack("!i", len(body) + 5) + body + b"\0")
        await _until_ready(reader)
        query = (
            f"BEGIN; SELECT lease_token FROM responses WHERE request_id = '{request_id}' FOR SHARE"
        )
        writer.write(_message(b"Q", query.encode() + b"\0"))
        await _until_ready(reader)
        # Parse, Bind, Execute: a whole statement, run; the Sync never comes.
        writer.write(
            _message(b"P", b"\0SELECT 1\0" + struct.pack("!h", 0))
            + _message(b"B", b"\0\0" + struct.pack("!hhh", 0, 0, 0))
            + _message(b"E", b"\0" + struct.pack("!i", 0))
        )
        await writer.drain()
        return cls(writer)

    def close(self) -> None:
        self.writer.close()


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


async def _until_ready(reader: asyncio.StreamReader) -> None:
    """Reads the server's messages up to ReadyForQuery; an error is raised."""
    while True:
        kind = await reader.readexactly(1)
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        body = await reader.readexactly(length - 4)
        assert kind != b"E", body
        if kind == b"Z":
            return


async def test_one_step_is_recorded_in_one_statement_without_a_transaction(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of one step is one statement, atomic by itself: no BEGIN and
    COMMIT, two round trips of three. A link recorded before still moves its
    step on in a transaction, under the lease."""
    transactions: list[object] = []
    opened = asyncpg.Connection.transaction

    def counted(self: asyncpg.Connection, **options: Any) -> Any:
        transactions.append(self)
        return opened(self, **options)

    monkeypatch.setattr(asyncpg.Connection, "transaction", counted)
    store = PostgresStore(postgres_url)
    try:
        fence = await store.save_request("r", {"request": {"model": "m"}}, lease=("here", 30.0))
        transactions.clear()  # the store's first use migrates the database in one
        [step] = await store.record_steps(
            "r", None, None, [StepDescriptor.tool_call("t", {})], fence=fence
        )
        assert transactions == []
        assert [s.state for s in await store.list_chain("r", None)] == [StepState.PROCESSING]
        pending = await store.record_step("r", None, step.id, StepDescriptor.tool_call("u", {}))
        [again] = await store.record_steps(
            "r", None, step.id, [StepDescriptor.tool_call("u", {})], fence=fence
        )
        assert again.id == pending.id and len(transactions) == 1
        assert (await store.step(pending.id)).state is StepState.PROCESSING
    finally:
        await store.close()


async def test_a_step_is_recorded_into_only_the_indexes_its_reads_use(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        await store.record_step("r", None, None, StepDescriptor.tool_call("t", {}))
        connection = await asyncpg.connect(postgres_url)
        try:
            indexes = {
                row[0]
                for row in await connection.fetch(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'steps'"
                )
            }
        finally:
            await connection.close()
        # The one by scope is gone (a scope's chain is matched by value, which
        # it never served); the chain's unique link and (request_id, sequence)
        # stay.
        assert "steps_scope" not in indexes
        assert {"steps_chain_link", "steps_request_id_sequence_key"} <= indexes
        assert [s.request_payload for s in await store.list_chain("r", None)] == [
            {"name": "t", "args": {}}
        ]
    finally:
        await store.close()
