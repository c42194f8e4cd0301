"""A response's event log, written as the response runs and read by any number
of clients: a live stream is the log's tail.

Every batch of frames a running response produces is queued; once per turn of
the event loop the queue is written to the store in one transaction (group
commit: many responses, one commit), and only then are the batches handed to
the readers. While other responses run here, a response's opening batch
waits a little (`OPENING_WAIT`) for the commit of what follows it. A reader
keeps a cursor (the last `sequence_number` it sent) and reads after it, from
memory while the response runs here, else from the store:
a reader that joins late, or after a restart, gets exactly the frames the live
stream sent, with no gap and no duplicate, and nothing is sent before it is
persisted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._core import TERMINAL_EVENTS, terminal_event, yield_to_loop
from ..errors import LeaseLost
from ..stores._events import FRAME_END, count_frames, split_frames

log = logging.getLogger("stepwell.server")

_RETRY_AFTER = 0.2  # seconds before a failed group commit is tried again

OPENING_WAIT = 0.002
"""Seconds a response's opening batch (`response.created` and what comes with
it) waits for the next commit before it starts one of its own, while other
responses run here. The run's first step is decided and recorded meanwhile,
and its first deltas, or other responses' batches, usually come in time to
share the commit: on a busy server a response costs no commit of its own to
open. The only response running here has nothing to share a commit with:
its opening is committed as soon as the run's first step is recorded and
its model call sent, and is sent while the model answers, so that its first
delta goes out alone, in a commit and a write of its own."""


TAIL_CHARS = 64 * 1024
"""How much of a running response's log the hub keeps in memory (at least what
its last commit wrote): a reader at the tail takes frames from there, one
further behind reads them from the store."""

ENDED_TAILS_CHARS = 2 * 1024 * 1024
"""How much of the tails of responses that ended here the hub keeps, all
together (the latest ones): their readers are mostly behind by the last
batches when the run ends, and finish from memory rather than the store."""

READ_WINDOW = 512
"""Most frames a reader takes from the store at once: a reader far behind (a
slow client, a late one) holds a window of the log, never the whole of it."""


PIECE_CHARS = 64 * 1024
"""About the most characters a reader takes from the store joins into one
piece of its stream."""


class LogHub:
    """Wakes the readers of a response when its log grows or its run ends, and
    keeps the last persisted batches of the responses running here in memory
    (`TAIL_CHARS` of each), so a reader at the tail takes them from here rather
    than reading back what was just written; and, for their readers still
    behind, the tails of the runs that ended here last (`ENDED_TAILS_CHARS`
    of them all)."""

    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}
        self._readers: dict[str, int] = {}
        self._recent: dict[str, deque[tuple[int, int, str]]] = {}
        self._recent_chars: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._ended: OrderedDict[str, tuple[deque[tuple[int, int, str]], int]] = OrderedDict()
        self._ended_chars = 0

    def changed(self, request_id: str) -> asyncio.Event:
        """The event the next change of `request_id` sets. Take it before
        reading the log, so a change made after the read is never missed, and
        give it back with `forget` when done with it."""
        event = self._changed.get(request_id)
        if event is None:
            event = self._changed[request_id] = asyncio.Event()
        self._readers[request_id] = self._readers.get(request_id, 0) + 1
        return event

    def forget(self, request_id: str, event: asyncio.Event) -> None:
        """A reader is done with `event`; the last one to be done with an event
        nothing set drops it, so the hub keeps nothing for readers gone."""
        if self._changed.get(request_id) is event:
            self._readers[request_id] -= 1
            if self._readers[request_id] == 0:
                del self._changed[request_id], self._readers[request_id]

    def notify(self, request_id: str) -> None:
        event = self._changed.pop(request_id, None)
        self._readers.pop(request_id, None)
        if event is not None:
            event.set()

    def started(self, request_id: str, next_sequence: int = 0) -> None:
        """A run here begins logging `request_id` at `next_sequence`: what
        comes before is in the store, what comes after comes through here, so
        a reader waiting for it need not look in the store first."""
        self._forget_ended(request_id)
        self._recent[request_id] = deque()
        self._recent_chars[request_id] = 0
        self._next[request_id] = next_sequence

    def running(self) -> int:
        """How many runs here are logging a response."""
        return len(self._recent)

    def kept(self, request_id: str, written: list[tuple[int, int, str]]) -> None:
        """Batches `(first_sequence, count, frames)` the store now holds, all
        written in one commit: the tail keeps at least them, so the readers
        this wakes find all they were woken for here."""
        batches = self._recent.setdefault(request_id, deque())
        batches.extend(written)
        added = sum(len(frames) for _, _, frames in written)
        kept = self._recent_chars.get(request_id, 0) + added
        while kept > max(TAIL_CHARS, added) and len(batches) > len(written):
            kept -= len(batches.popleft()[2])
        self._recent_chars[request_id] = kept
        self.notify(request_id)

    def ended(self, request_id: str) -> None:
        """The run is over: its tail is kept among the ended ones (within
        `ENDED_TAILS_CHARS`), and readers go to the store for anything else."""
        batches = self._recent.pop(request_id, None)
        chars = self._recent_chars.pop(request_id, 0)
        self._next.pop(request_id, None)
        if batches:
            self._ended[request_id] = (batches, chars)
            self._ended_chars += chars
            while self._ended_chars > ENDED_TAILS_CHARS:
                self._forget_ended(next(iter(self._ended)))
        self.notify(request_id)

    def _forget_ended(self, request_id: str) -> None:
        entry = self._ended.pop(request_id, None)
        if entry is not None:
            self._ended_chars -= entry[1]

    def text_after(
        self, request_id: str, after: int, *, ended: bool = False
    ) -> tuple[str, int] | None:
        """`(frames, how many)` numbered above `after` from memory, or `None`
        when memory does not hold them all (the run is not here, or the reader
        is behind what is kept). With `ended`, for a reader that was following
        the run here, also from the tail of a run that ended here."""
        batches = self._recent.get(request_id)
        running = batches is not None
        if batches is None and ended and request_id in self._ended:
            batches = self._ended[request_id][0]
        if running and not batches and after + 1 >= self._next[request_id]:
            return "", 0  # the run here has logged nothing yet: wait for it
        if not batches or batches[0][0] > after + 1:
            return None
        pieces, count = [], 0
        for first, size, frames in batches:
            skip = after + 1 - first
            if skip >= size:
                continue
            pieces.append("".join(split_frames(frames)[skip:]) if skip > 0 else frames)
            count += size - max(skip, 0)
        if not count and not running:
            return None  # read to the end of an ended run's tail: the store has the rest
        return "".join(pieces), count


class EventLog:
    """Queues the batches of every running response and writes them to the
    store together, once per turn of the event loop, before readers get them.

    A run hands its response's outcome here too (`keep_outcome`): it is kept
    in the commit that writes the response's terminal event, or, for a run
    that ends without one, when the run finishes (`finish`). With a store that
    offers `group_commit`, a run's steps are marked completed in the commit
    of the events they produced (`complete_step`)."""

    def __init__(self, store: Any, hub: LogHub) -> None:
        self.store = store
        self.hub = hub
        self._queued: list[tuple[str, int, int, str, bool]] = []
        # How many batches were ever queued, and how many of the first of
        # them commits took (they are taken in order).
        self._appended = 0
        self._taken = 0
        self._fences: dict[str, int] = {}
        # Outcomes handed and not written yet; those to write in the next commit.
        self._outcomes: dict[str, tuple[str, Any, int | None]] = {}
        self._due: set[str] = set()
        # Whether each written outcome was kept, until its run's `finish` asks.
        self._kept: dict[str, bool] = {}
        self._finishing: set[str] = set()
        self._completions: list[tuple[str, Any, int | None, asyncio.Future[None]]] = []
        self._scheduled = False
        # One write at a time, so a response's batches reach the store in order.
        self._writing = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._group_commit = getattr(store, "group_commit", None)

    @property
    def completes_steps(self) -> bool:
        """Whether runs hand their steps' completions here (the store writes
        them with the events in one commit)."""
        return self._group_commit is not None

    def append(
        self,
        request_id: str,
        first_sequence: int,
        frames: str,
        fence: int | None = None,
        *,
        streamed: bool = True,
    ) -> int:
        """Queues a batch, written only while the run's lease has `fence`;
        returns how many frames it holds. The log of a response that
        `streamed` deltas is sealed once it ends (one without is as small)."""
        count = count_frames(frames)
        if count:
            self._queued.append((request_id, first_sequence, count, frames, streamed))
            self._appended += 1
            if fence is not None:
                self._fences[request_id] = fence
            if first_sequence == 0 and not is_terminal(frames):
                self._opening(self._appended)
            else:
                self._soon()
        return count

    def keep_outcome(
        self, request_id: str, status: str, output: Any, fence: int | None = None
    ) -> None:
        """Takes how a response ended, to keep in the commit that writes its
        terminal event (under `fence`, like its batches); the first outcome
        handed for a response stands."""
        self._outcomes.setdefault(request_id, (status, output, fence))
        self._finishing.add(request_id)

    def complete_step(
        self, step_id: str, payload: Any, fence: int | None = None
    ) -> asyncio.Future[None]:
        """Marks a step completed in the next commit (under `fence`);
        the future is done once it is, or has the store's refusal
        (`LeaseLost`, `IllegalTransition`) or failure."""
        done = asyncio.get_running_loop().create_future()
        self._soon()
        self._completions.append((step_id, payload, fence, done))
        return done

    def only_queued(self, request_id: str) -> bool:
        """Whether every batch waiting for the next commit is `request_id`'s."""
        return all(queued[0] == request_id for queued in self._queued)

    def has_outcome(self, request_id: str) -> bool:
        """Whether a run handed the response's outcome here (kept or not yet)."""
        return request_id in self._outcomes or request_id in self._kept

    async def finish(self, request_id: str) -> bool | None:
        """Writes what is queued and the outcome of a run that is over; returns
        whether that outcome was kept (`False`: its lease was lost), `None`
        when it had none, or it could not be written yet (the log tries again)."""
        if request_id in self._outcomes:
            self._due.add(request_id)
        try:
            await self.flush()
        finally:
            self._finishing.discard(request_id)
        return self._kept.pop(request_id, None)

    def _soon(self) -> None:
        """Starts a commit on the next turn of the loop, unless one is due:
        everything queued until then goes in it."""
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.ensure_future(self.flush())
            self._tasks.add(task)
            task.add_done_callback(self._written)

    def _opening(self, batch: int) -> None:
        """Starts a commit for the `batch`th batch ever queued, an opening
        one: in `OPENING_WAIT` unless another commit took it by then (a timer
        left over from a response whose opening went in another commit must
        not break up the commits of the responses running when it fires), or,
        for the only response running here, two turns of the loop from now.
        Its run is starting: the core's first stretch of it (the first step
        decided and recorded, its model call sent) runs in the next turn's
        drain of the core's jobs, after the callbacks scheduled before it,
        and the commit must not go before it."""
        loop = asyncio.get_running_loop()
        if self.hub.running() > 1:
            loop.call_later(OPENING_WAIT, lambda: self._soon() if self._taken < batch else None)
        else:
            loop.call_soon(self._soon)  # `_soon` itself starts the commit a turn later

    def _retry_later(self) -> None:
        """Starts a commit in `_RETRY_AFTER`, unless what is queued by then
        was written by another."""
        loop = asyncio.get_running_loop()
        loop.call_later(_RETRY_AFTER, lambda: self._soon() if self._queued or self._due else None)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("the event log could not be written yet: %r", task.exception())

    async def flush(self) -> None:
        """Writes what is queued, in one transaction, then hands it to readers;
        returns once everything queued before the call is written."""
        async with self._writing:
            self._scheduled = False
            queued, self._queued = self._queued, []
            self._taken += len(queued)
            fences, self._fences = self._fences, {}
            completions, self._completions = self._completions, []
            terminal = {r: streamed for r, _, _, frames, streamed in queued if is_terminal(frames)}
            due, self._due = self._due, set()
            outcomes = {
                r: self._outcomes.pop(r) for r in due.union(terminal) if r in self._outcomes
            }
            if not queued and not outcomes and not completions:
                return
            fences.update((r, o[2]) for r, o in outcomes.items() if o[2] is not None)
            batches = [(r, first, frames) for r, first, _, frames, _ in queued]
            ending = [r for r, streamed in terminal.items() if streamed]
            try:
                refused, unmoved, sealed = await self._write(
                    batches, fences, ending, outcomes, completions
                )
            except Exception as error:
                # Nothing of the commit was kept (a restarting database, say):
                # the batches go back to the front, in order, for the next one,
                # and the outcomes with them; the runs waiting on a step's
                # completion are told.
                self._queued[:0] = queued
                self._taken -= len(queued)
                self._fences = {**fences, **self._fences}
                self._outcomes = {**outcomes, **self._outcomes}
                self._due |= set(outcomes)
                for *_, done in completions:
                    if not done.done():
                        done.set_exception(error)
                self._retry_later()
                raise
            await self._completed(completions, unmoved)
            for request_id in outcomes:
                if request_id in self._finishing:
                    self._kept[request_id] = request_id not in refused
            # A refused batch's run lost its lease: another process logs the
            # response now, and readers read that from the store.
            kept = [batch for batch in queued if batch[0] not in refused]
            ended = [r for r in ending if r not in refused]
            if ended and not sealed:
                # Before readers get the terminal event: once a client has
                # it, the log it may read again is the sealed one.
                await self._seal(ended)
            written: dict[str, list[tuple[int, int, str]]] = {}
            for request_id, first, count, frames, _ in kept:
                written.setdefault(request_id, []).append((first, count, frames))
            for request_id, tail in written.items():
                self.hub.kept(request_id, tail)

    async def _write(
        self,
        batches: list[tuple[str, int, str]],
        fences: dict[str, int],
        ending: list[str],
        outcomes: dict[str, tuple[str, Any, int | None]],
        completions: list[tuple[str, Any, int | None, asyncio.Future[None]]],
    ) -> tuple[set[str], set[str], bool]:
        """One commit of batches, outcomes and completions: the responses
        refused, the steps not moved, and whether the logs that end were
        sealed in it."""
        if self._group_commit is not None:
            refused, unmoved = await self._group_commit(
                batches,
                fences=fences,
                ended=ending,
                outcomes={r: (status, output) for r, (status, output, _) in outcomes.items()},
                completions=[
                    (step_id, payload, fence) for step_id, payload, fence, _ in completions
                ],
            )
            return set(refused), set(unmoved), True
        # Each outcome before the events that end its response, so whoever
        # reads the terminal event finds the outcome kept.
        refused = await self._set_outcomes(outcomes)
        if batches:
            refused.update(await self.store.append_events_many(batches, fences=fences))
        return refused, set(), False

    async def _set_outcomes(self, outcomes: dict[str, tuple[str, Any, int | None]]) -> set[str]:
        """Keeps outcomes one by one with the store's `set_outcome`; those
        whose lease was lost."""
        refused = set()
        for request_id, (status, output, fence) in outcomes.items():
            try:
                if fence is None:
                    await self.store.set_outcome(request_id, status, output)
                else:
                    await self.store.set_outcome(request_id, status, output, fence=fence)
            except LeaseLost:
                refused.add(request_id)
        return refused

    async def _completed(
        self,
        completions: list[tuple[str, Any, int | None, asyncio.Future[None]]],
        unmoved: set[str],
    ) -> None:
        """Tells the runs their steps' completions are kept. A step the commit
        did not move is moved on its own, which raises why it cannot be."""
        for step_id, payload, fence, done in completions:
            error: BaseException | None = None
            if step_id in unmoved:
                try:
                    if fence is None:
                        await self.store.complete_step(step_id, payload)
                    else:
                        await self.store.complete_step(step_id, payload, fence=fence)
                except Exception as refusal:
                    error = refusal
            if done.done():
                continue  # its run stopped waiting
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    async def _seal(self, request_ids: list[str]) -> None:
        """Stores the logs of responses that just ended compactly. A log left
        unsealed (the store was unreachable) is still whole, only larger."""
        try:
            await self.store.seal_events(request_ids)
        except Exception as error:
            log.warning("ended responses' event logs could not be sealed: %r", error)


