"""A long answer's text crosses from the core to the store whole, or (where the
allocator gives big blocks back, `stepwell serve`) a piece at a time: either
way the store and the run's result get it exactly, multi-byte characters cut
across pieces included."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from stepwell import (
    AppendSteps,
    ChainStep,
    Complete,
    RequestContext,
    StepDescriptor,
    UpstreamTarget,
    _core,
    run_response_loop,
)
from stepwell.stores import MemoryStore
from stepwell.testing import (
    JsonReply,
    ScriptedTransition,
    ScriptedUpstream,
    StreamReply,
    chat_completion,
    text_chunks,
)

from .conftest import Tools

# 2.2 MB of text that never repeats, two- and three-byte characters
# throughout, so the pieces' cuts (about 1 MiB apart, counted from the end)
# fall inside characters and a piece out of place would show.
PIECES = [
    "".join(f"{line:07d} é✓ " for line in range(start, start + 100))
    for start in range(0, 160_000, 100)
]
TEXT = "".join(PIECES)


@pytest.fixture(params=[False, True], ids=["whole", "in pieces"])
def handed_over(request: pytest.FixtureRequest) -> Iterator[None]:
    _core.hand_long_texts_over_in_pieces(request.param)
    try:
        yield
    finally:
        _core.hand_long_texts_over_in_pieces(sys.platform == "linux")


def last_payload(chain: list[ChainStep]) -> Complete:
    return Complete(chain[-1].response_payload)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not streamed"])
async def test_a_long_answer_reaches_the_store_and_the_result_exactly(
    handed_over: None,
    stream: bool,
    upstream: ScriptedUpstream,
    ctx: RequestContext,
    target: UpstreamTarget,
) -> None:
    assert len(TEXT.encode()) > 2 * 2**20
    upstream.handler = lambda request: (
        StreamReply(text_chunks(PIECES)) if stream else JsonReply(chat_completion(TEXT))
    )
    call = StepDescriptor.model_call({"model": "scripted", "stream": stream, "messages": []})
    store = MemoryStore(ScriptedTransition([AppendSteps([call]), last_payload]))
    result = await run_response_loop(store, Tools(), ctx, target, request_id="long")
    [step] = await store.steps("long")
    assert step.response_payload["choices"][0]["message"]["content"] == TEXT
    assert result["choices"][0]["message"]["content"] == TEXT
    assert result == step.response_payload
