"""``SQLiteStore``: the embedded, durable store.

Every state change is one transaction in a WAL-mode SQLite file, so a process
killed at any point (SIGKILL included) loses no completed step, and another
process can resume the response with ``run_response_loop``. A unique index on
``(request_id, scope_parent, prev_step_id, kind)`` makes a re-run transition
find the step it already recorded instead of recording it twice, and each
step's sequence is allocated inside its own insert.

Calls are short local transactions and run on the caller's thread; a thread
of the store's own copies the write-ahead log back into the file, so that
pause seldom falls on a caller (see ``_checkpoint``). A database
locked by another writer for longer than ``busy_timeout`` seconds raises
``StoreLocked``, a file that is not a SQLite database raises ``StoreCorrupt``.
"""

from __future__ import annotations

import functools
import json
import secrets
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._eager import runs_without_task
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
from ._checkpoint import WRITER_PAGES, Checkpointer
from ._events import (
    Sealing,
    count_frames,
    event_rows,
    frames_after,
    last_wanted,
    stored_batch,
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    request_id       TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL DEFAULT '',
    request          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'in_progress',
    output           TEXT,
    created_at       REAL NOT NULL,
    completed_at     REAL,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires    REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    previous_id      TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id               TEXT PRIMARY KEY,
    request_id       TEXT NOT NULL,
    scope_parent     TEXT,
    prev_step_id     TEXT,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    sequence         INTEGER NOT NULL,
    response_payload TEXT,
    error            TEXT,
    sub_request_id   TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL,
    UNIQUE (request_id, sequence)
);
CREATE UNIQUE INDEX IF NOT EXISTS steps_chain_link ON steps (
    request_id, coalesce(scope_parent, ''), coalesce(prev_step_id, ''), kind
);
-- A step's request payload, apart from its row: it never changes and can be
-- large (a model call carries the whole conversation so far), and SQLite
-- writes a whole row again when any of its columns changes.
CREATE TABLE IF NOT EXISTS step_requests (
    request_id TEXT NOT NULL,
    sequence   INTEGER NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (request_id, sequence)
);
CREATE INDEX IF NOT EXISTS responses_unfinished ON responses (created_at) WHERE output IS NULL;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant     TEXT NOT NULL,
    key        TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE TABLE IF NOT EXISTS events (
    request_id     TEXT NOT NULL,
    first_sequence INTEGER NOT NULL,
    last_sequence  INTEGER NOT NULL,
    frames         TEXT NOT NULL,
    PRIMARY KEY (request_id, first_sequence)
);
CREATE TABLE IF NOT EXISTS conversations (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL DEFAULT '',
    metadata   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversation_items (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    item_id         TEXT NOT NULL,
    item            TEXT NOT NULL,
    UNIQUE (conversation_id, item_id)
);
"""


_STEP_COLUMNS = ", ".join(
    "p.payload" if column == "request_payload" else f"s.{column}"
    for column in STEP_COLUMNS.split(", ")
)
"""`STEP_COLUMNS` of steps `s` joined with their `step_requests` `p`."""


class StoreLocked(StepwellError, RuntimeError):
    """Another process held the database longer than ``busy_timeout``."""


class StoreCorrupt(StepwellError, RuntimeError):
    """The file is not a usable SQLite database."""


class SQLiteStore:
    """A durable ``MultiStepStore`` in one SQLite file; ``decide`` is the transition.

    Also keeps each response's request and final outcome, which the Open
    Responses layer reads (``save_request``, ``load_request``, ``outcome``).
    """

    def __init__(
        self,
        path: str | Path,
        decide: Decide | None = None,
        *,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = str(path)
        self.decide = decide
        self._lock = threading.Lock()
        self._checkpointer: Checkpointer | None = None
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            with self._errors():
                (mode,) = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._migrate()
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.path) from error
        if str(mode).lower() == "wal":
            self._db.execute(f"PRAGMA wal_autocheckpoint={WRITER_PAGES}")
            self._checkpointer = Checkpointer(self.path)
            weakref.finalize(self, self._checkpointer.close)

    def _migrate(self) -> None:
        """Brings a file made by an earlier version up to the current schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        added = {
            "tenant": "TEXT NOT NULL DEFAULT ''",
            "lease_owner": "TEXT",
            "lease_token": "INTEGER NOT NULL DEFAULT 0",
            "lease_expires": "REAL",
            "cancel_requested": "INTEGER NOT NULL DEFAULT 0",
            "previous_id": "TEXT",
        }
        for name, definition in added.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE responses ADD COLUMN {name} {definition}")
        step_columns = {row[1] for row in self._db.execute("PRAGMA table_info(steps)")}
        if "updated_at" not in step_columns:
            self._db.execute("ALTER TABLE steps ADD COLUMN updated_at REAL")
        if "request_payload" in step_columns:
            self._move_request_payloads()
        # Made by earlier versions: a scope's chain is read through the
        # request's (request_id, sequence) index (the scope is matched by
        # value, which no index serves), so this one only cost a page more
        # in the commit of every step recorded.
        self._db.execute("DROP INDEX IF EXISTS steps_scope")

    def _move_request_payloads(self) -> None:
        """Moves the request payloads a file made before `step_requests`
        keeps in its steps rows into that table, in one transaction (another
        process opening the file at once finds them moved)."""
        with self._transaction() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(steps)")}
            if "request_payload" not in columns:
                return
            db.execute(
                "INSERT OR IGNORE INTO step_requests (request_id, sequence, payload) "
                "SELECT request_id, sequence, request_payload FROM steps"
            )
            db.execute("ALTER TABLE steps DROP COLUMN request_payload")

    def close(self) -> None:
        """Close the database connection."""
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()

    # ------------------------------------------------------------ the protocol

    async def next_action_for(self, request_id: str, scope_parent: str | None) -> NextAction:
        chain = self._chain(request_id, scope_parent)
        return await decide_next(self, self.decide, chain, request_id, scope_parent)

    @runs_without_task
    async def record_step(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptor: StepDescriptor,
        *,
        fence: int | None = None,
    ) -> RecordedStep:
        with self._transaction() as db:
            if fence is not None:
                _check_fence(db, request_id, fence)
            recorded, _ = _record(
                db, request_id, scope_parent, prev_step, descriptor, StepState.PENDING
            )
        return recorded

    @runs_without_task
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
        recorded: list[RecordedStep] = []
        with self._transaction() as db:
            if fence is not None:
                _check_fence(db, request_id, fence)
            for descriptor in descriptors:
                step, found = _record(
                    db, request_id, scope_parent, prev_step, descriptor, StepState.PROCESSING
                )
                if found is not None:
                    check_move(step.id, found, StepState.PROCESSING)
                    db.execute(
                        "UPDATE steps SET state = 'processing', updated_at = ? WHERE id = ?",
                        (time.time(), step.id),
                    )
                recorded.append(step)
                prev_step = step.id
        return recorded

    @runs_without_task
    async def mark_step_processing(self, step_id: str, *, fence: int | None = None) -> None:
        self._move(step_id, StepState.PROCESSING, fence)

    @runs_without_task
    async def complete_step(self, step_id: str, payload: JSON, *, fence: int | None = None) -> None:
        self._move(step_id, StepState.COMPLETED, fence, response_payload=json.dumps(payload))

    @runs_without_task
    async def fail_step(self, step_id: str, error: JSON, *, fence: int | None = None) -> None:
        self._move(step_id, StepState.FAILED, fence, error=json.dumps(error))

    @runs_without_task
    async def list_chain(self, request_id: str, scope_parent: str | None) -> list[ChainStep]:
        return self._chain(request_id, scope_parent)

    async def assemble_response(self, request_id: str) -> JSON:
        """The response as stored: its status, final payload and every step."""
        return stored_response(
            request_id, await self.outcome(request_id), await self.steps(request_id)
        )

    # ------------------------------------------------------------ extras

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
        now = time.time()
        owner, expires = (lease[0], now + lease[1]) if lease else (None, None)
        kept = self._write(
            "INSERT OR IGNORE INTO responses (request_id, tenant, request, created_at, "
            "previous_id, lease_owner, lease_token, lease_expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, tenant, json.dumps(request), now, previous_of(request), owner,
             1 if lease else 0, expires),
            let_go=True,
        )  # fmt: skip
        return 1 if kept and lease else None

    async def claim_idempotency_key(self, tenant: str, key: str, request_id: str) -> str:
        """The response holding ``key`` for ``tenant``: ``request_id`` if the key
        was free (it now holds it), else the one that claimed it first; atomic
        across processes."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO idempotency_keys (tenant, key, request_id) VALUES (?, ?, ?)",
                (tenant, key, request_id),
            )
            (holder,) = db.execute(
                "SELECT request_id FROM idempotency_keys WHERE tenant = ? AND key = ?",
                (tenant, key),
            ).fetchone()
        return str(holder)

    async def unfinished_responses(self) -> list[str]:
        """The responses kept with a request but no outcome yet."""
        with self._errors(), self._lock:
            rows = self._db.execute(
                "SELECT request_id FROM responses WHERE output IS NULL ORDER BY created_at"
            ).fetchall()
        return [row[0] for row in rows]

    async def delete_response(self, request_id: str) -> bool:
        """Forget a response: its request, steps, outcome and event log, in one
        transaction. Returns whether there was one."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM responses WHERE request_id = ?", (request_id,))
            db.execute("DELETE FROM steps WHERE request_id = ?", (request_id,))
            db.execute("DELETE FROM step_requests WHERE request_id = ?", (request_id,))
            db.execute("DELETE FROM events WHERE request_id = ?", (request_id,))
            db.execute("DELETE FROM idempotency_keys WHERE request_id = ?", (request_id,))
            return deleted.rowcount > 0

    # ------------------------------------------------------------ conversations

    async def save_conversation(
        self, conversation_id: str, metadata: JSON, *, tenant: str = ""
    ) -> None:
        """Keep a new conversation with ``metadata``, owned by ``tenant``."""
        self._write(
            "INSERT INTO conversations (id, tenant, metadata, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (conversation_id, tenant, json.dumps(metadata), int(time.time())),
        )

    @runs_without_task
    async def load_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> JSON | None:
        """The conversation (only ``tenant``'s, when given), else ``None``."""
        row = self._query_one(
            "SELECT id, created_at, metadata FROM conversations "
            "WHERE id = ? AND (? IS NULL OR tenant = ?)",
            (conversation_id, tenant, tenant),
        )
        if row is None:
            return None
        return {"id": row[0], "created_at": row[1], "metadata": json.loads(row[2])}

    async def update_conversation(self, conversation_id: str, metadata: JSON) -> bool:
        """Replace a conversation's metadata; whether there was one."""
        return (
            self._write(
                "UPDATE conversations SET metadata = ? WHERE id = ?",
                (json.dumps(metadata), conversation_id),
            )
            > 0
        )

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Forget a conversation and its items, in one transaction."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            db.execute(
                "DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,)
            )
            return deleted.rowcount > 0

    @runs_without_task
    async def add_conversation_items(self, conversation_id: str, items: list[JSON]) -> None:
        """Append items after those held, in one transaction; an id already
        held is skipped."""
        with self._transaction() as db:
            if (
                db.execute(
                    "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
                ).fetchone()
                is None
            ):
                raise KeyError(f"no conversation {conversation_id!r}")
            db.executemany(
                "INSERT INTO conversation_items (conversation_id, item_id, item) "
                "VALUES (?, ?, ?) ON CONFLICT (conversation_id, item_id) DO NOTHING",
                [(conversation_id, item["id"], json.dumps(item)) for item in items],
            )

    @runs_without_task
    async def conversation_items(self, conversation_id: str) -> list[JSON]:
        """A conversation's items, in the order they were added."""
        with self._errors(), self._lock:
            rows = self._db.execute(
                "SELECT item FROM conversation_items WHERE conversation_id = ? ORDER BY position",
                (conversation_id,),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    async def delete_conversation_item(self, conversation_id: str, item_id: str) -> bool:
        """Remove one item; whether it was there."""
        return (
            self._write(
                "DELETE FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
                (conversation_id, item_id),
            )
            > 0
        )

    async def prune(self, older_than: float, *, batch: int = 500) -> int:
        """Deletes up to ``batch`` responses that ended more than ``older_than``
        seconds ago, with their steps, events and keys, in one transaction; a
        response that a kept one continues (through ``previous_response_id``,
        at any depth) is kept. Returns how many went."""
        with self._transaction() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "WITH RECURSIVE kept(request_id, previous_id) AS ("
                    "  SELECT request_id, previous_id FROM responses"
                    "  WHERE output IS NULL OR completed_at >= ?"
                    "  UNION SELECT r.request_id, r.previous_id FROM responses r"
                    "  JOIN kept k ON r.request_id = k.previous_id) "
                    "SELECT request_id FROM responses WHERE output IS NOT NULL "
                    "AND completed_at < ? AND request_id NOT IN (SELECT request_id FROM kept) "
                    "ORDER BY completed_at LIMIT ?",
                    (time.time() - older_than, time.time() - older_than, batch),
                ).fetchall()
            ]
            tables = ("steps", "step_requests", "events", "idempotency_keys", "responses")
            for table in tables:
                db.executemany(f"DELETE FROM {table} WHERE request_id = ?", [(i,) for i in ids])
        return len(ids)

    async def append_events(self, request_id: str, first_sequence: int, frames: str) -> int:
        """Keep a batch of the response's stream frames, numbered from
        ``first_sequence``, in one transaction; returns how many frames it held."""
        count = count_frames(frames)
        if count:
            self._write(
                _INSERT_EVENTS,
                (
                    request_id,
                    first_sequence,
                    first_sequence + count - 1,
                    stored_batch(frames, first_sequence),
                ),
            )
        return count

    async def append_events_many(
        self, batches: list[tuple[str, int, str]], *, fences: Mapping[str, int] | None = None
    ) -> list[str]:
        """Keep several batches, ``(request_id, first_sequence, frames)`` each, in
        one transaction: a server writing many responses' streams commits once
        per turn of its event loop, not once per batch. A batch of a response
        named in ``fences`` is kept only while that response's lease has that
        token; returns the responses whose batches were refused."""
        rows = event_rows(batches)
        refused: list[str] = []
        if rows:
            with self._transaction() as db:
                if fences:
                    refused = _refused(db, fences)
                    rows = [row for row in rows if row[0] not in refused]
                db.executemany(_INSERT_EVENTS, stored_rows(rows))
        return refused

    async def group_commit(
        self,
        batches: list[tuple[str, int, str]],
        *,
        fences: Mapping[str, int] | None = None,
        ended: Collection[str] = (),
        outcomes: Mapping[str, tuple[str, JSON]] | None = None,
        completions: Collection[tuple[str, JSON, int | None]] = (),
    ) -> tuple[list[str], list[str]]:
        """One transaction of what a server's event log writes at once:
        ``append_events_many`` of the batches, ``seal_events`` of the ``ended``
        responses kept (their last batches are sealed with the log, never
        rows of their own), the ``outcomes`` (``request_id: (status,
        output)``, as ``set_outcome`` keeps them) and the model calls'
        ``completions`` (``(step_id, payload, fence)``, as ``complete_step``
        moves them). A response named in ``fences`` is written only while its
        lease has that token. Returns the responses refused, and the steps not
        moved (``complete_step`` says why)."""
        rows = event_rows(batches)
        now = time.time()
        with self._transaction() as db:
            refused = _refused(db, fences) if fences else []
            # Each outcome and completion is encoded just before its
            # statement, and let go of after it: a long response's are never
            # all in memory at once, nor beside its log being sealed.
            unmoved = [
                step_id
                for step_id, payload, fence in completions
                if not _complete(db, step_id, json.dumps(payload), fence, now)
            ]
            ending = set(ended).difference(refused)
            db.executemany(
                _INSERT_EVENTS,
                stored_rows(row for row in rows if row[0] not in refused and row[0] not in ending),
            )
            for request_id in ending:
                # Sealed with the log from their frames, not from rows of their own.
                last = [row for row in rows if row[0] == request_id]
                try:
                    one = _sealed_with(db, request_id, [(row[1], row[3]) for row in last])
                except ValueError:  # a kept sealed log that does not read back
                    one = None
                if one is None:
                    # Not sealable: kept whole.
                    db.executemany(_INSERT_EVENTS, stored_rows(last))
                    continue
                _replace_log(db, request_id, one)
                del one  # a long sealed log is not held while the outcomes are encoded
            for request_id, (status, output) in (outcomes or {}).items():
                if request_id not in refused:
                    _execute_letting_go(
                        db, _SET_OUTCOME, (status, json.dumps(output), now, request_id)
                    )
        return refused, unmoved

    async def events_after(
        self, request_id: str, after: int, *, limit: int | None = None
    ) -> list[str]:
        """The kept stream frames numbered above ``after``, in order; at most
        ``limit`` of them."""
        with self._errors(), self._lock:
            rows = self._db.execute(
                "SELECT first_sequence, frames FROM events WHERE request_id = ? "
                "AND last_sequence > ? AND first_sequence <= ? ORDER BY first_sequence",
                (request_id, after, last_wanted(after, limit)),
            ).fetchall()
        return frames_after(rows, after, limit)

    async def seal_events(self, request_ids: list[str]) -> None:
        """Replace each ended response's logged batches by one sealed row, in
        one transaction: the same frames, stored compactly."""
        with self._transaction() as db:
            for request_id in request_ids:
                one = _sealed_with(db, request_id, [])
                if one is not None:
                    _replace_log(db, request_id, one)

    async def prune_events(self, older_than: float, *, batch: int = 500) -> int:
        """Deletes the event logs of up to ``batch`` responses that ended more
        than ``older_than`` seconds ago, keeping the responses themselves;
        returns how many logs went."""
        with self._transaction() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT DISTINCT e.request_id FROM events e JOIN responses r "
                    "ON r.request_id = e.request_id "
                    "WHERE r.output IS NOT NULL AND r.completed_at < ? LIMIT ?",
                    (time.time() - older_than, batch),
                ).fetchall()
            ]
            db.executemany("DELETE FROM events WHERE request_id = ?", [(i,) for i in ids])
        return len(ids)

    @runs_without_task
    async def load_request(self, request_id: str, *, tenant: str | None = None) -> JSON | None:
        """The request a response was created from, if saved (and, when
        ``tenant`` is given, owned by that tenant: the query itself checks it,
        so another tenant's response is not found)."""
        if tenant is None:
            row = self._query_one(
                "SELECT request FROM responses WHERE request_id = ?", (request_id,)
            )
        else:
            row = self._query_one(
                "SELECT request FROM responses WHERE request_id = ? AND tenant = ?",
                (request_id, tenant),
            )
        return json.loads(row[0]) if row else None

    @runs_without_task
    async def set_outcome(
        self, request_id: str, status: str, output: JSON, *, fence: int | None = None
    ) -> None:
        """Record how a response ended, and end its lease. The first outcome
        stands: a later call (a second process that lost a race to finish it,
        say) changes nothing, not even ``completed_at``. With ``fence``, the
        write is refused (``LeaseLost``) unless the lease still has that token."""
        sql = _SET_OUTCOME
        args: tuple[Any, ...] = (status, json.dumps(output), time.time(), request_id)
        if fence is None:
            self._write(sql, args, let_go=True)
            return
        with self._transaction() as db:
            row = db.execute(
                "SELECT lease_token, output IS NOT NULL FROM responses WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            if row is None or row[1]:
                return  # unknown, or already ended: the first outcome stands
            if row[0] != fence:
                raise LeaseLost(f"response {request_id} is held under another lease")
            _execute_letting_go(db, sql, args)

    # ------------------------------------------------------------ leases

    async def claim(self, request_id: str, owner: str, ttl: float) -> int | None:
        """Take the lease of an unfinished response whose lease is free or has
        expired, for ``ttl`` seconds; returns its new fencing token (one more
        than the last claim's), or ``None`` when another holds it or it ended."""
        now = time.time()
        rows = self._write_returning(
            "UPDATE responses SET lease_owner = ?, lease_token = lease_token + 1, "
            "lease_expires = ? WHERE request_id = ? AND output IS NULL "
            "AND (lease_owner IS NULL OR lease_expires < ?) RETURNING lease_token",
            (owner, now + ttl, request_id, now),
        )
        return int(rows[0][0]) if rows else None

    async def renew(self, owner: str, ttl: float) -> dict[str, bool]:
        """Extend every lease ``owner`` still holds by ``ttl`` seconds from now;
        returns them, each with whether a cancel was requested. A response the
        owner runs that is missing here was taken over: its run must stop."""
        rows = self._write_returning(
            "UPDATE responses SET lease_expires = ? WHERE lease_owner = ? AND output IS NULL "
            "RETURNING request_id, cancel_requested",
            (time.time() + ttl, owner),
        )
        return {row[0]: bool(row[1]) for row in rows}

    async def release(self, request_id: str, fence: int) -> None:
        """Give a lease up (at once claimable by anyone), if it still has ``fence``."""
        self._write(
            "UPDATE responses SET lease_owner = NULL, lease_expires = NULL "
            "WHERE request_id = ? AND lease_token = ?",
            (request_id, fence),
        )

    async def claimable(self, limit: int = 100) -> list[str]:
        """Unfinished responses that nobody holds a live lease on, oldest first."""
        with self._errors(), self._lock:
            rows = self._db.execute(
                "SELECT request_id FROM responses WHERE output IS NULL "
                "AND (lease_owner IS NULL OR lease_expires < ?) ORDER BY created_at LIMIT ?",
                (time.time(), limit),
            ).fetchall()
        return [row[0] for row in rows]

    async def request_cancel(self, request_id: str) -> bool:
        """Ask whoever holds the response's lease to cancel it; returns whether
        the response is unfinished (else there is nothing to cancel)."""
        return (
            self._write(
                "UPDATE responses SET cancel_requested = 1 WHERE request_id = ? AND output IS NULL",
                (request_id,),
            )
            > 0
        )

    @runs_without_task
    async def outcome(self, request_id: str) -> tuple[str, JSON] | None:
        """``(status, output)`` of a finished response, else ``None``."""
        row = self._query_one(
            "SELECT status, output FROM responses WHERE request_id = ? AND output IS NOT NULL",
            (request_id,),
        )
        return (row[0], json.loads(row[1])) if row else None

    @runs_without_task
    async def step(self, step_id: str) -> ChainStep:
        """One step by id."""
        rows = self._steps("s.id = ?", (step_id,))
        if not rows:
            raise KeyError(f"no step {step_id!r}")
        return rows[0]

    @runs_without_task
    async def steps(self, request_id: str) -> list[ChainStep]:
        """Every step of a request, in all scopes, ordered by sequence."""
        return self._steps("s.request_id = ?", (request_id,))

    # ------------------------------------------------------------ internals

    def _chain(self, request_id: str, scope_parent: str | None) -> list[ChainStep]:
        return self._steps(
            "s.request_id = ? AND coalesce(s.scope_parent, '') = coalesce(?, '')",
            (request_id, scope_parent),
        )

    def _steps(self, where: str, args: tuple[Any, ...]) -> list[ChainStep]:
        with self._errors(), self._lock:
            rows = self._db.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps s JOIN step_requests p "
                f"ON p.request_id = s.request_id AND p.sequence = s.sequence "
                f"WHERE {where} ORDER BY s.sequence",
                args,
            ).fetchall()
        return [step_from_row(r) for r in rows]

    def _move(self, step_id: str, to: StepState, fence: int | None, **columns: str) -> None:
        # One conditional UPDATE (its own transaction) on the usual path; the
        # state is read only to explain a refusal, or to retry after another
        # writer moved the step between the two statements. A fence is checked
        # in the same statement.
        for _ in range(3):
            moved = self._write(*_moving(step_id, to, fence, time.time(), **columns), let_go=True)
            if moved:
                return
            row = self._query_one(
                "SELECT s.state, r.lease_token FROM steps s "
                "LEFT JOIN responses r ON r.request_id = s.request_id WHERE s.id = ?",
                (step_id,),
            )
            if row is None:
                raise KeyError(f"no step {step_id!r}")
            if fence is not None and row[1] != fence:
                raise LeaseLost(f"step {step_id}'s response is held under another lease")
            check_move(step_id, StepState(row[0]), to)
        raise IllegalTransition(
            f"step {step_id} kept changing state; it was not moved to {to.value}"
        )

    def _write(self, sql: str, args: tuple[Any, ...], *, let_go: bool = False) -> int:
        """One statement, committed on its own (a lone statement is atomic);
        returns how many rows it changed. With `let_go`, for a statement that
        writes nothing with NULL for each of its values, a long value it
        bound is let go of (`_execute_letting_go`)."""
        with self._errors(), self._lock:
            run = _execute_letting_go if let_go else sqlite3.Connection.execute
            changed = int(run(self._db, sql, args).rowcount)
        self._wrote()
        return changed

    def _write_returning(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """One statement with ``RETURNING``, committed on its own; its rows."""
        with self._errors(), self._lock:
            rows = self._db.execute(sql, args).fetchall()
        self._wrote()
        return rows

    def _query_one(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self._errors(), self._lock:
            return self._db.execute(sql, args).fetchone()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._errors(), self._lock:
            # IMMEDIATE takes the write lock up front, so the read-then-write
            # steps inside cannot interleave with another process's.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        self._wrote()

    def _wrote(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.wrote()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.path) from error


_INSERT_EVENTS = (
    "INSERT INTO events (request_id, first_sequence, last_sequence, frames) VALUES (?, ?, ?, ?)"
)

_INSERT_SEALED = _INSERT_EVENTS.replace("INSERT", "INSERT OR IGNORE", 1)
"""A sealed log's row, written once its response's rows are deleted (so
nothing else can clash with it): with NULLs it writes nothing (`_execute_letting_go`)."""

_SET_OUTCOME = (
    "UPDATE responses SET status = ?, output = ?, completed_at = ?, "
    "lease_owner = NULL, lease_expires = NULL WHERE request_id = ? AND output IS NULL"
)

_FENCE_OF_STEP = (
    "EXISTS (SELECT 1 FROM responses r WHERE r.request_id = steps.request_id AND r.lease_token = ?)"
)


def _moving(
    step_id: str, to: StepState, fence: int | None, now: float, **columns: str
) -> tuple[str, tuple[Any, ...]]:
    """The conditional UPDATE that moves a step to `to` from a state allowed
    to go there (and only while its response's lease has `fence`), with its
    arguments: it changes no row when the move is refused."""
    allowed = sources(to)
    sets = ", ".join(f"{name} = ?" for name in ["state", "updated_at", *columns])
    marks = ", ".join("?" for _ in allowed)
    fenced = "" if fence is None else f" AND {_FENCE_OF_STEP}"
    return (
        f"UPDATE steps SET {sets} WHERE id = ? AND state IN ({marks}){fenced}",
        (
            to.value,
            now,
            *columns.values(),
            step_id,
            *(a.value for a in allowed),
            *(() if fence is None else (fence,)),
        ),
    )


def _record(
    db: sqlite3.Connection,
    request_id: str,
    scope_parent: str | None,
    prev_step: str | None,
    descriptor: StepDescriptor,
    state: StepState,
) -> tuple[RecordedStep, StepState | None]:
    """Records a step in ``state`` after ``prev_step``, inside the caller's
    transaction: the step, and ``None`` or, when the link was already
    recorded, the state that step is in. The same link recorded twice is the
    same step: a re-run transition gets back what it recorded the first time."""
    kind = StepKind(descriptor.kind)
    step_id = f"step_{secrets.token_hex(16)}"
    sub_request_id = str(uuid.uuid4()) if kind is StepKind.MODEL_CALL else None
    # Inserted unless the link holds a step (the chain link's unique index):
    # the usual case costs one statement, not a look first.
    inserted = db.execute(
        "INSERT INTO steps (id, request_id, scope_parent, prev_step_id, kind, state, "
        "sequence, sub_request_id, created_at) "
        "SELECT ?, ?, ?, ?, ?, ?, coalesce(max(sequence), 0) + 1, ?, ? "
        "FROM steps WHERE request_id = ? ON CONFLICT DO NOTHING RETURNING sequence",
        (step_id, request_id, scope_parent, prev_step, kind.value, state.value, sub_request_id,
         time.time(), request_id),
    ).fetchone()  # fmt: skip
    if inserted is None:
        existing = db.execute(
            "SELECT id, sequence, sub_request_id, state FROM steps WHERE request_id = ? "
            "AND coalesce(scope_parent, '') = coalesce(?, '') "
            "AND coalesce(prev_step_id, '') = coalesce(?, '') AND kind = ?",
            (request_id, scope_parent, prev_step, kind.value),
        ).fetchone()
        if existing is None:  # another unique key clashed: a step id drawn twice
            raise sqlite3.IntegrityError(f"a step of {request_id} could not be recorded")
        return RecordedStep(existing[0], existing[1], existing[2]), StepState(existing[3])
    (sequence,) = inserted
    db.execute(
        "INSERT INTO step_requests (request_id, sequence, payload) VALUES (?, ?, ?)",
        (request_id, sequence, descriptor.request_json()),
    )
    return RecordedStep(step_id, sequence, sub_request_id), None


def _sealed_with(
    db: sqlite3.Connection, request_id: str, last: list[tuple[int, str]]
) -> tuple[int, int, str] | None:
    """The sealed row of a response's log as kept, followed by its `last`
    batches; `None` when it cannot be sealed (`ValueError` for a kept sealed
    log that does not read back)."""
    sealing = Sealing()
    # The cursor yields a row at a time: a long log is not read whole.
    for first, text in db.execute(
        "SELECT first_sequence, frames FROM events WHERE request_id = ? ORDER BY first_sequence",
        (request_id,),
    ):
        sealing.add(first, text)
    for first, text in last:
        sealing.add(first, text)
    return sealing.result()


def _replace_log(db: sqlite3.Connection, request_id: str, row: tuple[int, int, str]) -> None:
    """A response's log rows replaced by its one sealed `row`."""
    db.execute("DELETE FROM events WHERE request_id = ?", (request_id,))
    _execute_letting_go(db, _INSERT_SEALED, (request_id, *row))


def _complete(
    db: sqlite3.Connection, step_id: str, payload: str, fence: int | None, now: float
) -> bool:
    """Moves a step to completed with its JSON `payload`, inside the caller's
    transaction; whether it moved."""
    sql, args = _moving(step_id, StepState.COMPLETED, fence, now, response_payload=payload)
    return bool(_execute_letting_go(db, sql, args).rowcount)


def _execute_letting_go(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
    """Runs `sql` with `args`; its cursor. When `args` held a long text, then
    binds NULL to each of its parameters: SQLite keeps its own copy of every
    value bound to a statement until the statement is bound again, and the
    connection keeps its statements for reuse, so a long request, or the
    outcome, completion and sealed log of a long response, would stay in
    memory after its commit, until the next one as long replaced it. Only for
    statements that write nothing with NULLs (an UPDATE of the row whose key
    is NULL, an INSERT OR IGNORE into a NOT NULL column)."""
    cursor = db.execute(sql, args)
    if any(isinstance(arg, str) and len(arg) > _LONG_VALUE for arg in args):
        db.execute(sql, (None,) * len(args))
    return cursor


_LONG_VALUE = 64 * 1024
"""Characters of a bound text past which `_execute_letting_go` unbinds it."""


def _check_fence(db: sqlite3.Connection, request_id: str, fence: int) -> None:
    row = db.execute(
        "SELECT lease_token FROM responses WHERE request_id = ?", (request_id,)
    ).fetchone()
    if row is None or row[0] != fence:
        raise LeaseLost(f"response {request_id} is held under another lease")


def _refused(db: sqlite3.Connection, fences: Mapping[str, int]) -> list[str]:
    """The responses of `fences` whose lease no longer has the given token."""
    ids = list(fences)
    current: dict[str, int] = {}
    for start in range(0, len(ids), _MOST_FENCES):
        some: list[str | None] = [*ids[start : start + _MOST_FENCES]]
        # Padded to a power of two with NULLs (which match nothing): a few
        # statements of each size, each prepared once and then cached,
        # rather than one per count of responses in a commit.
        size = 1 << (len(some) - 1).bit_length()
        some += [None] * (size - len(some))
        current.update(db.execute(_lease_tokens(size), some).fetchall())
    return [request_id for request_id, fence in fences.items() if current.get(request_id) != fence]


_MOST_FENCES = 256
"""Most responses whose leases one statement reads (within SQLite's limit on
a statement's parameters)."""


@functools.cache
def _lease_tokens(size: int) -> str:
    marks = ", ".join(["?"] * size)
    return f"SELECT request_id, lease_token FROM responses WHERE request_id IN ({marks})"


def _translate(error: sqlite3.DatabaseError, path: str) -> Exception:
    message = str(error)
    if "locked" in message or "busy" in message:
        return StoreLocked(f"SQLite database {path} is locked by another writer: {message}")
    if "not a database" in message or "malformed" in message or "corrupt" in message:
        return StoreCorrupt(f"{path} is not a usable SQLite database: {message}")
    return error