class LogWriter:
    """The `on_frames` of a running response: numbers each batch and queues it
    under the run's lease token, noting whether the response streamed deltas
    (a resumed run counts as one that did)."""

    def __init__(
        self, log: EventLog, request_id: str, *, fence: int | None = None, next_sequence: int = 0
    ) -> None:
        self.log = log
        self.request_id = request_id
        self.fence = fence
        self.next_sequence = next_sequence
        self.streamed = next_sequence > 0

    def __call__(self, frames: str) -> None:
        first_delta = not self.streamed and _DELTA in frames
        self.streamed = self.streamed or first_delta
        self.next_sequence += self.log.append(
            self.request_id, self.next_sequence, frames, self.fence, streamed=self.streamed
        )
        if first_delta and self.log.only_queued(self.request_id):
            # The commit that sends the stream's first delta starts before the
            # core hands over what came after it: an upstream that answers at
            # once would otherwise have the whole answer, its completion and
            # its end folded into that commit first. With other streams
            # queued, the commit is theirs too and would only be split. The
            # only response running here also has the delta sent before the
            # core goes on; a busy server would have every stream wait a turn.
            yield_to_loop(past_readers=self.log.hub.running() == 1)


_DELTA = ".delta\ndata: "  # in a batch holding a delta frame, only there


