//! What the loop reports as it runs, for logs, metrics and traces.
//!
//! The engine logs nothing itself and knows no tracing system: it tells a
//! [`LoopObserver`] when a step starts and ends, when live events were dropped
//! and when a sink was detached, and the embedding application turns that into
//! log lines, metrics and spans. The Python face does it with `logging` and
//! OpenTelemetry.
//!
//! Observer methods are plain calls made from the future that drives the loop
//! (never from the tasks that read upstream streams), a handful per step, so
//! they may be synchronous. They must not block.

use std::time::Duration;

use serde_json::Value;

use crate::types::StepKind;

/// One step, as the observer sees it.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo<'a> {
    /// The response the step belongs to.
    pub request_id: &'a str,
    /// The step's id.
    pub step_id: &'a str,
    /// The step's sequence within its response.
    pub sequence: i64,
    /// What the step does.
    pub kind: StepKind,
    /// The tool a tool step calls.
    pub tool_name: Option<&'a str>,
    /// 0 at the top level, 1 inside a sub-agent called by a top-level step, ...
    pub depth: u32,
    /// The step that called the sub-agent this step runs in, if any.
    pub scope_parent: Option<&'a str>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy)]
pub struct StepEnd<'a> {
    /// `completed` or `failed`, as persisted.
    pub state: &'a str,
    /// From the step's start to its result being persisted.
    pub duration: Duration,
    /// The upstream's HTTP status, for a model call that got an answer.
    pub upstream_status: Option<u16>,
    /// The completion's `usage` object, for a model call that has one.
    pub usage: Option<&'a Value>,
    /// The error payload persisted with `fail_step`, for a failed step.
    pub error: Option<&'a Value>,
}

/// Receives what the loop reports. Every method has a default that does nothing.
pub trait LoopObserver: Send + Sync {
    /// A step starts running. For a model call, the returned headers are sent on
    /// its upstream request (a W3C `traceparent`, say).
    fn step_started(&self, step: &StepInfo<'_>) -> Vec<(String, String)> {
        let _ = step;
        Vec::new()
    }

    /// A step's outcome was persisted.
    fn step_finished(&self, step: &StepInfo<'_>, end: &StepEnd<'_>) {
        let _ = (step, end);
    }

    /// The sink failed and was detached: it receives nothing more.
    fn sink_detached(&self, error: &str) {
        let _ = error;
    }

    /// The response is terminal: `undelivered` events never reached the sink
    /// (dropped on overflow, discarded after a detach, or still queued when the
    /// drain timeout ran out).
    fn sink_finished(&self, undelivered: u64) {
        let _ = undelivered;
    }
}

/// The observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl LoopObserver for Unobserved {}
