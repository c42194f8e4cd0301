"""What every request goes through before its route: the caller's tenant (from
its key), its body read within limits, and the count of requests by route and
status."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..openresponses import InvalidRequest, parse_json
from .auth import tenant_of
from .errors import ApiError
from .metrics import Metrics


def tenant(request: HTTPConnection, keys: Mapping[str, str] | None) -> str:
    """The tenant the request's (or WebSocket handshake's) key belongs to; 401
    without a known key. With no keys, every request is the one tenant ``""``."""
    if keys is None:
        return ""
    found = tenant_of(request.headers.get("authorization"), keys)
    if found is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    return found


async def read_json(request: Request, *, max_body: int, body_timeout: float) -> Any:
    """The request's JSON body: at most `max_body` bytes (else a 413), each
    piece within `body_timeout` seconds of the last (else a 408), strict JSON
    (else a 400, see `parse_json`)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large(max_body)
    try:
        body = await _body(request, max_body, body_timeout)
    except asyncio.TimeoutError as error:
        raise ApiError(
            408, "The request body did not arrive in time.", code="request_timeout"
        ) from error
    try:
        return parse_json(bytes(body))
    except InvalidRequest as error:
        raise ApiError(400, str(error), param=error.param) from error


async def _body(request: Request, max_body: int, body_timeout: float) -> bytearray:
    """The body's bytes, each piece within `body_timeout` seconds of the last
    (else `asyncio.TimeoutError`)."""
    body = bytearray()
    if sys.version_info >= (3, 11):
        # One deadline, moved on as pieces come: no task per piece.
        async with asyncio.timeout(body_timeout) as deadline:
            async for piece in request.stream():
                deadline.reschedule(asyncio.get_running_loop().time() + body_timeout)
                body += piece
                if len(body) > max_body:
                    raise _too_large(max_body)
        return body
    pieces = request.stream().__aiter__()
    while True:
        try:
            piece = await asyncio.wait_for(pieces.__anext__(), body_timeout)
        except StopAsyncIteration:
            return body
        body += piece
        if len(body) > max_body:
            raise _too_large(max_body)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {limit} bytes.")


class CountRequests:
    """Counts every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[Any]) -> None:
        self.app = app
        self.metrics = metrics
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
            self.metrics.requests.labels(route, str(status)).inc()
