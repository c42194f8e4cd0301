"""What every store does around its transition function."""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from ..types import AppendSteps, ChainStep, Complete, Fail, NextAction


class _Outcomes(Protocol):
    def set_outcome(self, request_id: str, status: str, output: Any) -> None: ...


async def decide_next(
    store: _Outcomes,
    decide: Any,
    chain: list[ChainStep],
    request_id: str,
    scope_parent: str | None,
) -> NextAction:
    """Runs `decide` (sync or async) on the scope's chain, checks its answer, and
    records the response's outcome when the top level ends."""
    if decide is None:
        raise RuntimeError(f"{type(store).__name__} has no transition: pass decide= or set .decide")
    action: Any = decide(chain, request_id, scope_parent)
    if inspect.isawaitable(action):
        action = await action
    if not isinstance(action, (AppendSteps, Complete, Fail)):
        raise TypeError(
            f"the transition returned {type(action).__name__}; "
            "expected AppendSteps, Complete or Fail"
        )
    if scope_parent is None and isinstance(action, (Complete, Fail)):
        status = "completed" if isinstance(action, Complete) else "failed"
        # An Open Responses payload says itself how it ended (e.g. incomplete).
        if isinstance(action.payload, dict) and isinstance(action.payload.get("status"), str):
            status = action.payload["status"]
        store.set_outcome(request_id, status, action.payload)
    checked: NextAction = action
    return checked
