"""The native module behind stepwell (Rust, PyO3). Use it through ``stepwell``.

Checked against the built module by ``python -m mypy.stubtest stepwell._core``
(``scripts/test.sh``). Its classes are native and final: they cannot be
subclassed, and they construct in ``__new__``.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, final

from typing_extensions import Self

__all__ = [
    "COMPACTION_TOOL",
    "SEALED_LOG",
    "TERMINAL_EVENTS",
    "CountingSink",
    "HttpClient",
    "LogSealer",
    "LoopEvent",
    "ResponsesStream",
    "carried_messages",
    "check_loop_config",
    "compact_json",
    "compaction_item",
    "count_frames",
    "function_call_item",
    "function_output_item",
    "hand_long_texts_over_in_pieces",
    "id_prefix",
    "loop_config_defaults",
    "mcp_approval_request_item",
    "mcp_call_item",
    "mcp_list_tools_item",
    "message_item",
    "post_json",
    "reasoning_item",
    "request_id_of",
    "response_id",
    "run_response_loop",
    "sealed_count",
    "terminal_event",
    "unseal_log",
    "yield_to_loop",
]

@final
class HttpClient:
    """The pooled HTTP client model calls (and ``HttpTools`` calls) go through.

    Timeouts are in seconds; ``None`` disables one. ``first_chunk_timeout`` covers
    connect, upload, headers and the first SSE event; ``chunk_timeout`` the
    silence between chunks; ``body_timeout`` the whole request;
    ``upload_stall_timeout`` a request body the upstream stops taking. A request
    streams when its body says ``stream: true`` or its path is in
    ``streamable_paths``. Defaults (the Rust core's): 120, 60, 600 and 30
    seconds, no streamable paths, ``X-Request-Id``, 16 MiB events.
    """

    def __new__(
        cls,
        *,
        first_chunk_timeout: float | None = ...,
        chunk_timeout: float | None = ...,
        body_timeout: float | None = ...,
        upload_stall_timeout: float | None = ...,
        streamable_paths: Sequence[str] = ...,
        request_id_header: str = ...,
        headers: Mapping[str, str] | None = None,
        max_event_bytes: int = ...,
    ) -> Self: ...
    @property
    def request_id_header(self) -> str: ...
    @property
    def streamable_paths(self) -> list[str]: ...

@final
class LoopEvent:
    """One event of a response's live stream."""

    def __new__(cls, sequence: int, kind: str, data: Any) -> Self: ...
    @property
    def sequence(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> Any: ...
    @property
    def depth(self) -> int:
        """0 at the top level; a sub-agent's depth for its events."""
    @property
    def scope_parent(self) -> str | None:
        """The step that called the sub-agent that produced the event."""
    @property
    def delta(self) -> str | None:
        """The text of a delta event (no dict built); ``None`` for other events."""

@final
class CountingSink:
    """A sink that counts events and delta characters without leaving Rust."""

    def __new__(cls) -> Self: ...
    @property
    def events(self) -> int: ...
    @property
    def delta_chars(self) -> int: ...

@final
class ResponsesStream:
    """A sink encoding a response's events as the Open Responses SSE stream in Rust."""

    def __new__(
        cls,
        request_id: str,
        on_frames: Callable[[str], object],
        mcp: Mapping[str, tuple[str, str, bool]] | None = None,
    ) -> Self: ...
    def start(self, response: Any) -> str: ...
    def announce(self, items: Any) -> str: ...
    def resume(self, response: Any, next_sequence: int, next_output_index: int) -> None: ...
    @staticmethod
    def done() -> str: ...

def post_json(
    url: str,
    body: str,
    headers: Mapping[str, str],
    timeout: float,
    client: HttpClient | None = None,
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
    observer: Any | None,
) -> Awaitable[Any]: ...
def loop_config_defaults() -> dict[str, Any]: ...
def check_loop_config(config: Any) -> None: ...
def hand_long_texts_over_in_pieces(on: bool) -> None: ...
def yield_to_loop(past_readers: bool = False) -> None: ...

# Open Responses in one place: ids, items and terminal events, built by the
# same Rust functions the stream encoder uses.
TERMINAL_EVENTS: tuple[str, ...]
COMPACTION_TOOL: str

def response_id(request_id: str) -> str: ...
def request_id_of(response_id: str) -> str: ...
def id_prefix(kind: str) -> str: ...
def terminal_event(status: str) -> str | None: ...
def reasoning_item(request_id: str, sequence: int, text: str) -> dict[str, Any]: ...
def message_item(
    request_id: str, sequence: int, text: str, logprobs: Any, called_tools: bool
) -> dict[str, Any]: ...
def function_call_item(
    request_id: str, sequence: int, call_id: str, name: str, arguments: str
) -> dict[str, Any]: ...
def function_output_item(
    request_id: str, sequence: int, call_id: str, output: str
) -> dict[str, Any]: ...
def compaction_item(request_id: str, sequence: int, encrypted_content: str) -> dict[str, Any]: ...
def mcp_call_item(
    request_id: str,
    sequence: int,
    call_id: str,
    server_label: str,
    name: str,
    arguments: str,
    status: str,
    output: str | None = None,
    error: str | None = None,
    approval_request_id: str | None = None,
) -> dict[str, Any]: ...
def mcp_approval_request_item(
    request_id: str, sequence: int, call_id: str, server_label: str, name: str, arguments: str
) -> dict[str, Any]: ...
def mcp_list_tools_item(
    request_id: str, index: int, server_label: str, tools: Any, error: str | None = None
) -> dict[str, Any]: ...
def compact_json(value: Any) -> str: ...
def carried_messages(request: str) -> str: ...

# ------------------------------------------------------------ sealed event logs

SEALED_LOG: str

@final
class LogSealer:
    """Seals a log a batch at a time: `push` each batch in order, then
    `finish` (`None` when it cannot be sealed)."""

    def __new__(cls, first_sequence: int) -> Self: ...
    def push(self, frames: str) -> int:
        """Adds the next batch of frames; returns how many it held (0 once the
        log holds what it cannot seal: it is then not counted)."""
    def push_sealed(self, sealed: str, first_sequence: int) -> int:
        """Adds the next piece of the log as a log sealed on its own, its
        first frame numbered `first_sequence`, without rendering it again;
        returns how many frames it held, as `push` does (`ValueError` for a
        sealed log that does not read back)."""
    def finish(self) -> str | None:
        """The sealed log, or `None` when a batch held a reserved character."""

def count_frames(frames: str) -> int:
    """How many frames a batch of frames holds (its blank lines), counted at
    the speed of a byte search: a batch of a fast stream is large."""

def unseal_log(sealed: str, first_sequence: int, after: int, limit: int | None = None) -> list[str]:
    """The frames of a sealed log numbered above `after`, at most `limit`;
    `ValueError` for a malformed log."""

def sealed_count(sealed: str) -> int:
    """How many frames a sealed log holds."""
