"""The public types: defaults, validation, and keys kept out of sight."""

from __future__ import annotations

import pytest
import stepwell
from stepwell import HttpClient, LoopConfig, LoopEvent, UpstreamTarget


def test_everything_named_by_the_design_is_importable_from_stepwell() -> None:
    names = """StepKind StepState StepDescriptor NextAction AppendSteps Complete Fail
    RecordedStep ChainStep ToolSchema ToolKind RequestContext LoopConfig UpstreamTarget
    LoopEvent MultiStepStore ToolExecutor EventSink LoopError LoopFailed MaxIterationsExceeded
    MaxDepthExceeded EmptyAction StoreError ExecutorError ToolError ToolNotFound
    ToolExecutionError InvalidToolArguments ToolTimeout run_response_loop HttpClient""".split()
    missing = [n for n in names if not hasattr(stepwell, n)]
    assert missing == []
    assert issubclass(stepwell.StoreError, stepwell.LoopError)
    assert issubclass(stepwell.ToolTimeout, stepwell.ToolError)


def test_loop_config_defaults_and_validation() -> None:
    config = LoopConfig()
    assert (config.max_response_step_depth, config.max_response_iterations) == (8, 10)
    assert config.bridge_capacity == 1024
    for bad in (
        {"max_response_iterations": -1},
        {"bridge_capacity": 0},
        {"max_response_step_depth": "8"},
    ):
        with pytest.raises(ValueError):
            LoopConfig(**bad)  # type: ignore[arg-type]


def test_api_key_is_not_in_repr() -> None:
    target = UpstreamTarget("http://127.0.0.1:1", api_key="sk-hidden")
    assert "sk-hidden" not in repr(target)
    assert target.path == "/v1/chat/completions"


def test_loop_event_fields() -> None:
    event = LoopEvent(7, "response.output_text.delta", {"delta": "a\nb"})
    assert (event.sequence, event.kind, event.data) == (
        7,
        "response.output_text.delta",
        {"delta": "a\nb"},
    )
    assert not hasattr(event, "sse")  # the server's stream is the only SSE dialect
    assert event == LoopEvent(7, "response.output_text.delta", {"delta": "a\nb"})
    assert event.delta == "a\nb"
    assert LoopEvent(0, "response.created", {"id": "resp_x"}).delta is None
    with pytest.raises(ValueError):
        LoopEvent(0, "response.nonsense", {})


def test_http_client_rejects_bad_headers() -> None:
    assert HttpClient().request_id_header == "X-Request-Id"
    with pytest.raises(ValueError):
        HttpClient(request_id_header="not a header")
    with pytest.raises(ValueError):
        HttpClient(headers={"X-Bad": "line\nbreak"})


def test_every_exception_stepwell_raises_shares_one_root() -> None:
    import stepwell.errors
    from stepwell import StepwellError
    from stepwell.openresponses import InvalidRequest
    from stepwell.stores import IllegalTransition
    from stepwell.stores.sqlite import StoreCorrupt, StoreLocked

    raised = [
        value
        for value in vars(stepwell.errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(raised) >= 12
    for kind in [*raised, InvalidRequest, IllegalTransition, StoreCorrupt, StoreLocked]:
        assert issubclass(kind, StepwellError), kind
    # Still what they were, for code that catches the built-in kinds.
    assert issubclass(InvalidRequest, ValueError) and issubclass(StoreLocked, RuntimeError)


def test_a_step_with_an_encoded_request_is_a_step_like_any_other() -> None:
    from dataclasses import replace

    from stepwell import ChainStep, StepKind, StepState

    fields = {"id": "s", "sequence": 1, "kind": StepKind.MODEL_CALL, "state": StepState.PENDING}
    plain = ChainStep(request_payload={"messages": [{"role": "user", "content": "hi"}]}, **fields)
    encoded = ChainStep.with_encoded_request('{"messages": [{"role": "user", "content": "hi"}]}',
                                             **fields)  # fmt: skip
    assert encoded == plain and repr(encoded) == repr(plain)
    assert encoded.request_payload is encoded.request_payload  # decoded once
    moved = replace(ChainStep.with_encoded_request("{}", **fields), state=StepState.COMPLETED)
    assert (moved.request_payload, moved.state) == ({}, StepState.COMPLETED)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = encoded.missing  # type: ignore[attr-defined]
