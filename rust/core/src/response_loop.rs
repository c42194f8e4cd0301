//! The multi-step response loop.
//!
//! [`run_response_loop`] asks the store what to do next in a scope, records the
//! steps it is told to append (chained in order), runs them concurrently, and
//! repeats until the store answers `Complete` or `Fail` or a safety cap trips.
//! `agent`-kind tool calls recurse into a sub-loop scoped under the calling step.
//!
//! What reaches the sink: `response.created` and the terminal event at the top
//! level only; live deltas and `output_item.done` for top-level steps only. A
//! sub-agent's steps never reach the user's stream (a deliberate change from
//! onwards, whose sub-agents leaked deltas into the parent's stream); its result
//! becomes the calling step's payload.
//!
//! Events flow through one bounded, ordered bridge drained by its own task
//! (see [`crate::bridge`]): a stalled client can delay a control event, but never
//! the reading of a model's stream, and a step completes when its upstream
//! answer is read, whatever the sink is doing.

use std::collections::HashMap;

use futures::future::{BoxFuture, join_all};
use serde_json::{Value, json};

use crate::bridge;
use crate::bridge::BridgeSender;
use crate::error::{ExecutorError, LoopError};
use crate::events::{EventData, LoopEvent, LoopEventKind};
use crate::http::HttpClient;
use crate::model_call::{ModelCall, spawn_model_call};
use crate::traits::{EventSink, MultiStepStore, ToolExecutor};
use crate::types::{
    ChainStep, LoopConfig, NextAction, RecordedStep, RequestContext, StepDescriptor, StepKind,
    ToolKind, UpstreamTarget,
};

/// Everything one response's loop works with. Shared by every level of recursion.
pub struct LoopRun<'a> {
    /// Persists steps and runs the transition function.
    pub store: &'a dyn MultiStepStore,
    /// Serves tool calls.
    pub executor: &'a dyn ToolExecutor,
    /// Handed to the executor on every call.
    pub ctx: &'a RequestContext,
    /// Where model calls go.
    pub target: &'a UpstreamTarget,
    /// The pooled client model calls go through.
    pub client: &'a HttpClient,
    /// Safety caps and bridge size.
    pub config: LoopConfig,
    /// The response being driven.
    pub request_id: &'a str,
}

/// Drives the response's `scope_parent` scope to a terminal state and returns
/// its final payload.
pub async fn run_response_loop(
    run: &LoopRun<'_>,
    sink: Option<&dyn EventSink>,
    scope_parent: Option<&str>,
) -> Result<Value, LoopError> {
    let Some(sink) = sink else {
        return run.level(None, scope_parent, 0).await;
    };
    let (tx, rx) = bridge::bounded(run.config.bridge_capacity, run.config.bridge_overflow);
    let drive = async move {
        let result = run.level(Some(&tx), scope_parent, 0).await;
        // Closing the bridge lets the drain finish once the sink has everything.
        drop(tx);
        result
    };
    let (result, _dropped) = tokio::join!(drive, rx.drain_into(sink));
    result
}

/// Queues a control event, if there is a sink.
fn emit(events: Option<&BridgeSender>, event: LoopEvent) {
    if let Some(events) = events {
        events.send_control(event);
    }
}

type ToolKinds = HashMap<String, ToolKind>;

