"""What a run reports: log lines on the `stepwell` logger (never a key or a
request body at INFO), and OpenTelemetry spans for the response and each step,
with each model call's `traceparent` sent upstream."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from stepwell import UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.stores import MemoryStore
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    UpstreamRequest,
    chat_completion,
)
from stepwell.tools import FunctionTools, Toolbox

SECRET = "sk-never-log-this"
MARKER = "the user's private question"

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process; every test shares it.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def lookup(city: str) -> dict[str, Any]:
    """Look a city up.

    Args:
        city: The city.
    """
    return {"city": city}


def two_rounds(request: UpstreamRequest) -> JsonReply:
    """Round one calls `lookup` twice in parallel; round two answers."""
    if request.body["messages"][-1]["role"] == "tool":
        return JsonReply(chat_completion("Both found."))
    calls = [
        {"id": "call_a", "name": "lookup", "arguments": '{"city": "Oslo"}'},
        {"id": "call_b", "name": "lookup", "arguments": '{"city": "Lima"}'},
    ]
    return JsonReply(chat_completion(tool_calls=calls))


async def run_two_rounds(fail_second: bool = False) -> tuple[dict[str, Any], ScriptedUpstream]:
    def model(request: UpstreamRequest) -> JsonReply:
        if fail_second and request.body["messages"][-1]["role"] == "tool":
            return JsonReply({"error": {"message": "overloaded"}}, 503)
        return two_rounds(request)

    with ScriptedUpstream(model) as upstream:
        responses = Responses(
            MemoryStore(),
            Toolbox(FunctionTools(lookup)),
            UpstreamTarget(upstream.endpoint, api_key=SECRET),
        )
        response = await responses.create({"model": "m", "input": MARKER})
    return response, upstream


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_span_tree_of_a_two_round_tool_response(spans: InMemorySpanExporter) -> None:
    response, upstream = await run_two_rounds()
    assert response["status"] == "completed"
    finished = spans.get_finished_spans()
    [root] = [s for s in finished if s.name == "stepwell.response"]
    steps = sorted(
        (s for s in finished if s is not root), key=lambda s: attrs(s)["stepwell.step.sequence"]
    )
    assert [s.name for s in steps] == [
        "stepwell.model_call",
        "stepwell.tool_call",
        "stepwell.tool_call",
        "stepwell.model_call",
    ]
    request_id = response["id"].removeprefix("resp_")
    assert attrs(root)["stepwell.request_id"] == request_id
    assert attrs(root)["stepwell.response.state"] == "completed"
    assert root.parent is None
    for span in steps:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert attrs(span)["stepwell.request_id"] == request_id
        assert attrs(span)["stepwell.step.state"] == "completed"
        assert attrs(span)["stepwell.step.id"].startswith("step_")
    first, *tools, last = steps
    assert [attrs(s)["stepwell.tool.name"] for s in tools] == ["lookup", "lookup"]
    assert attrs(first)["stepwell.step.kind"] == "model_call"
    assert attrs(first)["http.response.status_code"] == 200
    # chat_completion() reports usage; each model span carries it.
    assert attrs(first)["gen_ai.usage.input_tokens"] > 0
    assert attrs(last)["gen_ai.usage.output_tokens"] > 0
    assert first.kind is trace.SpanKind.CLIENT

    # Each model call carried its own span's context upstream.
    sent = [r.headers.get("traceparent") for r in upstream.requests]
    expected = [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{int(s.context.trace_flags):02x}"
        for s in (first, last)
    ]
    assert sent == expected


async def test_a_failed_step_marks_its_span(spans: InMemorySpanExporter) -> None:
    response, _ = await run_two_rounds(fail_second=True)
    assert response["status"] == "failed"
    failed = [
        s for s in spans.get_finished_spans() if attrs(s).get("stepwell.step.state") == "failed"
    ]
    [span] = failed
    assert span.name == "stepwell.model_call"
    assert attrs(span)["http.response.status_code"] == 503
    assert span.status.status_code is trace.StatusCode.ERROR


async def test_logs_name_steps_but_never_keys_or_bodies(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="stepwell"):
        response, _ = await run_two_rounds(fail_second=True)
    assert response["status"] == "failed"
    records = [r for r in caplog.records if r.name == "stepwell"]
    text = "\n".join(r.getMessage() for r in records)
    assert SECRET not in text
    info = "\n".join(r.getMessage() for r in records if r.levelno >= logging.INFO)
    assert MARKER not in info
    assert json.dumps(MARKER) not in info
    finished = [r for r in records if r.getMessage().startswith("model call finished")]
    assert len(finished) == 1 and "HTTP 200" in finished[0].getMessage()
    assert finished[0].levelno == logging.INFO
    [failure] = [r for r in records if r.levelno == logging.WARNING]
    assert "step 4 (model_call)" in failure.getMessage()
    assert "upstream_error" in failure.getMessage()
    starts = [r for r in records if "started" in r.getMessage()]
    assert len(starts) == 4 and all(r.levelno == logging.DEBUG for r in starts)


def test_runs_open_spans_only_once_a_tracer_provider_is_configured() -> None:
    # The provider is global and set at most once: a fresh interpreter sees
    # the API's placeholder first.
    script = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from stepwell._observe import configured_tracer\n"
        "print(configured_tracer())\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "print(type(configured_tracer()).__module__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OTEL_PYTHON_TRACER_PROVIDER"}
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert printed == ["None", "opentelemetry.sdk.trace"]