def terminal_frame(response: dict[str, Any], sequence_number: int) -> str | None:
    """The frame ending a stream with `response`, or `None` for a status that
    has no terminal event (`cancelled`: its stream just ends)."""
    kind = terminal_event(str(response.get("status")))
    if kind is None:
        return None
    event = {"type": kind, "sequence_number": sequence_number, "response": response}
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n"


def is_terminal(frames: str) -> bool:
    """Whether the last frame of `frames` is the stream's last event."""
    # The last frame starts after the blank line before the final one; only
    # its first line is looked at, so a large batch is not copied.
    start = frames.rfind(FRAME_END, 0, len(frames) - len(FRAME_END)) + len(FRAME_END)
    if start < len(FRAME_END):
        start = 0
    head = frames[start : frames.find("\n", start)]
    return head.removeprefix("event: ") in TERMINAL_EVENTS


def joined(frames: list[str]) -> list[str]:
    """`frames` joined into pieces of about `PIECE_CHARS` (a longer frame is a
    piece of its own): a reader far behind does not copy a window of long
    frames (an ended response's `.done` frames each repeat its whole text)
    into one string."""
    pieces: list[str] = []
    start = size = 0
    for end, frame in enumerate(frames):
        if size and size + len(frame) > PIECE_CHARS:
            pieces.append("".join(frames[start:end]))
            start, size = end, 0
        size += len(frame)
    if start < len(frames):
        pieces.append("".join(frames[start:]))
    return pieces


