"""``run_response_loop``: the one entry point into the Rust core."""

from __future__ import annotations

from . import _core
from .protocols import EventSink, MultiStepStore, ToolExecutor
from .types import JSON, LoopConfig, RequestContext, UpstreamTarget

_DEFAULT_CONFIG = LoopConfig()


async def run_response_loop(
    store: MultiStepStore,
    tool_executor: ToolExecutor,
    ctx: RequestContext,
    target: UpstreamTarget,
    *,
    request_id: str,
    sink: EventSink | None = None,
    scope_parent: str | None = None,
    config: LoopConfig = _DEFAULT_CONFIG,
    client: _core.HttpClient | None = None,
) -> JSON:
    """Drive the response ``request_id`` to a terminal state and return its final payload.

    The loop asks ``store`` what to do next, records and runs the steps it is
    told to (model calls against ``target``, tool calls through
    ``tool_executor``, sibling steps concurrently), and repeats until the store
    answers ``Complete`` or ``Fail``. Live events go to ``sink``.

    Raises a ``LoopError``: ``LoopFailed`` (the store answered ``Fail``),
    ``MaxIterationsExceeded``, ``MaxDepthExceeded``, ``EmptyAction``,
    ``StoreError`` (the store's exception as ``__cause__``) or ``ExecutorError``.
    Cancelling the awaiting task aborts in-flight upstream requests and cancels
    the store, tool and sink coroutines the loop is awaiting.
    """
    return await _core.run_response_loop(
        store,
        tool_executor,
        ctx,
        target,
        request_id=request_id,
        sink=sink,
        scope_parent=scope_parent,
        config=config,
        client=client,
    )
