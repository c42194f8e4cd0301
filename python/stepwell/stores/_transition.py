"""What every store shares: the transition function's type, the step life cycle,
running the transition, the stored-response view, and a store seen through one
request's transition."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .. import _core
from .._eager import runs_without_task, without_task
from ..errors import StepwellError
from ..types import (
    JSON,
    AppendSteps,
    ChainStep,
    Complete,
    Fail,
    NextAction,
    RecordedStep,
    StepDescriptor,
    StepKind,
    StepState,
)

Decide = Callable[[list[ChainStep], str, str | None], NextAction | Awaitable[NextAction]]
"""A transition function: ``decide(chain, request_id, scope_parent) -> NextAction``.

``chain`` is the scope's steps ordered by sequence. It may be sync or async.
"""


@dataclass(frozen=True)
class BatchedWrites:
    """Writes a run hands to a writer that batches them (a server's event log,
    which keeps them in one commit with the events they go with) rather than
    to the store at once."""

    keep_outcome: Callable[[str, str, JSON], None]
    """``keep_outcome(request_id, status, output)``: takes the response's
    outcome, to keep instead of the store's ``set_outcome`` now."""
    complete_step: Callable[[str, JSON], Awaitable[None]] | None = None
    """``complete_step(step_id, payload)``, done once the step is kept
    completed, instead of the store's; ``None``: the store's."""


class IllegalTransition(StepwellError, ValueError):
    """A step was moved to a state its current state does not allow."""


_ALLOWED: dict[StepState, tuple[StepState, ...]] = {
    StepState.PENDING: (StepState.PROCESSING, StepState.FAILED),
    StepState.PROCESSING: (StepState.COMPLETED, StepState.FAILED),
    StepState.COMPLETED: (),
    StepState.FAILED: (),
}


def sources(to: StepState) -> tuple[StepState, ...]:
    """The states a step may move to ``to`` from."""
    return tuple(state for state, targets in _ALLOWED.items() if to in targets)


def check_move(step_id: str, current: StepState, to: StepState) -> None:
    """Raises ``IllegalTransition`` unless a step may go from ``current`` to ``to``."""
    if to not in _ALLOWED[current]:
        raise IllegalTransition(f"step {step_id} cannot go from {current.value} to {to.value}")


async def decide_next(
    store: Any,
    decide: Decide | None,
    chain: list[ChainStep],
    request_id: str,
    scope_parent: str | None,
    fence: int | None = None,
    keep_outcome: Callable[[str, str, JSON], None] | None = None,
) -> NextAction:
    """Runs `decide` (sync or async) on the scope's chain, checks its answer, and
    records the response's outcome when the top level ends (under `fence`, the
    run's lease token, when it has one), or hands it to `keep_outcome`."""
    if decide is None:
        raise RuntimeError(f"{type(store).__name__} has no transition: pass decide=")
    action: Any = decide(chain, request_id, scope_parent)
    if inspect.isawaitable(action):
        action = await action
    if not isinstance(action, (AppendSteps, Complete, Fail)):
        raise TypeError(
            f"the transition returned {type(action).__name__}; "
            "expected AppendSteps, Complete or Fail"
        )
    if scope_parent is None and isinstance(action, (Complete, Fail)):
        status = "completed" if isinstance(action, Complete) else "failed"
        # An Open Responses payload says itself how it ended (e.g. incomplete).
        if isinstance(action.payload, dict) and isinstance(action.payload.get("status"), str):
            status = action.payload["status"]
        if keep_outcome is not None:
            keep_outcome(request_id, status, action.payload)
        elif fence is None:
            await store.set_outcome(request_id, status, action.payload)
        else:
            await store.set_outcome(request_id, status, action.payload, fence=fence)
    checked: NextAction = action
    return checked


STEP_COLUMNS = (
    "id, sequence, kind, state, request_payload, response_payload, error, "
    "prev_step_id, scope_parent, sub_request_id, created_at, updated_at"
)
"""The columns of a step row, in the order `step_from_row` reads them."""


def step_from_row(row: Any) -> ChainStep:
    """A step from a database row of `STEP_COLUMNS` (payloads as JSON text)."""
    return ChainStep.with_encoded_request(
        row[4],
        id=row[0],
        sequence=row[1],
        kind=StepKind(row[2]),
        state=StepState(row[3]),
        response_payload=json.loads(row[5]) if row[5] is not None else None,
        error=json.loads(row[6]) if row[6] is not None else None,
        prev_step_id=row[7],
        scope_parent=row[8],
        sub_request_id=row[9],
        created_at=row[10],
        updated_at=row[11],
    )


