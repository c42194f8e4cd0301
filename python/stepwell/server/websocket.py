"""WebSocket mode on ``/v1/responses``: one connection, many responses.

The client sends one ``response.create`` message per turn (a create body with
``type``, and without ``stream``, ``stream_options`` or ``background``); the
server answers with the same events as the SSE stream, one JSON message
each, and takes the next turn when the response ended. Errors are the
specification's ``error`` events (``status``, and ``error`` with ``code``,
``message`` and ``param``); the connection stays open after one, except for
``websocket_connection_limit_reached``, sent when the connection is older than
``websocket_max_age`` seconds, before it is closed.

A ``store: false`` response is not kept, yet the next turn on the same
connection may continue it with ``previous_response_id``: the connection
holds what it needs until it closes. On another connection (a reconnect) it
is ``previous_response_not_found``; a turn that fails drops the response it
continued from that memory, so a retry starts from a state the client knows.
Authenticated like HTTP: a handshake without a known key is refused with a 401.
"""

from __future__ import annotations

import asyncio
import json

from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import _core
from ..openresponses import InvalidRequest, parse_json
from ..openresponses.request import JSONDict, UnknownConversation
from .errors import ApiError
from .middleware import tenant
from .routes import Routes

DISALLOWED = ("stream", "stream_options", "background")
"""HTTP streaming fields a `response.create` message must not carry."""


class ResponsesSocket:
    """The WebSocket endpoint, over the same routes, runs and store as HTTP."""

    def __init__(self, routes: Routes, max_age: float) -> None:
        self.routes = routes
        self.max_age = max_age

    async def serve(self, websocket: WebSocket) -> None:
        """Serves one connection until it closes."""
        try:
            owner = tenant(websocket, self.routes.settings.keys)
        except ApiError as refused:
            await websocket.send_denial_response(refused.response())
            return
        await websocket.accept()
        closes_at = asyncio.get_running_loop().time() + self.max_age
        # What this connection's store: false responses were, by request id.
        earlier: dict[str, tuple[JSONDict, JSONDict]] = {}
        try:
            while True:
                left = closes_at - asyncio.get_running_loop().time()
                try:
                    text = await asyncio.wait_for(websocket.receive_text(), max(left, 0))
                except asyncio.TimeoutError:
                    await _error(
                        websocket,
                        400,
                        "websocket_connection_limit_reached",
                        f"This connection reached its limit of {self.max_age:g} seconds; "
                        "open a new one to go on.",
                    )
                    await websocket.close(code=1000)
                    return
                await self.turn(websocket, text, owner, earlier)
        except WebSocketDisconnect:
            return

    async def turn(
        self,
        websocket: WebSocket,
        text: str,
        owner: str,
        earlier: dict[str, tuple[JSONDict, JSONDict]],
    ) -> None:
        """One `response.create`: the response run, its events sent."""
        try:
            message = parse_json(text)
        except InvalidRequest as error:
            await _error(websocket, 400, error.code or "invalid_json", str(error), error.param)
            return
        if not isinstance(message, dict) or message.get("type") != "response.create":
            await _error(
                websocket, 400, "unknown_event", "Send `response.create` messages.", "type"
            )
            return
        for name in DISALLOWED:
            if name in message:
                await _error(
                    websocket,
                    400,
                    "invalid_parameter",
                    f"'{name}' is not sent in WebSocket mode: every response streams.",
                    name,
                )
                return
        body = {name: value for name, value in message.items() if name != "type"}
        runs, store = self.routes.runs, self.routes.store
        try:
            prepared = await self.routes.responses.prepare(
                {**body, "stream": True}, tenant=owner, earlier=earlier, lease=runs.lease
            )
        except UnknownConversation as error:
            await _error(websocket, 404, "conversation_not_found", str(error), error.param)
            return
        except InvalidRequest as error:
            await _error(websocket, 400, error.code or "invalid_request", str(error), error.param)
            return
        request_id = prepared.request_id
        run = await runs.start(prepared, background=False)
        try:
            async for batch in self.routes.follow(request_id, -1):
                for frame in batch.split("\n\n"):
                    if frame:
                        await websocket.send_text(frame.split("\ndata: ", 1)[1])
        except BaseException:
            # The client went away: its response is cancelled, as over HTTP.
            if run is not None:
                runs.stop_run(run, "cancel")
            if body.get("store") is False:
                self.routes.forget_later(request_id, run)
            raise
        if run is not None:
            await asyncio.gather(asyncio.shield(run.task), return_exceptions=True)
        ended = await store.outcome(request_id)
        previous = _core.request_id_of(str(body.get("previous_response_id") or ""))
        if previous in earlier and (ended is None or ended[0] == "failed"):
            del earlier[previous]
        if body.get("store") is False:
            if ended is not None:
                earlier[request_id] = (prepared.body, ended[1])
            await self.routes.forget(request_id, run)


async def _error(
    websocket: WebSocket, status: int, code: str, message: str, param: str | None = None
) -> None:
    """The specification's WebSocket error event."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    event = {
        "type": "error",
        "status": status,
        "error": {"type": kind, "code": code, "message": message, "param": param},
    }
    await websocket.send_text(json.dumps(event))
