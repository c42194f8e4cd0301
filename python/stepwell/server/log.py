"""A response's event log, written as the response runs and read by any number
of clients: a live stream is the log's tail.

Every batch of frames the loop produces is appended to the store (one
transaction per batch), then readers waiting on that response are woken. A
reader keeps a cursor (the last `sequence_number` it sent) and always reads the
store after it, so a reader that joins late, or after a restart, gets exactly
the frames the live stream sent, with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

TERMINAL_EVENTS = ("response.completed", "response.failed", "response.incomplete")


class LogHub:
    """Wakes the readers of a response when its log grows or its run ends."""

    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}

    def changed(self, request_id: str) -> asyncio.Event:
        """The event the next change of `request_id` sets. Take it before
        reading the log, so a change made after the read is never missed."""
        return self._changed.setdefault(request_id, asyncio.Event())

    def notify(self, request_id: str) -> None:
        event = self._changed.pop(request_id, None)
        if event is not None:
            event.set()


class LogWriter:
    """The `on_frames` of a running response: numbers each batch and appends it."""

    def __init__(self, store: Any, hub: LogHub, request_id: str) -> None:
        self.store = store
        self.hub = hub
        self.request_id = request_id
        self.next_sequence = 0

    def __call__(self, frames: str) -> None:
        self.next_sequence += self.store.append_events(self.request_id, self.next_sequence, frames)
        self.hub.notify(self.request_id)


_TERMINAL_BY_STATUS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


def terminal_frame(response: dict[str, Any], sequence_number: int) -> str | None:
    """The frame ending a stream with `response`, or `None` for a status that
    has no terminal event (`cancelled`: its stream just ends)."""
    kind = _TERMINAL_BY_STATUS.get(str(response.get("status")))
    if kind is None:
        return None
    event = {"type": kind, "sequence_number": sequence_number, "response": response}
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n"


def last_sequence(store: Any, request_id: str) -> int:
    """The number of the last event logged for a response; -1 for none."""
    return -1 + len(store.events_after(request_id, -1))


def is_terminal(frame: str) -> bool:
    """Whether a frame is the stream's last event."""
    head = frame.split("\n", 1)[0]
    return head.removeprefix("event: ") in TERMINAL_EVENTS


async def follow(
    store: Any, hub: LogHub, request_id: str, after: int, running: Callable[[], bool]
) -> AsyncIterator[str]:
    """The frames numbered above `after`, then the live ones, until the terminal
    event; or, for a response no worker here is running, until the log ends."""
    while True:
        changed = hub.changed(request_id)
        frames = store.events_after(request_id, after)
        if frames:
            after += len(frames)
            yield "".join(frames)
            if is_terminal(frames[-1]):
                return
            continue
        if not running():
            return
        await changed.wait()