def previous_of(request: JSON) -> str | None:
    """The response a kept request continues (its `previous_response_id`,
    without the `resp_` prefix), for retention to keep."""
    body = request.get("request") if isinstance(request, dict) else None
    previous = body.get("previous_response_id") if isinstance(body, dict) else None
    return _core.request_id_of(str(previous)) if previous else None


def stored_response(
    request_id: str, outcome: tuple[str, JSON] | None, steps: list[ChainStep]
) -> JSON:
    """What ``assemble_response`` returns for every store: the response's status,
    final payload (``None`` until it ends) and every step, in sequence order."""
    return {
        "id": _core.response_id(request_id),
        "object": "response",
        "status": outcome[0] if outcome else "in_progress",
        "output": outcome[1] if outcome else None,
        "steps": [
            {
                "id": s.id,
                "sequence": s.sequence,
                "kind": s.kind.value,
                "state": s.state.value,
                "scope_parent": s.scope_parent,
                "prev_step_id": s.prev_step_id,
                "request_payload": s.request_payload,
                "response_payload": s.response_payload,
                "error": s.error,
            }
            for s in steps
        ],
    }


class WithTransition:
    """A store seen through one request's transition, and one run's lease.

    ``next_action_for`` runs ``decide`` over the store's chain (read once per
    level, then kept as the run writes it); every other call goes to the
    store. Many requests can share one store, each with its own
    transition, and nothing on the store is written per request. With
    ``fence`` (the run's lease token), every write the loop makes carries it,
    so the store refuses them once another process has taken the response.
    With ``batched``, the response's outcome (and, when it says so, each
    step's completion) goes there rather than to the store.
    """

    def __init__(
        self,
        store: Any,
        decide: Decide,
        fence: int | None = None,
        batched: BatchedWrites | None = None,
    ) -> None:
        self.store = store
        self.decide = decide
        self.fence = fence
        self.keep_outcome = batched.keep_outcome if batched is not None else None
        self._complete = batched.complete_step if batched is not None else None
        self._fenced: dict[str, int] = {} if fence is None else {"fence": fence}
        # Offered only when the store offers it (see `record_steps`).
        recording = getattr(store, "record_steps", None)
        self._records: bool | None = without_task(recording) if callable(recording) else None
        # The chain's read, and the transition over it, started at once rather
        # than as a task where what they run says it needs none.
        self._reads_at_once = without_task(getattr(store, "list_chain", None))
        self._decides_at_once = (
            self._reads_at_once
            and getattr(decide, "needs_no_task", False) is True
            and (self.keep_outcome is not None or without_task(getattr(store, "set_outcome", None)))
        )
        # Each level's chain as this run read it (as a level starts) and then
        # wrote it: the transition is handed that, not a new read of the store
        # after every step. Nobody else writes a response's steps while this
        # run holds its lease, and a write that fails ends the run (the core
        # aborts on a store's failure), so it is the chain the store keeps
        # (the times of the steps written here are this process's).
        self._chains: dict[tuple[str, str | None], list[ChainStep]] = {}
        # Where each step of those chains is: its chain, and its place there.
        self._places: dict[str, tuple[list[ChainStep], int]] = {}
        # Levels known empty without a read (`has_no_steps`), until the loop
        # asks for their chain.
        self._unread: set[tuple[str, str | None]] = set()

    def has_no_steps(self, request_id: str) -> None:
        """`request_id` was kept just now, under a new id: its top level's
        chain is empty, and the run does not read it from the store."""
        self._chains.setdefault((request_id, None), [])
        self._unread.add((request_id, None))

    def next_action_for(
        self, request_id: str, scope_parent: str | None
    ) -> Coroutine[Any, Any, NextAction]:
        if self._decides_at_once:
            return self._next_action_at_once(request_id, scope_parent)
        return self._next_action(request_id, scope_parent)

    @runs_without_task
    async def _next_action_at_once(self, request_id: str, scope_parent: str | None) -> NextAction:
        """`_next_action` for a transition and a store that need no task."""
        return await self._next_action(request_id, scope_parent)

    async def _next_action(self, request_id: str, scope_parent: str | None) -> NextAction:
        chain = self._chains.get((request_id, scope_parent))
        if chain is None:
            chain = await self.list_chain(request_id, scope_parent)
        return await decide_next(
            self.store,
            self.decide,
            list(chain),
            request_id,
            scope_parent,
            self.fence,
            self.keep_outcome,
        )

    def record_step(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptor: StepDescriptor,
    ) -> Awaitable[RecordedStep]:
        # The step recorded may be one recorded before, in any state: the
        # level's chain is read again.
        self._chains.pop((request_id, scope_parent), None)
        return self.store.record_step(  # type: ignore[no-any-return]
            request_id, scope_parent, prev_step, descriptor, **self._fenced
        )

    @property
    def record_steps(self) -> Callable[..., Coroutine[Any, Any, list[RecordedStep]]]:
        """The store's `record_steps`, seen through the chains kept here;
        there only when the store has it (the loop asks, once). Started at
        once, not as a task, where the store's own one is. Looked up at each
        call rather than kept bound: a method of its own kept on the object
        would be a reference cycle, and the whole of a response's transition
        would wait for the cyclic collector to be freed."""
        if self._records is None:
            raise AttributeError("record_steps")
        return self._record_steps_at_once if self._records else self._record_steps

    async def _record_steps(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptors: list[StepDescriptor],
    ) -> list[RecordedStep]:
        recorded: list[RecordedStep] = await self.store.record_steps(
            request_id, scope_parent, prev_step, descriptors, **self._fenced
        )
        chain = self._chains.get((request_id, scope_parent))
        if chain is not None:
            # Recorded chained and processing, as `record_steps` records them.
            now = time.time()
            for step, descriptor in zip(recorded, descriptors, strict=True):
                self._places[step.id] = (chain, len(chain))
                chain.append(
                    ChainStep.with_encoded_request(
                        descriptor.request_json(),
                        id=step.id,
                        sequence=step.sequence,
                        kind=StepKind(descriptor.kind),
                        state=StepState.PROCESSING,
                        response_payload=None,
                        error=None,
                        prev_step_id=prev_step,
                        scope_parent=scope_parent,
                        sub_request_id=step.sub_request_id,
                        created_at=now,
                        updated_at=None,
                    )
                )
                prev_step = step.id
        return recorded

    @runs_without_task
    async def _record_steps_at_once(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptors: list[StepDescriptor],
    ) -> list[RecordedStep]:
        """`_record_steps` for a store whose own runs without a task."""
        return await self._record_steps(request_id, scope_parent, prev_step, descriptors)

    def mark_step_processing(self, step_id: str) -> Awaitable[None]:
        self._moved(step_id, StepState.PROCESSING)
        return self.store.mark_step_processing(step_id, **self._fenced)  # type: ignore[no-any-return]

    def complete_step(self, step_id: str, payload: JSON) -> Awaitable[None]:
        self._moved(step_id, StepState.COMPLETED, response_payload=payload)
        if self._complete is not None:
            return self._complete(step_id, payload)
        return self.store.complete_step(step_id, payload, **self._fenced)  # type: ignore[no-any-return]

    def fail_step(self, step_id: str, error: JSON) -> Awaitable[None]:
        self._moved(step_id, StepState.FAILED, error=error)
        return self.store.fail_step(step_id, error, **self._fenced)  # type: ignore[no-any-return]

    def list_chain(
        self, request_id: str, scope_parent: str | None
    ) -> Coroutine[Any, Any, list[ChainStep]]:
        if (request_id, scope_parent) in self._unread:
            self._unread.discard((request_id, scope_parent))
            return _no_steps()
        if self._reads_at_once:
            return self._list_chain_at_once(request_id, scope_parent)
        return self._list_chain(request_id, scope_parent)

    @runs_without_task
    async def _list_chain_at_once(
        self, request_id: str, scope_parent: str | None
    ) -> list[ChainStep]:
        """`_list_chain` for a store whose own needs no task."""
        return await self._list_chain(request_id, scope_parent)

    async def _list_chain(self, request_id: str, scope_parent: str | None) -> list[ChainStep]:
        chain: list[ChainStep] = await self.store.list_chain(request_id, scope_parent)
        kept = self._chains[(request_id, scope_parent)] = list(chain)
        for index, step in enumerate(kept):
            self._places[step.id] = (kept, index)
        return chain

    def _moved(self, step_id: str, state: StepState, **changes: JSON) -> None:
        """The step as the write being made leaves it, in its level's chain."""
        place = self._places.get(step_id)
        if place is None:
            return
        chain, index = place
        moved = object.__new__(ChainStep)
        # Its fields as they are (a payload kept encoded stays so).
        moved.__dict__.update(chain[index].__dict__, state=state, updated_at=time.time(), **changes)
        chain[index] = moved

    def assemble_response(self, request_id: str) -> Awaitable[JSON]:
        return self.store.assemble_response(request_id)  # type: ignore[no-any-return]


@runs_without_task
async def _no_steps() -> list[ChainStep]:
    """The chain of a level known empty."""
    return []
