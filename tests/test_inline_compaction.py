"""Inline compaction: `context_management` on create folds the context into a
`compaction` item once a model call passes the threshold, in the output and
in the stream alike, and later model calls (and later turns) send the fold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from stepwell import UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.openresponses.compaction import SUMMARY_PREFIX, SUMMARY_PROMPT
from stepwell.stores import MemoryStore
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

from .test_openresponses import assert_valid_stream, collect, validator, weather

SUMMARY = "Ada asked for the weather in Paris and Lima; both were looked up."
QUESTION = {"role": "user", "content": "Weather in Paris and Lima?"}
RESPONSE = validator("ResponseResource")
CALLS = [
    {"id": "call_p", "name": "weather", "arguments": '{"city": "Paris"}'},
    {"id": "call_l", "name": "weather", "arguments": '{"city": "Lima"}'},
]


def summarized(request: UpstreamRequest) -> bool:
    return any(
        isinstance(m.get("content"), str) and m["content"].startswith(SUMMARY_PREFIX)
        for m in request.body["messages"]
    )


def compacting_model(request: UpstreamRequest) -> Any:
    """Summarizes when asked to; answers once it has a summary; else calls tools."""
    stream = bool(request.body.get("stream"))
    messages = request.body["messages"]
    if messages[-1]["content"] == SUMMARY_PROMPT:
        return JsonReply(chat_completion(SUMMARY))
    if summarized(request) or messages[-1]["content"] != QUESTION["content"]:
        text = "Mild in both."
        return (
            StreamReply(text_chunks([text[:4], text[4:]]))
            if stream
            else JsonReply(chat_completion(text))
        )
    if stream:
        usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        chunks = tool_call_chunks(CALLS, pieces=3)
        chunks.append({**chunks[-1], "choices": [], "usage": usage})
        return StreamReply(chunks)
    return JsonReply(chat_completion(tool_calls=CALLS))


@pytest.fixture
def model() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(compacting_model) as upstream:
        yield upstream


def service(upstream: ScriptedUpstream) -> Responses:
    return Responses(
        MemoryStore(), Toolbox(FunctionTools(weather)), UpstreamTarget(upstream.endpoint)
    )


def compacting(threshold: int) -> list[dict[str, Any]]:
    return [{"type": "compaction", "compact_threshold": threshold}]


async def test_a_context_past_the_threshold_is_compacted_before_the_next_model_call(
    model: ScriptedUpstream,
) -> None:
    responses = service(model)
    # The scripted model reports 5 + 7 tokens per call: 12 passes 10.
    body = {"model": "m", "input": [QUESTION], "context_management": compacting(10)}
    events = await collect(responses, {**body, "stream": True})
    assert_valid_stream(events)
    final = events[-2]["response"]
    assert events[-2]["type"] == "response.completed"
    assert list(RESPONSE.iter_errors(final)) == []
    kinds = [item["type"] for item in final["output"]]
    assert kinds == [
        "function_call", "function_call", "function_call_output", "function_call_output",
        "compaction", "message",
    ]  # fmt: skip
    streamed = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert streamed == final["output"]
    compaction = final["output"][4]
    assert compaction["id"].startswith("cmp_")
    assert SUMMARY not in compaction["encrypted_content"]
    assert final["output"][5]["phase"] == "final_answer"

    asked, answered = model.requests[-2].body, model.requests[-1].body
    assert asked["messages"][-1] == {"role": "user", "content": SUMMARY_PROMPT}
    assert [m["role"] for m in asked["messages"][:-1]] == ["user", "assistant", "tool", "tool"]
    assert answered["messages"] == [QUESTION, {"role": "user", "content": SUMMARY_PREFIX + SUMMARY}]
    # The tool calls and the summary took 5 + 7 tokens each, the answer 5 + 2.
    assert final["usage"]["input_tokens"] == 15
    assert final["usage"]["output_tokens"] == 16

    # Retrieved, the response is the one streamed.
    kept = await responses.current(final["id"].removeprefix("resp_"))
    assert kept is not None
    assert kept["output"] == final["output"]


async def test_below_the_threshold_nothing_is_compacted(model: ScriptedUpstream) -> None:
    response = await service(model).create(
        {"model": "m", "input": [QUESTION], "context_management": compacting(10_000)}
    )
    assert [item["type"] for item in response["output"]][-1] == "message"
    assert "compaction" not in [item["type"] for item in response["output"]]
    assert all(m["content"] != SUMMARY_PROMPT for r in model.requests for m in r.body["messages"])


async def test_a_turn_that_continues_a_long_context_starts_with_compaction(
    model: ScriptedUpstream,
) -> None:
    responses = service(model)
    first = await responses.create({"model": "m", "input": "I am Ada."})
    second = await responses.create(
        {
            "model": "m",
            "input": "What did I say?",
            "previous_response_id": first["id"],
            "context_management": compacting(10),
        }
    )
    assert [item["type"] for item in second["output"]] == ["compaction", "message"]
    assert model.requests[-2].body["messages"][-1]["content"] == SUMMARY_PROMPT
    summary = {"role": "user", "content": SUMMARY_PREFIX + SUMMARY}
    assert model.requests[-1].body["messages"] == [
        {"role": "user", "content": "I am Ada."},
        {"role": "user", "content": "What did I say?"},
        summary,
    ]

    # A later turn sends the fold, not what the summary stands for.
    await responses.create(
        {"model": "m", "input": "And then?", "previous_response_id": second["id"]}
    )
    sent = model.requests[-1].body["messages"]
    assert [m["content"] for m in sent] == [
        "I am Ada.", "What did I say?", summary["content"], "Mild in both.", "And then?",
    ]  # fmt: skip


async def test_a_summary_the_model_does_not_give_fails_the_response() -> None:
    def no_summary(request: UpstreamRequest) -> Any:
        if request.body["messages"][-1]["content"] == SUMMARY_PROMPT:
            return JsonReply({"error": {"message": "overloaded"}}, status=503)
        return compacting_model(request)

    with ScriptedUpstream(no_summary) as upstream:
        response = await service(upstream).create(
            {"model": "m", "input": [QUESTION], "context_management": compacting(10)}
        )
    assert response["status"] == "failed"
    assert response["error"]["code"] == "compaction_failed"
    assert list(RESPONSE.iter_errors(response)) == []
