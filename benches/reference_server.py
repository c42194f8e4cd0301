"""The reference for S6/S7: an Open Responses server written the common Python
way, to measure `stepwell serve` against. Starlette under uvicorn; each request
calls the chat-completions upstream with httpx (+ httpx-sse when streaming),
`json.loads` per chunk, and builds the spec's events as Python dicts. It keeps
nothing (no store, no event log, no auth): it does less than stepwell serve.

    python benches/reference_server.py UPSTREAM_URL    # prints "serving on http://..."
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from httpx_sse import aconnect_sse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
client = httpx.AsyncClient(
    base_url=UPSTREAM, limits=httpx.Limits(max_connections=1024), timeout=httpx.Timeout(600)
)


def response(rid: str, body: dict[str, Any], status: str, text: str) -> dict[str, Any]:
    output = []
    if text:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        output.append(
            {
                "type": "message",
                "id": f"msg_{rid}",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body["model"],
        "output": output,
    }


def chat_body(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    return {
        "model": body["model"],
        "stream": stream,
        "messages": [{"role": "user", "content": body["input"]}],
    }


def frame(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def events(rid: str, body: dict[str, Any]) -> AsyncIterator[str]:
    sequence = 0

    def numbered(event: dict[str, Any]) -> str:
        nonlocal sequence
        event["sequence_number"] = sequence
        sequence += 1
        return frame(event)

    yield numbered({"type": "response.created", "response": response(rid, body, "in_progress", "")})
    text = []
    async with aconnect_sse(
        client, "POST", "/v1/chat/completions", json=chat_body(body, True)
    ) as source:
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                break
            chunk = json.loads(sse.data)
            choices = chunk.get("choices") or []
            delta = (choices[0].get("delta") or {}).get("content") if choices else None
            if delta:
                text.append(delta)
                yield numbered(
                    {
                        "type": "response.output_text.delta",
                        "item_id": f"msg_{rid}",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": delta,
                        "logprobs": [],
                    }
                )
    done = response(rid, body, "completed", "".join(text))
    yield numbered({"type": "response.completed", "response": done})
    yield "data: [DONE]\n\n"


async def create(request: Request) -> Response:
    body = await request.json()
    rid = uuid.uuid4().hex
    if body.get("stream"):
        return StreamingResponse(events(rid, body), media_type="text/event-stream")
    answer = (await client.post("/v1/chat/completions", json=chat_body(body, False))).json()
    text = answer["choices"][0]["message"]["content"] or ""
    return JSONResponse(response(rid, body, "completed", text))


app = Starlette(routes=[Route("/v1/responses", create, methods=["POST"])])


def main() -> None:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(f"serving on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    # What `pip install uvicorn` runs: asyncio's loop and the h11 parser, even
    # where the bench's environment also has httptools and uvloop.
    config = uvicorn.Config(app, log_level="warning", lifespan="off", http="h11", loop="asyncio")
    server = uvicorn.Server(config)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
