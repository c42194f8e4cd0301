"""Open Responses end to end: requests become steps, steps become a `Response`
valid against the specification, and the streamed events satisfy the official
`openai` client's accumulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openai import AsyncOpenAI
from stepwell import StepDescriptor, StepState, UpstreamTarget, _core
from stepwell.openresponses import InvalidRequest, Responses, model_request, stored
from stepwell.openresponses.transition import ResponsesTransition
from stepwell.stores import MemoryStore, SQLiteStore
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
    tool_call_chunks,
)
from stepwell.tools import FunctionTools, Toolbox

SPEC = json.loads((Path(__file__).parent / "data" / "openresponses-openapi.json").read_text())


def validator(schema: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}
    )


RESPONSE = validator("ResponseResource")
STREAM_SCHEMAS = {
    name: validator(name)
    for name in SPEC["components"]["schemas"]
    if name.endswith("StreamingEvent") and name.startswith("Response")
}


def event_validator(kind: str) -> jsonschema.Draft202012Validator:
    for name, schema in STREAM_SCHEMAS.items():
        enum = SPEC["components"]["schemas"][name]["properties"]["type"].get("enum")
        if enum == [kind]:
            return schema
    raise AssertionError(f"no schema for {kind}")


def weather(city: str) -> dict[str, Any]:
    """Current weather for a city.

    Args:
        city: The city to look up.
    """
    return {"city": city, "temp_c": 14 if city == "Paris" else 21}


def last_role(request: UpstreamRequest) -> str:
    return str(request.body["messages"][-1]["role"])


def two_round_model(request: UpstreamRequest) -> Any:
    """Calls `weather` for two cities in parallel, then answers from the results."""
    stream = bool(request.body.get("stream"))
    if last_role(request) != "tool":
        calls = [
            {"id": "call_p", "name": "weather", "arguments": '{"city": "Paris"}'},
            {"id": "call_l", "name": "weather", "arguments": '{"city": "Lima"}'},
        ]
        return (
            StreamReply(tool_call_chunks(calls, pieces=4))
            if stream
            else JsonReply(chat_completion(tool_calls=calls))
        )
    temps = [json.loads(m["content"])["temp_c"] for m in request.body["messages"][-2:]]
    text = f"Paris {temps[0]}, Lima {temps[1]}."
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    return StreamReply(text_chunks(pieces)) if stream else JsonReply(chat_completion(text))


@pytest.fixture
def model() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(two_round_model) as upstream:
        yield upstream


def service(upstream: ScriptedUpstream, store: Any = None) -> Responses:
    return Responses(
        store or MemoryStore(),
        Toolbox(FunctionTools(weather)),
        UpstreamTarget(upstream.endpoint),
    )


def openai_over(responses: Responses) -> AsyncOpenAI:
    """The official client, speaking to a small ASGI route that serves `responses`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        async for frames in responses.stream(request):
            await send({"type": "http.response.body", "body": frames.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    transport = httpx.ASGITransport(app=app)
    return AsyncOpenAI(
        base_url="http://stepwell.test/v1",
        api_key="unused",
        http_client=httpx.AsyncClient(transport=transport),
    )


def as_sent(final: Any) -> Any:
    """The SDK's final response as JSON, less the `parsed: None` its stream helper
    adds to text parts and `parsed_arguments: None` to function calls (its
    structured-output support, not part of the wire)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            sdk_only = ("parsed", "parsed_arguments")
            return {k: strip(v) for k, v in value.items() if not (k in sdk_only and v is None)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(final.to_dict())


async def collect(responses: Responses, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    async for frames in responses.stream(body):
        for frame in frames.split("\n\n"):
            if not frame:
                continue
            if frame == "data: [DONE]":
                events.append({"type": "[DONE]"})
                continue
            head, data = frame.split("\ndata: ")
            event = json.loads(data)
            assert head == f"event: {event['type']}"
            assert "\n" not in data
            events.append(event)
    return events


def assert_valid_stream(events: list[dict[str, Any]]) -> None:
    assert events[-1] == {"type": "[DONE]"}
    numbered = events[:-1]
    assert [e["sequence_number"] for e in numbered] == list(range(len(numbered)))
    for event in numbered:
        errors = list(event_validator(event["type"]).iter_errors(event))
        assert not errors, (event, errors[0].message)
    added = [e["output_index"] for e in numbered if e["type"] == "response.output_item.added"]
    assert added == list(range(len(added)))


async def test_text_answer_is_a_valid_response(model: ScriptedUpstream) -> None:
    model.handler = lambda r: JsonReply(chat_completion("Hello there."))
    response = await service(model).create(
        {"model": "m", "input": "hi", "instructions": "Be brief.", "metadata": {"k": "v"}}
    )
    assert list(RESPONSE.iter_errors(response)) == []
    assert response["status"] == "completed"
    assert response["id"].startswith("resp_")
    [item] = response["output"]
    assert item["type"] == "message"
    assert item["content"] == [
        {"type": "output_text", "text": "Hello there.", "annotations": [], "logprobs": []}
    ]
    assert response["usage"]["total_tokens"] == 12
    assert response["instructions"] == "Be brief."
    assert response["metadata"] == {"k": "v"}
    [request] = model.requests
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


async def test_store_false_is_answered_then_forgotten(model: ScriptedUpstream) -> None:
    """`store: false` through the library: `create` and `stream` answer, then
    the store keeps nothing of the response."""
    model.handler = lambda r: JsonReply(chat_completion("Hello there."))
    responses = service(model)
    response = await responses.create({"model": "m", "input": "hi", "store": False})
    assert response["status"] == "completed" and response["store"] is False
    assert list(RESPONSE.iter_errors(response)) == []
    request_id = response["id"].removeprefix("resp_")
    assert await responses.store.load_request(request_id) is None
    assert await responses.store.steps(request_id) == []
    frames = [f async for f in responses.stream({"model": "m", "input": "hi", "store": False})]
    assert frames[-1] == "data: [DONE]\n\n"
    streamed = json.loads(frames[-2].split("data: ", 1)[1])["response"]
    assert streamed["status"] == "completed"
    assert await responses.store.load_request(streamed["id"].removeprefix("resp_")) is None


async def test_two_round_server_side_tools_with_usage_summed(model: ScriptedUpstream) -> None:
    response = await service(model).create({"model": "m", "input": "weather?"})
    assert list(RESPONSE.iter_errors(response)) == []
    kinds = [item["type"] for item in response["output"]]
    assert kinds == [
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]
    outputs = [json.loads(i["output"]) for i in response["output"][2:4]]
    assert outputs == [{"city": "Paris", "temp_c": 14}, {"city": "Lima", "temp_c": 21}]
    assert response["output"][-1]["content"][0]["text"] == "Paris 14, Lima 21."
    assert response["usage"]["total_tokens"] == 24  # two model calls, 12 each
    second = model.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in second[2:]] == ["call_p", "call_l"]
    assert second[1]["tool_calls"][0]["function"]["name"] == "weather"
    # The served tool reached the model as a chat tool with its schema.
    tools = model.requests[0].body["tools"]
    assert tools[0]["function"]["name"] == "weather"
    assert tools[0]["function"]["parameters"]["required"] == ["city"]


async def test_client_side_call_then_previous_response_id(model: ScriptedUpstream) -> None:
    store = MemoryStore()
    responses = service(model, store)
    lookup = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}

    def client_side(request: UpstreamRequest) -> JsonReply:
        if last_role(request) == "tool":
            return JsonReply(chat_completion("The answer is 42."))
        call = {"id": "call_c", "name": "lookup", "arguments": '{"q": "answer"}'}
        return JsonReply(chat_completion(tool_calls=[call]))

    model.handler = client_side
    first = await responses.create({"model": "m", "input": "what is it?", "tools": [lookup]})
    assert list(RESPONSE.iter_errors(first)) == []
    assert first["status"] == "completed"
    [call] = first["output"]
    assert (call["type"], call["name"], call["call_id"]) == ("function_call", "lookup", "call_c")

    follow_up = {
        "model": "m",
        "previous_response_id": first["id"],
        "input": [{"type": "function_call_output", "call_id": "call_c", "output": "42"}],
    }
    second = await responses.create(follow_up)
    assert list(RESPONSE.iter_errors(second)) == []
    assert second["output"][-1]["content"][0]["text"] == "The answer is 42."
    assert second["previous_response_id"] == first["id"]
    assert [t["name"] for t in second["tools"]] == ["lookup"]  # carried over
    messages = model.requests[-1].body["messages"]
    assert messages == [
        {"role": "user", "content": "what is it?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_c",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "answer"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_c", "content": "42"},
    ]


async def test_length_finish_is_incomplete(model: ScriptedUpstream) -> None:
    model.handler = lambda r: JsonReply(chat_completion("cut", finish_reason="length"))
    response = await service(model).create({"model": "m", "input": "x", "max_output_tokens": 16})
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert model.requests[0].body["max_tokens"] == 16
    assert list(RESPONSE.iter_errors(response)) == []


async def test_openai_stream_accumulator_text(model: ScriptedUpstream) -> None:
    model.handler = lambda r: StreamReply(text_chunks(["Hi", " there"]))
    store = MemoryStore()
    responses = service(model, store)
    client = openai_over(responses)
    async with client.responses.stream(model="m", input="hello") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert deltas == ["Hi", " there"]
    assert final.output_text == "Hi there"
    assembled = (await store.outcome(final.id.removeprefix("resp_")))[1]
    assert as_sent(final) == assembled


async def test_openai_stream_accumulator_client_side_call(model: ScriptedUpstream) -> None:
    calls = [{"id": "call_x", "name": "lookup", "arguments": '{"q": "x"}'}]
    model.handler = lambda r: StreamReply(tool_call_chunks(calls, pieces=3))
    store = MemoryStore()
    client = openai_over(service(model, store))
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    async with client.responses.stream(model="m", input="q", tools=tools) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    [call] = final.output
    assert (call.type, call.name, call.arguments) == ("function_call", "lookup", '{"q": "x"}')
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == ['{"q": "x"}']
    assert as_sent(final) == (await store.outcome(final.id.removeprefix("resp_")))[1]


async def test_openai_stream_accumulator_two_round_tools(model: ScriptedUpstream) -> None:
    store = MemoryStore()
    client = openai_over(service(model, store))
    async with client.responses.stream(model="m", input="weather?") as stream:
        [e async for e in stream]
        final = await stream.get_final_response()
    assembled = (await store.outcome(final.id.removeprefix("resp_")))[1]
    assert as_sent(final) == assembled
    assert final.output_text == "Paris 14, Lima 21."
    assert [i.type for i in final.output].count("function_call_output") == 2


async def test_stream_events_match_the_specification(model: ScriptedUpstream) -> None:
    events = await collect(service(model), {"model": "m", "input": "weather?"})
    assert_valid_stream(events)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["response.completed", "[DONE]"]
    done_items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    final = events[-2]["response"]
    # Streamed items and the final response name the same items, in the same order.
    assert [i["id"] for i in done_items] == [i["id"] for i in final["output"]]
    assert done_items == final["output"]


async def test_vllm_shaped_stream(model: ScriptedUpstream) -> None:
    """Tool calls split over many chunks with the id only in the first, and a
    usage chunk with empty choices (vLLM's shapes)."""
    arguments = json.dumps({"city": "Paris", "note": "a long argument " * 8})

    def vllm(request: UpstreamRequest) -> StreamReply:
        if last_role(request) == "tool":
            return StreamReply(text_chunks(["done"]))
        chunks: list[Any] = tool_call_chunks(
            [{"id": "chatcmpl-tool-1", "name": "weather", "arguments": arguments}], pieces=17
        )
        chunks.append(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [],
                "usage": {"prompt_tokens": 40, "completion_tokens": 30, "total_tokens": 70},
            }
        )
        return StreamReply(chunks)

    model.handler = vllm
    events = await collect(service(model), {"model": "m", "input": "go"})
    assert_valid_stream(events)
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert len(deltas) > 10
    assert len({d["item_id"] for d in deltas}) == 1
    assert "".join(d["delta"] for d in deltas) == arguments
    final = events[-2]["response"]
    assert final["output"][0]["call_id"] == "chatcmpl-tool-1"
    assert final["output"][0]["arguments"] == arguments
    assert final["usage"]["input_tokens"] == 45  # 40 + the text round's 5
    assert final["output"][-1]["content"][0]["text"] == "done"


async def test_resume_after_a_dead_worker_fails_as_abandoned(
    model: ScriptedUpstream, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    body = {"model": "m", "input": "weather?"}
    await store.save_request("dead", stored(body))
    store.decide = ResponsesTransition(store)
    first = await store.record_step("dead", None, None, StepDescriptor.model_call({"m": 1}))
    await store.mark_step_processing(first.id)  # and then the worker died
    response = await service(model, store).resume("dead")
    assert response["status"] == "failed"
    assert response["error"]["code"] == "step_abandoned"
    assert list(RESPONSE.iter_errors(response)) == []
    assert model.requests == []  # nothing was run again
    [step] = await store.steps("dead")
    assert step.state is StepState.PROCESSING


async def test_request_conversion() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "developer", "content": "rules"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": "https://x/img.png", "detail": "low"},
                ],
            },
        ],
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {}}],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 50,
        "stream": True,
    }
    transition = ResponsesTransition(MemoryStore())
    context, tools = await transition.context(body)
    request = model_request(body, context.messages(), tools)
    assert request["messages"] == [
        {"role": "system", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/img.png", "detail": "low"}},
            ],
        },
    ]
    assert request["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}
    ]
    assert request["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert (request["parallel_tool_calls"], request["temperature"], request["top_p"]) == (
        False,
        0.2,
        0.9,
    )
    assert request["max_tokens"] == 50
    assert request["stream_options"] == {"include_usage": True}


