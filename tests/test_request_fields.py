"""Every request field either reaches the model, under the name chat-completions
gives it, or is refused with a 400 that names it: one test per field, each
checking the body the upstream received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from stepwell import UpstreamTarget
from stepwell.openresponses import InvalidRequest, Responses
from stepwell.openresponses.items import input_items
from stepwell.stores import MemoryStore
from stepwell.testing import JsonReply, ScriptedUpstream, UpstreamRequest, chat_completion
from stepwell.tools import FunctionTools, Toolbox

from .test_openresponses import RESPONSE
from .test_server import Server


def answer(request: UpstreamRequest) -> JsonReply:
    completion = chat_completion('{"city": "Paris", "temp_c": 14}')
    if request.body.get("logprobs"):
        completion["choices"][0]["logprobs"] = {
            "content": [
                {
                    "token": "{",
                    "logprob": -0.01,
                    "bytes": [123],
                    "top_logprobs": [{"token": "{", "logprob": -0.01, "bytes": [123]}],
                }
            ]
        }
    return JsonReply(completion)


@pytest.fixture
def model() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as upstream:
        yield upstream


def lookup(city: str) -> str:
    """Looks a city up.

    Args:
        city: The city.
    """
    return city


def service(upstream: ScriptedUpstream) -> Responses:
    return Responses(
        MemoryStore(), Toolbox(FunctionTools(lookup)), UpstreamTarget(upstream.endpoint)
    )


async def sent(model: ScriptedUpstream, **fields: Any) -> dict[str, Any]:
    """The body the upstream received for a create with `fields`."""
    response = await service(model).create({"model": "m", "input": "hi", **fields})
    assert response["status"] == "completed"
    assert list(RESPONSE.iter_errors(response)) == []
    body: dict[str, Any] = model.requests[-1].body
    return body


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
    "required": ["city", "temp_c"],
    "additionalProperties": False,
}


async def test_a_json_schema_format_becomes_response_format(model: ScriptedUpstream) -> None:
    fmt = {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}
    body = await sent(model, text={"format": {**fmt, "description": "The weather."}})
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "schema": SCHEMA,
            "strict": True,
            "description": "The weather.",
        },
    }


async def test_json_object_and_text_formats(model: ScriptedUpstream) -> None:
    body = await sent(model, text={"format": {"type": "json_object"}})
    assert body["response_format"] == {"type": "json_object"}
    body = await sent(model, text={"format": {"type": "text"}, "verbosity": "low"})
    assert "response_format" not in body
    assert body["verbosity"] == "low"


async def test_an_assistant_message_s_phase_is_kept_with_the_input(
    model: ScriptedUpstream,
) -> None:
    """`phase` on an assistant input message is accepted and kept with the
    input (as `input_items` lists it); chat-completions has no such field, so
    the model gets the message without it."""
    said = {"type": "message", "role": "assistant", "content": "Looking.", "phase": "commentary"}
    responses = service(model)
    response = await responses.create(
        {"model": "m", "input": [{"role": "user", "content": "hi"}, said]}
    )
    assert response["status"] == "completed"
    saved = await responses.store.load_request(response["id"].removeprefix("resp_"))
    assert saved is not None
    [_, kept] = input_items(response["id"], saved["request"])
    assert kept["phase"] == "commentary"
    assert model.requests[-1].body["messages"][-1] == {"role": "assistant", "content": "Looking."}


async def test_reasoning_effort(model: ScriptedUpstream) -> None:
    body = await sent(model, reasoning={"effort": "high"})
    assert body["reasoning_effort"] == "high"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1.5),
        ("temperature", 0.3),
        ("top_p", 0.8),
        ("seed", 7),
        ("stop", ["\n\n", "END"]),
        ("stop", "END"),
        ("user", "end-user-1"),
        ("safety_identifier", "hashed-user"),
        ("prompt_cache_key", "session-9"),
        ("service_tier", "flex"),
    ],
)
async def test_fields_passed_as_they_are(model: ScriptedUpstream, field: str, value: Any) -> None:
    body = await sent(model, **{field: value})
    assert body[field] == value


async def test_max_output_tokens_and_tool_choice(model: ScriptedUpstream) -> None:
    body = await sent(
        model,
        max_output_tokens=64,
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [
            {"type": "function", "name": "lookup"}
        ]},
    )  # fmt: skip
    assert body["max_tokens"] == 64
    assert body["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "lookup"}}],
        },
    }


async def test_logprobs_reach_the_model_and_come_back(model: ScriptedUpstream) -> None:
    response = await service(model).create(
        {
            "model": "m",
            "input": "hi",
            "top_logprobs": 3,
            "include": ["message.output_text.logprobs"],
        }
    )
    assert list(RESPONSE.iter_errors(response)) == []
    body = model.requests[-1].body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    [logprob] = response["output"][0]["content"][0]["logprobs"]
    assert logprob == {
        "token": "{",
        "logprob": -0.01,
        "bytes": [123],
        "top_logprobs": [{"token": "{", "logprob": -0.01, "bytes": [123]}],
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"conversation": "conv_1"}, "conversation"),
        (
            {"context_management": [{"type": "compaction"}]},
            "context_management[0].compact_threshold",
        ),
        ({"frobnicate": True}, "frobnicate"),
        ({"truncation": "auto"}, "truncation"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        ({"store": False, "background": True}, "background"),
        ({"stream": True, "top_logprobs": 2}, "top_logprobs"),
        ({"text": {"format": {"type": "json_schema", "schema": SCHEMA}}}, "text.format.name"),
        ({"text": {"format": {"type": "json_schema", "name": "w"}}}, "text.format.schema"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ],
)
async def test_what_cannot_be_honoured_is_refused(
    model: ScriptedUpstream, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await service(model).create({"model": "m", "input": "hi", **fields})
    assert refused.value.param == param
    assert model.requests == []


class Weather(BaseModel):
    city: str
    temp_c: int


async def test_responses_parse_sends_the_schema(model: ScriptedUpstream, tmp_path: Path) -> None:
    """The official client's structured outputs against `stepwell serve`: the
    upstream gets the pydantic model's schema, and the client parses the answer
    into the model."""
    server = Server(model.endpoint, tmp_path / "parse.db")
    try:
        client = server.client()
        parsed = await client.responses.parse(model="m", input="weather?", text_format=Weather)
    finally:
        server.stop()
    assert parsed.output_parsed == Weather(city="Paris", temp_c=14)
    fmt = model.requests[-1].body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["city", "temp_c"]
