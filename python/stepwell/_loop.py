"""``run_response_loop``: the one entry point into the Rust core."""

from __future__ import annotations

from . import _core
from ._observe import RunObserver
from .protocols import EventSink, MultiStepStore, ToolExecutor
from .types import JSON, LoopConfig, RequestContext, RunStats, UpstreamTarget

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
    stats: RunStats | None = None,
) -> JSON:
    """Drive the response ``request_id`` to a terminal state and return its final payload.

    The loop asks ``store`` what to do next, records and runs the steps it is
    told to (model calls against ``target``, tool calls through
    ``tool_executor``, sibling steps concurrently), and repeats until the store
    answers ``Complete`` or ``Fail``. Live events go to ``sink``; once the
    response is terminal, events still queued get ``config.sink_drain_timeout``
    seconds to reach it, and a sink that raises is detached. ``stats``, when
    given, tells afterwards how many events the sink never received.

    Steps are logged on the ``stepwell`` logger and, with ``opentelemetry-api``
    installed, traced: one span for the response and one per step, with each
    model call's ``traceparent`` sent upstream.

    Raises a ``LoopError``: ``LoopFailed`` (the store answered ``Fail``),
    ``MaxIterationsExceeded``, ``MaxDepthExceeded``, ``EmptyAction``,
    ``StoreError`` (the store's exception as ``__cause__``) or ``ExecutorError``.
    Cancelling the awaiting task aborts in-flight upstream requests and cancels
    the store, tool and sink coroutines the loop is awaiting.
    """
    observer = RunObserver(request_id, stats)
    with observer.response():
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
            observer=observer,
        )
