"""``MemoryStore``: a complete, concurrency-safe store that lives in memory.

It keeps every step of every request, allocates sequences atomically per
request, keeps one chain per scope (the top level, and one per sub-agent step),
and enforces the step life cycle. What happens next is decided by a transition
function you pass in, so the same store serves any protocol.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .._eager import runs_without_task
from ..errors import LeaseLost
from ..types import (
    JSON,
    ChainStep,
    NextAction,
    RecordedStep,
    StepDescriptor,
    StepKind,
    StepState,
)
from ._events import count_frames, frames_after, sealed
from ._transition import Decide, check_move, decide_next, previous_of, stored_response

_Scope = tuple[str, str | None]


@dataclass(frozen=True)
class _Outcome:
    status: str
    payload: JSON


@dataclass
class _Lease:
    owner: str | None = None
    token: int = 0
    expires: float = 0.0
    cancel_requested: bool = False


class MemoryStore:
    """An in-memory ``MultiStepStore`` whose transition is ``decide``.

    Safe to share between concurrent loops on one event loop and across
    threads: every state change happens under one lock.
    """

    def __init__(self, decide: Decide | None = None) -> None:
        self.decide = decide
        self._lock = threading.Lock()
        self._steps: dict[str, ChainStep] = {}
        self._scopes: dict[_Scope, list[str]] = {}
        self._last_sequence: dict[str, int] = {}
        self._outcomes: dict[str, _Outcome] = {}
        self._requests: dict[str, JSON] = {}
        self._events: dict[str, list[tuple[int, str]]] = {}
        self._tenants: dict[str, str] = {}
        self._idempotency: dict[tuple[str, str], str] = {}
        self._leases: dict[str, _Lease] = {}
        self._step_requests: dict[str, str] = {}
        self._ended: dict[str, float] = {}
        self._conversations: dict[str, tuple[str, JSON]] = {}  # id -> (tenant, kept)
        self._conversation_items: dict[str, dict[str, JSON]] = {}  # in the order added

    async def next_action_for(self, request_id: str, scope_parent: str | None) -> NextAction:
        chain = self._chain(request_id, scope_parent)
        return await decide_next(self, self.decide, chain, request_id, scope_parent)

    async def save_request(
        self,
        request_id: str,
        request: JSON,
        *,
        tenant: str = "",
        lease: tuple[str, float] | None = None,
    ) -> int | None:
        """Keep the request a response was created from, owned by ``tenant``
        (once; later saves are ignored), leased to ``lease``'s owner when given:
        its fencing token."""
        with self._lock:
            if request_id in self._requests:
                return None
            self._requests[request_id] = request
            self._tenants[request_id] = tenant
            if lease is None:
                return None
            owner, ttl = lease
            self._leases[request_id] = _Lease(owner, 1, time.time() + ttl)
            return 1

    @runs_without_task
    async def load_request(self, request_id: str, *, tenant: str | None = None) -> JSON:
        """The request a response was created from, if saved (and, when
        ``tenant`` is given, owned by that tenant: another's is not found)."""
        with self._lock:
            if tenant is not None and self._tenants.get(request_id) != tenant:
                return None
            return self._requests.get(request_id)

    @runs_without_task
    async def set_outcome(
        self, request_id: str, status: str, output: JSON, *, fence: int | None = None
    ) -> None:
        """Record how a response ended, and end its lease. The first outcome
        stands: a later call (a second worker that lost a race, say) changes
        nothing. With ``fence``, the write is refused (``LeaseLost``) unless the
        lease still has that token."""
        with self._lock:
            if request_id in self._outcomes:
                return
            if fence is not None:
                self._check_fence(request_id, fence)
            self._outcomes[request_id] = _Outcome(status, output)
            self._ended[request_id] = time.time()
            lease = self._leases.get(request_id)
            if lease is not None:
                lease.owner = None

    # ------------------------------------------------------------ conversations

    async def save_conversation(
        self, conversation_id: str, metadata: JSON, *, tenant: str = ""
    ) -> None:
        """Keep a new conversation with ``metadata``, owned by ``tenant``."""
        kept = {"id": conversation_id, "created_at": int(time.time()), "metadata": metadata}
        with self._lock:
            self._conversations.setdefault(conversation_id, (tenant, kept))
            self._conversation_items.setdefault(conversation_id, {})

    @runs_without_task
    async def load_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> JSON | None:
        """The conversation (only ``tenant``'s, when given), else ``None``."""
        with self._lock:
            owner, kept = self._conversations.get(conversation_id, (None, None))
        if kept is None or (tenant is not None and owner != tenant):
            return None
        return dict(kept)

    async def update_conversation(self, conversation_id: str, metadata: JSON) -> bool:
        """Replace a conversation's metadata; whether there was one."""
        with self._lock:
            if conversation_id not in self._conversations:
                return False
            owner, kept = self._conversations[conversation_id]
            self._conversations[conversation_id] = (owner, {**kept, "metadata": metadata})
            return True

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Forget a conversation and its items; whether there was one."""
        with self._lock:
            self._conversation_items.pop(conversation_id, None)
            return self._conversations.pop(conversation_id, None) is not None

    @runs_without_task
    async def add_conversation_items(self, conversation_id: str, items: list[JSON]) -> None:
        """Append items after those held; an id already held is skipped."""
        with self._lock:
            held = self._conversation_items.get(conversation_id)
            if held is None:
                raise KeyError(f"no conversation {conversation_id!r}")
            for item in items:
                held.setdefault(item["id"], item)

    @runs_without_task
    async def conversation_items(self, conversation_id: str) -> list[JSON]:
        """A conversation's items, in the order they were added."""
        with self._lock:
            return list(self._conversation_items.get(conversation_id, {}).values())

    async def delete_conversation_item(self, conversation_id: str, item_id: str) -> bool:
        """Remove one item; whether it was there."""
        with self._lock:
            held = self._conversation_items.get(conversation_id, {})
            return held.pop(item_id, None) is not None

    # ------------------------------------------------------------ leases

    async def claim(self, request_id: str, owner: str, ttl: float) -> int | None:
        """Take the lease of an unfinished response whose lease is free or has
        expired, for ``ttl`` seconds; returns its new fencing token, or ``None``."""
        now = time.time()
        with self._lock:
            if request_id not in self._requests or request_id in self._outcomes:
                return None
            lease = self._leases.setdefault(request_id, _Lease())
            if lease.owner is not None and lease.expires >= now:
                return None
            lease.owner, lease.token, lease.expires = owner, lease.token + 1, now + ttl
            return lease.token

    async def renew(self, owner: str, ttl: float) -> dict[str, bool]:
        """Extend every lease ``owner`` still holds; returns them, each with
        whether a cancel was requested."""
        held = {}
        with self._lock:
            for request_id, lease in self._leases.items():
                if lease.owner == owner and request_id not in self._outcomes:
                    lease.expires = time.time() + ttl
                    held[request_id] = lease.cancel_requested
        return held

    async def release(self, request_id: str, fence: int) -> None:
        """Give a lease up, if it still has ``fence``."""
        with self._lock:
            lease = self._leases.get(request_id)
            if lease is not None and lease.token == fence:
                lease.owner = None

    async def claimable(self, limit: int = 100) -> list[str]:
        """Unfinished responses that nobody holds a live lease on, oldest first."""
        now = time.time()
        with self._lock:
            free = [
                request_id
                for request_id in self._requests
                if request_id not in self._outcomes
                and (
                    (lease := self._leases.get(request_id)) is None
                    or lease.owner is None
                    or lease.expires < now
                )
            ]
        return free[:limit]

    async def request_cancel(self, request_id: str) -> bool:
        """Ask the lease holder to cancel the response; whether it is unfinished."""
        with self._lock:
            if request_id not in self._requests or request_id in self._outcomes:
                return False
            self._leases.setdefault(request_id, _Lease()).cancel_requested = True
            return True

    def _check_fence(self, request_id: str, fence: int) -> None:
        lease = self._leases.get(request_id)
        if lease is None or lease.token != fence:
            raise LeaseLost(f"response {request_id} is held under another lease")

    @runs_without_task
    async def outcome(self, request_id: str) -> tuple[str, JSON] | None:
        """``(status, output)`` of a finished response, else ``None``."""
        with self._lock:
            found = self._outcomes.get(request_id)
        return (found.status, found.payload) if found else None

    async def claim_idempotency_key(self, tenant: str, key: str, request_id: str) -> str:
        """The response holding ``key`` for ``tenant``: ``request_id`` if the key
        was free (it now holds it), else the one that claimed it first."""
        with self._lock:
            return self._idempotency.setdefault((tenant, key), request_id)

    async def unfinished_responses(self) -> list[str]:
        """The responses kept with a request but no outcome yet."""
        with self._lock:
            return [r for r in self._requests if r not in self._outcomes]

    async def delete_response(self, request_id: str) -> bool:
        """Forget a response: its request, steps, outcome and event log. Returns
        whether there was one."""
        with self._lock:
            existed = self._requests.pop(request_id, None) is not None
            self._tenants.pop(request_id, None)
            for claim in [c for c, held in self._idempotency.items() if held == request_id]:
                del self._idempotency[claim]
            self._outcomes.pop(request_id, None)
            self._ended.pop(request_id, None)
            self._events.pop(request_id, None)
            self._last_sequence.pop(request_id, None)
            self._leases.pop(request_id, None)
            for scope in [s for s in self._scopes if s[0] == request_id]:
                for step_id in self._scopes.pop(scope):
                    self._steps.pop(step_id, None)
                    self._step_requests.pop(step_id, None)
        return existed

    async def prune(self, older_than: float, *, batch: int = 500) -> int:
        """Forgets up to ``batch`` responses that ended more than ``older_than``
        seconds ago; a response that a kept one continues (through
        ``previous_response_id``, at any depth) is kept. Returns how many went."""
        cutoff = time.time() - older_than
        with self._lock:
            old = {r for r, ended in self._ended.items() if ended < cutoff}
            kept = [r for r in self._requests if r not in old]
            while kept:
                previous = previous_of(self._requests[kept.pop()])
                if previous in old:
                    old.discard(previous)
                    kept.append(previous)
            gone = sorted(old, key=self._ended.__getitem__)[:batch]
        for request_id in gone:
            await self.delete_response(request_id)
        return len(gone)

    async def append_events(self, request_id: str, first_sequence: int, frames: str) -> int:
        """Keep a batch of the response's stream frames, numbered from
        ``first_sequence``; returns how many frames it held."""
        count = count_frames(frames)
        with self._lock:
            self._events.setdefault(request_id, []).append((first_sequence, frames))
        return count

    async def append_events_many(
        self, batches: list[tuple[str, int, str]], *, fences: Mapping[str, int] | None = None
    ) -> list[str]:
        """Keep several batches, ``(request_id, first_sequence, frames)`` each, at
        once; a response's batch named in ``fences`` only while its lease has
        that token. Returns the responses whose batches were refused."""
        with self._lock:
            refused = [
                request_id
                for request_id, fence in (fences or {}).items()
                if (lease := self._leases.get(request_id)) is None or lease.token != fence
            ]
            for request_id, first_sequence, frames in batches:
                if request_id not in refused:
                    self._events.setdefault(request_id, []).append((first_sequence, frames))
        return refused

    async def events_after(
        self, request_id: str, after: int, *, limit: int | None = None
    ) -> list[str]:
        """The kept stream frames numbered above ``after``, in order; at most
        ``limit`` of them."""
        with self._lock:
            batches = list(self._events.get(request_id, ()))
        return frames_after(batches, after, limit)

    async def seal_events(self, request_ids: list[str]) -> None:
        """Replace each ended response's logged batches by one sealed log."""
        with self._lock:
            for request_id in request_ids:
                one = sealed(self._events.get(request_id, []))
                if one is not None:
                    self._events[request_id] = [(one[0], one[2])]

    async def prune_events(self, older_than: float, *, batch: int = 500) -> int:
        """Forgets the event logs of up to ``batch`` responses that ended more
        than ``older_than`` seconds ago, keeping the responses; how many went."""
        cutoff = time.time() - older_than
        with self._lock:
            gone = [r for r in self._events if self._ended.get(r, cutoff) < cutoff][:batch]
            for request_id in gone:
                del self._events[request_id]
        return len(gone)

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
        with self._lock:
            if fence is not None:
                self._check_fence(request_id, fence)
            recorded, _ = self._record(
                request_id, scope_parent, prev_step, descriptor, StepState.PENDING
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
        """Every step of an `AppendSteps`, chained and already processing; all
        or none of them."""
        recorded: list[RecordedStep] = []
        moved: list[ChainStep] = []
        with self._lock:
            if fence is not None:
                self._check_fence(request_id, fence)
            last_sequence = self._last_sequence.get(request_id)
            try:
                for descriptor in descriptors:
                    step, found = self._record(
                        request_id, scope_parent, prev_step, descriptor, StepState.PROCESSING
                    )
                    if found is not None:
                        check_move(found.id, found.state, StepState.PROCESSING)
                        moved.append(found)
                        self._steps[found.id] = replace(
                            found, state=StepState.PROCESSING, updated_at=time.time()
                        )
                    recorded.append(step)
                    prev_step = step.id
            except BaseException:
                self._undo(request_id, scope_parent, recorded, moved, last_sequence)
                raise
        return recorded

    def _record(
        self,
        request_id: str,
        scope_parent: str | None,
        prev_step: str | None,
        descriptor: StepDescriptor,
        state: StepState,
    ) -> tuple[RecordedStep, ChainStep | None]:
        """Records a step in ``state`` after ``prev_step``, under the lock: the
        step, and ``None`` or the step the link already held (the same link
        recorded twice is the same step: a re-run transition)."""
        kind = StepKind(descriptor.kind)
        for existing_id in self._scopes.get((request_id, scope_parent), []):
            existing = self._steps[existing_id]
            if existing.prev_step_id == prev_step and existing.kind is kind:
                found = RecordedStep(existing.id, existing.sequence, existing.sub_request_id)
                return found, existing
        if prev_step is not None and prev_step not in self._steps:
            raise KeyError(f"prev_step {prev_step!r} does not exist")
        if scope_parent is not None and scope_parent not in self._steps:
            raise KeyError(f"scope_parent {scope_parent!r} does not exist")
        sequence = self._last_sequence.get(request_id, 0) + 1
        self._last_sequence[request_id] = sequence
        step = ChainStep(
            id=f"step_{uuid.uuid4().hex}",
            sequence=sequence,
            kind=kind,
            state=state,
            request_payload=descriptor.request_payload,
            prev_step_id=prev_step,
            scope_parent=scope_parent,
            sub_request_id=str(uuid.uuid4()) if kind is StepKind.MODEL_CALL else None,
            created_at=time.time(),
        )
        self._steps[step.id] = step
        self._step_requests[step.id] = request_id
        self._scopes.setdefault((request_id, scope_parent), []).append(step.id)
        return RecordedStep(step.id, step.sequence, step.sub_request_id), None

    def _undo(
        self,
        request_id: str,
        scope_parent: str | None,
        recorded: list[RecordedStep],
        moved: list[ChainStep],
        last_sequence: int | None,
    ) -> None:
        """Takes back what a failed `record_steps` did, under the lock."""
        for before in moved:
            self._steps[before.id] = before
        kept = {before.id for before in moved}
        scope = self._scopes.get((request_id, scope_parent), [])
        for step in recorded:
            if step.id not in kept:
                del self._steps[step.id], self._step_requests[step.id]
                scope.remove(step.id)
        if last_sequence is None:
            self._last_sequence.pop(request_id, None)
        else:
            self._last_sequence[request_id] = last_sequence

    @runs_without_task
    async def mark_step_processing(self, step_id: str, *, fence: int | None = None) -> None:
        self._move(step_id, StepState.PROCESSING, fence)

    @runs_without_task
    async def complete_step(self, step_id: str, payload: JSON, *, fence: int | None = None) -> None:
        self._move(step_id, StepState.COMPLETED, fence, response_payload=payload)

    @runs_without_task
    async def fail_step(self, step_id: str, error: JSON, *, fence: int | None = None) -> None:
        self._move(step_id, StepState.FAILED, fence, error=error)

    @runs_without_task
    async def list_chain(self, request_id: str, scope_parent: str | None) -> list[ChainStep]:
        return self._chain(request_id, scope_parent)

    async def assemble_response(self, request_id: str) -> JSON:
        """The response as stored: its status, final payload and every step."""
        return stored_response(
            request_id, await self.outcome(request_id), await self.steps(request_id)
        )

    @runs_without_task
    async def steps(self, request_id: str) -> list[ChainStep]:
        """Every step of a request, in all scopes, ordered by sequence."""
        with self._lock:
            return self._all_steps(request_id)

    @runs_without_task
    async def step(self, step_id: str) -> ChainStep:
        """One step by id."""
        with self._lock:
            return self._steps[step_id]

    def _all_steps(self, request_id: str) -> list[ChainStep]:
        ids = [i for (rid, _), ids in self._scopes.items() if rid == request_id for i in ids]
        return sorted((self._steps[i] for i in ids), key=lambda s: s.sequence)

    def _chain(self, request_id: str, scope_parent: str | None) -> list[ChainStep]:
        with self._lock:
            ids = self._scopes.get((request_id, scope_parent), [])
            return sorted((self._steps[i] for i in ids), key=lambda s: s.sequence)

    def _move(self, step_id: str, to: StepState, fence: int | None, **changes: JSON) -> None:
        with self._lock:
            step = self._steps.get(step_id)
            if step is None:
                raise KeyError(f"no step {step_id!r}")
            if fence is not None:
                self._check_fence(self._step_requests[step_id], fence)
            check_move(step_id, step.state, to)
            self._steps[step_id] = replace(step, state=to, updated_at=time.time(), **changes)
