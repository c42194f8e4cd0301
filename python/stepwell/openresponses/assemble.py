"""The Open Responses `Response` object, assembled from a response's steps."""

from __future__ import annotations

import time

from .. import _core
from .._core import compact_json
from ..types import ChainStep, StepKind, StepState
from .request import JSONDict

# Items, their ids and tool-output text come from the Rust core, which builds
# the streamed items with the same functions: a streamed item and the final
# response are always the same item.


def tool_output_text(step: ChainStep) -> str:
    """What a tool step returns to the model: its result (as JSON), or its error."""
    if step.state is StepState.COMPLETED:
        return compact_json(step.response_payload)
    message = (step.error or {}).get("message", "the tool failed")
    return compact_json({"error": message})


def _logprob(entry: JSONDict, top: bool) -> JSONDict:
    """A chat-completions token log probability as the Responses `LogProb`
    (`TopLogProb` when `top`); `bytes` is always a list there."""
    item: JSONDict = {
        "token": entry.get("token", ""),
        "logprob": entry.get("logprob", 0.0),
        "bytes": entry.get("bytes") or [],
    }
    if not top:
        item["top_logprobs"] = [_logprob(t, True) for t in entry.get("top_logprobs") or []]
    return item


def logprobs(choice: JSONDict) -> list[JSONDict]:
    """The log probabilities of a chat choice's content tokens, if it has any."""
    content = (choice.get("logprobs") or {}).get("content") or []
    return [_logprob(entry, False) for entry in content]


def is_compaction(step: ChainStep) -> bool:
    """Whether `step` is the tool step that compacts a response's context."""
    return step.kind is StepKind.TOOL_CALL and step.request_payload.get("name") == (
        _core.COMPACTION_TOOL
    )


def _mcp_call(
    request_id: str,
    sequence: int,
    call_id: str,
    route: tuple[str, str, bool],
    arguments: str,
    step: ChainStep | None,
    approval_request_id: str | None = None,
) -> JSONDict:
    """The item of an MCP call: how its tool step ended, or, with none, an
    approval request (when it needs one) or a call that never ran."""
    label, tool, approval = route
    if step is None:
        if approval:
            return _core.mcp_approval_request_item(
                request_id, sequence, call_id, label, tool, arguments
            )
        return _core.mcp_call_item(request_id, sequence, call_id, label, tool, arguments,
                                   "incomplete")  # fmt: skip
    if step.state is StepState.COMPLETED:
        status, output, error = "completed", tool_output_text(step), None
    elif step.state is StepState.FAILED:
        status, output, error = "failed", None, (step.error or {}).get("message", "the tool failed")
    else:
        status, output, error = "in_progress", None, None
    return _core.mcp_call_item(
        request_id, sequence, call_id, label, tool, arguments, status,
        output, error, approval_request_id,
    )  # fmt: skip


def output_items(
    request_id: str,
    steps: list[ChainStep],
    mcp: dict[str, tuple[str, str, bool]] | None = None,
) -> list[JSONDict]:
    """The output items the steps produced, in step order; `mcp` routes the
    functions MCP servers serve (their calls are `mcp_call` items)."""
    items: list[JSONDict] = []
    routes = mcp or {}
    by_call = {
        s.request_payload.get("call_id"): s
        for s in steps
        if routes and s.kind is StepKind.TOOL_CALL and s.request_payload.get("name") in routes
    }
    for step in steps:
        if step.kind is StepKind.MODEL_CALL and step.state is StepState.COMPLETED:
            choices = (step.response_payload or {}).get("choices") or [{}]
            message = choices[0].get("message") or {}
            calls = message.get("tool_calls") or []
            if message.get("reasoning_content"):
                items.append(
                    _core.reasoning_item(request_id, step.sequence, message["reasoning_content"])
                )
            if message.get("content"):
                items.append(
                    _core.message_item(
                        request_id,
                        step.sequence,
                        message["content"],
                        logprobs(choices[0]),
                        bool(calls),
                    )
                )
            for call in calls:
                function = call["function"]
                route = routes.get(function["name"])
                if route is not None:
                    items.append(
                        _mcp_call(request_id, step.sequence, call["id"], route,
                                  function["arguments"], by_call.get(call["id"]))
                    )  # fmt: skip
                    continue
                items.append(
                    _core.function_call_item(
                        request_id, step.sequence, call["id"], function["name"],
                        function["arguments"],
                    )
                )  # fmt: skip
        elif step.request_payload.get("name") in routes:
            # Made by a model step of this response (shown there), or run on
            # the client's approval: its call id is the approval request's.
            call_id = str(step.request_payload.get("call_id"))
            if call_id.startswith("mcpr_"):
                route = routes[step.request_payload["name"]]
                arguments = compact_json(step.request_payload.get("args") or {})
                items.append(
                    _mcp_call(request_id, step.sequence, call_id, route, arguments, step, call_id)
                )
        elif is_compaction(step):
            if step.state is StepState.COMPLETED:
                sealed = (step.response_payload or {}).get("encrypted_content", "")
                items.append(_core.compaction_item(request_id, step.sequence, sealed))
        elif step.kind is StepKind.TOOL_CALL and step.state in (
            StepState.COMPLETED,
            StepState.FAILED,
        ):
            call_id = step.request_payload.get("call_id", f"call_step_{step.sequence}")
            items.append(
                _core.function_output_item(
                    request_id, step.sequence, call_id, tool_output_text(step)
                )
            )
    return items


