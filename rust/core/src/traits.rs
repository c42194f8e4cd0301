//! The three things the loop drives: a store, a tool executor and an event sink.
//!
//! Methods return boxed futures rather than `async fn` so the traits stay
//! object-safe and every future is `Send`: the loop runs on tokio's worker threads
//! and uses these traits as `dyn`.

use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::{ExecutorError, StoreError, ToolError};
use crate::events::LoopEvent;
use crate::types::{
    ChainStep, NextAction, RecordedStep, RequestContext, StepDescriptor, ToolSchema,
};

/// Persists steps and decides what comes next.
pub trait MultiStepStore: Send + Sync {
    /// Runs the transition function for one scope of a request.
    fn next_action_for<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NextAction, StoreError>>;

    /// Inserts a step after `prev_step`, allocating its sequence atomically.
    fn record_step<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
        prev_step: Option<&'a str>,
        descriptor: &'a StepDescriptor,
    ) -> BoxFuture<'a, Result<RecordedStep, StoreError>>;

    /// Records `descriptors` in order, each chained to the one before it (the
    /// first to `prev_step`), every one already `processing`: what
    /// `record_step` then `mark_step_processing` do for each, in one write
    /// where the store can make it one. `None` when the store does not offer
    /// it (the default): the loop then records each step and marks it before
    /// it runs.
    fn record_steps<'a>(
        &'a self,
        _request_id: &'a str,
        _scope_parent: Option<&'a str>,
        _prev_step: Option<&'a str>,
        _descriptors: &'a [StepDescriptor],
    ) -> BoxFuture<'a, Result<Option<Vec<RecordedStep>>, StoreError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Moves a step from `pending` to `processing`.
    fn mark_step_processing<'a>(
        &'a self,
        step_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores a step's result and marks it `completed`. The payload is handed
    /// over, not lent: it can be large, and a store converting it need not copy it first.
    fn complete_step<'a>(
        &'a self,
        step_id: &'a str,
        payload: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores a step's error and marks it `failed`.
    fn fail_step<'a>(
        &'a self,
        step_id: &'a str,
        error: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The steps of one scope, ordered by sequence.
    fn list_chain<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ChainStep>, StoreError>>;
}

/// Serves tools to the loop.
pub trait ToolExecutor: Send + Sync {
    /// The tools this executor serves, with their kinds.
    fn tools<'a>(
        &'a self,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Vec<ToolSchema>, ExecutorError>>;

    /// Runs an `http`-kind tool.
    fn execute<'a>(
        &'a self,
        tool_name: &'a str,
        tool_call_id: &'a str,
        arguments: &'a Value,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>>;
}

/// Receives the live events of a response.
///
/// An error from the sink never stops the loop: the bridge's drain detaches the
/// sink and reports it (see [`crate::bridge`]).
pub trait EventSink: Send + Sync {
    /// Delivers a batch of events, in order. An event counts as delivered once
    /// the call carrying it returned.
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>>;

    /// The most events one `emit_many` call may carry.
    fn max_batch(&self) -> usize {
        usize::MAX
    }
}

/// A sink failed to take events. Informational only.
#[derive(Debug, thiserror::Error)]
#[error("event sink failed: {0}")]
pub struct SinkError(pub String);
