"""A turn of a `previous_response_id` chain reads the response it continues,
not the chain: what a turn asks of the store does not grow with its depth."""

from __future__ import annotations

import gc
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from stepwell import UpstreamTarget
from stepwell.openresponses import Responses, ResponsesTransition
from stepwell.stores import MemoryStore, SQLiteStore, WithTransition
from stepwell.testing import ScriptedUpstream
from stepwell.tools import FunctionTools, Toolbox

from .test_openresponses import two_round_model, weather


class CountingStore(MemoryStore):
    """A MemoryStore that counts the reads of earlier responses."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    async def load_request(self, request_id: str, *, tenant: str | None = None) -> Any:
        self.reads["load_request"] += 1
        return await super().load_request(request_id, tenant=tenant)

    async def outcome(self, request_id: str) -> Any:
        self.reads["outcome"] += 1
        return await super().outcome(request_id)

    async def steps(self, request_id: str) -> Any:
        self.reads["steps"] += 1
        return await super().steps(request_id)

    async def list_chain(self, request_id: str, scope_parent: str | None) -> Any:
        self.reads["list_chain"] += 1
        return await super().list_chain(request_id, scope_parent)


async def test_a_response_reads_its_chain_once_per_round_and_never_its_request() -> None:
    store = CountingStore()
    with ScriptedUpstream(two_round_model) as upstream:
        responses = Responses(
            store, Toolbox(FunctionTools(weather)), UpstreamTarget(upstream.endpoint)
        )
        response = await responses.create({"model": "m", "input": "Weather?"})
    assert response["status"] == "completed"
    # Four rounds (a model call, two tool calls, a model call, the end), no
    # read: the response was just kept under a new id, so its chain starts
    # empty, and each round decides on it as the run wrote it since; and the
    # request it was created from is the one just kept, not read back.
    assert store.reads["list_chain"] == 0
    assert store.reads["load_request"] == 0


async def test_a_response_kept_under_an_id_of_the_callers_reads_its_chain_once() -> None:
    # That id may be one the store holds steps of already.
    store = CountingStore()
    with ScriptedUpstream(two_round_model) as upstream:
        responses = Responses(
            store, Toolbox(FunctionTools(weather)), UpstreamTarget(upstream.endpoint)
        )
        response = await responses.create({"model": "m", "input": "Weather?"}, request_id="mine")
    assert response["status"] == "completed"
    assert store.reads["list_chain"] == 1


def _fields(chain: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (s.id, s.sequence, s.kind, s.state, s.request_payload, s.response_payload, s.error,
         s.prev_step_id, s.scope_parent, s.sub_request_id)
        for s in chain
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_each_round_decides_on_the_chain_the_store_keeps(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "chain.db")
    decide = ResponsesTransition.__call__
    rounds: list[tuple[list[Any], list[Any]]] = []

    async def comparing(self: Any, chain: Any, request_id: str, scope_parent: Any) -> Any:
        kept = await store.list_chain(request_id, scope_parent)
        rounds.append((_fields(chain), _fields(kept)))
        return await decide(self, chain, request_id, scope_parent)

    monkeypatch.setattr(ResponsesTransition, "__call__", comparing)
    with ScriptedUpstream(two_round_model) as upstream:
        responses = Responses(
            store, Toolbox(FunctionTools(weather)), UpstreamTarget(upstream.endpoint)
        )
        response = await responses.create({"model": "m", "input": "Weather?"})
    assert response["status"] == "completed"
    assert [len(kept) for _, kept in rounds] == [0, 1, 3, 4]
    for handed, kept in rounds:
        assert handed == kept


async def test_a_turn_reads_as_much_at_depth_twelve_as_at_depth_three() -> None:
    store = CountingStore()
    with ScriptedUpstream(two_round_model) as upstream:
        responses = Responses(
            store, Toolbox(FunctionTools(weather)), UpstreamTarget(upstream.endpoint)
        )
        previous = None
        reads = []
        for _ in range(12):
            body: dict[str, Any] = {"model": "m", "input": "Weather?"}
            if previous is not None:
                body["previous_response_id"] = previous
            store.reads.clear()
            response = await responses.create(body)
            reads.append(dict(store.reads))
            previous = response["id"]
        sent = upstream.requests[-1].body["messages"]
    assert reads[2] == reads[11]
    # Still the whole conversation reaches the model: 12 questions, each with
    # its two tool rounds and answer.
    assert sum(1 for m in sent if m["role"] == "user") == 12
    assert sum(1 for m in sent if m["role"] == "tool") == 2 * 12


async def test_a_turn_carries_the_earlier_messages_as_the_text_they_were_stored_as(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "chain.db")
    with ScriptedUpstream(two_round_model) as upstream:
        responses = Responses(
            store, Toolbox(FunctionTools(weather)), UpstreamTarget(upstream.endpoint)
        )
        first = await responses.create(
            {"model": "m", "input": "Weather?", "instructions": "Be brief."}
        )
        second = await responses.create(
            {
                "model": "m",
                "input": "And tomorrow? ✓",
                "instructions": "Be kind.",
                "previous_response_id": first["id"],
            }
        )
        sent = upstream.requests[-2].body["messages"]
    assert second["status"] == "completed"
    # The earlier instructions do not carry over; everything else does, in
    # order, and the new input follows the earlier answer.
    roles = [m["role"] for m in sent]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "user"]
    assert sent[0]["content"] == "Be kind."
    assert sent[-2]["content"] == "Paris 14, Lima 21."
    assert sent[-1]["content"] == "And tomorrow? ✓"

    # The next turn's first model call keeps the carried messages as text.
    transition = ResponsesTransition(store)
    body = {"model": "m", "input": "Thanks.", "previous_response_id": second["id"]}
    await store.save_request("third", {"request": body, "created_at": 1, "tenant": ""})
    action = await transition([], "third", None)
    [call] = action.steps  # type: ignore[union-attr]
    assert "request_payload" not in call.__dict__
    messages = json.loads(call.request_json())["messages"]
    assert [m["role"] for m in messages][-5:] == ["assistant", "tool", "tool", "assistant", "user"]
    assert len(messages) == len(sent) - 1 + 4 + 1
    store.close()


async def test_a_finished_responses_objects_are_freed_without_the_cyclic_collector(
    tmp_path: Path,
) -> None:
    # A reference cycle through a response's objects would keep all of them
    # (its transition, context, chain) until the cyclic collector ran: a
    # server's memory would climb between its collections.
    store = SQLiteStore(tmp_path / "freed.db")
    with ScriptedUpstream(two_round_model) as upstream:
        responses = Responses(
            store, Toolbox(FunctionTools(weather)), UpstreamTarget(upstream.endpoint)
        )
        await responses.create({"model": "m", "input": "Weather?"})  # imports, caches
        gc.collect()
        gc.disable()
        try:
            response = await responses.create({"model": "m", "input": "Weather?"})
            alive = [
                type(o).__name__
                for o in gc.get_objects()
                if isinstance(o, (WithTransition, ResponsesTransition))
            ]
        finally:
            gc.enable()
    store.close()
    assert response["status"] == "completed"
    assert alive == []
