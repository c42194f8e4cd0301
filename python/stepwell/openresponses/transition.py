"""The Open Responses transition: what a response does next, given its steps.

A response starts with one model call built from its request. A model answer
that calls tools the executor serves fans out into one tool step per call; the
next model call then carries the assistant's calls and one tool message per
result. An answer that calls tools the executor does not serve (client-side
tools) completes the response with `function_call` items, which the client
answers in a new request with `function_call_output` items and
`previous_response_id`. A plain answer completes it. A step found pending or
processing when the transition runs was abandoned by a worker that died: the
response fails with `step_abandoned` (completed steps are never run again).

`agent` tools run a sub-loop under the calling step: its own instructions, the
call's arguments as the user message, and its own tools; its final text is the
calling step's result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import _core
from .._eager import without_task
from ..protocols import ResponseStore
from ..types import (
    AppendSteps,
    ChainStep,
    Complete,
    Fail,
    NextAction,
    StepDescriptor,
    StepKind,
    StepState,
    ToolKind,
    ToolSchema,
)
from .assemble import assemble, is_compaction, output_items, tool_output_text
from .compaction import CompactionKey, compact_threshold, fold, is_summary, summary_message
from .context import ModelContext
from .errors import model_call_error
from .items import input_items
from .mcp import (
    RequestMcp,
    approval_requests,
    approved_in,
    function_name,
    kept_routes,
    listings_in,
    tell_unanswered,
)
from .request import (
    InvalidRequest,
    JSONDict,
    UnknownConversation,
    conversation_id,
    input_messages,
    model_request,
)

log = logging.getLogger("stepwell.openresponses")


@dataclass(frozen=True)
class Agent:
    """An `agent` tool: a sub-loop with its own instructions and tools."""

    name: str
    instructions: str
    description: str = ""
    model: str | None = None
    tools: tuple[str, ...] = ()
    parameters: JSONDict = field(
        default_factory=lambda: {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        }
    )


def stored(
    body: JSONDict,
    created_at: int | None = None,
    tenant: str = "",
    announced: JSONDict | None = None,
) -> JSONDict:
    """What a store keeps for a response: its request, when it was created, the
    tenant it belongs to and, once set up, the response as `response.created`
    announces it (what a read of it shows, with the output so far, until it
    ends)."""
    kept = {"request": body, "created_at": created_at or int(time.time()), "tenant": tenant}
    if announced is not None:
        kept["announced"] = announced
    return kept


def _schema_tool(schema: ToolSchema) -> JSONDict:
    return {
        "type": "function",
        "name": schema.name,
        "description": schema.description,
        "parameters": schema.parameters,
    }


def _arguments(raw: str) -> Any:
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {"_invalid_arguments": raw}
    return parsed if isinstance(parsed, dict) else {"_invalid_arguments": raw}


_STORE_CALLS = (
    "load_request",
    "outcome",
    "step",
    "steps",
    "load_conversation",
    "conversation_items",
    "add_conversation_items",
)
"""The store's methods a transition calls."""


