"""The Open Responses HTTP API as an ASGI application (Starlette).

- ``POST /v1/responses``: JSON; ``stream: true`` answers with the event stream
  (``event:`` + ``data:`` frames, ending with ``data: [DONE]``);
  ``background: true`` answers at once and runs the response detached. A retry
  with the same ``Idempotency-Key`` (per tenant) gets the first response.
- ``GET /v1/responses/{id}``: the response as it stands; with
  ``?stream=true`` its event log after ``starting_after``, then the live
  events, until the terminal one, whichever process runs it.
- ``POST /v1/responses/{id}/cancel``: stops a background response (its
  upstream requests and tools with it), wherever it runs; idempotent; 409 for
  a foreground or finished one. A foreground streaming client that
  disconnects cancels its response the same way.
- ``DELETE /v1/responses/{id}``: forgets it (stopping it first if it runs).
- ``GET /v1/responses/{id}/input_items`` (``limit``, ``order``, ``after``,
  ``before``; ``first_id``, ``last_id``, ``has_more``) and
  ``GET /v1/responses/{id}/steps``: the persisted step tree, with each step's
  state and when it was recorded and last changed.
- ``POST /v1/responses/input_tokens``: the token count of a create body's
  input (what its first model call sends), by the upstream's ``/tokenize``;
  501 when the upstream has none.
- ``POST /v1/responses/compact``: the context folded into its user messages
  and one ``compaction`` item (see `openresponses.compaction`).
- ``/v1/conversations`` and its items (see `conversations`).
- WebSocket mode on ``/v1/responses`` (see `websocket`).
- ``GET /healthz``; ``GET /metrics`` (Prometheus text).

Any number of processes may serve one store: each response is driven by the
process holding its lease (see `runs`), and one whose process died is taken
over by another once its lease expires. On shutdown, background responses are
stopped unmarked and their leases given up: another process, or the next
start, takes them over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import Scope

from ..openresponses import Responses
from .conversations import Conversations
from .errors import ApiError
from .log import EventLog, LogHub
from .metrics import Metrics
from .middleware import CountRequests
from .retention import keep_pruning
from .routes import Routes
from .runs import Runs
from .settings import ServerSettings
from .websocket import ResponsesSocket

log = logging.getLogger("stepwell.server")

__all__ = ["ServerSettings", "create_app"]


def create_app(responses: Responses, settings: ServerSettings | None = None) -> Starlette:
    """The Open Responses API over `responses`, as an ASGI app to serve or mount."""
    settings = settings or ServerSettings()
    hub = LogHub()
    runs = Runs(
        responses,
        EventLog(responses.store, hub),
        hub,
        lease_ttl=settings.lease_ttl,
        sweep_interval=settings.sweep_interval,
        max_runs=settings.max_runs,
    )
    metrics = Metrics(in_flight=lambda: len(runs.local))
    routes = Routes(responses, runs, hub, settings, metrics)
    conversations = Conversations(responses.store, settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runs.begin()
        pruning = None
        if settings.retention is not None or settings.replay_window is not None:
            pruning = asyncio.ensure_future(
                keep_pruning(
                    responses.store,
                    retention=settings.retention,
                    replay_window=settings.replay_window,
                )
            )
        try:
            yield
        finally:
            if pruning is not None:
                pruning.cancel()
            await runs.stop()
            metrics.close()
            # Executors that hold sessions open (MCP servers) close with the app.
            close = getattr(responses.tools, "aclose", None)
            if close is not None:
                await close()

    table = [
        Route("/v1/responses", routes.create, methods=["POST"]),
        Route("/v1/responses/input_tokens", routes.input_tokens, methods=["POST"]),
        Route("/v1/responses/compact", routes.compact, methods=["POST"]),
        Route("/v1/responses/{response_id}", routes.retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", routes.delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", routes.cancel, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", routes.input_items, methods=["GET"]),
        Route("/v1/responses/{response_id}/steps", routes.steps, methods=["GET"]),
        Route("/v1/conversations", conversations.create, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", conversations.retrieve, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", conversations.update, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", conversations.delete, methods=["DELETE"]),
        Route(
            "/v1/conversations/{conversation_id}/items", conversations.add_items, methods=["POST"]
        ),
        Route(
            "/v1/conversations/{conversation_id}/items", conversations.list_items, methods=["GET"]
        ),
        Route(
            "/v1/conversations/{conversation_id}/items/{item_id}",
            conversations.retrieve_item,
            methods=["GET"],
        ),
        Route(
            "/v1/conversations/{conversation_id}/items/{item_id}",
            conversations.delete_item,
            methods=["DELETE"],
        ),
        Route("/healthz", routes.healthz, methods=["GET"]),
        Route("/metrics", routes.metrics_text, methods=["GET"]),
    ]
    socket = WebSocketRoute(
        "/v1/responses", ResponsesSocket(routes, settings.websocket_max_age).serve
    )
    app = Starlette(
        lifespan=lifespan, routes=[*table, socket], exception_handlers=_error_handlers(table)
    )
    # A redirect to the path with(out) its slash would be built from the Host
    # header, which the client controls: such a path is a 404 instead.
    app.router.redirect_slashes = False
    # What `stepwell serve` calls when a stop signal arrives.
    app.state.begin_stop = runs.begin_stop
    app.add_middleware(CountRequests, metrics=metrics, routes=app.routes)
    return app


def _error_handlers(routes: list[Any]) -> dict[Any, Any]:
    """Every error in OpenAI's shape; details of a server fault to the log only."""

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error.response()

    async def internal(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(500, "The server had an error while processing your request.").response()

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return ApiError(404, f"No route for {request.method} {request.url.path}.").response()
        if error.status_code == 405:
            headers = {"Allow": ", ".join(_allowed_methods(routes, request.scope))}
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
            message = f"Method {request.method} is not allowed on {request.url.path}."
            return ApiError(405, message, headers=headers).response()
        return ApiError(error.status_code, str(error.detail)).response()

    async def gone(request: Request, error: Exception) -> Response:
        # The client left while sending its body: nobody reads this answer,
        # and it is no server error worth a traceback.
        log.info("client left before its body arrived: %s %s", request.method, request.url.path)
        return ApiError(400, "The request body was cut short.").response()

    return {
        ApiError: api_error,
        HTTPException: http_error,
        ClientDisconnect: gone,
        Exception: internal,
    }


def _allowed_methods(routes: list[Any], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path."""
    methods: set[str] = {"OPTIONS"}
    for route in routes:
        # PARTIAL: the path is the route's, the method is not.
        if route.matches(scope)[0] is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)