async def test_nulls_in_the_request_never_become_nulls_the_schema_forbids(
    model: ScriptedUpstream,
) -> None:
    model.handler = lambda r: JsonReply(chat_completion("ok"))
    nullable = [
        "temperature", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
        "tool_choice", "truncation", "background", "service_tier", "tools", "store",
        "parallel_tool_calls", "text", "metadata", "instructions", "max_output_tokens",
    ]  # fmt: skip
    body = {"model": "m", "input": "hi", **dict.fromkeys(nullable)}
    response = await service(model).create(body)
    assert list(RESPONSE.iter_errors(response)) == []
    required = SPEC["components"]["schemas"]["ResponseResource"]["properties"]
    for name in nullable:
        allows_null = "null" in json.dumps(required[name])
        assert allows_null or response[name] is not None, name
    assert response["output"][0]["content"][0]["logprobs"] == []
    assert (response["background"], response["store"], response["parallel_tool_calls"]) == (
        False,
        True,
        True,
    )


async def test_file_and_image_parts_reach_the_upstream(model: ScriptedUpstream) -> None:
    model.handler = lambda r: JsonReply(chat_completion("Read it."))
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    content = [
        {"type": "input_text", "text": "summarise"},
        {"type": "input_file", "filename": "a.pdf", "file_data": pdf},
        {"type": "input_file", "file_url": "https://files.test/b.pdf"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
    ]
    response = await service(model).create(
        {"model": "m", "input": [{"role": "user", "content": content}]}
    )
    assert response["status"] == "completed"
    assert list(RESPONSE.iter_errors(response)) == []
    [request] = model.requests
    assert request.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "summarise"},
                {"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}},
                {"type": "file", "file": {"file_url": "https://files.test/b.pdf"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]


async def test_a_file_part_without_a_source_is_refused_and_nothing_is_kept(
    model: ScriptedUpstream,
) -> None:
    store = MemoryStore()
    part = {"type": "input_file", "filename": "a.pdf"}
    with pytest.raises(InvalidRequest, match="input_file needs file_data, file_id or file_url"):
        await service(model, store).create(
            {"model": "m", "input": [{"role": "user", "content": [part]}]}, request_id="r1"
        )
    assert model.requests == []
    assert await store.load_request("r1") is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"input": "x"},
        {"model": "m"},
        {"model": "m", "input": 5},
        {"model": "m", "input": "x", "tools": [{"type": "web_search"}]},
        {"model": "m", "input": "x", "max_output_tokens": 0},
    ],
)
async def test_bad_requests_are_typed_errors(model: ScriptedUpstream, body: Any) -> None:
    with pytest.raises(InvalidRequest):
        await service(model).create(body)
    assert model.requests == []


