"""The HTTP response of an event stream: its pieces sent as they come, until
they end or the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send


class EventStream(Response):
    """Sends `pieces` (SSE text) as the body of a `text/event-stream` response.

    One task watches for the client's disconnect while the request's own task
    sends; a disconnect cancels the send, closing `pieces` (whose cleanup then
    runs), and the response just ends. Starlette's `StreamingResponse` does
    the same under ASGI 2.3 servers with an anyio task group and two tasks
    per response; a stream's sending is most of what the server does, so
    this one keeps it to the watcher.
    """

    media_type = "text/event-stream"

    def __init__(self, pieces: AsyncGenerator[str, None], headers: Mapping[str, str]) -> None:
        self.pieces = pieces
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        gone = sent = False

        async def watch() -> None:
            nonlocal gone
            # The request's body was read: the next message is the disconnect.
            while (await receive())["type"] != "http.disconnect":
                pass
            if not sent and sender is not None:
                gone = True
                sender.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            started = False
            async for piece in self.pieces:
                if not started:
                    # The headers go out with the first piece, not before it:
                    # until then the loop's time is the run's, which has its
                    # first model call to make.
                    await send(self._start())
                    started = True
                body = piece.encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not started:
                await send(self._start())
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            sent = True
        except asyncio.CancelledError:
            if not gone:
                raise
            # The client went away: the stream is over, not the server.
            uncancel = getattr(sender, "uncancel", None)
            if uncancel is not None:
                uncancel()
        finally:
            watcher.cancel()
            await self.pieces.aclose()

    def _start(self) -> Message:
        return {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
