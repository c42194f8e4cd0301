"""The contracts of the objects the loop calls back into.

Methods may be ``async def`` (the usual case) or plain functions; either way
they run on the event loop that awaited ``run_response_loop``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
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


__all__ = ["BatchEventSink", "EventSink", "MultiStepStore", "ToolExecutor"]
