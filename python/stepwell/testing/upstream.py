"""``ScriptedUpstream``: a real chat-completions HTTP server on loopback.

It speaks HTTP/1.1 with keep-alive on ``127.0.0.1``, runs on its own thread
and event loop (so it keeps serving whatever the code under test does), records
every request it gets, and answers each with what a handler returns: one JSON
body, or an SSE stream of chunks sent as HTTP chunked encoding.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UpstreamRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """The JSON body, parsed (``None`` if empty or not JSON)."""
    received_at: float
    """``time.monotonic()`` when the body was read."""


@dataclass(frozen=True)
class JsonReply:
    """Answer with one JSON body."""

    body: Any
    status: int = 200


@dataclass(frozen=True)
class StreamReply:
    """Answer with an SSE stream: one ``data:`` event per item.

    Dicts and lists are sent as JSON, strings as they are, bytes raw (to send
    what is not UTF-8). ``done`` ends the stream with ``data: [DONE]``.
    ``interval`` waits that many seconds before each event, like a slow model.
    ``after`` says how the response ends once the events are sent: ``"end"``
    closes the body properly; ``"hold"`` keeps it open until the client closes
    the connection (which ``wait_disconnect`` then reports); ``"close"`` closes
    the connection mid-body; ``"reset"`` aborts it with a TCP reset.
    """

    events: Sequence[Any]
    done: bool = True
    interval: float = 0.0
    after: str = "end"
    status: int = 200


Reply = JsonReply | StreamReply
Handler = Callable[[UpstreamRequest], Reply | Awaitable[Reply]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def chat_completion(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    model: str = "scripted",
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` body.

    ``tool_calls`` items are ``{"id", "name", "arguments"}`` (arguments a JSON string).
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in tool_calls
        ]
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def _chunk(delta: dict[str, Any], finish_reason: str | None, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def text_chunks(pieces: Sequence[str], *, model: str = "scripted") -> list[dict[str, Any]]:
    """Stream chunks for an assistant message made of ``pieces``, then a usage chunk."""
    chunks = [_chunk({"role": "assistant", "content": ""}, None, model)]
    chunks += [_chunk({"content": piece}, None, model) for piece in pieces]
    chunks.append(_chunk({}, "stop", model))
    chunks.append(
        {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [],
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": len(pieces),
                "total_tokens": 5 + len(pieces),
            },
        }
    )
    return chunks


def tool_call_chunks(
    calls: Sequence[dict[str, Any]], *, pieces: int = 3, model: str = "scripted"
) -> list[dict[str, Any]]:
    """Stream chunks for tool calls, vLLM-style: each call's ``id`` and name only in
    its first chunk, its arguments split over ``pieces`` further chunks."""
    chunks = [_chunk({"role": "assistant", "content": None}, None, model)]
    for index, call in enumerate(calls):
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        chunks.append(_chunk({"tool_calls": [head]}, None, model))
        arguments = call["arguments"]
        step = max(1, -(-len(arguments) // pieces))
        for start in range(0, len(arguments), step):
            part = {"index": index, "function": {"arguments": arguments[start : start + step]}}
            chunks.append(_chunk({"tool_calls": [part]}, None, model))
    chunks.append(_chunk({}, "tool_calls", model))
    return chunks


def _frame(event: Any) -> bytes:
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    return json.dumps(event).encode()


def _default_handler(request: UpstreamRequest) -> Reply:
    return JsonReply(chat_completion("Hello from the scripted upstream."))


class ScriptedUpstream:
    """A chat-completions server on ``127.0.0.1`` answering with ``handler``.

    Use as a context manager, or call ``start()`` and ``stop()``. The handler may
    be sync or async; it runs on the server's own event loop.
    """

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler: Handler = handler or _default_handler
        self.requests: list[UpstreamRequest] = []
        self.connections = 0
        """How many TCP connections clients opened (keep-alive reuses one)."""
        self._lock = threading.Lock()
        self._disconnected = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ScriptedUpstream:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="scripted-upstream", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the scripted upstream could not start") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_disconnect(self, timeout: float) -> bool:
        """Block until a client closed a stream held open (``after="hold"``).

        Returns ``False`` on timeout.
        """
        return self._disconnected.wait(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as error:
            self._error = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request_line = await reader.readline()
        if not request_line.strip():
            return False
        method, path, _ = request_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = UpstreamRequest(method, path, headers, body, time.monotonic())
        with self._lock:
            self.requests.append(request)
        reply = self.handler(request)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, JsonReply):
            payload = json.dumps(reply.body).encode()
            writer.write(
                self._head(reply.status, "application/json", f"Content-Length: {len(payload)}")
                + payload
            )
            await writer.drain()
            return True
        return await self._stream(reply, reader, writer)

    async def _stream(
        self, reply: StreamReply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(self._head(reply.status, "text/event-stream", "Transfer-Encoding: chunked"))
        frames = [_frame(e) for e in reply.events]
        if reply.done:
            frames.append(b"[DONE]")
        for frame in frames:
            if reply.interval:
                await asyncio.sleep(reply.interval)
            data = b"data: " + frame + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        if reply.after == "hold":
            # Nothing more will come from the client on this connection: read
            # returns b"" exactly when it closes it.
            while await reader.read(1024):
                pass
            self._disconnected.set()
            return False
        if reply.after == "close":
            writer.close()
            return False
        if reply.after == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    def _head(status: int, content_type: str, framing: str) -> bytes:
        reason = _REASONS.get(status, "Status")
        return (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n"
        ).encode()
