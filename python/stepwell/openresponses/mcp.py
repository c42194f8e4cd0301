"""The `mcp` tools of a request: Model Context Protocol servers whose tools
the model may call, the calls run by this server.

A request names a server by `server_label`: one the operator declared
(`McpTools`, `stepwell serve --mcp`), or any label with a `server_url` the
operator's allow-list admits; any other is refused, naming the parameter, so
a request never makes the server connect wherever it says. `headers` and
`authorization` go to that server only: they are kept in memory for the run,
never in the stored request, a log line or the response (a response resumed
by another process reaches the server without them).

Each server's tools are listed once per response (an `mcp_list_tools` item),
or taken from the last listing of the chain the response continues; the
model sees them as functions `<label>__<tool>`. A call runs as a tool step
and shows as an `mcp_call` item. With `require_approval` (`"always"`, the
default, as at OpenAI; `"never"`; or per-tool `always`/`never` filters) a
call instead ends the response with an `mcp_approval_request` item; the
client answers with an `mcp_approval_response` and `previous_response_id`,
and the call runs (approved) or the model is told it was refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .. import _core
from ..errors import ToolExecutionError
from ..protocols import ToolExecutor
from ..types import JSON, MCP_SEPARATOR
from .intercepting import Intercepting
from .request import InvalidRequest, JSONDict

if TYPE_CHECKING:
    from ..tools.mcp import McpServer, McpTools

# `stepwell.tools` imports the transition, which imports this module: the
# executor's module is imported where it is used, not here.

Route = tuple[str, str, bool]
"""How a function the model calls reaches MCP: server label, tool, approval."""


@dataclass(frozen=True)
class McpEntry:
    """One `mcp` tool of a request, resolved: where its server is (with the
    request's headers), which of its tools are allowed and which need the
    client's approval."""

    label: str
    server: McpServer
    shared: bool
    """Reached through the operator's sessions (a declared server, as declared)."""
    allowed: frozenset[str] | None
    always: frozenset[str]
    never: frozenset[str]
    approval_by_default: bool

    def needs_approval(self, tool: str) -> bool:
        """Whether a call of `tool` waits for the client's approval."""
        if tool in self.never:
            return False
        return tool in self.always or self.approval_by_default


def _names(value: Any) -> frozenset[str] | None:
    """Tool names given as a list or as `{"tool_names": [...]}`."""
    if value is None:
        return None
    if isinstance(value, dict):
        return frozenset(value.get("tool_names") or ())
    return frozenset(value)


def mcp_entries(body: JSONDict, registry: McpTools | None, tenant: str) -> list[McpEntry]:
    """The request's `mcp` tools, resolved against the operator's `registry`;
    `InvalidRequest` naming the parameter for a label it does not declare
    (for `tenant`) and a `server_url` it does not admit."""
    from ..tools.mcp import McpServer

    entries: list[McpEntry] = []
    for index, tool in enumerate(body.get("tools") or []):
        if tool.get("type") != "mcp":
            continue
        param = f"tools[{index}]"
        label = tool["server_label"]
        if any(e.label == label for e in entries):
            raise InvalidRequest(f"MCP server label {label!r} is named twice.", param)
        headers = dict(tool.get("headers") or {})
        if tool.get("authorization"):
            headers["Authorization"] = f"Bearer {tool['authorization']}"
        declared = registry.servers.get(label) if registry is not None else None
        if declared is not None and declared.tenants is not None and tenant not in declared.tenants:
            declared = None
        url = tool.get("server_url")
        if url is None or (declared is not None and url == declared.url):
            if declared is None:
                raise InvalidRequest(
                    f"No MCP server {label!r} is declared on this server (give a server_url "
                    "that its operator allows, or a declared label).",
                    f"{param}.server_label",
                )
            shared = not headers
            server = replace(declared, headers={**declared.headers, **headers})
        elif registry is None or not registry.admits(url):
            raise InvalidRequest(
                "This server_url is not allowed: this server connects only to MCP servers "
                "its operator declares or allows.",
                f"{param}.server_url",
            )
        else:
            shared, server = False, McpServer(label, url=url, headers=headers)
        allowed = _names(tool.get("allowed_tools"))
        if server.allowed_tools is not None:
            allowed = server.allowed_tools if allowed is None else allowed & server.allowed_tools
        policy = tool.get("require_approval")
        filters = policy if isinstance(policy, dict) else {}
        entries.append(
            McpEntry(
                label,
                server,
                shared,
                allowed,
                always=_names(filters.get("always")) or frozenset(),
                never=_names(filters.get("never")) or frozenset(),
                approval_by_default=policy != "never",
            )
        )
    return entries


def without_secrets(body: JSONDict) -> JSONDict:
    """The body as it may be kept: its `mcp` tools without `headers` and
    `authorization`."""
    tools = body.get("tools")
    if not tools or not any(t.get("type") == "mcp" for t in tools):
        return body
    kept = [
        {k: v for k, v in t.items() if k not in ("headers", "authorization")}
        if t.get("type") == "mcp"
        else t
        for t in tools
    ]
    return {**body, "tools": kept}


def function_name(label: str, tool: str) -> str:
    """The function the model calls for `tool` of the server `label`."""
    return f"{label}{MCP_SEPARATOR}{tool}"


class RequestMcp:
    """A request's MCP servers while it runs: their listed tools, the
    functions the model sees, and the calls, through the operator's sessions
    (`registry`) or sessions of this request's own."""

    def __init__(
        self,
        entries: Iterable[McpEntry],
        listings: Mapping[str, list[JSONDict]],
        registry: McpTools | None,
    ) -> None:
        self.entries = {e.label: e for e in entries}
        self.listings = dict(listings)
        self.registry = registry
        from ..tools.mcp import McpTools

        own = [e.server for e in self.entries.values() if not e.shared]
        self._own = McpTools(own) if own else None
        self.routes: dict[str, Route] = {}
        self._index()

    def _index(self) -> None:
        """The routes of the functions the listings offer."""
        self.routes.clear()
        for label, tools in self.listings.items():
            entry = self.entries.get(label)
            if entry is None:
                continue
            for tool in tools:
                name = function_name(label, tool["name"])
                self.routes[name] = (label, tool["name"], entry.needs_approval(tool["name"]))

    def chat_tools(self) -> list[JSONDict]:
        """The listed tools as function tools for the model."""
        tools = []
        for label, listed in self.listings.items():
            for tool in listed:
                tools.append(
                    {
                        "type": "function",
                        "name": function_name(label, tool["name"]),
                        "description": tool.get("description") or "",
                        "parameters": tool.get("input_schema") or {"type": "object"},
                    }
                )
        return tools

    def _pool(self, label: str) -> McpTools:
        entry = self.entries[label]
        pool = self.registry if entry.shared else self._own
        if pool is None:  # pragma: no cover - an entry always has one
            raise ToolExecutionError(f"MCP server {label!r} has no session")
        return pool

    async def list_tools(
        self, request_id: str, reused: Mapping[str, list[JSONDict]]
    ) -> list[JSONDict]:
        """Lists each server not in `reused`; the `mcp_list_tools` items made
        (a listing that failed says why, and offers no tool)."""
        items = []
        for index, (label, entry) in enumerate(self.entries.items()):
            if label in reused:
                self.listings[label] = [
                    t for t in reused[label] if entry.allowed is None or t["name"] in entry.allowed
                ]
                continue
            try:
                found = await self._pool(label).list_tools(label)
            except ToolExecutionError as failed:
                items.append(_core.mcp_list_tools_item(request_id, index, label, [], str(failed)))
                self.listings[label] = []
                continue
            listed = [
                _listed(tool)
                for tool in found
                if entry.allowed is None or tool.name in entry.allowed
            ]
            items.append(_core.mcp_list_tools_item(request_id, index, label, listed))
            self.listings[label] = listed
        self._index()
        return items

    async def call(self, name: str, arguments: Any) -> Any:
        """Runs the call of the function `name` on its server."""
        label, tool, _ = self.routes[name]
        return await self._pool(label).call(
            label, tool, arguments if isinstance(arguments, dict) else {}
        )

    async def aclose(self) -> None:
        """Closes this request's own sessions."""
        if self._own is not None:
            await self._own.aclose()


class McpCalls(Intercepting):
    """A `ToolExecutor` that runs a request's MCP calls and hands every other
    call to `tools`."""

    def __init__(self, tools: ToolExecutor, mcp: RequestMcp) -> None:
        super().__init__(tools)
        self._mcp = mcp

    def handles(self, tool_name: str) -> bool:
        """Whether the call is of a function one of the request's MCP servers serves."""
        return tool_name in self._mcp.routes

    async def run(self, tool_name: str, arguments: JSON) -> JSON:
        """Runs the call on its server."""
        return await self._mcp.call(tool_name, arguments)


def _listed(tool: Any) -> JSONDict:
    """A tool as an `mcp_list_tools` item lists it."""
    annotations = getattr(tool, "annotations", None)
    return {
        "name": tool.name,
        "description": tool.description,
        "input_schema": dict(tool.input_schema or {"type": "object"}),
        "annotations": annotations.model_dump(exclude_none=True) if annotations else None,
    }


def kept_routes(kept: JSONDict) -> dict[str, Route]:
    """The routes of the MCP functions a kept request recorded (`{}` for one
    that named no MCP server)."""
    recorded = (kept.get("mcp") or {}).get("routes") or {}
    return {name: (str(r[0]), str(r[1]), bool(r[2])) for name, r in recorded.items()}


def approved_in(given: Any) -> set[str]:
    """The ids of the approval requests an input approves."""
    if not isinstance(given, list):
        return set()
    return {
        str(item.get("approval_request_id"))
        for item in given
        if isinstance(item, dict)
        and item.get("type") == "mcp_approval_response"
        and item.get("approve") is True
    }


def tell_unanswered(messages: list[JSONDict], approved: set[str]) -> list[JSONDict]:
    """`messages` with a tool message after each approval request that
    nothing answers (no refusal, no approval): the model is told it did not
    run, and every call it made has its answer."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"} | approved
    told: list[JSONDict] = []
    pending: list[JSONDict] = []
    for message in messages:
        if pending and message.get("role") != "tool":
            told += pending
            pending = []
        told.append(message)
        for call in message.get("tool_calls") or []:
            if str(call.get("id")).startswith("mcpr_") and call.get("id") not in answered:
                pending.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "content": "This call was not approved; it did not run.",
                    }
                )
    return told + pending


def approval_requests(items: Iterable[Any]) -> list[JSONDict]:
    """The `mcp_approval_request` items among `items`."""
    return [i for i in items if isinstance(i, dict) and i.get("type") == "mcp_approval_request"]


def listings_in(items: Iterable[Any]) -> dict[str, list[JSONDict]]:
    """The tools of each `mcp_list_tools` item among `items`, by server label
    (the last listing of a label wins)."""
    found: dict[str, list[JSONDict]] = {}
    for item in items:
        if (
            isinstance(item, dict)
            and item.get("type") == "mcp_list_tools"
            and not item.get("error")
        ):
            found[str(item.get("server_label"))] = list(item.get("tools") or [])
    return found
