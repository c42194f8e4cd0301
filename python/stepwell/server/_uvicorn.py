"""uvicorn's server, told about a stop signal as soon as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn


class StoppingServer(uvicorn.Server):
    """Calls `begin_stop` when a stop signal arrives, before uvicorn waits out
    the grace period for open requests: background runs stop at once (the
    next start resumes them) while foreground ones get the grace."""

    def __init__(self, config: uvicorn.Config, begin_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.begin_stop = begin_stop

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Runs in a signal handler: hand the work to the event loop.
        asyncio.get_event_loop().call_soon_threadsafe(self.begin_stop)
        super().handle_exit(sig, frame)
