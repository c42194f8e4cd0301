"""Exceptions raised by stepwell, and those tools raise to fail a step.

Every one of them is a `StepwellError`, so ``except StepwellError`` catches
whatever stepwell raises on purpose: a loop that did not complete, a store
that failed or refused a move, a request that is not valid, a tool's error.
"""

from __future__ import annotations

from typing import Any


class StepwellError(Exception):
    """The root of every exception stepwell raises."""


class LoopError(StepwellError):
    """A response loop did not complete.

    ``payload`` is the error as persisted and streamed: ``{"type", "message"}``.
    """

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload: dict[str, Any] = payload or {"type": "loop_error", "message": message}


class LoopFailed(LoopError):
    """The transition function returned ``Fail(payload)``."""

    def __init__(self, payload: Any) -> None:
        super().__init__(f"response loop failed: {payload!r}", None)
        self.payload = payload


class MaxIterationsExceeded(LoopError):
    """A loop level took more than ``max_response_iterations`` rounds."""


class MaxDepthExceeded(LoopError):
    """Sub-agent recursion went deeper than ``max_response_step_depth``."""


class EmptyAction(LoopError):
    """The transition function returned ``AppendSteps([])``."""


class StoreError(LoopError):
    """The store raised or answered out of contract; its exception is ``__cause__``."""


class ExecutorError(LoopError):
    """A step could not be executed at all, or the tool executor's ``tools`` failed."""


class LeaseLost(StepwellError):
    """A write carried a lease's fencing token that is no longer the response's:
    another process claimed the response since, and this write is refused."""


class ToolError(StepwellError):
    """Raised by a tool to fail its step with a clear reason."""


class ToolNotFound(ToolError):
    """The executor serves no tool of that name."""


class ToolExecutionError(ToolError):
    """The tool ran and failed."""


class InvalidToolArguments(ToolError):
    """The arguments do not fit the tool."""


class ToolTimeout(ToolError):
    """The tool took too long."""
