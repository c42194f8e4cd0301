"""Run supervision: which process drives a response is decided by the store,
through leases, never by one process's memory.

A process claims a response before it runs it and gets a fencing token that
grows with every claim; every write of the run (steps, events, the outcome)
carries it, so the store refuses a run whose lease was taken over, however
long it was paused. While it runs, the lease is renewed (all of the process's
leases in one statement, twice a second); the renewal also brings the
persisted cancel requests, which the holder acts on at once, and tells a run
that lost its lease to stop without writing.

A sweeper in every process claims the unfinished responses that nobody holds:
background responses, which are queued rather than run where they were
created (so `stepwell worker` processes share them), and those whose lease
expired (their process died, or froze); it resumes them: completed steps are
kept, steps found in flight end as the transition says (`step_abandoned`), and
their stream goes on after the last logged event, numbered on from it.
Foreground responses orphaned this way are resumed too: their client is gone,
but the response ends and can be read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..openresponses import Prepared, Responses
from ..stores import BatchedWrites
from .log import EventLog, LogHub, LogWriter

log = logging.getLogger("stepwell.server")

OUTPUT_ITEM_ADDED = "event: response.output_item.added\n"


@dataclass
class Run:
    """A response this process drives: its task, its lease's token, and why it
    was stopped, when it was (``cancel``, ``lost``, ``stopping``)."""

    task: asyncio.Task[Any]
    fence: int
    background: bool
    stopped_for: str | None = field(default=None)
    ending: bool = field(default=False)
    """The run is over and only writing what it queued: nothing stops it now."""


class Runs:
    """The responses this process drives, under the store's leases."""

    def __init__(
        self,
        responses: Responses,
        events: EventLog,
        hub: LogHub,
        *,
        lease_ttl: float = 10.0,
        sweep_interval: float = 0.5,
        max_runs: int = 64,
    ) -> None:
        self.responses = responses
        self.store: Any = responses.store
        self.events = events
        self.hub = hub
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = lease_ttl
        # Cancel requests are acted on within one second.
        self.renew_interval = min(0.5, lease_ttl / 3)
        self.sweep_interval = sweep_interval
        self.max_runs = max_runs
        self.local: dict[str, Run] = {}
        self.stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._unreleased: list[tuple[str, int]] = []

    @property
    def lease(self) -> tuple[str, float]:
        """The lease a response created here is kept under: it runs here."""
        return self.owner, self.lease_ttl

    # ------------------------------------------------------------ life cycle

    async def begin(self) -> None:
        """Starts renewing leases and sweeping for responses to take over; with
        a store that notifies (PostgreSQL), readers here are woken when a log
        grows in any process."""
        watch = getattr(self.store, "watch", None)
        if watch is not None:
            await watch(self.hub.notify)
        self._loops = [
            asyncio.ensure_future(self._every(self.renew_interval, self.renew)),
            asyncio.ensure_future(self._every(self.sweep_interval, self.sweep, self._wake)),
        ]

    def wake(self) -> None:
        """Sweeps now: a background response was queued."""
        self._wake.set()

    def begin_stop(self) -> None:
        """The process was told to stop: background runs stop now, unmarked,
        and their leases are given up, so another process (or the next start)
        takes them over; foreground ones go on for the grace period."""
        self.stopping = True
        for run in list(self.local.values()):
            if run.background:
                self.stop_run(run, "stopping")

    async def stop(self) -> None:
        """Whatever still runs is stopped; renewal and sweeping end."""
        self.begin_stop()
        for loop in self._loops:
            loop.cancel()
        runs = list(self.local.values())
        for run in runs:
            self.stop_run(run, run.stopped_for or "cancel")
        await asyncio.gather(*(run.task for run in runs), *self._loops, return_exceptions=True)

    async def _every(self, interval: float, work: Any, wake: asyncio.Event | None = None) -> None:
        while True:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The store may be restarting: the work is tried again.
                log.warning("run supervision failed, trying again: %r", error)
            if wake is None:
                await asyncio.sleep(interval)
            else:
                try:
                    await asyncio.wait_for(wake.wait(), interval)
                except asyncio.TimeoutError:
                    pass
                wake.clear()

    # ------------------------------------------------------------ running

    async def start(self, prepared: Prepared, *, background: bool) -> Run | None:
        """Claims a new response (unless it was kept leased here: `lease`) and
        drives it, its frames going to the event log; `None` when another
        process claimed it first (it drives it)."""
        request_id = prepared.request_id
        fence = prepared.fence
        if fence is None:
            fence = await self.store.claim(request_id, self.owner, self.lease_ttl)
        if fence is None:
            await prepared.close()
            return None
        writer = LogWriter(self.events, request_id, fence=fence)
        self.hub.started(request_id)
        run = self.responses.drive(
            prepared, on_frames=writer, fence=fence, batched=self._batched(fence)
        )
        return self._track(request_id, run, fence, background)

    async def take_over(self, request_id: str) -> Run | None:
        """Claims an unfinished response nobody drives and drives it on, its
        stream continuing after the last logged event."""
        if request_id in self.local:
            return None
        fence = await self.store.claim(request_id, self.owner, self.lease_ttl)
        if fence is None:
            return None
        saved = await self.store.load_request(request_id)
        logged = await self.store.events_after(request_id, -1)
        next_index = sum(frame.startswith(OUTPUT_ITEM_ADDED) for frame in logged)
        writer = LogWriter(self.events, request_id, fence=fence, next_sequence=len(logged))
        self.hub.started(request_id, len(logged))
        log.info("taking over response %s (lease %d)", request_id, fence)
        run = self.responses.resume(
            request_id,
            fence=fence,
            on_frames=writer,
            next_sequence=len(logged),
            next_output_index=next_index,
            batched=self._batched(fence),
        )
        background = bool(saved and saved["request"].get("background"))
        # A `store: false` response whose client was served elsewhere (that
        # process died): nobody is left to read it, and once it ends it goes.
        unstored = bool(saved and saved["request"].get("store") is False)
        return self._track(request_id, run, fence, background, forget=unstored)

    def _track(
        self,
        request_id: str,
        run: Coroutine[Any, Any, Any],
        fence: int,
        background: bool,
        *,
        forget: bool = False,
    ) -> Run:
        async def tracked() -> Any:
            kept: bool | None = None
            try:
                result = await run
            except asyncio.CancelledError:
                reason = self.local[request_id].stopped_for
                if reason == "cancel":
                    await self.cancelled(request_id, fence)
                raise
            finally:
                # Whatever the run queued (its outcome too) is written before
                # readers are told it ended, so they find it in the store; a
                # stop that comes now does not cut the write short.
                self.local[request_id].ending = True
                try:
                    kept = await asyncio.shield(self._finish(request_id))
                finally:
                    self.local.pop(request_id, None)
                    self.hub.ended(request_id)
                    if not kept:
                        # A run that ended without its outcome kept (the store
                        # failed it) gives the response up, to be taken over;
                        # a kept outcome ended the lease with it.
                        self._unreleased.append((request_id, fence))
                    if self._unreleased:
                        await asyncio.shield(self._release_ended())
                    if forget:
                        await asyncio.shield(self._forget_ended(request_id))
            if kept:
                return result
            # Not kept by this run: the store's outcome stands, if there is one
            # (another process may have ended the response).
            found = await self.store.outcome(request_id)
            return found[1] if found else result

        entry = Run(asyncio.ensure_future(tracked()), fence, background)
        self.local[request_id] = entry
        return entry

    async def _forget_ended(self, request_id: str) -> None:
        """Deletes a `store: false` response if it ended (a run stopped short
        leaves it to be taken over and finished)."""
        try:
            if await self.store.outcome(request_id) is not None:
                await self.store.delete_response(request_id)
        except Exception as error:
            log.warning("response %s (store: false) not deleted: %r", request_id, error)

    async def cancelled(self, request_id: str, fence: int) -> None:
        """Records the cancel of a response this process holds (unless its run
        ended first: its outcome is kept)."""
        if self.events.has_outcome(request_id):
            return
        # What it did until now stays: the output of its completed steps.
        now = await self.responses.current(request_id)
        await self.store.set_outcome(
            request_id, "cancelled", {**(now or {}), "status": "cancelled"}, fence=fence
        )

    def stop_run(self, run: Run, reason: str) -> None:
        if run.ending:
            return
        if run.stopped_for is None:
            run.stopped_for = reason
        run.task.cancel()

    # ------------------------------------------------------------ supervision

    async def renew(self) -> None:
        """Renews this process's leases; stops the runs that lost theirs (without
        writing: another process drives them now) and cancels those a cancel
        was asked for."""
        await self._release_ended()
        # Only runs that started before the renewal can be missing from it.
        before = list(self.local.items())
        held = await self.store.renew(self.owner, self.lease_ttl)
        for request_id, run in before:
            if run.ending or run.task.done():
                continue
            if request_id not in held:
                # Ended (its outcome kept, the run is finishing), or taken over:
                # then whatever this run writes is refused, and it stops.
                if await self.store.outcome(request_id) is None:
                    log.warning("response %s: lease lost, stopping its run here", request_id)
                    self.stop_run(run, "lost")
            elif held[request_id]:
                self.stop_run(run, "cancel")

    def _batched(self, fence: int) -> BatchedWrites:
        """What a run under `fence` hands the event log to write in its group
        commit: its outcome (with the response's terminal event), and its
        steps' completions (with the events they produced) when the store
        can write them so."""
        events = self.events
        complete = None
        if events.completes_steps:
            complete = functools.partial(events.complete_step, fence=fence)
        return BatchedWrites(functools.partial(events.keep_outcome, fence=fence), complete)

    async def _finish(self, request_id: str) -> bool | None:
        """Writes the event log's queue and the run's outcome; whether the
        outcome was kept (see `EventLog.finish`). A failure is logged (the log
        retries it), not raised into a run that is ending."""
        try:
            return await self.events.finish(request_id)
        except Exception as error:
            log.warning("the event log could not be written yet: %r", error)
            return None

    async def _release_ended(self) -> None:
        """Gives up the leases of runs that ended (a no-op for those whose
        outcome is kept, or that another process took over: the token differs);
        what the store cannot take now is tried again at the next renewal."""
        pending, self._unreleased = self._unreleased, []
        for index, (request_id, fence) in enumerate(pending):
            try:
                await self.store.release(request_id, fence)
            except Exception as error:
                log.warning("response %s: lease not released yet: %r", request_id, error)
                self._unreleased += pending[index:]
                return

    async def sweep(self) -> None:
        """Takes over the unfinished responses nobody holds a live lease on (the
        queued background ones, and those whose process died), as many as
        `max_runs` allows: other processes take the rest."""
        room = self.max_runs - len(self.local)
        if self.stopping or room <= 0:
            return
        for request_id in await self.store.claimable(room):
            if self.stopping or len(self.local) >= self.max_runs:
                return
            await self.take_over(request_id)

    async def cancel(self, request_id: str, *, wait: float = 10.0) -> None:
        """Cancels a response wherever it runs: here at once; elsewhere through
        a persisted request its lease holder acts on; a response nobody holds
        is claimed here and recorded cancelled."""
        run = self.local.get(request_id)
        if run is not None:
            self.stop_run(run, "cancel")
            await asyncio.gather(run.task, return_exceptions=True)
            return
        if not await self.store.request_cancel(request_id):
            return  # already ended
        deadline = asyncio.get_running_loop().time() + wait
        while await self.store.outcome(request_id) is None:
            fence = await self.store.claim(request_id, self.owner, self.lease_ttl)
            if fence is not None:
                await self.cancelled(request_id, fence)
                return
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.05)
