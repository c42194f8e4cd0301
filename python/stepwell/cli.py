"""The `stepwell` command.

    stepwell run "question" --base-url URL --model M [--api-key-env VAR]
                 [--tools FILE] [--store sqlite:PATH]
    stepwell serve --upstream URL [--api-key-env VAR] [--store sqlite:PATH]
                   [--tools FILE] [--host H] [--port P] [--config FILE]
    stepwell worker --upstream URL --store postgresql://...
    stepwell db upgrade --store postgresql://...
    stepwell prune --store URL --older-than 30d
    stepwell demo

`run` streams one response to the terminal against any OpenAI-compatible
chat-completions server, showing tool calls as they happen. `demo` runs a
complete two-round, tool-using response against a scripted upstream it starts
on loopback: nothing to configure, no key. `serve` runs the Open Responses
HTTP server (see `stepwell.server`); `worker` runs responses from a store it
shares with servers, serving no HTTP; `db upgrade` applies a store's
migrations; `prune` deletes responses that ended long enough ago.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ._config import store_named, upstream_target
from .openresponses import Responses
from .stores import MemoryStore
from .testing.upstream import (
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    text_chunks,
    tool_call_chunks,
)
from .tools import FunctionTools, HttpTools, Toolbox
from .types import UpstreamTarget


def _events(frames: str) -> list[dict[str, Any]]:
    events = []
    for frame in frames.split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
    return events


async def _print_stream(responses: Responses, body: dict[str, Any]) -> int:
    """Streams a response to stdout; returns the exit status."""
    final: dict[str, Any] = {}
    async for frames in responses.stream(body):
        for event in _events(frames):
            kind = event["type"]
            if kind == "response.output_text.delta":
                print(event["delta"], end="", flush=True)
            elif kind == "response.output_item.done":
                item = event["item"]
                if item["type"] == "function_call":
                    print(f"→ {item['name']}({item['arguments']})", flush=True)
                elif item["type"] == "function_call_output":
                    print(f"← {item['output']}", flush=True)
                elif item["type"] == "message":
                    print(flush=True)  # ends the streamed line
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                final = event["response"]
    usage = final.get("usage") or {}
    print(f"[{final.get('status')}] {final.get('id')} · {usage.get('total_tokens', 0)} tokens")
    if final.get("error"):
        print(f"error: {final['error']['message']}", file=sys.stderr)
    return 0 if final.get("status") in ("completed", "incomplete") else 1


async def _run(args: argparse.Namespace) -> int:
    tools = HttpTools.from_file(args.tools) if args.tools else HttpTools([])
    responses = Responses(
        store_named(args.store), tools, upstream_target(args.base_url, args.api_key_env)
    )
    body = {"model": args.model, "input": args.question}
    if args.instructions:
        body["instructions"] = args.instructions
    return await _print_stream(responses, body)


def get_weather(city: str) -> dict[str, Any]:
    """Current weather for a city.

    Args:
        city: The city to look up.
    """
    return {"city": city, "temp_c": 14, "sky": "overcast"}


def _demo_model(request: UpstreamRequest) -> StreamReply:
    """A scripted model: asks for two cities' weather, then answers from it."""
    messages = request.body["messages"]
    if messages[-1]["role"] != "tool":
        calls = [
            {"id": "call_paris", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"id": "call_lima", "name": "get_weather", "arguments": '{"city": "Lima"}'},
        ]
        return StreamReply(tool_call_chunks(calls))
    results = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
    answer = " ".join(f"{r['city']}: {r['temp_c']}°C, {r['sky']}." for r in results)
    words = ("Here is the weather. " + answer).split(" ")
    return StreamReply(text_chunks([words[0]] + [" " + w for w in words[1:]]))


async def _demo() -> int:
    with ScriptedUpstream(_demo_model) as upstream:
        responses = Responses(
            MemoryStore(),
            Toolbox(FunctionTools(get_weather)),
            UpstreamTarget(upstream.endpoint),
        )
        body = {"model": "scripted", "input": "What's the weather in Paris and Lima?"}
        print(f"> {body['input']}")
        return await _print_stream(responses, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepwell", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="stream one response from an OpenAI-compatible server")
    run.add_argument("question")
    run.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--model", required=True)
    run.add_argument("--api-key-env", help="environment variable holding the API key")
    run.add_argument("--tools", help="HTTP tools declared in a TOML or JSON file")
    run.add_argument("--store", help="'memory' (default) or 'sqlite:PATH'")
    run.add_argument("--instructions")
    commands.add_parser("demo", help="a tool-using response against a built-in scripted model")
    from .server.serve import add_arguments, serve

    add_arguments(commands.add_parser("serve", help="serve the Open Responses HTTP API"))
    from .server import worker

    worker.add_arguments(
        commands.add_parser("worker", help="run responses from a shared store, serving no HTTP")
    )
    db = commands.add_parser("db", help="manage a store's schema")
    db.add_argument("action", choices=["upgrade"], help="apply the migrations it lacks")
    db.add_argument("--store", required=True, help="'sqlite:PATH' or 'postgresql://...'")
    prune = commands.add_parser("prune", help="delete responses that ended long enough ago")
    prune.add_argument("--store", required=True, help="'sqlite:PATH' or 'postgresql://...'")
    prune.add_argument("--older-than", required=True, help="e.g. 30d, 12h, 90m")
    prune.add_argument("--batch", type=int, default=500, help="responses per transaction")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(_demo())
    if args.command == "serve":
        return serve(args)
    if args.command == "worker":
        return worker.worker(args)
    if args.command == "db":
        return asyncio.run(_upgrade(args.store))
    if args.command == "prune":
        return asyncio.run(_prune(args.store, args.older_than, args.batch))
    return asyncio.run(_run(args))


async def _upgrade(spec: str) -> int:
    """Brings a store's schema up to date (a new one is created)."""
    store = store_named(spec)
    if spec.startswith(("postgresql://", "postgres://")):
        from .stores.postgres import upgrade

        applied = await upgrade(spec)
        print(f"applied migrations {applied}" if applied else "the schema is up to date")
    else:
        print("the schema is up to date")  # SQLite migrates when opened
    await _close(store)
    return 0


async def _prune(spec: str, older_than: str, batch: int) -> int:
    from .server.retention import prune_all
    from .server.serve import parse_duration

    store = store_named(spec)
    deleted = await prune_all(store, parse_duration(older_than), batch=batch)
    print(f"deleted {deleted} responses")
    await _close(store)
    return 0


async def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None and asyncio.iscoroutine(result := close()):
        await result


if __name__ == "__main__":
    sys.exit(main())
