"""``PostgresStore``: one store for any number of processes on any number of
hosts, on the PostgreSQL they already operate (through asyncpg).

The same contract as ``SQLiteStore``, with what many writers need:

- Every state change is one statement (a deletion, one transaction). A
  step's sequence is the response's last plus one, and the unique chain link
  ``(request_id, scope_parent, prev_step_id, kind)`` makes a re-run
  transition find the step it already recorded; a recorder that loses a race
  for either runs its statement again.
- Leases: a claim is one statement over ``FOR UPDATE SKIP LOCKED``, so two
  processes sweeping at once never wait on each other; the fencing token is
  checked in the statement of every fenced write. Lease times are the
  database's clock, never a host's.
- Wake-ups: a group commit of the event log sends one ``NOTIFY`` (naming every
  response it wrote) from the statement that writes it, and `watch` listens, so
  readers in every process wake when a log grows without polling it.
- The schema is versioned (`MIGRATIONS`); it is brought up to date on first
  use and by ``stepwell db upgrade``, under an advisory lock so concurrent
  starts apply each migration once.
- A lost connection or a restarted server is survived: the pool connects
  again, a call that could not get a connection waits for one for
  ``reconnect_timeout`` seconds, and a call cut off mid-statement raises
  ``StoreUnavailable`` (its transaction rolled back: nothing half-written).
- A fenced write locks its response's row until it commits, so no claim slips
  between the check and the write; a process that freezes inside such a
  transaction has its session ended after ``stalled_transaction_timeout``
  seconds (by the server's timeouts, or by another process's sweep where
  those do not reach), and its rows are claimable again.

It needs the ``postgres`` extra (``pip install stepwell[postgres]``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ..errors import LeaseLost, StepwellError
from ..types import (
    JSON,
    ChainStep,
    NextAction,
    RecordedStep,
    StepDescriptor,
    StepKind,
    StepState,
)
from ._events import (
    Sealing,
    count_frames,
    event_rows,
    frames_after,
    last_wanted,
    stored_rows,
)
from ._transition import (
    STEP_COLUMNS,
    Decide,
    IllegalTransition,
    check_move,
    decide_next,
    previous_of,
    sources,
    step_from_row,
    stored_response,
)

CHANNEL = "stepwell_events"
"""The channel a group commit of the event log notifies, with the ids of the
responses it wrote, comma-separated."""

MIGRATIONS: list[str] = [
    # 1: responses, steps, idempotency keys and the event log, with leases.
    """
    CREATE TABLE responses (
        request_id       TEXT PRIMARY KEY,
        tenant           TEXT NOT NULL DEFAULT '',
        request          TEXT NOT NULL,
        status           TEXT NOT NULL DEFAULT 'in_progress',
        output           TEXT,
        created_at       DOUBLE PRECISION NOT NULL,
        completed_at     DOUBLE PRECISION,
        lease_owner      TEXT,
        lease_token      BIGINT NOT NULL DEFAULT 0,
        lease_expires    TIMESTAMPTZ,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        previous_id      TEXT
    );
    CREATE INDEX responses_previous ON responses (previous_id) WHERE previous_id IS NOT NULL;
    CREATE INDEX responses_ended ON responses (completed_at) WHERE output IS NOT NULL;
    CREATE INDEX responses_unfinished ON responses (created_at) WHERE output IS NULL;
    CREATE INDEX responses_lease_owner ON responses (lease_owner) WHERE output IS NULL;
    CREATE TABLE steps (
        id               TEXT PRIMARY KEY,
        request_id       TEXT NOT NULL,
        scope_parent     TEXT,
        prev_step_id     TEXT,
        kind             TEXT NOT NULL,
        state            TEXT NOT NULL,
        sequence         INTEGER NOT NULL,
        request_payload  TEXT NOT NULL,
        response_payload TEXT,
        error            TEXT,
        sub_request_id   TEXT,
        created_at       DOUBLE PRECISION NOT NULL,
        updated_at       DOUBLE PRECISION,
        UNIQUE (request_id, sequence)
    );
    CREATE UNIQUE INDEX steps_chain_link ON steps (
        request_id, coalesce(scope_parent, ''), coalesce(prev_step_id, ''), kind
    );
    CREATE INDEX steps_scope ON steps (request_id, scope_parent, sequence);
    CREATE TABLE idempotency_keys (
        tenant     TEXT NOT NULL,
        key        TEXT NOT NULL,
        request_id TEXT NOT NULL,
        PRIMARY KEY (tenant, key)
    );
    CREATE INDEX idempotency_keys_response ON idempotency_keys (request_id);
    CREATE TABLE events (
        request_id     TEXT NOT NULL,
        first_sequence INTEGER NOT NULL,
        last_sequence  INTEGER NOT NULL,
        frames         TEXT NOT NULL,
        PRIMARY KEY (request_id, first_sequence)
    );
    """,
    # 2: conversations and their items, in the order added.
    """
    CREATE TABLE conversations (
        id         TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL DEFAULT '',
        metadata   TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE conversation_items (
        position        BIGSERIAL PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        item_id         TEXT NOT NULL,
        item            TEXT NOT NULL,
        UNIQUE (conversation_id, item_id)
    );
    """,
    # 3: a scope's chain is read through (request_id, sequence); the scope is
    # matched by value, which this index never served, and every step
    # recorded wrote to it.
    "DROP INDEX IF EXISTS steps_scope;",
]

# Errors that mean the connection, not the statement, failed.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # A connection whose call was cut short is left in a state it cannot leave.
    asyncpg.InternalClientError,
)
APPLICATION_NAME = "stepwell"
"""The ``application_name`` of the store's sessions: the stalled ones among
them are the ones a sweep may end."""
_MIGRATION_LOCK = 0x5773_7465  # an advisory lock id of stepwell's own


# A fenced write is one statement (sent with its Sync in one message group),
# its response's row locked only while it runs: a process that stops between
# two statements of a transaction would keep the row locked until its session
# ended. The lock makes a concurrent claim skip the row until the write
# commits, and a claim committed first makes the write see the new token.

_APPEND_EVENTS = """
WITH fence AS (
    SELECT * FROM unnest($5::TEXT[], $6::BIGINT[]) AS f(request_id, token)
), held AS (
    SELECT r.request_id FROM responses r JOIN fence f ON f.request_id = r.request_id
    WHERE r.lease_token = f.token ORDER BY r.request_id FOR SHARE OF r
), kept AS (
    INSERT INTO events (request_id, first_sequence, last_sequence, frames)
    SELECT e.* FROM unnest($1::TEXT[], $2::INTEGER[], $3::INTEGER[], $4::TEXT[])
        AS e(request_id, first_sequence, last_sequence, frames)
    WHERE e.request_id NOT IN (SELECT request_id FROM fence)
       OR e.request_id IN (SELECT request_id FROM held)
    RETURNING request_id
), written AS (
    SELECT DISTINCT request_id FROM kept
), notified AS (
    -- As few NOTIFYs as fit the ids: a payload stops at 8000 bytes.
    SELECT pg_notify($7, string_agg(request_id, ',')) FROM (
        SELECT request_id,
            (sum(octet_length(request_id) + 1) OVER (ORDER BY request_id) - 1) / 7000 AS part
        FROM written
    ) numbered GROUP BY part
)
SELECT ARRAY(SELECT request_id FROM fence WHERE request_id NOT IN (SELECT request_id FROM held))
WHERE (SELECT count(*) FROM notified) >= 0
"""
"""Appends event batches, those of a fenced response only while its lease has
the token; notifies the responses written; returns the fenced ones refused."""

_RECORD_STEP = """
WITH lease AS (
    SELECT lease_token FROM responses WHERE $9::BIGINT IS NOT NULL AND request_id = $2
    FOR SHARE
), allowed AS (
    SELECT $9::BIGINT IS NULL OR coalesce((SELECT lease_token FROM lease), -1) = $9 AS ok
), existing AS (
    SELECT id, sequence, sub_request_id, state FROM steps WHERE request_id = $2
        AND coalesce(scope_parent, '') = coalesce($3, '')
        AND coalesce(prev_step_id, '') = coalesce($4, '') AND kind = $5
), inserted AS (
    INSERT INTO steps (id, request_id, scope_parent, prev_step_id, kind, state, sequence,
                       request_payload, sub_request_id, created_at)
    SELECT $1, $2, $3, $4, $5, $10, coalesce(max(sequence), 0) + 1, $6, $7, $8
    FROM steps WHERE request_id = $2
    HAVING (SELECT ok FROM allowed) AND NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT DO NOTHING
    RETURNING id, sequence, sub_request_id, NULL::TEXT
)
SELECT allowed.ok, found.* FROM allowed LEFT JOIN (
    SELECT * FROM inserted UNION ALL SELECT * FROM existing
) found ON allowed.ok
"""
"""Records a step in state $10 once per chain link, numbered after the
response's last one; with a fence ($9), only while the lease has that token.
Answers whether the fence held, and the step with, when the link already held
it, its state (no step when a concurrent recorder took its sequence or link
first: the statement is run again)."""
_RECORD_ATTEMPTS = 50

_MOVE_STEP = """
WITH lease AS (
    SELECT r.lease_token FROM steps s JOIN responses r ON r.request_id = s.request_id
    WHERE $5::BIGINT IS NOT NULL AND s.id = $3 FOR SHARE OF r
)
UPDATE steps SET state = $1, updated_at = $2{sets}
WHERE id = $3 AND state = ANY($4::TEXT[])
  AND ($5::BIGINT IS NULL OR coalesce((SELECT lease_token FROM lease), $5) = $5)
RETURNING 1
"""
"""Moves a step from one of the allowed states; with a fence ($5), only while
its response's lease has that token (a step of no kept response has none)."""


class StoreUnavailable(StepwellError):
    """PostgreSQL could not be reached, or the connection broke mid-call; what
    the call was writing was rolled back."""


class PostgresStore:
    """A ``ResponseStore`` on PostgreSQL at ``url``; ``decide`` is the transition.

    The pool (``min_size`` to ``max_size`` connections) opens on first use, on
    the event loop that uses it; `close` closes it.
    """

    notifies = True
    """Readers need not poll: `watch` wakes them when a log grows."""

    def __init__(
        self,
        url: str,
        decide: Decide | None = None,
        *,
        min_size: int = 0,
        max_size: int = 10,
        reconnect_timeout: float = 10.0,
        stalled_transaction_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.decide = decide
        self.min_size = min_size
        self.max_size = max_size
        self.reconnect_timeout = reconnect_timeout
        self.stalled_transaction_timeout = stalled_transaction_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._on_change: Callable[[str], None] | None = None
        self._relisten: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        # The URL may hold a password: never shown.
        return f"PostgresStore(host={_host(self.url)!r})"

    # ------------------------------------------------------------ connections

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                try:
                    await upgrade(self.url)
                    # A statement or transaction left open that long belongs
                    # to a process that froze mid-write (its statements are
                    # milliseconds long): the server ends it, releasing the
                    # rows it locked, so another process can take its leases.
                    stalled = str(int(self.stalled_transaction_timeout * 1000))
                    self._pool = await asyncpg.create_pool(
                        self.url,
                        min_size=self.min_size,
                        max_size=self.max_size,
                        reset=_keep_session,
                        server_settings={
                            "application_name": APPLICATION_NAME,
                            "idle_in_transaction_session_timeout": stalled,
                            "statement_timeout": stalled,
                        },
                    )
                except _CONNECTION_ERRORS as error:
                    raise StoreUnavailable(_unreachable(self.url, error)) from error
            return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; while the server cannot be reached (a restart),
        waits up to ``reconnect_timeout`` seconds for one. A connection that
        breaks mid-call raises ``StoreUnavailable``, and every pooled
        connection is replaced before its next use (they died together)."""
        pool = self._pool or await self._open()
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                connection = await pool.acquire()
                break
            except _CONNECTION_ERRORS as error:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(_unreachable(self.url, error)) from error
                await asyncio.sleep(0.2)
        try:
            yield connection
        except _CONNECTION_ERRORS as error:
            await pool.expire_connections()
            raise StoreUnavailable(
                f"the connection to PostgreSQL at {_host(self.url)} broke during the call"
            ) from error
        finally:
            await pool.release(connection)

    async def close(self) -> None:
        """Closes the pool and the listening connection."""
        self._on_change = None
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def watch(self, on_change: Callable[[str], None]) -> None:
        """Calls ``on_change(request_id)`` whenever a response's event log grows,
        whichever process wrote it (``LISTEN``). A listening connection that
        breaks (a restarted server) is opened again, every half second until
        it is; what was written meanwhile wakes nobody, so readers keep a
        slow look at the store as a backstop."""
        self._on_change = on_change
        await self._listen()

    async def _listen(self) -> None:
        try:
            listener = await asyncpg.connect(self.url)
            await listener.add_listener(CHANNEL, self._heard)
        except _CONNECTION_ERRORS as error:
            raise StoreUnavailable(_unreachable(self.url, error)) from error
        listener.add_termination_listener(self._listener_lost)
        self._listener = listener

    def _heard(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if self._on_change is None:
            return
        for request_id in payload.split(","):
            if request_id:
                self._on_change(request_id)

    def _listener_lost(self, connection: Any) -> None:
        if connection is not self._listener or self._on_change is None:
            return  # closed on purpose
        self._listener = None
        self._relisten = asyncio.ensure_future(self._listen_again())

    async def _listen_again(self) -> None:
        while self._on_change is not None:
            try:
                await self._listen()
                return
            except StoreUnavailable:
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------ the protocol

    async def next_action_for(self, request_id: str, scope_parent: str | None) -> NextAction:
        chain = await self.list_chain(request_id, scope_parent)
        return await decide_next(self, self.decide, chain, request_id, scope_parent)

    async def record_step(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptor: StepDescriptor,
        *,
        fence: int | None = None,
    ) -> RecordedStep:
        async with self._connection() as db:
            recorded, _ = await _record(
                db, request_id, scope_parent, prev_step, descriptor, StepState.PENDING, fence
            )
        return recorded

    async def record_steps(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptors: list[StepDescriptor],
        *,
        fence: int | None = None,
    ) -> list[RecordedStep]:
        """Every step of an `AppendSteps`, chained and already processing, in
        one transaction."""
        if len(descriptors) == 1:
            # One step is one statement, atomic by itself: no BEGIN and COMMIT
            # around it, two round trips of the three.
            async with self._connection() as db:
                step, found = await _record(
                    db,
                    request_id,
                    scope_parent,
                    prev_step,
                    descriptors[0],
                    StepState.PROCESSING,
                    fence,
                )
            if found is None:
                return [step]
            # The link held a step already (a transition run again): it is
            # moved on below, under the lease the transaction holds.
        recorded: list[RecordedStep] = []
        async with self._connection() as db, db.transaction():
            for descriptor in descriptors:
                step, found = await _record(
                    db, request_id, scope_parent, prev_step, descriptor, StepState.PROCESSING, fence
                )
                if found is not None:
                    check_move(step.id, found, StepState.PROCESSING)
                    await db.execute(
                        "UPDATE steps SET state = 'processing', updated_at = $2 WHERE id = $1",
                        step.id,
                        time.time(),
                    )
                recorded.append(step)
                prev_step = step.id
        return recorded

    async def mark_step_processing(self, step_id: str, *, fence: int | None = None) -> None:
        await self._move(step_id, StepState.PROCESSING, fence, {})

    async def complete_step(self, step_id: str, payload: JSON, *, fence: int | None = None) -> None:
        await self._move(
            step_id, StepState.COMPLETED, fence, {"response_payload": json.dumps(payload)}
        )

    async def fail_step(self, step_id: str, error: JSON, *, fence: int | None = None) -> None:
        await self._move(step_id, StepState.FAILED, fence, {"error": json.dumps(error)})

    async def list_chain(self, request_id: str, scope_parent: str | None) -> list[ChainStep]:
        return await self._steps(
            "request_id = $1 AND coalesce(scope_parent, '') = coalesce($2, '')",
            request_id,
            scope_parent,
        )

    async def assemble_response(self, request_id: str) -> JSON:
        """The response as stored: its status, final payload and every step."""
        return stored_response(
            request_id, await self.outcome(request_id), await self.steps(request_id)
        )

    # ------------------------------------------------------------ requests, outcomes

    async def save_request(
        self,
        request_id: str,
        request: JSON,
        *,
        tenant: str = "",
        lease: tuple[str, float] | None = None,
    ) -> int | None:
        """Keep the request a response was created from, owned by ``tenant``
        (once; later saves are ignored), leased to ``lease``'s owner when given,
        in the same insert: its fencing token."""
        owner, ttl = lease if lease else (None, None)
        async with self._connection() as db:
            token = await db.fetchval(
                "INSERT INTO responses (request_id, tenant, request, created_at, previous_id, "
                "lease_owner, lease_token, lease_expires) VALUES ($1, $2, $3, $4, $5, $6::TEXT, "
                "CASE WHEN $6::TEXT IS NULL THEN 0 ELSE 1 END, "
                "clock_timestamp() + make_interval(secs => $7::DOUBLE PRECISION)) "
                "ON CONFLICT (request_id) DO NOTHING RETURNING lease_token",
                request_id,
                tenant,
                json.dumps(request),
                time.time(),
                previous_of(request),
                owner,
                ttl,
            )
        return int(token) if token and lease else None

    async def load_request(self, request_id: str, *, tenant: str | None = None) -> JSON | None:
        """The request a response was created from (checked against ``tenant``
        in the query itself when given)."""
        async with self._connection() as db:
            if tenant is None:
                text = await db.fetchval(
                    "SELECT request FROM responses WHERE request_id = $1", request_id
                )
            else:
                text = await db.fetchval(
                    "SELECT request FROM responses WHERE request_id = $1 AND tenant = $2",
                    request_id,
                    tenant,
                )
        return json.loads(text) if text is not None else None

    async def set_outcome(
        self, request_id: str, status: str, output: JSON, *, fence: int | None = None
    ) -> None:
        """Record how a response ended, and end its lease; the first outcome
        stands. With ``fence``, raises ``LeaseLost`` unless the lease still has
        that token."""
        async with self._connection() as db:
            ended = await db.fetchval(
                "UPDATE responses SET status = $1, output = $2, completed_at = $3, "
                "lease_owner = NULL, lease_expires = NULL WHERE request_id = $4 "
                "AND output IS NULL AND ($5::BIGINT IS NULL OR lease_token = $5) "
                "RETURNING 1",
                status,
                json.dumps(output),
                time.time(),
                request_id,
                fence,
            )
            if ended is None and fence is not None:
                row = await db.fetchrow(
                    "SELECT lease_token, output IS NOT NULL FROM responses WHERE request_id = $1",
                    request_id,
                )
                if row is not None and not row[1] and row[0] != fence:
                    raise LeaseLost(f"response {request_id} is held under another lease")

    async def outcome(self, request_id: str) -> tuple[str, JSON] | None:
        """``(status, output)`` of a finished response, else ``None``."""
        async with self._connection() as db:
            row = await db.fetchrow(
                "SELECT status, output FROM responses WHERE request_id = $1 AND output IS NOT NULL",
                request_id,
            )
        return (row[0], json.loads(row[1])) if row else None

    async def step(self, step_id: str) -> ChainStep:
        """One step by id."""
        found = await self._steps("id = $1", step_id)
        if not found:
            raise KeyError(f"no step {step_id!r}")
        return found[0]

    async def steps(self, request_id: str) -> list[ChainStep]:
        """Every step of a request, in all scopes, ordered by sequence."""
        return await self._steps("request_id = $1", request_id)

    async def claim_idempotency_key(self, tenant: str, key: str, request_id: str) -> str:
        """The response holding ``key`` for ``tenant`` (``request_id`` if it was
        free); one statement, atomic across processes."""
        async with self._connection() as db:
            holder = await db.fetchval(
                "WITH claimed AS (INSERT INTO idempotency_keys (tenant, key, request_id) "
                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING request_id) "
                "SELECT request_id FROM claimed UNION ALL "
                "SELECT request_id FROM idempotency_keys WHERE tenant = $1 AND key = $2 "
                "LIMIT 1",
                tenant,
                key,
                request_id,
            )
        return str(holder)

    async def unfinished_responses(self) -> list[str]:
        """The responses kept with a request but no outcome yet."""
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT request_id FROM responses WHERE output IS NULL ORDER BY created_at"
            )
        return [row[0] for row in rows]

    async def delete_response(self, request_id: str) -> bool:
        """Forget a response: its request, steps, outcome, event log and keys,
        in one transaction. Returns whether there was one."""
        async with self._connection() as db, db.transaction():
            deleted = await db.fetchval(
                "DELETE FROM responses WHERE request_id = $1 RETURNING 1", request_id
            )
            await db.execute("DELETE FROM steps WHERE request_id = $1", request_id)
            await db.execute("DELETE FROM events WHERE request_id = $1", request_id)
            await db.execute("DELETE FROM idempotency_keys WHERE request_id = $1", request_id)
        return deleted is not None

    async def prune(self, older_than: float, *, batch: int = 500) -> int:
        """Deletes up to ``batch`` responses that ended more than ``older_than``
        seconds ago, with their steps, events and keys; a response that a kept
        one continues (through ``previous_response_id``, at any depth) is kept.
        Returns how many went."""
        async with self._connection() as db, db.transaction():
            rows = await db.fetch(
                "WITH RECURSIVE kept AS ("
                "  SELECT request_id, previous_id FROM responses"
                "  WHERE output IS NULL OR completed_at >= $1"
                "  UNION SELECT r.request_id, r.previous_id FROM responses r"
                "  JOIN kept k ON r.request_id = k.previous_id) "
                "SELECT request_id FROM responses WHERE output IS NOT NULL "
                "AND completed_at < $1 AND request_id NOT IN (SELECT request_id FROM kept) "
                "ORDER BY completed_at LIMIT $2",
                time.time() - older_than,
                batch,
            )
            ids = [row[0] for row in rows]
            if ids:
                for table in ("steps", "events", "idempotency_keys", "responses"):
                    await db.execute(f"DELETE FROM {table} WHERE request_id = ANY($1)", ids)
        return len(ids)

    # ------------------------------------------------------------ conversations

    async def save_conversation(
        self, conversation_id: str, metadata: JSON, *, tenant: str = ""
    ) -> None:
        """Keep a new conversation with ``metadata``, owned by ``tenant``."""
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO conversations (id, tenant, metadata, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                conversation_id,
                tenant,
                json.dumps(metadata),
                int(time.time()),
            )

    async def load_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> JSON | None:
        """The conversation (only ``tenant``'s, when given), else ``None``."""
        async with self._connection() as db:
            row = await db.fetchrow(
                "SELECT id, created_at, metadata FROM conversations "
                "WHERE id = $1 AND ($2::TEXT IS NULL OR tenant = $2)",
                conversation_id,
                tenant,
            )
        if row is None:
            return None
        return {"id": row[0], "created_at": row[1], "metadata": json.loads(row[2])}

    async def update_conversation(self, conversation_id: str, metadata: JSON) -> bool:
        """Replace a conversation's metadata; whether there was one."""
        async with self._connection() as db:
            found = await db.fetchval(
                "UPDATE conversations SET metadata = $2 WHERE id = $1 RETURNING 1",
                conversation_id,
                json.dumps(metadata),
            )
        return found is not None

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Forget a conversation and its items, in one statement."""
        async with self._connection() as db:
            found = await db.fetchval(
                "WITH items AS (DELETE FROM conversation_items WHERE conversation_id = $1) "
                "DELETE FROM conversations WHERE id = $1 RETURNING 1",
                conversation_id,
            )
        return found is not None

    async def add_conversation_items(self, conversation_id: str, items: list[JSON]) -> None:
        """Append items after those held, in one statement; an id already held
        is skipped."""
        async with self._connection() as db:
            found = await db.fetchval(
                "WITH added AS (INSERT INTO conversation_items (conversation_id, item_id, item) "
                "SELECT $1, i.item_id, i.item FROM unnest($2::TEXT[], $3::TEXT[]) "
                "WITH ORDINALITY AS i(item_id, item, n) "
                "WHERE EXISTS (SELECT 1 FROM conversations WHERE id = $1) ORDER BY i.n "
                "ON CONFLICT (conversation_id, item_id) DO NOTHING RETURNING 1) "
                "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)",
                conversation_id,
                [item["id"] for item in items],
                [json.dumps(item) for item in items],
            )
        if not found:
            raise KeyError(f"no conversation {conversation_id!r}")

    async def conversation_items(self, conversation_id: str) -> list[JSON]:
        """A conversation's items, in the order they were added."""
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT item FROM conversation_items WHERE conversation_id = $1 ORDER BY position",
                conversation_id,
            )
        return [json.loads(row[0]) for row in rows]

    async def delete_conversation_item(self, conversation_id: str, item_id: str) -> bool:
        """Remove one item; whether it was there."""
        async with self._connection() as db:
            found = await db.fetchval(
                "DELETE FROM conversation_items WHERE conversation_id = $1 AND item_id = $2 "
                "RETURNING 1",
                conversation_id,
                item_id,
            )
        return found is not None

    # ------------------------------------------------------------ the event log

    async def append_events(self, request_id: str, first_sequence: int, frames: str) -> int:
        """Keep one batch of the response's frames; returns how many it held."""
        await self.append_events_many([(request_id, first_sequence, frames)])
        return count_frames(frames)

    async def append_events_many(
        self, batches: list[tuple[str, int, str]], *, fences: Mapping[str, int] | None = None
    ) -> list[str]:
        """Keep several batches in one statement and notify, once, every
        response they belong to; a response named in ``fences`` only while its
        lease has that token. Returns the responses refused."""
        rows = stored_rows(event_rows(batches))
        if not rows:
            return []
        fenced = dict(fences or {})
        request_ids, firsts, lasts, texts = (list(column) for column in zip(*rows, strict=True))
        async with self._connection() as db:
            refused = await db.fetchval(
                _APPEND_EVENTS,
                request_ids,
                firsts,
                lasts,
                texts,
                list(fenced),
                list(fenced.values()),
                CHANNEL,
            )
        return list(refused)

    async def events_after(
        self, request_id: str, after: int, *, limit: int | None = None
    ) -> list[str]:
        """The kept stream frames numbered above ``after``, in order; at most
        ``limit`` of them."""
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT first_sequence, frames FROM events WHERE request_id = $1 "
                "AND last_sequence > $2 AND first_sequence <= $3 ORDER BY first_sequence",
                request_id,
                after,
                last_wanted(after, limit),
            )
        return frames_after([(row[0], row[1]) for row in rows], after, limit)

    async def seal_events(self, request_ids: list[str]) -> None:
        """Replace each ended response's logged batches by one sealed row, in
        one transaction: the same frames, stored compactly."""
        async with self._connection() as db, db.transaction():
            replaced = []
            for request_id in request_ids:
                # A cursor, a few rows at a time: a long log is not read whole.
                sealing = Sealing()
                async for row in db.cursor(
                    "SELECT first_sequence, frames FROM events WHERE request_id = $1 "
                    "ORDER BY first_sequence",
                    request_id,
                    prefetch=16,
                ):
                    sealing.add(row[0], row[1])
                if (one := sealing.result()) is not None:
                    replaced.append((request_id, *one))
            if replaced:
                await db.execute(
                    "DELETE FROM events WHERE request_id = ANY($1)", [r[0] for r in replaced]
                )
                await db.executemany(
                    "INSERT INTO events (request_id, first_sequence, last_sequence, frames) "
                    "VALUES ($1, $2, $3, $4)",
                    replaced,
                )

    async def prune_events(self, older_than: float, *, batch: int = 500) -> int:
        """Deletes the event logs of up to ``batch`` responses that ended more
        than ``older_than`` seconds ago, keeping the responses themselves;
        returns how many logs went."""
        async with self._connection() as db, db.transaction():
            rows = await db.fetch(
                "SELECT DISTINCT e.request_id FROM events e JOIN responses r "
                "ON r.request_id = e.request_id "
                "WHERE r.output IS NOT NULL AND r.completed_at < $1 LIMIT $2",
                time.time() - older_than,
                batch,
            )
            ids = [row[0] for row in rows]
            if ids:
                await db.execute("DELETE FROM events WHERE request_id = ANY($1)", ids)
        return len(ids)

    # ------------------------------------------------------------ leases

    async def claim(self, request_id: str, owner: str, ttl: float) -> int | None:
        """Take the lease of an unfinished response that nobody holds (or whose
        lease expired), skipping a row another claimer has locked; returns
        the new fencing token, else ``None``."""
        async with self._connection() as db:
            token = await db.fetchval(
                "UPDATE responses SET lease_owner = $2, lease_token = lease_token + 1, "
                "lease_expires = clock_timestamp() + make_interval(secs => $3) "
                "WHERE request_id = (SELECT request_id FROM responses WHERE request_id = $1 "
                "AND output IS NULL AND (lease_owner IS NULL OR lease_expires < clock_timestamp()) "
                "FOR UPDATE SKIP LOCKED) RETURNING lease_token",
                request_id,
                owner,
                ttl,
            )
        return int(token) if token is not None else None

    async def renew(self, owner: str, ttl: float) -> dict[str, bool]:
        """Extend every lease ``owner`` still holds; returns them, each with
        whether a cancel was requested."""
        async with self._connection() as db:
            # Rows locked in id order, as the event log's group commit locks
            # them: the two never wait on each other in a cycle.
            rows = await db.fetch(
                "UPDATE responses "
                "SET lease_expires = clock_timestamp() + make_interval(secs => $2) "
                "WHERE request_id IN (SELECT request_id FROM responses "
                "WHERE lease_owner = $1 AND output IS NULL ORDER BY request_id FOR UPDATE) "
                "RETURNING request_id, cancel_requested",
                owner,
                ttl,
            )
        return {row[0]: bool(row[1]) for row in rows}

    async def release(self, request_id: str, fence: int) -> None:
        """Give a lease up (at once claimable), if it still has ``fence``."""
        # A response whose outcome is kept has no lease left: no row version
        # is written for it.
        async with self._connection() as db:
            await db.execute(
                "UPDATE responses SET lease_owner = NULL, lease_expires = NULL "
                "WHERE request_id = $1 AND lease_token = $2 AND lease_owner IS NOT NULL",
                request_id,
                fence,
            )

    async def claimable(self, limit: int = 100) -> list[str]:
        """Unfinished responses that nobody holds a live lease on, oldest first.

        When there are some, the sessions of stepwell processes stuck in a
        transaction for longer than ``stalled_transaction_timeout`` are ended
        first: a process stopped between a statement and the Sync that ends
        it leaves its session waiting for input with its rows locked, which
        none of the server's own timeouts end (before PostgreSQL 17), and a
        claim would skip those rows forever."""
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT request_id FROM responses WHERE output IS NULL "
                "AND (lease_owner IS NULL OR lease_expires < clock_timestamp()) "
                "ORDER BY created_at LIMIT $1",
                limit,
            )
            if rows:
                await db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = $1 "
                    "AND pid <> pg_backend_pid() "
                    "AND xact_start < clock_timestamp() - make_interval(secs => $2)",
                    APPLICATION_NAME,
                    self.stalled_transaction_timeout,
                )
        return [row[0] for row in rows]

    async def request_cancel(self, request_id: str) -> bool:
        """Ask the lease holder to cancel; whether the response is unfinished."""
        async with self._connection() as db:
            found = await db.fetchval(
                "UPDATE responses SET cancel_requested = TRUE "
                "WHERE request_id = $1 AND output IS NULL RETURNING 1",
                request_id,
            )
        return found is not None

    # ------------------------------------------------------------ internals

    async def _steps(self, where: str, *args: Any) -> list[ChainStep]:
        async with self._connection() as db:
            rows = await db.fetch(
                f"SELECT {STEP_COLUMNS} FROM steps WHERE {where} ORDER BY sequence", *args
            )
        return [step_from_row(r) for r in rows]

    async def _move(
        self, step_id: str, to: StepState, fence: int | None, columns: dict[str, str]
    ) -> None:
        # One conditional UPDATE on the usual path, the fence checked in it; the
        # row is read only to explain a refusal.
        allowed = [state.value for state in sources(to)]
        sets = "".join(f", {name} = ${n}" for n, name in enumerate(columns, start=6))
        async with self._connection() as db:
            moved = await db.fetchval(
                _MOVE_STEP.format(sets=sets),
                to.value,
                time.time(),
                step_id,
                allowed,
                fence,
                *columns.values(),
            )
            if moved is not None:
                return
            row = await db.fetchrow(
                "SELECT s.state, r.lease_token FROM steps s "
                "LEFT JOIN responses r ON r.request_id = s.request_id WHERE s.id = $1",
                step_id,
            )
        if row is None:
            raise KeyError(f"no step {step_id!r}")
        if fence is not None and row[1] != fence:
            raise LeaseLost(f"step {step_id}'s response is held under another lease")
        check_move(step_id, StepState(row[0]), to)
        raise IllegalTransition(f"step {step_id} changed state; it was not moved to {to.value}")


