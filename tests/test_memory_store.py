"""MemoryStore: sequences, scopes, the step life cycle, concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest
from stepwell import AppendSteps, Complete, StepDescriptor, StepKind, StepState
from stepwell.stores import IllegalTransition, MemoryStore

TOOL = StepDescriptor.tool_call("t")
MODEL = StepDescriptor.model_call({"model": "m"})


def store() -> MemoryStore:
    return MemoryStore(lambda chain, request_id, scope_parent: Complete(None))


async def test_sequences_are_per_request_and_chains_per_scope() -> None:
    s = store()
    a1 = await s.record_step("a", None, None, MODEL)
    b1 = await s.record_step("b", None, None, TOOL)
    a2 = await s.record_step("a", a1.id, None, TOOL)  # sub-scope of a1
    a3 = await s.record_step("a", None, a1.id, TOOL)
    assert (a1.sequence, a2.sequence, a3.sequence, b1.sequence) == (1, 2, 3, 1)
    assert a1.sub_request_id and b1.sub_request_id is None
    assert [c.id for c in await s.list_chain("a", None)] == [a1.id, a3.id]
    assert [c.id for c in await s.list_chain("a", a1.id)] == [a2.id]
    assert [c.sequence for c in await s.steps("a")] == [1, 2, 3]


async def test_life_cycle_and_illegal_transitions() -> None:
    s = store()
    step = await s.record_step("r", None, None, TOOL)
    with pytest.raises(IllegalTransition):
        await s.complete_step(step.id, {})  # pending → completed skips processing
    await s.mark_step_processing(step.id)
    await s.complete_step(step.id, {"ok": 1})
    with pytest.raises(IllegalTransition):
        await s.fail_step(step.id, {})
    assert (await s.step(step.id)).state is StepState.COMPLETED
    assert (await s.step(step.id)).response_payload == {"ok": 1}
    with pytest.raises(KeyError):
        await s.mark_step_processing("no-such-step")
    with pytest.raises(KeyError):
        await s.record_step("r", None, "no-such-step", TOOL)


async def test_concurrent_records_get_distinct_sequences() -> None:
    s = store()
    anchors = []
    prev = None
    for _ in range(108):
        prev = (await s.record_step("r", None, prev, TOOL)).id
        anchors.append(prev)
    # 100 concurrent records on one loop and 8 from other threads, each its own link.
    recorded = await asyncio.gather(*(s.record_step("r", None, a, MODEL) for a in anchors[:100]))
    threads = [
        threading.Thread(target=lambda a=a: asyncio.run(s.record_step("r", None, a, MODEL)))
        for a in anchors[100:]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.sequence for r in recorded}) == 100
    assert sorted(c.sequence for c in await s.steps("r")) == list(range(1, 217))


async def test_recording_the_same_link_again_returns_the_same_step() -> None:
    s = store()
    first = await s.record_step("r", None, None, MODEL)
    again = await s.record_step("r", None, None, MODEL)
    assert again == first
    other_kind = await s.record_step("r", None, None, TOOL)
    assert other_kind.id != first.id
    assert len(await s.steps("r")) == 2


async def test_decide_may_be_async_and_must_return_an_action() -> None:
    async def decide(chain, request_id, scope_parent):  # type: ignore[no-untyped-def]
        return AppendSteps([TOOL]) if not chain else Complete(len(chain))

    s = MemoryStore(decide)
    assert await s.next_action_for("r", None) == AppendSteps([TOOL])
    with pytest.raises(TypeError):
        await MemoryStore(lambda *a: "nonsense").next_action_for("r", None)  # type: ignore[arg-type,return-value]


async def test_assemble_response_reports_outcome_and_steps() -> None:
    s = MemoryStore(lambda chain, rid, sp: Complete({"text": "hi"}))
    step = await s.record_step("r", None, None, MODEL)
    assert (await s.assemble_response("r"))["status"] == "in_progress"
    await s.next_action_for("r", None)
    response = await s.assemble_response("r")
    assert response["status"] == "completed"
    assert response["output"] == {"text": "hi"}
    assert [x["id"] for x in response["steps"]] == [step.id]
    assert response["steps"][0]["kind"] == StepKind.MODEL_CALL.value
