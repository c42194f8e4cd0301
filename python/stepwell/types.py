"""The data the loop and its stores exchange.

Everything here is a plain, immutable value. Payloads are JSON-shaped
(``dict``/``list``/``str``/numbers/``bool``/``None``): they cross into the Rust
core as JSON.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _core

if TYPE_CHECKING:
    from typing_extensions import Self

JSON = Any
"""A JSON-shaped value."""


class StepKind(str, enum.Enum):
    """What a step does when it runs."""

    MODEL_CALL = "model_call"
    """POST ``request_payload`` to the upstream chat-completions endpoint."""
    TOOL_CALL = "tool_call"
    """Run the tool named by ``request_payload["name"]`` with ``request_payload["args"]``."""


class StepState(str, enum.Enum):
    """Where a step is in its life: pending → processing → completed | failed."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class ToolKind(str, enum.Enum):
    """How the loop dispatches a call to a tool."""

    HTTP = "http"
    """Handed to ``ToolExecutor.execute``."""
    AGENT = "agent"
    """Runs a sub-loop scoped under the calling step."""


class _EncodedRequest:
    """What `StepDescriptor` and `ChainStep` share: a ``request_payload`` that
    may be kept as the JSON text it came as, and decoded when first read. A
    model call's payload carries the whole conversation so far: the core hands
    it to a store already encoded, a store reads it back from a row as text,
    and neither the store's write nor most rounds of a transition need the
    decoded value."""

    if TYPE_CHECKING:
        request_payload: dict[str, JSON]

    @classmethod
    def with_encoded_request(cls, request_json: str, **fields: Any) -> Self:
        """One with ``request_payload`` given as JSON text, and every other
        field by name."""
        made = cls.__new__(cls)
        for name, value in fields.items():
            object.__setattr__(made, name, value)
        object.__setattr__(made, "_request_json", request_json)
        return made

    def request_json(self) -> str:
        """``request_payload`` as JSON text (as it came, when it came encoded)."""
        encoded: str | None = self.__dict__.get("_request_json")
        return encoded if encoded is not None else json.dumps(self.request_payload)

    if not TYPE_CHECKING:  # so mypy still checks attribute names

        def __getattr__(self, name: str) -> Any:
            # Reached only for an attribute not set: a payload left encoded.
            encoded = self.__dict__.get("_request_json")
            if name != "request_payload" or encoded is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            payload = json.loads(encoded)
            object.__setattr__(self, "request_payload", payload)
            return payload


@dataclass(frozen=True)
class StepDescriptor(_EncodedRequest):
    """A step the transition function wants appended to the chain."""

    kind: StepKind
    request_payload: dict[str, JSON]

    @classmethod
    def model_call(cls, request_payload: dict[str, JSON]) -> StepDescriptor:
        """A model call sending ``request_payload`` as the chat-completions body."""
        return cls(StepKind.MODEL_CALL, request_payload)

    @classmethod
    def tool_call(cls, name: str, args: dict[str, JSON] | None = None) -> StepDescriptor:
        """A call of the tool ``name`` with ``args``."""
        payload: dict[str, JSON] = {"name": name}
        if args is not None:
            payload["args"] = args
        return cls(StepKind.TOOL_CALL, payload)


@dataclass(frozen=True)
class AppendSteps:
    """Record these steps in order, chained, and run them concurrently."""

    steps: list[StepDescriptor]


@dataclass(frozen=True)
class Complete:
    """The scope is done; ``payload`` is its result."""

    payload: JSON


@dataclass(frozen=True)
class Fail:
    """The scope failed; ``payload`` says why."""

    payload: JSON


NextAction = AppendSteps | Complete | Fail
"""What a store's transition function decides should happen next."""


@dataclass(frozen=True)
class RecordedStep:
    """A store's answer to ``record_step``."""

    id: str
    sequence: int
    sub_request_id: str | None = None
    """Stamped on the outgoing model request; stores must set it for model calls."""