def test_an_assembled_item_holds_the_completions_own_text() -> None:
    # A long answer's text is megabytes: the response assembled from a
    # completion holds the completion's own `str`, not a copy.
    text, reasoning = "A long answer. " * 1000, "Thinking. " * 1000
    message = _core.message_item("r", 1, text, [], False)
    thought = _core.reasoning_item("r", 1, reasoning)
    assert message["content"][0]["text"] is text
    assert thought["content"][0]["text"] is reasoning
    assert list(message["content"][0].items()) == [
        ("annotations", []), ("logprobs", []), ("text", text), ("type", "output_text")
    ]  # fmt: skip
    assert thought["content"] == [{"text": reasoning, "type": "reasoning_text"}]


async def test_reasoning_items_and_failed_tools(model: ScriptedUpstream) -> None:
    def answer(request: UpstreamRequest) -> JsonReply:
        if last_role(request) == "tool":
            completion = chat_completion("Could not check.")
            completion["choices"][0]["message"]["reasoning_content"] = "The tool failed."
            return JsonReply(completion)
        call = {"id": "call_b", "name": "weather", "arguments": '{"town": "x"}'}
        return JsonReply(chat_completion(tool_calls=[call]))

    model.handler = answer
    response = await service(model).create({"model": "m", "input": "weather?"})
    assert list(RESPONSE.iter_errors(response)) == []
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["function_call", "function_call_output", "reasoning", "message"]
    assert response["output"][2]["content"] == [
        {"type": "reasoning_text", "text": "The tool failed."}
    ]
    # The failed call's error went back to the model as that tool's content.
    tool_message = model.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert "invalid tool arguments" in json.loads(tool_message["content"])["error"]


