"""A pytest suite any `MultiStepStore` can run to show it keeps the contract.

In a test module of yours::

    from stepwell.testing.store_conformance import *  # noqa: F403

    @pytest.fixture
    def make_store(tmp_path):
        return lambda: MyStore(...)   # a fresh, empty store per call

Every test below then runs against your store: sequences, chain order, scopes,
the step life cycle (illegal moves rejected), idempotent links, concurrent
siblings, batches of steps (for a store that offers `record_steps`), payload
round trips, and the whole `ResponseStore` contract the Open Responses layer
and the server use: requests, outcomes, the event log, idempotency keys,
leases with their fencing tokens, cancel requests, and conversations with
their items.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ..errors import LeaseLost
from ..types import StepDescriptor, StepKind, StepState

__all__ = [
    "test_a_batch_is_recorded_whole_or_not_at_all",
    "test_a_batch_of_steps_is_recorded_chained_and_processing",
    "test_a_cancel_request_reaches_the_lease_holder",
    "test_a_lease_is_held_by_one_owner_until_it_expires",
    "test_a_lost_lease_refuses_a_batch",
    "test_a_lost_lease_refuses_every_write_of_its_run",
    "test_a_request_kept_leased_is_never_claimable_first",
    "test_a_sealed_event_log_replays_the_same_frames",
    "test_a_tenant_finds_only_its_own_requests",
    "test_an_idempotency_key_is_held_by_its_first_response",
    "test_chain_order_and_links",
    "test_concurrent_siblings_get_distinct_sequences",
    "test_conversations_keep_their_items_in_order_once_each",
    "test_delete_response_forgets_everything_of_it",
    "test_event_log_replays_from_any_cursor",
    "test_illegal_moves_are_rejected",
    "test_life_cycle",
    "test_payloads_round_trip",
    "test_prune_deletes_old_responses_but_keeps_what_a_kept_one_continues",
    "test_pruned_event_logs_keep_their_responses",
    "test_recording_a_link_twice_returns_the_same_step",
    "test_requests_and_outcomes",
    "test_scopes_are_separate_chains",
    "test_sequences_are_per_request",
    "test_unknown_steps_are_rejected",
]

TOOL = StepDescriptor.tool_call("t", {"x": 1})
MODEL = StepDescriptor.model_call({"model": "m", "messages": []})


async def test_sequences_are_per_request(make_store: Any) -> None:
    store = make_store()
    a1 = await store.record_step("a", None, None, MODEL)
    b1 = await store.record_step("b", None, None, MODEL)
    a2 = await store.record_step("a", None, a1.id, TOOL)
    assert (a1.sequence, a2.sequence, b1.sequence) == (1, 2, 1)
    assert a1.sub_request_id and b1.sub_request_id and a1.sub_request_id != b1.sub_request_id
    assert a2.sub_request_id is None


async def test_chain_order_and_links(make_store: Any) -> None:
    store = make_store()
    prev = None
    ids = []
    for _ in range(5):
        step = await store.record_step("r", None, prev, TOOL)
        ids.append(step.id)
        prev = step.id
    chain = await store.list_chain("r", None)
    assert [s.id for s in chain] == ids
    assert [s.sequence for s in chain] == [1, 2, 3, 4, 5]
    assert [s.prev_step_id for s in chain] == [None, *ids[:-1]]
    assert all(s.kind is StepKind.TOOL_CALL and s.state is StepState.PENDING for s in chain)


async def test_scopes_are_separate_chains(make_store: Any) -> None:
    store = make_store()
    parent = await store.record_step("r", None, None, TOOL)
    child = await store.record_step("r", parent.id, None, MODEL)
    after = await store.record_step("r", None, parent.id, MODEL)
    assert [s.id for s in await store.list_chain("r", None)] == [parent.id, after.id]
    [inner] = await store.list_chain("r", parent.id)
    assert (inner.id, inner.scope_parent, inner.sequence) == (child.id, parent.id, 2)
    assert await store.list_chain("r", "no-such-scope") == []


async def test_life_cycle(make_store: Any) -> None:
    store = make_store()
    ok = await store.record_step("r", None, None, TOOL)
    bad = await store.record_step("r", None, ok.id, TOOL)
    await store.mark_step_processing(ok.id)
    await store.complete_step(ok.id, {"result": [1, 2]})
    await store.mark_step_processing(bad.id)
    await store.fail_step(bad.id, {"type": "executor_error", "message": "boom"})
    first, second = await store.list_chain("r", None)
    assert (first.state, first.response_payload) == (StepState.COMPLETED, {"result": [1, 2]})
    assert (second.state, second.error["message"]) == (StepState.FAILED, "boom")


async def test_illegal_moves_are_rejected(make_store: Any) -> None:
    store = make_store()
    step = await store.record_step("r", None, None, TOOL)
    with pytest.raises(ValueError):
        await store.complete_step(step.id, {})  # pending → completed skips processing
    await store.mark_step_processing(step.id)
    await store.complete_step(step.id, {})
    for move in (
        store.mark_step_processing(step.id),
        store.complete_step(step.id, {}),
        store.fail_step(step.id, {}),
    ):
        with pytest.raises(ValueError):
            await move
    [kept] = await store.list_chain("r", None)
    assert kept.state is StepState.COMPLETED


async def test_unknown_steps_are_rejected(make_store: Any) -> None:
    store = make_store()
    with pytest.raises(KeyError):
        await store.mark_step_processing("no-such-step")
    with pytest.raises(KeyError):
        await store.complete_step("no-such-step", {})


async def test_recording_a_link_twice_returns_the_same_step(make_store: Any) -> None:
    store = make_store()
    first = await store.record_step("r", None, None, MODEL)
    again = await store.record_step("r", None, None, MODEL)
    assert (again.id, again.sequence, again.sub_request_id) == (
        first.id,
        first.sequence,
        first.sub_request_id,
    )
    other = await store.record_step("r", None, None, TOOL)
    assert other.id != first.id
    assert len(await store.list_chain("r", None)) == 2


async def test_concurrent_siblings_get_distinct_sequences(make_store: Any) -> None:
    store = make_store()
    anchors = []
    prev = None
    for _ in range(20):
        prev = (await store.record_step("r", None, prev, TOOL)).id
        anchors.append(prev)
    siblings = await asyncio.gather(
        *(store.record_step("r", None, anchor, MODEL) for anchor in anchors)
    )
    assert sorted(s.sequence for s in siblings) == list(range(21, 41))
    await asyncio.gather(*(store.mark_step_processing(s.id) for s in siblings))
    await asyncio.gather(*(store.complete_step(s.id, {"n": s.sequence}) for s in siblings))
    chain = await store.list_chain("r", None)
    assert [s.sequence for s in chain] == list(range(1, 41))
    assert all(s.response_payload == {"n": s.sequence} for s in chain[20:])


def _batching(store: Any) -> Any:
    if not callable(getattr(store, "record_steps", None)):
        pytest.skip("the store does not offer record_steps")
    return store


async def test_a_batch_of_steps_is_recorded_chained_and_processing(make_store: Any) -> None:
    store = _batching(make_store())
    anchor = await store.record_step("r", None, None, TOOL)
    batch = await store.record_steps("r", None, anchor.id, [TOOL, MODEL, TOOL])
    assert [s.sequence for s in batch] == [2, 3, 4]
    assert [s.sub_request_id is None for s in batch] == [True, False, True]
    chain = await store.list_chain("r", None)
    assert [s.id for s in chain] == [anchor.id, *(s.id for s in batch)]
    assert [s.prev_step_id for s in chain[1:]] == [s.id for s in chain[:-1]]
    assert [s.state for s in chain] == [StepState.PENDING, *[StepState.PROCESSING] * 3]
    assert chain[2].request_payload == MODEL.request_payload
    for step in batch:
        await store.complete_step(step.id, {"n": step.sequence})
    # Recorded again, the links are the same steps, which no longer can start.
    with pytest.raises(ValueError):
        await store.record_steps("r", None, anchor.id, [TOOL, MODEL, TOOL])
    assert len(await store.list_chain("r", None)) == 4


async def test_a_batch_is_recorded_whole_or_not_at_all(make_store: Any) -> None:
    store = _batching(make_store())
    pending = await store.record_step("r", None, None, TOOL)
    done = await store.record_step("r", None, pending.id, MODEL)
    await store.mark_step_processing(done.id)
    await store.complete_step(done.id, {})
    # The first link is the pending step (it would start); the second has ended.
    with pytest.raises(ValueError):
        await store.record_steps("r", None, None, [TOOL, MODEL, TOOL])
    chain = await store.list_chain("r", None)
    assert [(s.id, s.state) for s in chain] == [
        (pending.id, StepState.PENDING),
        (done.id, StepState.COMPLETED),
    ]
    # A pending step a batch links to again is that step, started.
    [again] = await store.record_steps("r", None, None, [TOOL])
    assert again.id == pending.id
    assert (await store.list_chain("r", None))[0].state is StepState.PROCESSING


async def test_a_lost_lease_refuses_a_batch(make_store: Any) -> None:
    store = _batching(make_store())
    await _kept(store, "r")
    old = await store.claim("r", "a", -1)  # expires at once
    new = await store.claim("r", "b", 30)
    assert new is not None and new != old
    with pytest.raises(LeaseLost):
        await store.record_steps("r", None, None, [TOOL, MODEL], fence=old)
    with pytest.raises(LeaseLost):
        await store.record_steps("r", None, None, [TOOL], fence=old)
    assert await store.list_chain("r", None) == []
    batch = await store.record_steps("r", None, None, [TOOL, MODEL], fence=new)
    assert len(batch) == 2


async def test_payloads_round_trip(make_store: Any) -> None:
    store = make_store()
    payload = {"text": 'é 🙂 \n "quoted"', "nested": {"list": [1, 2.5, None, True]}, "n": 2**40}
    step = await store.record_step("r", None, None, StepDescriptor.tool_call("t", payload))
    await store.mark_step_processing(step.id)
    await store.complete_step(step.id, payload)
    [kept] = await store.list_chain("r", None)
    assert kept.request_payload == {"name": "t", "args": payload}
    assert kept.response_payload == payload


async def test_requests_and_outcomes(make_store: Any) -> None:
    store = make_store()
    assert await store.load_request("r") is None
    assert await store.outcome("r") is None
    await store.save_request("r", {"request": {"model": "m"}, "created_at": 1})
    await store.save_request(
        "r", {"request": {"model": "other"}, "created_at": 2}
    )  # kept: the first
    assert await store.load_request("r") == {"request": {"model": "m"}, "created_at": 1}
    await store.save_request("open", {"request": {"model": "m"}, "created_at": 3})
    assert sorted(await store.unfinished_responses()) == ["open", "r"]
    await store.set_outcome("r", "completed", {"status": "completed"})
    assert await store.outcome("r") == ("completed", {"status": "completed"})
    assert await store.unfinished_responses() == ["open"]
    # The first terminal outcome stands.
    await store.set_outcome("r", "failed", {"status": "failed"})
    assert await store.outcome("r") == ("completed", {"status": "completed"})


async def test_event_log_replays_from_any_cursor(make_store: Any) -> None:
    store = make_store()
    frames = [f'event: e\ndata: {{"sequence_number":{n}}}\n\n' for n in range(7)]
    assert await store.events_after("r", -1) == []
    assert await store.append_events("r", 0, "".join(frames[:3])) == 3
    assert await store.append_events("r", 3, "".join(frames[3:])) == 4
    await store.append_events("other", 0, frames[0])
    for after in range(-1, 8):
        assert await store.events_after("r", after) == frames[after + 1 :]
    # Several responses' batches at once.
    await store.append_events_many(
        [("s", 0, frames[0]), ("t", 0, "".join(frames[:2])), ("s", 1, frames[1])]
    )
    assert await store.events_after("s", -1) == frames[:2]
    assert await store.events_after("t", 0) == frames[1:2]
    # A bounded read: a reader far behind takes the log a window at a time.
    for after in range(-1, 7):
        for limit in (1, 2, 5):
            got = await store.events_after("r", after, limit=limit)
            assert got == frames[after + 1 : after + 1 + limit]


def _delta(sequence: int, text: str) -> str:
    body = (
        f'{{"type":"response.output_text.delta","sequence_number":{sequence},'
        f'"item_id":"msg_1","output_index":0,"content_index":0,"delta":"{text}"}}'
    )
    return f"event: response.output_text.delta\ndata: {body}\n\n"


async def test_a_sealed_event_log_replays_the_same_frames(make_store: Any) -> None:
    store = make_store()
    frames = ["event: response.created\ndata: {}\n\n"]
    frames += [_delta(n, f'tok\\"{n}') for n in range(1, 40)]
    frames.append("event: response.completed\ndata: {}\n\n")
    for first in range(0, len(frames), 3):
        await store.append_events("r", first, "".join(frames[first : first + 3]))
    await store.append_events("other", 0, frames[0])
    await store.seal_events(["r", "missing"])
    await store.seal_events(["r"])  # sealing twice changes nothing
    for after in range(-1, len(frames) + 1):
        assert await store.events_after("r", after) == frames[after + 1 :]
        assert await store.events_after("r", after, limit=4) == frames[after + 1 : after + 5]
    assert await store.events_after("other", -1) == frames[:1]


async def test_pruned_event_logs_keep_their_responses(make_store: Any) -> None:
    store = make_store()
    for request_id in ("ended", "running"):
        await store.save_request(request_id, {"request": {}, "created_at": 1})
        await store.append_events(request_id, 0, "event: e\ndata: {}\n\n")
    await store.set_outcome("ended", "completed", {"status": "completed"})
    assert await store.prune_events(3600.0) == 0  # ended just now: in its window
    assert await store.prune_events(-1.0) == 1
    assert await store.events_after("ended", -1) == []
    assert await store.outcome("ended") == ("completed", {"status": "completed"})
    assert len(await store.events_after("running", -1)) == 1


async def test_delete_response_forgets_everything_of_it(make_store: Any) -> None:
    store = make_store()
    for request_id in ("r", "keep"):
        await store.save_request(request_id, {"request": {}, "created_at": 1})
        step = await store.record_step(request_id, None, None, StepDescriptor.tool_call("t"))
        await store.mark_step_processing(step.id)
        await store.complete_step(step.id, {})
        await store.set_outcome(request_id, "completed", {"status": "completed"})
        await store.append_events(request_id, 0, "event: e\ndata: {}\n\n")
    assert await store.delete_response("r") is True
    assert await store.delete_response("r") is False
    assert await store.load_request("r") is None
    assert await store.outcome("r") is None
    assert await store.events_after("r", -1) == []
    assert await store.list_chain("r", None) == []
    # Another response is untouched.
    assert await store.outcome("keep") == ("completed", {"status": "completed"})
    assert len(await store.list_chain("keep", None)) == 1
    assert len(await store.events_after("keep", -1)) == 1


async def test_a_tenant_finds_only_its_own_requests(make_store: Any) -> None:
    store = make_store()
    await store.save_request("a1", {"request": {"model": "m"}, "created_at": 1}, tenant="acme")
    await store.save_request("b1", {"request": {"model": "m"}, "created_at": 1}, tenant="globex")
    assert await store.load_request("a1", tenant="acme") is not None
    assert await store.load_request("a1", tenant="globex") is None
    assert await store.load_request("b1", tenant="acme") is None
    assert await store.load_request("b1", tenant="") is None
    # Without a tenant, the caller (the loop itself) sees every request.
    assert await store.load_request("b1") is not None


async def test_an_idempotency_key_is_held_by_its_first_response(make_store: Any) -> None:
    store = make_store()
    await store.save_request("first", {"request": {}, "created_at": 1}, tenant="acme")
    assert await store.claim_idempotency_key("acme", "k", "first") == "first"
    assert await store.claim_idempotency_key("acme", "k", "second") == "first"
    # Keys are per tenant.
    assert await store.claim_idempotency_key("globex", "k", "third") == "third"
    # Deleting the response frees its key.
    await store.delete_response("first")
    assert await store.claim_idempotency_key("acme", "k", "fourth") == "fourth"


async def test_conversations_keep_their_items_in_order_once_each(make_store: Any) -> None:
    store = make_store()
    await store.save_conversation("c1", {"topic": "foxes"}, tenant="acme")
    kept = await store.load_conversation("c1", tenant="acme")
    assert kept is not None and kept["id"] == "c1" and kept["metadata"] == {"topic": "foxes"}
    assert isinstance(kept["created_at"], int)
    assert await store.load_conversation("c1", tenant="globex") is None
    assert await store.load_conversation("c1") is not None
    assert await store.load_conversation("c2") is None
    items = [{"id": f"msg_{n}", "type": "message", "n": n} for n in range(5)]
    await store.add_conversation_items("c1", items[:3])
    # Added again with new ones: the held ids are skipped, order is kept.
    await store.add_conversation_items("c1", items[1:])
    assert await store.conversation_items("c1") == items
    assert await store.delete_conversation_item("c1", "msg_2")
    assert not await store.delete_conversation_item("c1", "msg_2")
    assert [i["id"] for i in await store.conversation_items("c1")] == [
        "msg_0", "msg_1", "msg_3", "msg_4"
    ]  # fmt: skip
    with pytest.raises(KeyError):
        await store.add_conversation_items("c2", items[:1])
    assert await store.update_conversation("c1", {"topic": "owls"})
    assert (await store.load_conversation("c1"))["metadata"] == {"topic": "owls"}
    assert not await store.update_conversation("c2", {})
    assert await store.delete_conversation("c1")
    assert not await store.delete_conversation("c1")
    assert await store.load_conversation("c1") is None
    assert await store.conversation_items("c1") == []


async def _kept(store: Any, request_id: str) -> None:
    await store.save_request(request_id, {"request": {"model": "m"}, "created_at": 1})


async def test_a_lease_is_held_by_one_owner_until_it_expires(make_store: Any) -> None:
    store = make_store()
    await _kept(store, "r")
    assert await store.claim("unknown", "a", 30) is None
    assert await store.claimable() == ["r"]
    first = await store.claim("r", "a", 30)
    assert first is not None
    assert await store.claim("r", "b", 30) is None  # held
    assert await store.claimable() == []
    assert await store.renew("a", 30) == {"r": False}
    assert await store.renew("b", 30) == {}
    # An expired lease is claimable, and its token grows.
    await store.renew("a", -1)
    assert await store.claimable() == ["r"]
    second = await store.claim("r", "b", 30)
    assert second is not None and second > first
    assert await store.renew("a", 30) == {}  # a lost it
    # Released, it is claimable at once; ended, it is never claimed again.
    await store.release("r", first)  # a stale token releases nothing
    assert await store.claim("r", "c", 30) is None
    await store.release("r", second)
    third = await store.claim("r", "c", 30)
    assert third is not None and third > second
    await store.set_outcome("r", "completed", {"status": "completed"}, fence=third)
    assert await store.claimable() == []
    assert await store.claim("r", "d", 30) is None
    assert await store.renew("c", 30) == {}


async def test_a_request_kept_leased_is_never_claimable_first(make_store: Any) -> None:
    store = make_store()
    fence = await store.save_request(
        "r", {"request": {"model": "m"}, "created_at": 1}, lease=("a", 30)
    )
    assert fence is not None
    assert await store.claimable() == []
    assert await store.claim("r", "b", 30) is None
    assert await store.renew("a", 30) == {"r": False}
    # The token is the lease's: writes under it are taken.
    step = await store.record_step("r", None, None, TOOL, fence=fence)
    await store.mark_step_processing(step.id, fence=fence)
    # Saved again (a retry), nothing changes and no token is handed out.
    assert await store.save_request("r", {"request": {}, "created_at": 2}, lease=("b", 30)) is None
    assert await store.claim("r", "b", 30) is None
    # Without a lease, a save hands out nothing.
    assert await store.save_request("q", {"request": {}, "created_at": 1}) is None
    assert await store.claimable() == ["q"]


async def test_a_lost_lease_refuses_every_write_of_its_run(make_store: Any) -> None:
    store = make_store()
    await _kept(store, "r")
    old = await store.claim("r", "a", -1)  # expires at once
    step = await store.record_step("r", None, None, TOOL, fence=old)
    await store.mark_step_processing(step.id, fence=old)
    new = await store.claim("r", "b", 30)
    assert new is not None and new != old
    with pytest.raises(LeaseLost):
        await store.record_step("r", None, step.id, MODEL, fence=old)
    for write in (
        store.complete_step(step.id, {"late": True}, fence=old),
        store.fail_step(step.id, {"late": True}, fence=old),
        store.set_outcome("r", "failed", {"status": "failed"}, fence=old),
    ):
        with pytest.raises(LeaseLost):
            await write
    frame = "event: e\ndata: {}\n\n"
    refused = await store.append_events_many([("r", 0, frame)], fences={"r": old})
    assert refused == ["r"]
    assert await store.events_after("r", -1) == []
    # Nothing of the old run was kept; the new holder's writes are.
    [kept] = await store.list_chain("r", None)
    assert (kept.state, kept.response_payload) == (StepState.PROCESSING, None)
    await store.complete_step(step.id, {"ok": True}, fence=new)
    assert await store.append_events_many([("r", 0, frame)], fences={"r": new}) == []
    await store.set_outcome("r", "completed", {"status": "completed"}, fence=new)
    assert await store.outcome("r") == ("completed", {"status": "completed"})
    # After the end, a stale outcome changes nothing and raises nothing.
    await store.set_outcome("r", "failed", {"status": "failed"}, fence=old)
    assert await store.outcome("r") == ("completed", {"status": "completed"})


async def test_a_cancel_request_reaches_the_lease_holder(make_store: Any) -> None:
    store = make_store()
    await _kept(store, "r")
    assert await store.request_cancel("unknown") is False
    fence = await store.claim("r", "a", 30)
    assert await store.renew("a", 30) == {"r": False}
    assert await store.request_cancel("r") is True
    assert await store.renew("a", 30) == {"r": True}
    await store.set_outcome("r", "cancelled", {"status": "cancelled"}, fence=fence)
    assert await store.request_cancel("r") is False


async def test_prune_deletes_old_responses_but_keeps_what_a_kept_one_continues(
    make_store: Any,
) -> None:
    store = make_store()

    async def ended(request_id: str, previous: str | None = None) -> None:
        body = {"model": "m", **({"previous_response_id": f"resp_{previous}"} if previous else {})}
        await store.save_request(request_id, {"request": body, "created_at": 1})
        step = await store.record_step(request_id, None, None, TOOL)
        await store.append_events_many([(request_id, 0, "event: e\ndata: {}\n\n")])
        await store.claim_idempotency_key("", f"key-{request_id}", request_id)
        await store.mark_step_processing(step.id)
        await store.set_outcome(request_id, "completed", {"status": "completed"})

    # a <- b <- c is a chain whose newest turn is still running; x and y stand alone.
    for request_id, previous in (("a", None), ("b", "a"), ("x", None), ("y", None)):
        await ended(request_id, previous)
    await store.save_request("c", {"request": {"previous_response_id": "resp_b"}, "created_at": 1})
    assert await store.prune(3600) == 0  # nothing is that old
    assert await store.prune(-1, batch=1) == 1  # bounded batches
    assert await store.prune(-1) == 1
    assert await store.prune(-1) == 0
    for gone in ("x", "y"):
        assert await store.load_request(gone) is None
        assert await store.steps(gone) == []
        assert await store.events_after(gone, -1) == []
        assert await store.claim_idempotency_key("", f"key-{gone}", "new") == "new"
    for kept in ("a", "b", "c"):
        assert await store.load_request(kept) is not None
    assert await store.outcome("a") == ("completed", {"status": "completed"})
