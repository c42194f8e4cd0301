"""The comparison point for S4: stepwell's loop written in pure Python.

Same semantics as ``stepwell.run_response_loop`` for what S4 exercises: tool
kinds resolved once, resume-aware chaining, the iteration cap, siblings
recorded in order and run concurrently, each step marked processing and then
completed or failed, model calls POSTed with the request-id header through one
pooled aiohttp session. No sink (S4 measures the store-heavy path).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from stepwell import AppendSteps, Complete, Fail, StepKind, UpstreamTarget
from stepwell.stores import MemoryStore


class PyLoopError(Exception):
    pass


async def py_run_response_loop(
    store: MemoryStore,
    executor: Any,
    ctx: Any,
    target: UpstreamTarget,
    session: aiohttp.ClientSession,
    request_id: str,
    max_iterations: int = 10,
) -> Any:
    kinds = {t.name: t.kind for t in await executor.tools(ctx)}
    chain = await store.list_chain(request_id, None)
    prev = chain[-1].id if chain else None
    for _ in range(max_iterations):
        action = await store.next_action_for(request_id, None)
        if isinstance(action, Complete):
            return action.payload
        if isinstance(action, Fail):
            raise PyLoopError(action.payload)
        assert isinstance(action, AppendSteps)
        if not action.steps:
            raise PyLoopError("empty action")
        recorded = []
        for descriptor in action.steps:
            step = await store.record_step(request_id, None, prev, descriptor)
            recorded.append(step)
            prev = step.id
        await asyncio.gather(
            *(
                _execute(store, executor, ctx, target, session, kinds, step, descriptor)
                for step, descriptor in zip(recorded, action.steps, strict=True)
            )
        )
    raise PyLoopError("max iterations")


async def _execute(
    store: MemoryStore,
    executor: Any,
    ctx: Any,
    target: UpstreamTarget,
    session: aiohttp.ClientSession,
    kinds: dict[str, Any],
    step: Any,
    descriptor: Any,
) -> None:
    await store.mark_step_processing(step.id)
    try:
        if descriptor.kind is StepKind.MODEL_CALL:
            headers = {"X-Request-Id": step.sub_request_id}
            async with session.post(
                target.endpoint + target.path, json=descriptor.request_payload, headers=headers
            ) as response:
                if response.status >= 300:
                    raise PyLoopError(await response.text())
                payload = await response.json()
        else:
            name = descriptor.request_payload["name"]
            payload = await executor.execute(
                name, step.id, descriptor.request_payload.get("args", {}), ctx
            )
    except Exception as error:
        await store.fail_step(step.id, {"type": "executor_error", "message": str(error)})
        return
    await store.complete_step(step.id, payload)
