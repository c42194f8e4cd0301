"""stepwell: multi-step LLM responses driven by a Rust core.

``await run_response_loop(store, tool_executor, ctx, target, request_id=...)``
drives a response from its first step to a terminal state: model calls against
any OpenAI-compatible upstream, tool calls (fanned out in parallel, or
recursing into sub-agents), every step persisted by your store, live events
streamed to your sink.
"""

from ._core import HttpClient, LoopEvent
from ._loop import run_response_loop
from .errors import (
    EmptyAction,
    ExecutorError,
    InvalidToolArguments,
    LeaseLost,
    LoopError,
    LoopFailed,
    MaxDepthExceeded,
    MaxIterationsExceeded,
    StepwellError,
    StoreError,
    ToolError,
    ToolExecutionError,
    ToolNotFound,
    ToolTimeout,
)
from .protocols import (
    BatchEventSink,
    BatchStepStore,
    EventSink,
    MultiStepStore,
    ResponseStore,
    ToolExecutor,
)
from .types import (
    AppendSteps,
    ChainStep,
    Complete,
    Fail,
    LoopConfig,
    NextAction,
    RecordedStep,
    RequestContext,
    RunStats,
    StepDescriptor,
    StepKind,
    StepState,
    ToolKind,
    ToolSchema,
    UpstreamTarget,
)

__all__ = [
    "AppendSteps",
    "BatchEventSink",
    "BatchStepStore",
    "ChainStep",
    "Complete",
    "EmptyAction",
    "EventSink",
    "ExecutorError",
    "Fail",
    "HttpClient",
    "InvalidToolArguments",
    "LeaseLost",
    "LoopConfig",
    "LoopError",
    "LoopEvent",
    "LoopFailed",
    "MaxDepthExceeded",
    "MaxIterationsExceeded",
    "MultiStepStore",
    "NextAction",
    "RecordedStep",
    "RequestContext",
    "ResponseStore",
    "RunStats",
    "StepDescriptor",
    "StepKind",
    "StepState",
    "StepwellError",
    "StoreError",
    "ToolError",
    "ToolExecutionError",
    "ToolExecutor",
    "ToolKind",
    "ToolNotFound",
    "ToolSchema",
    "ToolTimeout",
    "UpstreamTarget",
    "run_response_loop",
]

__version__ = "0.1.0"
