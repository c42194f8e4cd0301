"""A turn of a `previous_response_id` chain reads the response it continues,
not the chain: what a turn asks of the store does not grow with its depth."""

from __future__ import annotations

from collections import Counter
from typing import Any

from stepwell import UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.stores import MemoryStore
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
    # Four rounds (a model call, two tool calls, a model call, the end): the
    # first decides on the chain the loop read as it started, and the request
    # it was created from is the one just kept, not read back.
    assert store.reads["list_chain"] == 4
    assert store.reads["load_request"] == 0


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