async def upgrade(url: str) -> list[int]:
    """Applies the migrations the database at ``url`` lacks, each in its own
    transaction, under an advisory lock (concurrent callers wait, then find
    nothing to do); returns the versions applied."""
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS stepwell_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {
                row[0] for row in await connection.fetch("SELECT version FROM stepwell_migrations")
            }
            applied = []
            for version, sql in enumerate(MIGRATIONS, start=1):
                if version not in done:
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO stepwell_migrations (version) VALUES ($1)", version
                    )
                    applied.append(version)
        return applied
    finally:
        await connection.close()


async def _record(
    db: asyncpg.Connection,
    request_id: str,
    scope_parent: str | None,
    prev_step: str | None,
    descriptor: StepDescriptor,
    state: StepState,
    fence: int | None,
) -> tuple[RecordedStep, StepState | None]:
    """Records a step in ``state`` after ``prev_step``: the step, and ``None``
    or, when the link already held it, the state that step is in."""
    kind = StepKind(descriptor.kind)
    step_id = f"step_{uuid.uuid4().hex}"
    sub_request_id = str(uuid.uuid4()) if kind is StepKind.MODEL_CALL else None
    payload = descriptor.request_json()
    for _ in range(_RECORD_ATTEMPTS):
        row = await db.fetchrow(
            _RECORD_STEP,
            step_id,
            request_id,
            scope_parent,
            prev_step,
            kind.value,
            payload,
            sub_request_id,
            time.time(),
            fence,
            state.value,
        )
        if not row[0]:
            raise LeaseLost(f"response {request_id} is held under another lease")
        if row[1] is not None:
            found = StepState(row[4]) if row[4] is not None else None
            return RecordedStep(row[1], row[2], row[3]), found
        # A concurrent recorder took the sequence (or the link): again, with a
        # snapshot that sees its step.
    raise StoreUnavailable(f"response {request_id}: no sequence for its step was free")


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs before its next use: nothing. The
    store's sessions keep no state between calls (no session locks, cursors,
    LISTENs or settings; a transaction left open is rolled back by the pool
    itself), so the reset query asyncpg would send on every release, a round
    trip each, is skipped."""


def _host(url: str) -> str:
    """The host and port of a PostgreSQL URL, without its user or password."""
    rest = url.split("://", 1)[-1]
    return rest.split("@", 1)[-1].split("/", 1)[0]


def _unreachable(url: str, error: BaseException) -> str:
    return f"PostgreSQL at {_host(url)} cannot be reached ({type(error).__name__})"
