"""Compaction: `POST /v1/responses/compact` through the official client, and
the sealed `compaction` item it returns, sent back as input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai import BadRequestError
from stepwell.openresponses import CompactionKey, InvalidRequest
from stepwell.openresponses.compaction import SUMMARY_PROMPT
from stepwell.testing import JsonReply, ScriptedUpstream, UpstreamRequest, chat_completion

from .test_openresponses import validator
from .test_server import Server

COMPACTED = validator("CompactResource")
RESPONSE = validator("ResponseResource")

SUMMARY = "The user is Ada; she asked for a haiku about owls, and got one."


def summarizing_model(request: UpstreamRequest) -> Any:
    """Writes the summary when asked for it; otherwise answers plainly."""
    last = request.body["messages"][-1]
    if last["content"] == SUMMARY_PROMPT:
        return JsonReply(chat_completion(SUMMARY))
    return JsonReply(chat_completion("Noted."))


def test_a_sealed_summary_opens_only_unchanged_and_under_its_key() -> None:
    key = CompactionKey(b"secret")
    sealed = key.seal("déjà vu: the summary")
    assert "summary" not in sealed  # opaque
    assert key.open(sealed, "input[0]") == "déjà vu: the summary"
    assert CompactionKey(b"secret").open(sealed, "p") == "déjà vu: the summary"
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    for bad in (flipped, sealed + "x", "swc1.", "plain text", 42):
        with pytest.raises(InvalidRequest) as refused:
            key.open(bad, "input[3].encrypted_content")
        assert refused.value.param == "input[3].encrypted_content"
    with pytest.raises(InvalidRequest):
        CompactionKey(b"another").open(sealed, "p")


async def test_compact_then_continue_over_the_compacted_input(tmp_path: Path) -> None:
    with ScriptedUpstream(summarizing_model) as upstream:
        server = Server(upstream.endpoint, tmp_path / "c.db")
        try:
            client = server.client()
            compacted = await client.responses.compact(
                model="m",
                instructions="Be brief.",
                input=[
                    {"role": "user", "content": "I am Ada. A haiku about owls?"},
                    {"role": "assistant", "content": "Owls at dusk, silent..."},
                ],
            )
            assert compacted.object == "response.compaction"
            assert list(COMPACTED.iter_errors(compacted.to_dict(warnings=False))) == []
            kinds = [item.type for item in compacted.output]
            assert kinds == ["message", "compaction"]
            assert compacted.output[0].to_dict(warnings=False)["content"] == [
                {"type": "input_text", "text": "I am Ada. A haiku about owls?"}
            ]
            assert compacted.usage.total_tokens == 12
            asked = upstream.requests[-1].body["messages"]
            assert asked[0] == {"role": "system", "content": "Be brief."}
            assert asked[-1] == {"role": "user", "content": SUMMARY_PROMPT}
            assert SUMMARY not in compacted.output[1].to_dict()["encrypted_content"]

            items = [item.to_dict(warnings=False) for item in compacted.output]
            answer = await client.responses.create(
                model="m", input=[*items, {"role": "user", "content": "What is my name?"}]
            )
            assert answer.output_text == "Noted."
            sent = upstream.requests[-1].body["messages"]
            assert [m["role"] for m in sent] == ["user", "user", "user"]
            assert SUMMARY in sent[1]["content"]

            items[1]["encrypted_content"] = items[1]["encrypted_content"][:-6] + "AAAAAA"
            with pytest.raises(BadRequestError) as refused:
                await client.responses.create(model="m", input=items)
            assert refused.value.param == "input[1]"
            with pytest.raises(BadRequestError) as refused:
                await client.post("/responses/compact", body={"input": "x"}, cast_to=dict)
            assert refused.value.param == "model"
        finally:
            server.stop()


async def test_inline_compaction_through_the_official_client(tmp_path: Path) -> None:
    with ScriptedUpstream(summarizing_model) as upstream:
        server = Server(upstream.endpoint, tmp_path / "c.db")
        try:
            client = server.client()
            first = await client.responses.create(model="m", input="I am Ada.")
            # The scripted model reports 12 tokens per call: past 10.
            second = await client.responses.create(
                model="m",
                input="Who am I?",
                previous_response_id=first.id,
                context_management=[{"type": "compaction", "compact_threshold": 10}],
            )
            assert [item.type for item in second.output] == ["compaction", "message"]
            assert list(RESPONSE.iter_errors(second.to_dict(warnings=False))) == []
            assert upstream.requests[-2].body["messages"][-1]["content"] == SUMMARY_PROMPT
            sent = upstream.requests[-1].body["messages"]
            assert [m["content"] for m in sent[:2]] == ["I am Ada.", "Who am I?"]
            assert SUMMARY in sent[2]["content"]
            kept = await client.responses.retrieve(second.id)
            assert kept.output[0].to_dict() == second.output[0].to_dict()
        finally:
            server.stop()
