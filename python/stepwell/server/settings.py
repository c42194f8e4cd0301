"""How the server treats requests and runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    """How the server treats requests and runs."""

    max_body: int = 16 * 1024 * 1024
    """Largest request body accepted, in bytes; larger is a 413."""
    body_timeout: float = 30.0
    """Seconds a client may take between two pieces of its request body; a
    client slower than that gets a 408 and its connection closed."""
    keys: Mapping[str, str] | None = None
    """`{sha256 digest of a key: tenant}` (see `auth.load_keys`); `None` serves
    every request unauthenticated, as one tenant."""
    lease_ttl: float = 10.0
    """Seconds a run's lease lasts without renewal: how long a response whose
    process died (or froze) waits before another process takes it over."""
    sweep_interval: float = 0.5
    """Seconds between two looks for responses to run: queued background ones,
    and those whose lease expired."""
    max_runs: int = 64
    """Most responses this process takes from the queue to run at once (those
    it creates in the foreground are not counted against it)."""
    retention: float | None = None
    """Seconds after its end a response is deleted (with its steps, events and
    keys); `None` keeps every response."""
    replay_window: float | None = 600.0
    """Seconds after its end a response's event log is kept, for its stream to
    be read again (`GET /v1/responses/{id}?stream=true`); then only the
    response itself is, and such a read gets the terminal event alone. `None`
    keeps the log as long as the response."""
    websocket_max_age: float = 3600.0
    """Seconds a WebSocket connection lasts: then it gets
    `websocket_connection_limit_reached` and is closed."""
    poll_interval: float = 0.1
    """Seconds between two looks at the event log of a response another
    process runs, for its readers here."""
