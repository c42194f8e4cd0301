"""The native module behind stepwell (Rust, PyO3). Use it through ``stepwell``."""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

class HttpClient:
    """The pooled HTTP client model calls go through.

    Timeouts are in seconds; ``None`` disables one. ``first_chunk_timeout`` covers
    connect, upload, headers and the first SSE event; ``chunk_timeout`` the
    silence between chunks; ``body_timeout`` the whole request;
    ``upload_stall_timeout`` a request body the upstream stops taking. A request
    streams when its body says ``stream: true`` or its path is in
    ``streamable_paths``.
    """

    def __init__(
        self,
        *,
        first_chunk_timeout: float | None = 120.0,
        chunk_timeout: float | None = 60.0,
        body_timeout: float | None = 600.0,
        upload_stall_timeout: float | None = 30.0,
        streamable_paths: Sequence[str] = (),
        request_id_header: str = "X-Request-Id",
        headers: Mapping[str, str] | None = None,
        max_event_bytes: int = 16 * 1024 * 1024,
    ) -> None: ...
    @property
    def request_id_header(self) -> str: ...
    @property
    def streamable_paths(self) -> list[str]: ...

class LoopEvent:
    """One event of a response's live stream."""

    def __init__(self, sequence: int, kind: str, data: Any) -> None: ...
    @property
    def sequence(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> Any: ...
    @property
    def delta(self) -> str | None:
        """The text of a delta event (no dict built); ``None`` for other events."""
    def sse(self) -> str: ...

class CountingSink:
    """A sink that counts events and delta characters without leaving Rust."""

    def __init__(self) -> None: ...
    @property
    def events(self) -> int: ...
    @property
    def delta_chars(self) -> int: ...

class ResponsesStream:
    """A sink encoding a response's events as the Open Responses SSE stream in Rust."""

    def __init__(self, request_id: str, on_frames: Callable[[str], object]) -> None: ...
    def start(self, response: Any) -> str: ...
    @staticmethod
    def done() -> str: ...

def post_json(
    url: str, body: str, headers: Mapping[str, str], timeout: float
) -> Awaitable[tuple[int, str]]: ...
def run_response_loop(
    store: Any,
    tool_executor: Any,
    ctx: Any,
    target: Any,
    *,
    request_id: str,
    sink: Any | None,
    scope_parent: str | None,
    config: Any,
    client: HttpClient | None,
) -> Awaitable[Any]: ...
def _panic_probe() -> Awaitable[Any]: ...
