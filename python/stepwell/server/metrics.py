"""Prometheus metrics of a server, in a registry of its own (so several apps in
one process do not clash): requests by route and status, responses in flight,
step and upstream latencies, upstream errors, and live events dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .. import _observe

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The metrics one app exposes on ``/metrics``."""

    def __init__(self, in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stepwell_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        in_flight_gauge = Gauge(
            "stepwell_responses_in_flight",
            "Responses this process is running.",
            registry=self.registry,
        )
        in_flight_gauge.set_function(in_flight)
        self.steps = Histogram(
            "stepwell_step_seconds",
            "Step durations, by kind and final state.",
            ["kind", "state"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream = Histogram(
            "stepwell_upstream_seconds",
            "Model call durations, by upstream HTTP status ('none' when none came).",
            ["status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "stepwell_upstream_errors",
            "Failed model calls, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "stepwell_dropped_events",
            "Live events a sink never received.",
            registry=self.registry,
        )
        self._unsubscribe = [
            _observe.on_step_finished(self._step),
            _observe.on_sink_finished(self.dropped.inc),
        ]

    def _step(self, step: dict[str, Any], end: dict[str, Any]) -> None:
        self.steps.labels(step["kind"], end["state"]).observe(end["duration"])
        if step["kind"] != "model_call":
            return
        status = end["upstream_status"]
        self.upstream.labels(str(status) if status is not None else "none").observe(end["duration"])
        if end["state"] == "failed":
            self.upstream_errors.labels(str((end["error"] or {}).get("code", "unknown"))).inc()

    def close(self) -> None:
        """Stops listening to the runs of this process."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
