"""The contracts of the objects the loop calls back into.

Methods may be ``async def`` (the usual case) or plain functions; either way
they run on the event loop that awaited ``run_response_loop``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from ._core import LoopEvent
from .types import (
    JSON,
    ChainStep,
    NextAction,
    RecordedStep,
    RequestContext,
    StepDescriptor,
    ToolSchema,
)


class MultiStepStore(Protocol):
    """Persists steps and runs the transition function."""

    def next_action_for(self, request_id: str, scope_parent: str | None) -> Awaitable[NextAction]:
        """Decide what happens next in a scope of a request."""
        ...

    def record_step(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptor: StepDescriptor,
    ) -> Awaitable[RecordedStep]:
        """Insert a pending step after ``prev_step``, allocating its sequence atomically.

        ``sub_request_id`` must be set for model calls.
        """
        ...

    def mark_step_processing(self, step_id: str) -> Awaitable[None]:
        """Move a step from pending to processing."""
        ...

    def complete_step(self, step_id: str, payload: JSON) -> Awaitable[None]:
        """Store a step's result and mark it completed."""
        ...

    def fail_step(self, step_id: str, error: JSON) -> Awaitable[None]:
        """Store a step's error and mark it failed."""
        ...

    def list_chain(self, request_id: str, scope_parent: str | None) -> Awaitable[list[ChainStep]]:
        """The steps of one scope, ordered by sequence."""
        ...

    def assemble_response(self, request_id: str) -> Awaitable[JSON]:
        """The response object for a request, from its persisted steps."""
        ...


class BatchStepStore(MultiStepStore, Protocol):
    """A store that also records a batch of steps at once; the loop then makes
    one call for an `AppendSteps`, not one `record_step` per step and one
    `mark_step_processing` before each runs."""

    def record_steps(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptors: list[StepDescriptor],
    ) -> Awaitable[list[RecordedStep]]:
        """Record ``descriptors`` in order, each after the one before (the first
        after ``prev_step``), every one already processing: what ``record_step``
        then ``mark_step_processing`` do for each, all or none of them. A link
        already recorded is that step, moved to processing if it was pending."""
        ...