class ResponsesTransition:
    """The transition function of Open Responses, for any store that keeps requests.

    ``served`` are the tools the executor runs (server-side); calls of any other
    tool are returned to the client. ``agents`` are the `agent` tools. With a
    ``tenant``, a ``previous_response_id`` is looked up among that tenant's
    responses only; ``earlier`` holds responses that are not in the store
    (``store: false`` ones a WebSocket connection made), by request id: their
    request body and how they ended. With ``compaction``, `compaction` input
    items are opened into the summaries they stand for. ``mcp`` holds the
    request's MCP servers (their tools offered to the model, their calls
    run as tool steps) and ``prelude`` the items the response has before
    any step (their tool listings).
    """

    def __init__(
        self,
        store: ResponseStore,
        *,
        served: Iterable[ToolSchema] = (),
        agents: Iterable[Agent] = (),
        tenant: str | None = None,
        earlier: Mapping[str, tuple[JSONDict, JSONDict]] | None = None,
        compaction: CompactionKey | None = None,
        mcp: RequestMcp | None = None,
        prelude: list[JSONDict] | None = None,
    ) -> None:
        self.store = store
        self.mcp = mcp
        self.prelude = prelude or []
        self.tenant = tenant
        self.earlier = earlier or {}
        self.compaction = compaction
        # A kept request never changes, nor what comes before it: read once,
        # not on every turn (and a conversation others add to meanwhile is
        # seen as it was when the response began).
        self._saved: dict[str, JSONDict] = {}
        self._contexts: dict[str, tuple[ModelContext, list[JSONDict]]] = {}
        self.agents: Mapping[str, Agent] = {a.name: a for a in agents}
        self.served: dict[str, ToolSchema] = {s.name: s for s in served}
        for agent in self.agents.values():
            self.served.setdefault(
                agent.name,
                ToolSchema(agent.name, ToolKind.AGENT, agent.description, agent.parameters),
            )

    @property
    def needs_no_task(self) -> bool:
        """Whether a call's first step needs no asyncio task (see
        `runs_without_task`): it reaches no MCP server and runs no code but
        its own and the store's, whose methods it calls are each marked."""
        return self.mcp is None and all(
            without_task(getattr(self.store, name, None)) for name in _STORE_CALLS
        )

    async def __call__(
        self, chain: list[ChainStep], request_id: str, scope_parent: str | None
    ) -> NextAction:
        saved = self._saved.get(request_id) or await self.store.load_request(request_id)
        if saved is None:
            return Fail({"type": "unknown_request", "message": f"no request {request_id!r}"})
        self._saved[request_id] = saved
        body, created_at = saved["request"], saved["created_at"]
        if scope_parent is None:
            if request_id not in self._contexts:
                self._contexts[request_id] = await self.context(body)
            context, tools = self._contexts[request_id]
            model_body = body
        else:
            agent, context, tools = await self._agent_context(scope_parent)
            model_body = {**body, "model": agent.model or body["model"]}

        routes = self._routes()

        def finish(status: str, error: JSONDict | None = None) -> JSONDict:
            return assemble(
                body,
                request_id,
                chain,
                status=status,
                tools=tools,
                created_at=created_at,
                error=error,
                prelude=self.prelude,
                mcp=routes,
            )

        for step in chain:
            if step.state in (StepState.PENDING, StepState.PROCESSING):
                error = {
                    "code": "step_abandoned",
                    "message": f"step {step.sequence} was left {step.state.value} by a worker "
                    "that stopped; it is not run twice",
                }
                if scope_parent is not None:
                    return Fail({"type": "step_abandoned", "message": error["message"]})
                return Fail(finish("failed", error))

        # A request's MCP servers serve the response, not its sub-agents.
        all_tools = self._chat_tools(tools, mcp=scope_parent is None)
        last = chain[-1] if chain else None
        if last is not None and is_compaction(last) and last.state is StepState.FAILED:
            error = {
                "code": "compaction_failed",
                "message": (last.error or {}).get("message", "the context could not be compacted"),
            }
            return Fail(finish("failed", error))
        if last is None and scope_parent is None and self.mcp is not None:
            approved = await self._approved_calls(body)
            if approved:
                return AppendSteps(approved)
        if last is None or last.kind is StepKind.TOOL_CALL:
            messages = context.then(self.history(chain))
            if any(is_compaction(s) for s in chain):
                messages = ModelContext(fold(messages.messages()))
            if scope_parent is None and await self._context_passes_threshold(body, chain):
                summarized = {"model": model_body["model"], "messages": messages.messages()}
                if body.get("prompt_cache_key"):
                    summarized["prompt_cache_key"] = body["prompt_cache_key"]
                compaction = {
                    "name": _core.COMPACTION_TOOL,
                    "args": summarized,
                    "call_id": f"compaction_{len(chain)}",
                }
                return AppendSteps([StepDescriptor(StepKind.TOOL_CALL, compaction)])
            return AppendSteps([messages.model_call(model_body, all_tools)])

        if last.state is StepState.FAILED:
            error = model_call_error(last.error)
            if scope_parent is not None:
                return Fail({"type": "agent_failed", "message": error["message"]})
            return Fail(finish("failed", error))

        choices = (last.response_payload or {}).get("choices") or [{}]
        message = choices[0].get("message") or {}
        calls = message.get("tool_calls") or []
        executed = sum(1 for s in chain if s.kind is StepKind.TOOL_CALL and not is_compaction(s))
        limit = model_body.get("max_tool_calls")
        within_limit = limit is None or executed + len(calls) <= limit

        def runs_here(name: str) -> bool:
            route = routes.get(name)
            return name in self.served if route is None else not route[2]

        if calls and within_limit and all(runs_here(c["function"]["name"]) for c in calls):
            return AppendSteps(
                [
                    StepDescriptor(
                        StepKind.TOOL_CALL,
                        {
                            "name": call["function"]["name"],
                            "args": _arguments(call["function"].get("arguments", "")),
                            "call_id": call["id"],
                        },
                    )
                    for call in calls
                ]
            )
        if scope_parent is not None:
            return Complete({"output": message.get("content") or ""})
        finished = finish("completed")
        await self._add_to_conversation(body, request_id, finished)
        return Complete(finished)

    async def _context_passes_threshold(self, body: JSONDict, chain: list[ChainStep]) -> bool:
        """Whether the last model call since the last compaction (if any) sent
        and got back more tokens than the body's `context_management` allows.
        Before this response's first model call, that is the last one of the
        response it continues."""
        threshold = compact_threshold(body)
        if threshold is None:
            return False
        steps = chain
        if not steps:
            previous = body.get("previous_response_id")
            request_id = _core.request_id_of(str(previous)) if previous else None
            if request_id is None or request_id in self.earlier:
                return False
            steps = await self.store.steps(request_id)
            steps = [s for s in steps if s.scope_parent is None]
        for step in reversed(steps):
            if is_compaction(step):
                return False
            if step.kind is StepKind.MODEL_CALL and step.state is StepState.COMPLETED:
                used = (step.response_payload or {}).get("usage") or {}
                total = (used.get("prompt_tokens") or 0) + (used.get("completion_tokens") or 0)
                return bool(total >= threshold)
        return False

    async def _approved_calls(self, body: JSONDict) -> list[StepDescriptor]:
        """The MCP calls the client approved in this request's input, as tool
        steps: each answers its approval request (the call id is the
        request's id), with the arguments the model gave."""
        given = body.get("input")
        approved = approved_in(given)
        if not approved or not isinstance(given, list):
            return []
        requested = list(given)
        previous = body.get("previous_response_id")
        if previous:
            _, outcome = await self._previous(str(previous))
            requested = list(outcome.get("output") or []) + requested
        routes = self._routes()
        steps = []
        for request in approval_requests(requested):
            name = function_name(str(request.get("server_label")), str(request.get("name")))
            if request.get("id") in approved and name in routes:
                arguments = str(request.get("arguments") or "")
                payload = {"name": name, "args": _arguments(arguments), "call_id": request["id"]}
                steps.append(StepDescriptor(StepKind.TOOL_CALL, payload))
        return steps

    def _routes(self) -> dict[str, tuple[str, str, bool]]:
        """The functions the request's MCP servers serve, by name."""
        return self.mcp.routes if self.mcp is not None else {}

    async def mcp_listings(self, body: JSONDict) -> dict[str, list[JSONDict]]:
        """The last tool listing of each MCP server in the chain a request
        continues (or in its input): what it need not list again."""
        given = body.get("input")
        found = listings_in(given if isinstance(given, list) else [])
        previous = body.get("previous_response_id")
        while previous:
            kept, earlier_body, outcome = await self._previous_kept(str(previous))
            for label, tools in listings_in(outcome.get("output") or []).items():
                found.setdefault(label, tools)
            if kept is not None and "mcp" in kept:
                # Its listings hold what it reused from further back too.
                for label, tools in (kept["mcp"].get("listings") or {}).items():
                    found.setdefault(label, tools)
                break
            previous = earlier_body.get("previous_response_id")
        return found

    async def _add_to_conversation(
        self, body: JSONDict, request_id: str, response: JSONDict
    ) -> None:
        """Adds a finished response's input and output items to its
        conversation. Before the outcome is kept, so a run stopped between
        the two adds them again when it is resumed; the items' ids are the
        response's own, and a conversation keeps each id once."""
        conversation = conversation_id(body)
        if conversation is None or response["status"] not in ("completed", "incomplete"):
            return
        items = input_items(request_id, body) + list(response["output"])
        try:
            await self.store.add_conversation_items(conversation, items)
        except KeyError:
            log.info(
                "conversation %s was deleted before response %s ended", conversation, request_id
            )

    def remember_context(
        self, request_id: str, context: ModelContext, tools: list[JSONDict]
    ) -> None:
        """Keeps what `context` gave for the response `request_id`, so its
        first round does not build it again."""
        self._contexts[request_id] = (context, tools)

    def remember_request(self, request_id: str, saved: JSONDict) -> None:
        """Keeps what was just saved for the response `request_id` (what
        `load_request` would read back), so its first round does not read it."""
        self._saved[request_id] = saved

    async def first_model_call(self, body: JSONDict) -> JSONDict:
        """The chat-completions body of the first model call a create with
        `body` makes: its context (earlier responses, instructions, input) and
        tools."""
        context, tools = await self.context(body)
        return model_request(body, context.messages(), self._chat_tools(tools))

    async def context(self, body: JSONDict) -> tuple[ModelContext, list[JSONDict]]:
        """The messages before this response's steps, and the request's tools.

        With `previous_response_id`, the earlier response's context and output
        come first, and its tools carry over when this request names none.
        """
        # `head`: what the response continues, as its last model call sent it
        # (already folded, every call answered); `messages`: what follows it.
        head = ModelContext()
        messages: list[JSONDict] = []
        tools = list(body.get("tools") or [])
        previous_id = body.get("previous_response_id")
        if previous_id:
            head, answer, earlier_tools = await self._carried(str(previous_id))
            messages += answer
            tools = tools or earlier_tools
        conversation = conversation_id(body)
        if conversation is not None:
            kept = await self.store.load_conversation(conversation, tenant=self.tenant)
            if kept is None:
                raise UnknownConversation(
                    f"Conversation with id {conversation!r} not found.", "conversation"
                )
            items = await self.store.conversation_items(conversation)
            messages += input_messages(self._unfold(items, "conversation"), "conversation")
        messages += input_messages(self._unfold(body.get("input", []), "input"))
        messages = tell_unanswered(messages, approved_in(body.get("input")))
        if body.get("instructions"):
            head = head.after([{"role": "system", "content": body["instructions"]}])
        # Only a summary among what follows can fold what came before.
        if any(is_summary(m) for m in messages):
            return ModelContext(fold(head.messages() + messages)), tools
        return head.then(messages), tools

    async def _carried(
        self, previous_id: str
    ) -> tuple[ModelContext, list[JSONDict], list[JSONDict]]:
        """What a response continuing `previous_id` starts from: the messages
        of that response's last model call as it sent them (its context and
        every round, less system messages, which do not carry over; kept as
        the text they were stored as), that call's answer, and the function
        tools it had, its own or carried (an MCP server is named again each
        turn: its headers were never kept).

        Read from that response alone, whatever the chain's length. One kept
        before responses recorded their carried tools, or that did not end on
        a model call's answer, is rebuilt from the chain instead."""
        kept, previous_body, outcome = await self._previous_kept(previous_id)
        request_id = _core.request_id_of(previous_id)
        if kept is not None and "carried_tools" in kept:
            steps = [s for s in await self.store.steps(request_id) if s.scope_parent is None]
            last = steps[-1] if steps else None
            if (
                last is not None
                and last.kind is StepKind.MODEL_CALL
                and (last.state is StepState.COMPLETED)
            ):
                answer = output_items(request_id, [last], kept_routes(kept))
                told = input_messages(answer, "previous_response_id")
                carried = ModelContext.carried_from(last.request_json())
                return carried, told, list(kept["carried_tools"])
        earlier, earlier_tools = await self.context(previous_body)
        messages = [m for m in earlier.messages() if m["role"] != "system"]
        told = input_messages(
            self._unfold(outcome.get("output") or [], "previous_response_id"),
            "previous_response_id",
        )
        functions = [t for t in earlier_tools if t.get("type", "function") == "function"]
        return ModelContext(messages), told, functions

    def _unfold(self, items: Any, param: str) -> Any:
        return items if self.compaction is None else self.compaction.unfold(items, param)

    async def _previous(self, previous_id: str) -> tuple[JSONDict, JSONDict]:
        """The request body and outcome of the response a request continues."""
        _, body, outcome = await self._previous_kept(previous_id)
        return body, outcome

    async def _previous_kept(self, previous_id: str) -> tuple[JSONDict | None, JSONDict, JSONDict]:
        """What the store keeps of the response a request continues (`None`
        for one only this connection holds), its request body and outcome."""
        request_id = _core.request_id_of(previous_id)
        if request_id in self.earlier:
            return None, *self.earlier[request_id]
        previous = await self.store.load_request(request_id, tenant=self.tenant)
        outcome = await self.store.outcome(request_id)
        if previous is None or outcome is None:
            raise InvalidRequest(
                f"previous response {previous_id!r} is unknown or unfinished",
                "previous_response_id",
                code="previous_response_not_found",
            )
        return previous, previous["request"], outcome[1]

    async def _agent_context(self, scope_parent: str) -> tuple[Agent, ModelContext, list[JSONDict]]:
        step = await self.store.step(scope_parent)
        name = step.request_payload.get("name")
        agent = self.agents.get(name or "")
        if agent is None:
            raise ValueError(f"step {scope_parent} calls {name!r}, which is not an agent tool")
        args = step.request_payload.get("args") or {}
        task = args.get("input") if isinstance(args.get("input"), str) else json.dumps(args)
        messages: list[JSONDict] = [
            {"role": "system", "content": agent.instructions},
            {"role": "user", "content": task},
        ]
        tools = [_schema_tool(self.served[t]) for t in agent.tools if t in self.served]
        return agent, ModelContext(messages), tools

    def _chat_tools(self, tools: list[JSONDict], *, mcp: bool = True) -> list[JSONDict]:
        """The request's function tools, its MCP servers' tools (with `mcp`),
        and every served tool the request does not name."""
        functions = [t for t in tools if t.get("type", "function") == "function"]
        if mcp and self.mcp is not None:
            functions += self.mcp.chat_tools()
        named = {t["name"] for t in functions}
        return functions + [_schema_tool(s) for n, s in self.served.items() if n not in named]

    def history(self, chain: list[ChainStep]) -> list[JSONDict]:
        """The chat messages of the steps so far (a compaction step's: the
        summary it sealed)."""
        messages: list[JSONDict] = []
        for step in chain:
            if is_compaction(step):
                if step.state is StepState.COMPLETED and self.compaction is not None:
                    sealed = (step.response_payload or {}).get("encrypted_content")
                    messages.append(summary_message(self.compaction.open(sealed, "input")))
                continue
            if step.kind is StepKind.MODEL_CALL and step.state is StepState.COMPLETED:
                choices = (step.response_payload or {}).get("choices") or [{}]
                message = choices[0].get("message") or {}
                assistant: JSONDict = {"role": "assistant", "content": message.get("content")}
                if message.get("tool_calls"):
                    assistant["tool_calls"] = message["tool_calls"]
                messages.append(assistant)
            elif step.kind is StepKind.TOOL_CALL:
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": step.request_payload.get("call_id"),
                        "content": tool_output_text(step),
                    }
                )
        return messages