def usage(steps: list[ChainStep]) -> JSONDict:
    """Token usage summed over every model step (and compaction step)."""
    total = {"input": 0, "output": 0, "cached": 0, "reasoning": 0}
    for step in steps:
        if step.state is not StepState.COMPLETED:
            continue
        if is_compaction(step):
            # The summary call's usage, already in the Responses shape.
            summarized = (step.response_payload or {}).get("usage") or {}
            total["input"] += summarized.get("input_tokens") or 0
            total["output"] += summarized.get("output_tokens") or 0
            continue
        if step.kind is not StepKind.MODEL_CALL:
            continue
        used = (step.response_payload or {}).get("usage") or {}
        total["input"] += used.get("prompt_tokens") or 0
        total["output"] += used.get("completion_tokens") or 0
        total["cached"] += (used.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        total["reasoning"] += (used.get("completion_tokens_details") or {}).get(
            "reasoning_tokens"
        ) or 0
    return {
        "input_tokens": total["input"],
        "output_tokens": total["output"],
        "total_tokens": total["input"] + total["output"],
        "input_tokens_details": {"cached_tokens": total["cached"]},
        "output_tokens_details": {"reasoning_tokens": total["reasoning"]},
    }


def mcp_echo(tool: JSONDict) -> JSONDict:
    """An `mcp` tool as a Response echoes it (never its headers)."""
    return {
        "type": "mcp",
        "server_label": tool["server_label"],
        "server_url": tool.get("server_url"),
        "server_description": tool.get("server_description"),
        "allowed_tools": tool.get("allowed_tools"),
        "require_approval": tool.get("require_approval") or "always",
        "headers": None,
    }


def echo_tools(tools: list[JSONDict]) -> list[JSONDict]:
    """The request's tools as a Response echoes them (an MCP server's
    without its headers)."""
    return [
        mcp_echo(t)
        if t.get("type") == "mcp"
        else {
            "type": "function",
            "name": t["name"],
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict"),
        }
        for t in tools
    ]


def echo_text(text: JSONDict | None) -> JSONDict:
    """The request's `text` settings as a Response echoes them. A `json_schema`
    format is echoed by name, without its schema, as the specification's
    Response shape has it."""
    fmt = (text or {}).get("format") or {"type": "text"}
    if fmt.get("type") == "json_schema":
        fmt = {
            "type": "json_schema",
            "name": fmt.get("name"),
            "description": fmt.get("description"),
            "schema": None,
            "strict": bool(fmt.get("strict")),
        }
    echoed: JSONDict = {"format": fmt}
    if (text or {}).get("verbosity") is not None:
        echoed["verbosity"] = text["verbosity"]  # type: ignore[index]
    return echoed


def echo_reasoning(reasoning: JSONDict | None) -> JSONDict | None:
    """The request's `reasoning` settings as a Response echoes them."""
    if reasoning is None:
        return None
    return {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}


def _flag(body: JSONDict, name: str, default: bool) -> bool:
    """A boolean the Response requires: the request's, or the default when the
    request left it out or sent null (strict clients reject a null there)."""
    value = body.get(name)
    return value if isinstance(value, bool) else default


def response_object(
    body: JSONDict,
    request_id: str,
    *,
    status: str,
    output: list[JSONDict],
    usage_block: JSONDict | None,
    created_at: int,
    tools: list[JSONDict],
    error: JSONDict | None = None,
    incomplete_reason: str | None = None,
) -> JSONDict:
    """A complete `Response`, every required field present."""
    finished = status in ("completed", "incomplete", "failed")
    return {
        "id": _core.response_id(request_id),
        "object": "response",
        "created_at": created_at,
        "completed_at": int(time.time()) if finished else None,
        "status": status,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": body["model"],
        "previous_response_id": body.get("previous_response_id"),
        "instructions": body.get("instructions"),
        "output": output,
        "error": error,
        "tools": echo_tools(tools),
        "tool_choice": body.get("tool_choice") or "auto",
        "truncation": body.get("truncation") or "disabled",
        "parallel_tool_calls": _flag(body, "parallel_tool_calls", True),
        "text": echo_text(body.get("text")),
        "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
        "presence_penalty": body.get("presence_penalty") or 0.0,
        "frequency_penalty": body.get("frequency_penalty") or 0.0,
        "top_logprobs": body.get("top_logprobs") or 0,
        "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
        "reasoning": echo_reasoning(body.get("reasoning")),
        "usage": usage_block,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "store": _flag(body, "store", True),
        "background": _flag(body, "background", False),
        "service_tier": body.get("service_tier") or "default",
        "metadata": body.get("metadata") or {},
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
    }


def assemble(
    body: JSONDict,
    request_id: str,
    steps: list[ChainStep],
    *,
    status: str,
    tools: list[JSONDict],
    created_at: int,
    error: JSONDict | None = None,
    prelude: list[JSONDict] | None = None,
    mcp: dict[str, tuple[str, str, bool]] | None = None,
) -> JSONDict:
    """The Response for `steps` (the top-level chain) ending in `status`;
    `prelude` are the items it has before any step (MCP tool listings), `mcp`
    the routes of the functions MCP servers serve."""
    reason = None
    last_model = next((s for s in reversed(steps) if s.kind is StepKind.MODEL_CALL), None)
    if status == "completed" and last_model is not None and last_model.response_payload:
        choices = last_model.response_payload.get("choices") or [{}]
        if choices[0].get("finish_reason") == "length":
            status, reason = "incomplete", "max_output_tokens"
    return response_object(
        body,
        request_id,
        status=status,
        output=[*(prelude or []), *output_items(request_id, steps, mcp)],
        usage_block=usage(steps),
        created_at=created_at,
        tools=tools,
        error=error,
        incomplete_reason=reason,
    )
