"""What a run reports, as log lines on the ``stepwell`` logger and, when
``opentelemetry-api`` is installed (``pip install stepwell[otel]``), as spans.

The Rust core calls a ``RunObserver`` when a step starts and ends and when its
sink lost events; ``run_response_loop`` makes one per run. Every call happens on
the event loop's thread, a handful per step, never per streamed chunk.

Spans: one ``stepwell.response`` per run (a child of whatever span is current
when the run starts), one ``stepwell.model_call`` or ``stepwell.tool_call`` per
step under it, and a sub-agent's steps under the step that called the agent. A
model call's upstream request carries its span's W3C ``traceparent``.

Nothing here logs a key or a request body: steps are named by response id,
sequence and tool name; errors by their persisted payload's type, code and
message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .types import RunStats

try:  # pragma: no cover - which branch runs depends on the installed extras
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover
    trace = None  # type: ignore[assignment]

log = logging.getLogger("stepwell")

StepListener = Callable[[dict[str, Any], dict[str, Any]], None]
SinkListener = Callable[[int], None]

_step_listeners: list[StepListener] = []
_sink_listeners: list[SinkListener] = []


def on_step_finished(listener: StepListener) -> Callable[[], None]:
    """Calls ``listener(step, end)`` for every step of every run in this process
    (metrics, say); returns what removes it. A listener must not raise."""
    _step_listeners.append(listener)
    return lambda: _step_listeners.remove(listener)


def on_sink_finished(listener: SinkListener) -> Callable[[], None]:
    """Calls ``listener(undelivered)`` when a run with a sink ends; returns what
    removes it."""
    _sink_listeners.append(listener)
    return lambda: _sink_listeners.remove(listener)


_TRACER_NAME = "stepwell"
_tracer: Any = None
"""The tracer of the provider the application configured, once it has one
(a provider is set at most once per process)."""


def configured_tracer() -> Any:
    """The tracer spans go to, or `None` while the application has configured
    no tracer provider (the API's placeholder, or its no-op one): those spans
    would be recorded nowhere, and opening them costs every run and step."""
    global _tracer
    if _tracer is None and trace is not None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            _tracer = provider.get_tracer(_TRACER_NAME)
    return _tracer


class RunObserver:
    """Turns one run's reports into logs, spans and ``stats``."""

    def __init__(self, request_id: str, stats: RunStats | None = None) -> None:
        self.request_id = request_id
        self.stats = stats if stats is not None else RunStats()
        self._tracer: Any = configured_tracer()
        self._response_span: Any = None
        self._step_spans: dict[str, Any] = {}

    @contextmanager
    def response(self) -> Iterator[None]:
        """Spans the run; its outcome becomes the span's state."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span(
            "stepwell.response",
            attributes={"stepwell.request_id": self.request_id},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            self._response_span = span
            try:
                yield
            except BaseException as error:
                span.set_attribute("stepwell.response.state", "failed")
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            span.set_attribute("stepwell.response.state", "completed")

    # ---------------------------------------------------------- called by the core

    def step_started(self, step: dict[str, Any]) -> dict[str, str] | None:
        """Logs the start; opens the step's span. Returns the headers for a model
        call's upstream request (its ``traceparent``)."""
        if step["kind"] == "model_call":
            log.debug("model call started: response %s step %d", self.request_id, step["sequence"])
        else:
            log.debug(
                "tool call %s started: response %s step %d",
                step["tool_name"],
                self.request_id,
                step["sequence"],
            )
        if self._tracer is None:
            return None
        parent = self._step_spans.get(step["scope_parent"] or "", self._response_span)
        attributes = {
            "stepwell.request_id": self.request_id,
            "stepwell.step.id": step["step_id"],
            "stepwell.step.kind": step["kind"],
            "stepwell.step.sequence": step["sequence"],
            "stepwell.step.depth": step["depth"],
        }
        if step["tool_name"] is not None:
            attributes["stepwell.tool.name"] = step["tool_name"]
        is_model = step["kind"] == "model_call"
        span = self._tracer.start_span(
            f"stepwell.{step['kind']}",
            context=trace.set_span_in_context(parent) if parent is not None else None,
            kind=SpanKind.CLIENT if is_model else SpanKind.INTERNAL,
            attributes=attributes,
        )
        self._step_spans[step["step_id"]] = span
        if not is_model:
            return None
        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return headers

    def step_finished(self, step: dict[str, Any], end: dict[str, Any]) -> None:
        """Logs the outcome; closes the step's span with its state, status and usage."""
        for listener in _step_listeners:
            listener(step, end)
        millis = end["duration"] * 1000
        error = end["error"] or {}
        if end["state"] == "failed":
            log.warning(
                "step %d (%s) of response %s failed after %.1f ms: %s %s: %s",
                step["sequence"],
                step["tool_name"] or step["kind"],
                self.request_id,
                millis,
                error.get("type"),
                error.get("code", ""),
                error.get("message", ""),
            )
        elif step["kind"] == "model_call":
            log.info(
                "model call finished: response %s step %d, HTTP %s in %.1f ms",
                self.request_id,
                step["sequence"],
                end["upstream_status"],
                millis,
            )
        else:
            log.debug(
                "tool call %s finished: response %s step %d in %.1f ms",
                step["tool_name"],
                self.request_id,
                step["sequence"],
                millis,
            )
        span = self._step_spans.pop(step["step_id"], None)
        if span is None:
            return
        span.set_attribute("stepwell.step.state", end["state"])
        if end["upstream_status"] is not None:
            span.set_attribute("http.response.status_code", end["upstream_status"])
        usage = end["usage"] or {}
        for key, attribute in (
            ("prompt_tokens", "gen_ai.usage.input_tokens"),
            ("completion_tokens", "gen_ai.usage.output_tokens"),
        ):
            if isinstance(usage.get(key), int):
                span.set_attribute(attribute, usage[key])
        if end["state"] == "failed":
            span.set_status(Status(StatusCode.ERROR, str(error.get("code") or error.get("type"))))
        span.end()

    def sink_detached(self, error: str) -> None:
        """The sink raised: it gets nothing more; the response goes on."""
        self.stats.sink_detached = True
        self.stats.sink_error = error
        log.warning(
            "event sink of response %s raised %s; it is detached and the response goes on",
            self.request_id,
            error,
        )

    def sink_finished(self, undelivered: int) -> None:
        """The response is terminal: ``undelivered`` events never reached the sink."""
        self.stats.dropped_events = undelivered
        for listener in _sink_listeners:
            listener(undelivered)
        if undelivered:
            log.warning(
                "%d live events of response %s never reached the sink "
                "(bridge full, sink detached, or drain timeout)",
                undelivered,
                self.request_id,
            )
        if self._response_span is not None:
            self._response_span.set_attribute("stepwell.events.dropped", undelivered)
