"""The Open Responses HTTP API as an ASGI application (Starlette).

Routes translate HTTP to `Responses` calls and errors to OpenAI's error shape;
the state of a response lives in the store (its request, steps, outcome and
event log), and the only thing kept here is which responses this process is
running, so that a reader knows whether to wait for more.

- ``POST /v1/responses``: JSON; ``stream: true`` answers with the event stream
  (``event:`` + ``data:`` frames, ending with ``data: [DONE]``);
  ``background: true`` answers at once and runs the response detached. A retry
  with the same ``Idempotency-Key`` (per tenant) gets the first response.
- ``GET /v1/responses/{id}``: the response; with ``?stream=true`` its event log
  after ``starting_after``, then the live events, until the terminal one.
- ``POST /v1/responses/{id}/cancel``: stops a background response (its
  upstream requests and tools with it); idempotent; 409 for a foreground or
  finished one. A foreground streaming client that disconnects cancels its
  response the same way.
- ``DELETE /v1/responses/{id}``: forgets it (cancelling it first if it runs).
- ``GET /v1/responses/{id}/input_items`` (``limit``, ``order``, ``after``,
  ``before``; ``first_id``, ``last_id``, ``has_more``) and
  ``GET /v1/responses/{id}/steps``: the persisted step tree, with each step's
  state and when it was recorded and last changed.
- ``GET /healthz``; ``GET /metrics`` (Prometheus text: requests by route and
  status, responses in flight, step and upstream latencies, upstream errors,
  dropped events).

On start the app resumes every background response its store left unfinished
(steps that were in flight end as the transition says: `step_abandoned`); what
such a response does after the restart reaches its event log as its terminal
event. On shutdown, background responses are stopped without being marked:
the next start resumes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..openresponses import InvalidRequest, Responses, parse_json
from ..openresponses.errors import model_call_error
from ..openresponses.items import input_items, page
from .auth import tenant_of
from .errors import ApiError, not_found
from .log import EventLog, LogHub, LogWriter, follow, last_sequence, terminal_frame
from .metrics import Metrics

log = logging.getLogger("stepwell.server")

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class ServerSettings:
    """How the server treats requests."""

    max_body: int = 16 * 1024 * 1024
    """Largest request body accepted, in bytes; larger is a 413."""
    body_timeout: float = 30.0
    """Seconds a client may take between two pieces of its request body; a
    client slower than that gets a 408 and its connection closed."""
    keys: Mapping[str, str] | None = None
    """`{sha256 digest of a key: tenant}` (see `auth.load_keys`); `None` serves
    every request unauthenticated, as one tenant."""


class _Server:
    def __init__(self, responses: Responses, settings: ServerSettings) -> None:
        self.responses = responses
        self.store = responses.store
        self.settings = settings
        self.hub = LogHub()
        self.log = EventLog(self.store, self.hub)
        self.running: dict[str, asyncio.Task[Any]] = {}
        self.background: set[str] = set()
        self.stopping = False
        self.metrics = Metrics(in_flight=lambda: len(self.running))

    # ------------------------------------------------------------ helpers

    def tenant(self, request: Request) -> str:
        """The tenant the request's key belongs to; 401 without a known key."""
        keys = self.settings.keys
        if keys is None:
            return ""
        tenant = tenant_of(request.headers.get("authorization"), keys)
        if tenant is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return tenant

    async def read_json(self, request: Request) -> Any:
        """The request's JSON body: at most `max_body` bytes, each piece within
        `body_timeout` seconds of the last, strict JSON (see `parse_json`)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.settings.max_body:
            raise self.too_large()
        body = bytearray()
        pieces = request.stream().__aiter__()
        while True:
            try:
                piece = await asyncio.wait_for(pieces.__anext__(), self.settings.body_timeout)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError as error:
                raise ApiError(
                    408, "The request body did not arrive in time.", code="request_timeout"
                ) from error
            body += piece
            if len(body) > self.settings.max_body:
                raise self.too_large()
        try:
            return parse_json(bytes(body))
        except InvalidRequest as error:
            raise ApiError(400, str(error), param=error.param) from error

    def too_large(self) -> ApiError:
        limit = self.settings.max_body
        return ApiError(413, f"The request body is larger than {limit} bytes.")

    def start(self, request_id: str, prepared: Any, *, background: bool) -> asyncio.Task[Any]:
        """Runs a prepared response, its frames going to the event log."""
        writer = LogWriter(self.log, request_id)
        return self.track(request_id, self.responses.drive(prepared, on_frames=writer), background)

    def track(self, request_id: str, run: Any, background: bool) -> asyncio.Task[Any]:
        """Runs `run` as the response's task. Cancelled, it leaves the response
        `cancelled`, unless the server is stopping and the response is a
        background one: the next start resumes it."""

        async def tracked() -> Any:
            try:
                return await run
            except asyncio.CancelledError:
                if not (self.stopping and background):
                    cancelled = {**(await self.current(request_id) or {}), "status": "cancelled"}
                    await self.store.set_outcome(request_id, "cancelled", cancelled)
                raise
            finally:
                # Whatever the run queued is written before readers are told
                # it ended, so they find it in the store.
                await self.log.flush()
                self.running.pop(request_id, None)
                self.background.discard(request_id)
                self.hub.ended(request_id)

        task = asyncio.ensure_future(tracked())
        self.running[request_id] = task
        if background:
            self.background.add(request_id)
        return task

    async def resume_unfinished(self) -> None:
        """Resumes the background responses the store left unfinished."""
        for request_id in await self.store.unfinished_responses():
            saved = await self.store.load_request(request_id)
            if saved and saved["request"].get("background") and request_id not in self.running:
                self.track(request_id, self.resume(request_id), background=True)

    async def resume(self, request_id: str) -> Any:
        """Drives a response on after a restart; logs its terminal event."""
        final = await self.responses.resume(request_id)
        after = await last_sequence(self.store, request_id) + 1
        frame = terminal_frame(final, after)
        if frame is not None:
            await self.store.append_events_many([(request_id, after, frame)])
        return final

    def begin_stop(self) -> None:
        """The server was told to stop: background runs stop now, unmarked (the
        next start resumes them, and their followers' streams end); foreground
        ones go on for the grace period."""
        self.stopping = True
        for request_id in list(self.background):
            self.running[request_id].cancel()

    async def stop(self) -> None:
        """The server is stopping: whatever still runs is stopped."""
        self.begin_stop()
        runs = list(self.running.values())
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    def stream(
        self, request_id: str, after: int, owner: tuple[Request, asyncio.Task[Any]] | None = None
    ) -> StreamingResponse:
        """The event log after `after`, then live. `owner` is the request and run
        of a foreground response this stream belongs to: a client that goes
        away before the end cancels it."""

        async def frames() -> AsyncIterator[str]:
            finished = False
            # Under uvicorn, Starlette notices a gone client only when it next
            # writes, and a stream waiting on a slow model writes nothing: the
            # owner's disconnect is watched for here.
            watcher = asyncio.ensure_future(_cancel_on_disconnect(*owner)) if owner else None
            try:
                async for batch in follow(
                    self.store, self.hub, request_id, after, lambda: request_id in self.running
                ):
                    yield batch
                yield DONE
                finished = True
            finally:
                if watcher is not None:
                    watcher.cancel()
                if owner is not None and not finished:
                    owner[1].cancel()

        return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)

    async def current(self, request_id: str) -> Any:
        """The response as it stands: its outcome, or as `response.created`
        announced it, still in progress."""
        await self.log.flush()
        outcome = await self.store.outcome(request_id)
        if outcome is not None:
            return outcome[1]
        first = (await self.store.events_after(request_id, -1))[:1]
        if not first:
            return None
        created = json.loads(first[0].split("\ndata: ", 1)[1])
        return created["response"]

    # ------------------------------------------------------------ routes

    async def create(self, request: Request) -> Response:
        tenant = self.tenant(request)
        body = await self.read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        try:
            stream = body.get("stream") is True
            background = body.get("background") is True
            # Streamed and background responses stream from the model too, so
            # their event log carries every delta.
            model_body = {**body, "stream": True} if stream or background else body
            prepared = await self.responses.prepare(model_body, tenant=tenant)
        except InvalidRequest as error:
            raise ApiError(400, str(error), param=error.param, code=error.code) from error
        request_id = prepared.request_id
        key = request.headers.get("idempotency-key")
        if key:
            try:
                holder = await self.store.claim_idempotency_key(tenant, key, request_id)
            except Exception:
                await self.store.delete_response(request_id)
                raise
            if holder != request_id:
                # A retry: the first response answers, and this copy goes.
                await self.store.delete_response(request_id)
                return await self.answer_again(holder, prepared.body, stream=stream)
        task = self.start(request_id, prepared, background=background)
        if stream:
            return self.stream(request_id, -1, None if background else (request, task))
        if background:
            return JSONResponse({**prepared.initial, "background": True})
        return JSONResponse(await asyncio.shield(task))

    async def retrieve(self, request: Request) -> Response:
        response_id, request_id, _ = await self.known(request)
        query = request.query_params
        if query.get("stream") == "true":
            after = query.get("starting_after", "-1")
            if not _is_integer(after) or not -1 <= int(after) < 2**62:
                raise ApiError(
                    400,
                    "starting_after must be an event's sequence number (an integer from -1).",
                    param="starting_after",
                )
            return self.stream(request_id, int(after))
        current = await self.current(request_id)
        if current is None:
            raise not_found(response_id)
        return JSONResponse(current)

    async def answer_again(self, request_id: str, body: Any, *, stream: bool) -> Response:
        """The answer to a retried create (`body` is the retry's request): the
        first response, streamed again from its event log, or as it stands
        (awaited if this process runs it in the foreground). A key sent with
        another request is a 400; one whose response is still being set up is
        a 409 the client may retry."""
        saved = await self.store.load_request(request_id)
        if saved is None:
            raise _key_in_use()
        if saved["request"] != body:
            raise ApiError(
                400,
                "This Idempotency-Key was already used with a different request body.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        if stream:
            return self.stream(request_id, -1)
        task = self.running.get(request_id)
        if task is not None and not saved["request"].get("background"):
            await asyncio.wait({task})
        current = await self.current(request_id)
        if current is None:
            raise _key_in_use()
        return JSONResponse(current)

    async def known(self, request: Request) -> tuple[str, str, Any]:
        """The response named in the path, if it is the caller's tenant's:
        `(response_id, request_id, saved)`. Another tenant's is a 404, found
        that way by the store's own query."""
        tenant = self.tenant(request)
        response_id = request.path_params["response_id"]
        request_id = response_id.removeprefix("resp_")
        saved = await self.store.load_request(request_id, tenant=tenant)
        if saved is None:
            raise not_found(response_id)
        return response_id, request_id, saved

    async def cancel(self, request: Request) -> Response:
        _, request_id, saved = await self.known(request)
        outcome = await self.store.outcome(request_id)
        if outcome is not None and outcome[0] == "cancelled":
            return JSONResponse(outcome[1])
        if not saved["request"].get("background"):
            raise ApiError(409, "Only background responses can be cancelled.")
        if outcome is not None:
            raise ApiError(409, f"The response is already {outcome[0]}; it cannot be cancelled.")
        task = self.running.get(request_id)
        if task is not None:
            task.cancel()
            # Wait for the run to stop and record the cancellation.
            await asyncio.gather(task, return_exceptions=True)
        else:
            # Left in progress by a process that stopped: nothing runs it here.
            cancelled = {**(await self.current(request_id) or {}), "status": "cancelled"}
            await self.store.set_outcome(request_id, "cancelled", cancelled)
        return JSONResponse(await self.current(request_id))

    async def delete(self, request: Request) -> Response:
        response_id, request_id, _ = await self.known(request)
        task = self.running.get(request_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.store.delete_response(request_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        _, request_id, saved = await self.known(request)
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "order must be 'asc' or 'desc'", param="order")
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be an integer from 1 to 100", param="limit")
        items = input_items(request_id, saved["request"])
        listing = page(
            items, limit=limit, order=order, after=query.get("after"), before=query.get("before")
        )
        return JSONResponse(listing)

    async def steps(self, request: Request) -> Response:
        _, request_id, _ = await self.known(request)
        steps = await self.store.steps(request_id)
        return JSONResponse({"object": "list", "data": step_tree(steps)})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "running": len(self.running)})


def _key_in_use() -> ApiError:
    return ApiError(
        409,
        "A request with this Idempotency-Key is still being set up; retry it shortly.",
        code="idempotency_key_in_use",
    )


def _is_integer(text: str) -> bool:
    digits = text.removeprefix("-")
    return 0 < len(digits) <= 19 and digits.isascii() and digits.isdigit()


def step_tree(steps: list[Any]) -> list[dict[str, Any]]:
    """The steps of a response as a tree: each scope's steps in sequence order,
    a sub-agent's steps under the step that called it, with states and times."""
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for step in steps:  # in sequence order, so a parent comes before its children
        node = {
            "id": step.id,
            "sequence": step.sequence,
            "kind": step.kind.value,
            "state": step.state.value,
            "name": step.request_payload.get("name"),
            "created_at": step.created_at,
            "updated_at": step.updated_at,
            "error": _step_error(step),
            "steps": [],
        }
        nodes[step.id] = node
        parent = nodes.get(step.scope_parent or "")
        (parent["steps"] if parent else roots).append(node)
    return roots


def _step_error(step: Any) -> Any:
    """A failed step's error as a client may see it: a model call's without the
    upstream's raw answer (that stays in the row and the log)."""
    if step.error is None or step.kind.value != "model_call":
        return step.error
    return model_call_error(step.error)


async def _cancel_on_disconnect(request: Request, run: asyncio.Task[Any]) -> None:
    """Cancels `run` when the client of `request` disconnects (its body is
    read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    run.cancel()


def create_app(responses: Responses, settings: ServerSettings | None = None) -> Starlette:
    """The Open Responses API over `responses`, as an ASGI app to serve or mount."""
    server = _Server(responses, settings or ServerSettings())

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error.response()

    async def internal(request: Request, error: Exception) -> Response:
        # The details go to the log, never to the client.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(500, "The server had an error while processing your request.").response()

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return ApiError(404, f"No route for {request.method} {request.url.path}.").response()
        if error.status_code == 405:
            allowed = _allowed_methods(app.routes, request.scope)
            headers = {"Allow": ", ".join(allowed)}
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

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.resume_unfinished()
        try:
            yield
        finally:
            await server.stop()
            server.metrics.close()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/responses", server.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", server.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}", server.delete, methods=["DELETE"]),
            Route("/v1/responses/{response_id}/cancel", server.cancel, methods=["POST"]),
            Route("/v1/responses/{response_id}/input_items", server.input_items, methods=["GET"]),
            Route("/v1/responses/{response_id}/steps", server.steps, methods=["GET"]),
            Route("/healthz", server.healthz, methods=["GET"]),
            Route("/metrics", server.metrics_text, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            ClientDisconnect: gone,
            Exception: internal,
        },
    )
    # A redirect to the path with(out) its slash would be built from the Host
    # header, which the client controls: such a path is a 404 instead.
    app.router.redirect_slashes = False
    # What `stepwell serve` calls when a stop signal arrives.
    app.state.begin_stop = server.begin_stop
    app.add_middleware(_CountRequests, server=server, routes=app.routes)
    return app


def _allowed_methods(routes: list[Any], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path."""
    methods: set[str] = {"OPTIONS"}
    for route in routes:
        # PARTIAL: the path is the route's, the method is not.
        if route.matches(scope)[0] is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


class _CountRequests:
    """Counts every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, server: _Server, routes: list[Any]) -> None:
        self.app = app
        self.server = server
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = next((r.path for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        route = f"{scope['method']} {path}" if path else "unmatched"
        status = 500

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self.server.metrics.requests.labels(route, str(status)).inc()
