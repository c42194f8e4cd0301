"""The native module behind stepwell (Rust, PyO3). Use it through ``stepwell``."""

from collections.abc import Awaitable, Mapping
from typing import Any

class HttpClient:
    """The pooled HTTP client model calls go through."""

    def __init__(
        self,
        *,
        request_id_header: str = "X-Request-Id",
        headers: Mapping[str, str] | None = None,
    ) -> None: ...
    @property
    def request_id_header(self) -> str: ...

class LoopEvent:
    """One event of a response's live stream."""

    def __init__(self, sequence: int, kind: str, data: Any) -> None: ...
    @property
    def sequence(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> Any: ...
    def sse(self) -> str: ...

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