async def test_requests_sharing_a_store_each_see_their_own_tools() -> None:
    """Two `Responses` over one store, serving different tools, ten requests each
    at once: every response runs its own executor's tool."""

    def model(request: UpstreamRequest) -> JsonReply:
        messages = request.body["messages"]
        if messages[-1]["role"] == "tool":
            return JsonReply(chat_completion(f"tool said {messages[-1]['content']}"))
        [tool] = [t["function"]["name"] for t in request.body["tools"]]
        call = {"id": "call_1", "name": tool, "arguments": "{}"}
        return JsonReply(chat_completion(tool_calls=[call]))

    def alpha() -> str:
        """The alpha tool."""
        return "alpha"

    def beta() -> str:
        """The beta tool."""
        return "beta"

    store = MemoryStore()
    with ScriptedUpstream(model) as upstream:
        target = UpstreamTarget(upstream.endpoint)
        by_tool = {
            name: Responses(store, Toolbox(FunctionTools(fn)), target)
            for name, fn in (("alpha", alpha), ("beta", beta))
        }
        bodies = [
            (name, {"model": "m", "input": f"{name} {n}"}) for n in range(10) for name in by_tool
        ]
        responses = await asyncio.gather(*(by_tool[name].create(body) for name, body in bodies))
    for (name, _), response in zip(bodies, responses, strict=True):
        assert response["status"] == "completed", response["error"]
        outputs = [i["output"] for i in response["output"] if i["type"] == "function_call_output"]
        assert outputs == [f'"{name}"']
    # Nothing was written on the shared store per request.
    assert store.decide is None


async def test_an_assistant_message_says_its_phase_alike_in_stream_and_output() -> None:
    calls = [{"id": "call_p", "name": "weather", "arguments": '{"city": "Paris"}'}]

    def narrating_model(request: UpstreamRequest) -> Any:
        if last_role(request) == "tool":
            return StreamReply(text_chunks(["Mild."]))
        # Text, then a tool call, in one answer.
        return StreamReply(text_chunks(["Looking it up."])[:2] + tool_call_chunks(calls)[1:])

    with ScriptedUpstream(narrating_model) as upstream:
        events = await collect(service(upstream), {"model": "m", "input": "Paris?", "stream": True})
    assert_valid_stream(events)
    final = events[-2]["response"]
    messages = [item for item in final["output"] if item["type"] == "message"]
    assert [m["phase"] for m in messages] == ["commentary", "final_answer"]
    streamed = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert streamed == final["output"]
    assert list(RESPONSE.iter_errors(final)) == []