@dataclass(frozen=True)
class ChainStep(_EncodedRequest):
    """One persisted step, as ``list_chain`` returns it."""

    id: str
    sequence: int
    kind: StepKind
    state: StepState
    request_payload: dict[str, JSON]
    response_payload: JSON = None
    error: JSON = None
    prev_step_id: str | None = None
    scope_parent: str | None = None
    sub_request_id: str | None = None
    created_at: float | None = None
    """When the step was recorded (Unix seconds), where the store keeps it."""
    updated_at: float | None = None
    """When its state last changed, where the store keeps it."""


@dataclass(frozen=True)
class ToolSchema:
    """A tool an executor serves."""

    name: str
    kind: ToolKind = ToolKind.HTTP
    description: str = ""
    parameters: dict[str, JSON] = field(default_factory=lambda: {"type": "object"})


@dataclass(frozen=True)
class RequestContext:
    """Per-request context handed to every ``ToolExecutor`` call.

    ``tenant`` is the tenant the request belongs to (``""`` when there is one
    only), for executors that serve tenants differently. ``extensions`` is free
    for the application: it reaches Python tools as it is (it need not be
    JSON).
    """

    model: str | None = None
    extensions: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""


MCP_SEPARATOR = "__"
"""Between an MCP server's label and a tool's name, in the function names
the model calls MCP tools by (`<label>__<tool>`)."""

_LOOP_DEFAULTS: dict[str, Any] = _core.loop_config_defaults()


@dataclass(frozen=True)
class LoopConfig:
    """Safety caps of the loop, its fan-out bound, and how it treats its sink.

    The defaults are the Rust core's, and the core checks every value: a bad one
    raises ``ValueError`` or ``TypeError`` naming the field.
    """

    max_response_step_depth: int = _LOOP_DEFAULTS["max_response_step_depth"]
    """Deepest sub-agent recursion; deeper fails with ``MaxDepthExceeded``."""
    max_response_iterations: int = _LOOP_DEFAULTS["max_response_iterations"]
    """Most transition rounds per loop level; more fails with ``MaxIterationsExceeded``."""
    bridge_capacity: int = _LOOP_DEFAULTS["bridge_capacity"]
    """Live events buffered for a slow sink."""
    bridge_overflow: str = _LOOP_DEFAULTS["bridge_overflow"]
    """When that buffer is full: ``"drop_newest"`` drops the event (the upstream read
    never waits for a client), ``"block"`` waits (a slow sink slows the read)."""
    sink_drain_timeout: float | None = _LOOP_DEFAULTS["sink_drain_timeout"]
    """Seconds the sink gets, once the response is terminal and persisted, to take
    the events still queued; the rest are dropped and counted. ``None`` waits as
    long as the sink takes."""
    max_concurrent_steps: int | None = _LOOP_DEFAULTS["max_concurrent_steps"]
    """Most sibling steps of one level running at once (the others wait, in order);
    ``None`` runs every sibling at once."""
    subagent_events: bool = _LOOP_DEFAULTS["subagent_events"]
    """Forward sub-agents' events to the sink, each with its ``depth`` and
    ``scope_parent``. Off by default: a sub-agent's steps stay out of the stream."""

    def __post_init__(self) -> None:
        _core.check_loop_config(self)


@dataclass
class RunStats:
    """What happened to a run's live events; pass one as ``stats=`` and read it after.

    ``dropped_events`` counts every event the sink never received: deltas dropped
    when the bridge was full, events after the sink failed, and events still
    queued when ``sink_drain_timeout`` ran out.
    """

    dropped_events: int = 0
    sink_detached: bool = False
    """The sink raised and was detached; ``sink_error`` says what it raised."""
    sink_error: str | None = None


@dataclass(frozen=True)
class UpstreamTarget:
    """Where model calls go: ``endpoint + path``, with an optional Bearer key.

    ``endpoint`` and ``path`` stay apart because the client decides whether a
    request streams by its path. The key never appears in ``repr``.
    """

    endpoint: str
    path: str = "/v1/chat/completions"
    api_key: str | None = field(default=None, repr=False)