impl LoopRun<'_> {
    /// One loop level. Boxed because a level recurses into sub-agent levels.
    fn level<'s>(
        &'s self,
        sink: Option<&'s BridgeSender>,
        scope_parent: Option<&'s str>,
        depth: u32,
    ) -> BoxFuture<'s, Result<Value, LoopError>> {
        Box::pin(async move {
            if depth > self.config.max_response_step_depth {
                return Err(LoopError::MaxDepthExceeded);
            }
            let top_level = depth == 0 && scope_parent.is_none();

            // Resolved once per level so dispatch never asks the executor again.
            let kinds: ToolKinds = self
                .executor
                .tools(self.ctx)
                .await?
                .into_iter()
                .map(|schema| (schema.name, schema.kind))
                .collect();

            // Resume-aware: chain onto whatever this scope already holds, so a worker
            // picking up a half-run response continues the chain, not a second one.
            let chain_at_start = self.store.list_chain(self.request_id, scope_parent).await?;
            let mut prev_step = chain_at_start.last().map(|s| s.id.clone());

            if top_level {
                let created = json!({
                    "id": format!("resp_{}", self.request_id),
                    "object": "response",
                    "status": "in_progress",
                });
                emit(sink, event(0, LoopEventKind::Created, created));
            }

            let mut iterations: u32 = 0;
            loop {
                if iterations >= self.config.max_response_iterations {
                    if top_level {
                        let sequence = max_sequence(&chain_at_start) + i64::from(iterations) + 1;
                        let payload = json!({"type": "max_iterations_exceeded"});
                        emit(sink, event(sequence, LoopEventKind::Failed, payload));
                    }
                    return Err(LoopError::MaxIterationsExceeded);
                }
                iterations += 1;

                match self
                    .store
                    .next_action_for(self.request_id, scope_parent)
                    .await?
                {
                    NextAction::Complete(payload) => {
                        if top_level && sink.is_some() {
                            let sequence = self.terminal_sequence(scope_parent).await;
                            let done = event(sequence, LoopEventKind::Completed, payload.clone());
                            emit(sink, done);
                        }
                        return Ok(payload);
                    }
                    NextAction::Fail(payload) => {
                        if top_level && sink.is_some() {
                            let sequence = self.terminal_sequence(scope_parent).await;
                            let failed = event(sequence, LoopEventKind::Failed, payload.clone());
                            emit(sink, failed);
                        }
                        return Err(LoopError::Failed(payload));
                    }
                    NextAction::AppendSteps(descriptors) => {
                        if descriptors.is_empty() {
                            return Err(LoopError::EmptyAction);
                        }
                        let recorded = self
                            .record_siblings(scope_parent, prev_step.as_deref(), &descriptors)
                            .await?;
                        // Sub-agent steps stay out of the user's stream.
                        let step_sink = if depth == 0 { sink } else { None };
                        let runs = descriptors.iter().zip(&recorded).map(|(descriptor, step)| {
                            self.execute_step(step_sink, &kinds, step, descriptor, depth)
                        });
                        for outcome in join_all(runs).await {
                            outcome?;
                        }
                        prev_step = recorded.last().map(|r| r.id.clone());
                    }
                }
            }
        })
    }

    /// Records siblings in order, each chained to the one before, so the transcript
    /// order is stable although they run concurrently.
    async fn record_siblings(
        &self,
        scope_parent: Option<&str>,
        mut prev: Option<&str>,
        descriptors: &[StepDescriptor],
    ) -> Result<Vec<RecordedStep>, LoopError> {
        let mut recorded: Vec<RecordedStep> = Vec::with_capacity(descriptors.len());
        for descriptor in descriptors {
            let step = self
                .store
                .record_step(self.request_id, scope_parent, prev, descriptor)
                .await?;
            recorded.push(step);
            prev = recorded.last().map(|r| r.id.as_str());
        }
        Ok(recorded)
    }

    /// Runs one step. The step's own failure is persisted with `fail_step` and
    /// swallowed; store failures and malformed steps abort the loop.
    async fn execute_step(
        &self,
        sink: Option<&BridgeSender>,
        kinds: &ToolKinds,
        step: &RecordedStep,
        descriptor: &StepDescriptor,
        depth: u32,
    ) -> Result<(), LoopError> {
        self.store.mark_step_processing(&step.id).await?;
        let outcome = match descriptor.kind {
            StepKind::ModelCall => {
                let sub_request_id = step.sub_request_id.as_deref().ok_or_else(|| {
                    ExecutorError::Execution(
                        "model_call step has no sub_request_id; \
                         MultiStepStore.record_step must set it for model calls"
                            .into(),
                    )
                })?;
                let call = ModelCall {
                    target: self.target.clone(),
                    request_payload: descriptor.request_payload.clone(),
                    sub_request_id: sub_request_id.to_owned(),
                    sequence: step.sequence,
                };
                spawn_model_call(self.client.clone(), call, sink.cloned())
                    .await
                    .map_err(LoopError::from)
            }
            StepKind::ToolCall => {
                let name = descriptor
                    .request_payload
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ExecutorError::Execution("tool_call request_payload missing 'name'".into())
                    })?;
                self.tool_call(kinds, step, name, &descriptor.request_payload, depth)
                    .await
            }
        };
        match outcome {
            Ok(payload) => {
                let done = (descriptor.kind == StepKind::ToolCall && sink.is_some()).then(|| {
                    // The model's id for the call when the step carries one (Open
                    // Responses needs it to pair call and output); else onwards'.
                    let call_id = match descriptor.request_payload.get("call_id") {
                        Some(Value::String(id)) => id.clone(),
                        _ => format!("call_step_{}", step.sequence),
                    };
                    json!({
                        "type": "function_call_output",
                        "call_id": call_id,
                        "output": payload.to_string(),
                    })
                });
                self.store.complete_step(&step.id, payload).await?;
                if let Some(done) = done {
                    emit(
                        sink,
                        event(step.sequence, LoopEventKind::OutputItemDone, done),
                    );
                }
                Ok(())
            }
            Err(error @ LoopError::Store(_)) => Err(error),
            Err(error) => {
                self.store.fail_step(&step.id, error.to_payload()).await?;
                Ok(())
            }
        }
    }

    async fn tool_call(
        &self,
        kinds: &ToolKinds,
        step: &RecordedStep,
        name: &str,
        request_payload: &Value,
        depth: u32,
    ) -> Result<Value, LoopError> {
        // A name the executor did not list dispatches as `http`: the executor
        // gets to say it does not know it.
        match kinds.get(name).copied().unwrap_or(ToolKind::Http) {
            ToolKind::Agent => {
                if depth + 1 > self.config.max_response_step_depth {
                    return Err(LoopError::MaxDepthExceeded);
                }
                self.level(None, Some(&step.id), depth + 1).await
            }
            ToolKind::Http => {
                let empty = json!({});
                let args = request_payload.get("args").unwrap_or(&empty);
                self.executor
                    .execute(name, &step.id, args, self.ctx)
                    .await
                    .map_err(|e| LoopError::Executor(e.into()))
            }
        }
    }

    /// Highest persisted sequence + 1: what a client reconnecting with a cursor
    /// expects. If the chain cannot be read the terminal event is still sent, with
    /// the largest sequence, so clients can close their stream.
    async fn terminal_sequence(&self, scope_parent: Option<&str>) -> i64 {
        match self.store.list_chain(self.request_id, scope_parent).await {
            Ok(chain) => max_sequence(&chain) + 1,
            Err(_) => i64::MAX,
        }
    }
}

fn max_sequence(chain: &[ChainStep]) -> i64 {
    chain.iter().map(|s| s.sequence).max().unwrap_or(0)
}

fn event(sequence: i64, kind: LoopEventKind, data: Value) -> LoopEvent {
    LoopEvent {
        sequence,
        kind,
        data: EventData::Json(data),
    }
}