async def follow(
    store: Any,
    hub: LogHub,
    request_id: str,
    after: int,
    *,
    local: Callable[[], bool],
    ended: Callable[[], bool],
    poll: float = 0.1,
) -> AsyncIterator[str]:
    """The frames numbered above `after`, then the live ones, until the
    terminal event: a stream ends where the log does, whichever process writes
    it. A response this process runs wakes its readers as its log grows
    (`local`); one run elsewhere is looked for in the store every `poll`
    seconds. A response that ended without a terminal event (cancelled), or
    whose terminal event was never logged (or whose log was pruned), ends its
    stream when its outcome is kept; `ended` ends it early (the server is
    stopping). A reader that joined a run here and is still behind when it
    ends finishes from the tail the hub keeps; one that joins later (a replay)
    reads the store."""
    following = local()
    while True:
        changed = hub.changed(request_id)
        try:
            found = hub.text_after(request_id, after, ended=following)
            if found is None:
                frames = await store.events_after(request_id, after, limit=READ_WINDOW)
                pieces, count = joined(frames), len(frames)
            else:
                pieces, count = [found[0]], found[1]
            if count:
                after += count
                for text in pieces:
                    yield text
                if is_terminal(pieces[-1]):
                    return
                continue
            if local():
                # Its run here wakes readers for every batch and at its end.
                await changed.wait()
                continue
            outcome = await store.outcome(request_id)
            if outcome is not None:
                frames = await store.events_after(request_id, after, limit=1)
                if frames:
                    continue  # written just before the outcome: read them first
                # Also a log pruned after its replay window: the stream is
                # then the terminal event alone, which carries the response.
                last = terminal_frame(outcome[1], after + 1)
                if last is not None:
                    yield last
                return
            if ended():
                return
            try:
                await asyncio.wait_for(changed.wait(), poll)
            except asyncio.TimeoutError:
                pass
        finally:
            hub.forget(request_id, changed)
