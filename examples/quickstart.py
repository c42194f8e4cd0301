"""A two-round, tool-using response, end to end, with nothing to configure.

It starts a scripted chat-completions upstream on loopback, then drives one
response through stepwell: the model asks for a tool, the tool runs, the model
streams its answer. Every step is persisted in a MemoryStore and every live
event is printed as it arrives.

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import stepwell
from stepwell import (
    AppendSteps,
    ChainStep,
    Complete,
    LoopEvent,
    NextAction,
    RequestContext,
    StepDescriptor,
    StepKind,
    StepState,
    ToolSchema,
    UpstreamTarget,
)
from stepwell.stores import MemoryStore
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
)

QUESTION = "What should I wear in Paris today?"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def scripted_model(request: UpstreamRequest) -> Any:
    """Stands in for an LLM: first asks for the weather, then answers from it."""
    messages = request.body["messages"]
    if messages[-1]["role"] != "tool":
        call = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
        return JsonReply(chat_completion(tool_calls=[call]))
    weather = json.loads(messages[-1]["content"])
    answer = f"It is {weather['temp_c']}°C and {weather['sky']} in Paris: take a light jacket."
    first, *rest = answer.split(" ")
    return StreamReply(text_chunks([first] + [" " + word for word in rest]))


def decide(chain: list[ChainStep], request_id: str, scope_parent: str | None) -> NextAction:
    """The transition: what to do next, given the steps so far."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    for step in chain:
        if step.kind is StepKind.MODEL_CALL and step.state is StepState.COMPLETED:
            messages.append(step.response_payload["choices"][0]["message"])
        elif step.kind is StepKind.TOOL_CALL:
            result = step.response_payload if step.state is StepState.COMPLETED else step.error
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": step.request_payload["call_id"],
                    "content": json.dumps(result),
                }
            )
    last = messages[-1]
    if last["role"] == "assistant" and last.get("tool_calls"):
        return AppendSteps(
            [
                StepDescriptor(
                    StepKind.TOOL_CALL,
                    {
                        "name": call["function"]["name"],
                        "args": json.loads(call["function"]["arguments"]),
                        "call_id": call["id"],
                    },
                )
                for call in last["tool_calls"]
            ]
        )
    if last["role"] == "assistant":
        return Complete({"output_text": last["content"], "steps": len(chain)})
    request = {"model": "scripted", "messages": messages, "tools": [WEATHER_TOOL], "stream": True}
    return AppendSteps([StepDescriptor.model_call(request)])


class WeatherTools:
    async def tools(self, ctx: RequestContext) -> list[ToolSchema]:
        return [ToolSchema("get_weather")]

    async def execute(self, name: str, call_id: str, args: Any, ctx: RequestContext) -> Any:
        return {"city": args["city"], "temp_c": 14, "sky": "overcast"}


class PrintingSink:
    async def emit_many(self, events: list[LoopEvent]) -> None:
        for event in events:
            await self.emit(event)

    async def emit(self, event: LoopEvent) -> None:
        if event.kind == "response.output_text.delta":
            print(event.data["delta"], end="", flush=True)
            return
        if event.kind == "response.completed":
            print()  # end the streamed line
        detail = event.data.get("output", "") if event.kind.endswith("output_item.done") else ""
        print(f"[{event.kind}] {detail}".rstrip())


async def main() -> None:
    with ScriptedUpstream(scripted_model) as upstream:
        store = MemoryStore(decide)
        result = await stepwell.run_response_loop(
            store,
            WeatherTools(),
            RequestContext(model="scripted"),
            UpstreamTarget(upstream.endpoint),
            request_id="quickstart",
            sink=PrintingSink(),
        )
        print("completed response:", json.dumps(result))
        for step in await store.steps("quickstart"):
            print(f"  step {step.sequence}: {step.kind.value} {step.state.value}")


if __name__ == "__main__":
    asyncio.run(main())
