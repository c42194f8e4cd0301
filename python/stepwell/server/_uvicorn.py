"""uvicorn's server, told about a stop signal as soon as it arrives, and its
HTTP protocol with a deadline on request headers, run one of the ways
`stepwell serve --server` names (see `SERVERS`)."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from collections.abc import Coroutine
from typing import Any

import uvicorn

from .serve import SERVERS


def check(server: str) -> None:
    """Stops the start when what `server` runs on is not installed."""
    loop, parser = SERVERS[server]
    for module in {loop, parser} - {"asyncio", "h11"}:
        if importlib.util.find_spec(module) is None:
            raise SystemExit(f"--server {server} needs {module}: pip install {module}")


def protocol(server: str) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol for `server`."""
    if SERVERS[server][1] == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def run(server: str, main: Coroutine[Any, Any, None]) -> None:
    """Runs `main` on the event loop `server` uses."""
    if SERVERS[server][0] == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


class StoppingServer(uvicorn.Server):
    """Calls `begin_stop` when a stop signal arrives, before uvicorn waits out
    the grace period for open requests: background runs stop at once (the
    next start resumes them) while foreground ones get the grace. A SIGTERM
    ends in a clean stop and exit status 0, as process supervisors expect."""

    def __init__(self, config: uvicorn.Config, begin_stop: Any) -> None:
        super().__init__(config)
        self.begin_stop = begin_stop

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Runs in a signal handler: hand the work to the event loop.
        asyncio.get_event_loop().call_soon_threadsafe(self.begin_stop)
        super().handle_exit(sig, frame)
        # uvicorn raises a captured signal again once it has stopped, which
        # would end the process with -15 after the clean stop; SIGINT stays.
        if sig == signal.SIGTERM:
            self._captured_signals = [s for s in self._captured_signals if s != sig]


def with_header_deadline(seconds: float, server: str) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (for `server`), closing a connection whose
    request headers have not all arrived `seconds` after it opened or after
    its last response: a client that never finishes its headers holds no
    connection for long."""
    base: Any = protocol(server)

    class HeaderDeadline(base):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_request():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self._in_request():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self._in_request() and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline
