"""``RecordingSink``: keeps every event it is given, and lets a test wait for one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._core import LoopEvent


class RecordingSink:
    """An ``EventSink`` that records events in arrival order.

    With ``batched=True`` (the default) it offers ``emit_many`` and records each
    batch's size in ``batches``; with ``batched=False`` it has only ``emit``.
    """

    def __init__(self, *, batched: bool = True) -> None:
        self.events: list[LoopEvent] = []
        self.batches: list[int] = []
        self._waiters: list[tuple[Callable[[list[LoopEvent]], bool], asyncio.Future[None]]] = []
        if batched:
            self.emit_many = self._emit_many

    async def emit(self, event: LoopEvent) -> None:
        """Record one event."""
        self._record([event])

    async def _emit_many(self, events: list[LoopEvent]) -> None:
        self.batches.append(len(events))
        self._record(events)

    def kinds(self) -> list[str]:
        """The kinds of the recorded events, in order."""
        return [e.kind for e in self.events]

    def of_kind(self, kind: str) -> list[LoopEvent]:
        """The recorded events of one kind."""
        return [e for e in self.events if e.kind == kind]

    def text(self) -> str:
        """All ``response.output_text.delta`` text, concatenated."""
        return "".join(e.data["delta"] for e in self.of_kind("response.output_text.delta"))

    async def wait_for(self, kind: str, count: int = 1) -> None:
        """Return once ``count`` events of ``kind`` have been recorded."""

        def ready(events: list[LoopEvent]) -> bool:
            return sum(1 for e in events if e.kind == kind) >= count

        if ready(self.events):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ready, future))
        await future

    def _record(self, events: list[Any]) -> None:
        self.events.extend(events)
        for ready, future in list(self._waiters):
            if not future.done() and ready(self.events):
                future.set_result(None)
                self._waiters.remove((ready, future))
