"""How the server shows what the store keeps: the step tree of a response."""

from __future__ import annotations

from typing import Any

from ..openresponses.errors import model_call_error


def step_tree(steps: list[Any]) -> list[dict[str, Any]]:
    """The steps of a response as a tree: each scope's steps in sequence order,
    a sub-agent's steps under the step that called it, with states and times."""
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for step in steps:  # in sequence order, so a parent comes before its children
        node = {
            "id": step.id,
            "sequence": step.sequence,
            "kind": step.kind.value,
            "state": step.state.value,
            "name": step.request_payload.get("name"),
            "created_at": step.created_at,
            "updated_at": step.updated_at,
            "error": _step_error(step),
            "steps": [],
        }
        nodes[step.id] = node
        parent = nodes.get(step.scope_parent or "")
        (parent["steps"] if parent else roots).append(node)
    return roots


def _step_error(step: Any) -> Any:
    """A failed step's error as a client may see it: a model call's without the
    upstream's raw answer (that stays in the row and the log)."""
    if step.error is None or step.kind.value != "model_call":
        return step.error
    return model_call_error(step.error)