class ResponseStore(MultiStepStore, Protocol):
    """Everything `Responses` and the server keep of a response, beside its
    steps: its request, its outcome, its event log and idempotency keys.

    Every method is a coroutine, so a store over a network database can
    implement it; `stepwell.testing.store_conformance` checks all of it.
    """

    async def save_request(
        self,
        request_id: str,
        request: JSON,
        *,
        tenant: str = "",
        lease: tuple[str, float] | None = None,
    ) -> int | None:
        """Keep the request a response was created from, owned by ``tenant``
        (once: later saves change nothing). With ``lease`` (``owner, ttl``), the
        response is kept already leased to ``owner``, so no other process can
        claim it first; returns that lease's fencing token (``None`` without a
        lease, or when the request was kept before)."""
        ...

    async def load_request(self, request_id: str, *, tenant: str | None = None) -> JSON | None:
        """The kept request, if there is one (and, when ``tenant`` is given,
        it is that tenant's: the store's own query checks it)."""
        ...

    async def set_outcome(
        self, request_id: str, status: str, output: JSON, *, fence: int | None = None
    ) -> None:
        """Record how a response ended, and end its lease. The first outcome
        stands; later ones change nothing. With ``fence``, raise ``LeaseLost``
        unless the response's lease still has that token."""
        ...

    async def outcome(self, request_id: str) -> tuple[str, JSON] | None:
        """``(status, output)`` of a finished response, else ``None``."""
        ...

    async def step(self, step_id: str) -> ChainStep:
        """One step by id; ``KeyError`` for an unknown one."""
        ...

    async def steps(self, request_id: str) -> list[ChainStep]:
        """Every step of a response, in all scopes, ordered by sequence."""
        ...

    async def append_events_many(
        self, batches: list[tuple[str, int, str]], *, fences: Mapping[str, int] | None = None
    ) -> list[str]:
        """Keep batches of stream frames, ``(request_id, first_sequence,
        frames)`` each, in one transaction; a response named in ``fences`` only
        while its lease has that token. Returns the responses refused."""
        ...

    async def events_after(
        self, request_id: str, after: int, *, limit: int | None = None
    ) -> list[str]:
        """The kept stream frames numbered above ``after``, in order; at most
        ``limit`` of them."""
        ...

    async def seal_events(self, request_ids: list[str]) -> None:
        """Store the logs of these ended responses compactly: the same frames,
        read back byte for byte (``stores._events.sealed`` makes the row).

        A store may also offer ``group_commit(batches, *, fences, ended,
        outcomes, completions) -> (refused, unmoved)``: in one transaction,
        ``append_events_many`` of the batches, this for the ``ended``
        responses not refused, ``set_outcome`` of the ``outcomes``
        (``request_id: (status, output)``) and ``complete_step`` of the
        ``completions`` (``(step_id, payload, fence)``), returning the
        responses refused and the steps not moved. The server's event log then
        writes a run's step completions, the events they produced and
        its outcome in its group commits (``SQLiteStore`` offers it); without
        it, each outcome is kept with ``set_outcome`` just before the events
        that end its response, and steps are completed by the run itself."""
        ...

    async def prune_events(self, older_than: float, *, batch: int = 500) -> int:
        """Forget the event logs of up to ``batch`` responses that ended more
        than ``older_than`` seconds ago, keeping the responses; how many went."""
        ...

    async def claim_idempotency_key(self, tenant: str, key: str, request_id: str) -> str:
        """The response holding ``key`` for ``tenant``: ``request_id`` if the
        key was free (it now holds it), else the one that claimed it first."""
        ...

    async def unfinished_responses(self) -> list[str]:
        """The responses kept with a request but no outcome yet."""
        ...

    async def delete_response(self, request_id: str) -> bool:
        """Forget a response (request, steps, outcome, event log, keys);
        returns whether there was one."""
        ...

    async def prune(self, older_than: float, *, batch: int = 500) -> int:
        """Delete up to ``batch`` responses that ended more than ``older_than``
        seconds ago (with their steps, events and keys), keeping any that a
        kept response continues through ``previous_response_id``; how many went."""
        ...

    # Conversations: items kept across responses, per tenant. An item is a
    # JSON object with an "id"; a conversation keeps its items in the order
    # they were added, each id once.

    async def save_conversation(
        self, conversation_id: str, metadata: JSON, *, tenant: str = ""
    ) -> None:
        """Keep a new conversation with ``metadata``, owned by ``tenant``."""
        ...

    async def load_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> JSON | None:
        """``{"id", "created_at", "metadata"}`` of a kept conversation (when
        ``tenant`` is given, only if it is that tenant's), else ``None``."""
        ...

    async def update_conversation(self, conversation_id: str, metadata: JSON) -> bool:
        """Replace a conversation's metadata; whether there was one."""
        ...

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Forget a conversation and its items; whether there was one."""
        ...

    async def add_conversation_items(self, conversation_id: str, items: list[JSON]) -> None:
        """Append ``items`` in order after those the conversation holds; an
        item whose id it already holds is skipped (adding twice keeps once)."""
        ...

    async def conversation_items(self, conversation_id: str) -> list[JSON]:
        """A conversation's items, in the order they were added."""
        ...

    async def delete_conversation_item(self, conversation_id: str, item_id: str) -> bool:
        """Remove one item; whether it was there."""
        ...

    # Leases: one process drives a response at a time. Its claim returns a
    # fencing token that grows with every claim; every write of the run carries
    # it (`fence=`) and is refused with `LeaseLost` once another claimed it.

    async def record_step(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptor: StepDescriptor,
        *,
        fence: int | None = None,
    ) -> RecordedStep:
        """`MultiStepStore.record_step`, refused under a lost ``fence``."""
        ...

    async def mark_step_processing(self, step_id: str, *, fence: int | None = None) -> None:
        """`MultiStepStore.mark_step_processing`, refused under a lost ``fence``."""
        ...

    async def complete_step(self, step_id: str, payload: JSON, *, fence: int | None = None) -> None:
        """`MultiStepStore.complete_step`, refused under a lost ``fence``."""
        ...

    async def fail_step(self, step_id: str, error: JSON, *, fence: int | None = None) -> None:
        """`MultiStepStore.fail_step`, refused under a lost ``fence``."""
        ...

    async def claim(self, request_id: str, owner: str, ttl: float) -> int | None:
        """Take the lease of an unfinished response that nobody holds (or whose
        lease expired) for ``ttl`` seconds: its new fencing token, else ``None``."""
        ...

    async def renew(self, owner: str, ttl: float) -> dict[str, bool]:
        """Extend every lease ``owner`` still holds by ``ttl`` seconds; returns
        them, each with whether a cancel was requested."""
        ...

    async def release(self, request_id: str, fence: int) -> None:
        """Give a lease up, if it still has ``fence``: at once claimable."""
        ...

    async def claimable(self, limit: int = 100) -> list[str]:
        """Unfinished responses with no live lease, oldest first."""
        ...

    async def request_cancel(self, request_id: str) -> bool:
        """Ask the lease holder to cancel; whether the response is unfinished."""
        ...


class ToolExecutor(Protocol):
    """Serves tools to the loop."""

    def tools(self, ctx: RequestContext) -> Awaitable[Sequence[ToolSchema]]:
        """The tools served, each with its kind."""
        ...

    def execute(
        self, tool_name: str, tool_call_id: str, arguments: JSON, ctx: RequestContext
    ) -> Awaitable[JSON]:
        """Run an ``http``-kind tool; raise a ``ToolError`` to fail the step."""
        ...


@runtime_checkable
class EventSink(Protocol):
    """Receives a response's live events. A sink that raises never stops the loop."""

    def emit(self, event: LoopEvent) -> Awaitable[None] | None:
        """Take one event."""
        ...


@runtime_checkable
class BatchEventSink(EventSink, Protocol):
    """A sink that also takes batches; the loop then delivers every queued event at once."""

    def emit_many(self, events: list[LoopEvent]) -> Awaitable[None] | None:
        """Take several events, in order."""
        ...


__all__ = [
    "BatchEventSink",
    "BatchStepStore",
    "EventSink",
    "MultiStepStore",
    "ResponseStore",
    "ToolExecutor",
]
