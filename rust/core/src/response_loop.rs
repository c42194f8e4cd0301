//! The multi-step response loop.
//!
//! [`run_response_loop`] asks the store what to do next in a scope, records the
//! steps it is told to append (chained in order), runs them concurrently, and
//! repeats until the store answers `Complete` or `Fail` or a safety cap trips.
//! `agent`-kind tool calls recurse into a sub-loop scoped under the calling step.
//!
//! What reaches the sink: `response.created` and the terminal event at the top
//! level only; live deltas and `output_item.done` for top-level steps. A
//! sub-agent's steps reach the user's stream only when
//! [`LoopConfig::subagent_events`] asks for them, each event tagged with the
//! sub-agent's depth and calling step (onwards leaked them untagged into the
//! parent's stream); a sub-agent's result becomes the calling step's payload.
//!
//! Events flow through one bounded, ordered bridge drained concurrently with the
//! loop (see [`crate::bridge`]): a stalled client can delay a control event, but
//! never the reading of a model's stream, and a step completes when its upstream
//! answer is read, whatever the sink is doing. Once the response is terminal the
//! loop gives the sink [`LoopConfig::sink_drain_timeout`] to take what is still
//! queued, then returns: a client that stopped reading cannot hold it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, Either, join_all, select};
use futures::{StreamExt, stream};
use serde_json::{Value, json};

use crate::bridge::{self, BridgeSender};
use crate::error::{ExecutorError, LoopError, StoreError};
use crate::events::{EventData, EventScope, LoopEvent, LoopEventKind};
use crate::http::HttpClient;
use crate::items::{compact_json, response_id};
use crate::model_call::{ModelCall, spawn_model_call};
use crate::observe::{LoopObserver, StepEnd, StepInfo};
use crate::payload::Payload;
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
    /// Safety caps, fan-out bound and sink handling.
    pub config: LoopConfig,
    /// The response being driven.
    pub request_id: &'a str,
    /// Told of every step and of the sink's fate ([`crate::observe::Unobserved`]
    /// for nobody).
    pub observer: &'a dyn LoopObserver,
}

/// Drives the response's `scope_parent` scope to a terminal state and returns
/// its final payload.
///
/// With a sink, events are delivered while the loop runs; once it is terminal,
/// what is still queued gets `config.sink_drain_timeout` to reach the sink and
/// is then dropped. The observer hears how many events never reached it.
pub async fn run_response_loop(
    run: &LoopRun<'_>,
    sink: Option<&dyn EventSink>,
    scope_parent: Option<&str>,
) -> Result<Value, LoopError> {
    let Some(sink) = sink else {
        return run.level(None, scope_parent, 0).await;
    };
    let (tx, rx) = bridge::bounded(run.config.bridge_capacity, run.config.bridge_overflow);
    let observer = run.observer;
    let mut drain = Box::pin(rx.drain_into(sink, |error| observer.sink_detached(&error.0)));
    let result = {
        let drive = std::pin::pin!(run.level(Some(&tx), scope_parent, 0));
        match select(drive, drain.as_mut()).await {
            Either::Left((result, _)) => result,
            // The drain ends only once every sender is gone, which is after the
            // loop; this arm is here for completeness.
            Either::Right(((), drive)) => drive.await,
        }
    };
    // Closing the bridge lets the drain finish once the sink has everything.
    drop(tx);
    match run.config.sink_drain_timeout {
        Some(limit) => {
            let _ = tokio::time::timeout(limit, drain.as_mut()).await;
        }
        None => drain.as_mut().await,
    }
    // Dropping the drain cancels a sink call still in flight.
    drop(drain);
    observer.sink_finished(rx.undelivered());
    result
}

type ToolKinds = HashMap<String, ToolKind>;

/// One loop level: where its steps' events go and where it sits in the tree.
struct Level<'s> {
    /// Where this level's steps send their events, if anywhere.
    sink: Option<&'s BridgeSender>,
    /// The step whose sub-agent this level runs, if any.
    scope_parent: Option<&'s str>,
    depth: u32,
    /// Carried by this level's events; `None` at the top level.
    scope: Option<Arc<EventScope>>,
}

impl Level<'_> {
    fn event(&self, sequence: i64, kind: LoopEventKind, data: Value) -> LoopEvent {
        LoopEvent {
            scope: self.scope.clone(),
            ..LoopEvent::new(sequence, kind, EventData::Json(data))
        }
    }

    /// Queues a control event, if there is a sink.
    fn emit(&self, sequence: i64, kind: LoopEventKind, data: Value) {
        if let Some(sink) = self.sink {
            sink.send_control(self.event(sequence, kind, data));
        }
    }
}

impl LoopRun<'_> {
    /// One loop level. Boxed because a level recurses into sub-agent levels.
    /// `sink` is the response's bridge, whatever the level.
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
            let level = Level {
                // Sub-agent steps stay out of the user's stream unless asked for.
                sink: sink.filter(|_| depth == 0 || self.config.subagent_events),
                scope_parent,
                depth,
                scope: scope_parent.filter(|_| depth > 0).map(|parent| {
                    Arc::new(EventScope {
                        depth,
                        scope_parent: parent.to_owned(),
                    })
                }),
            };

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
            // The scope's highest persisted sequence, kept up to date as steps are
            // recorded: the terminal event is numbered after it without another
            // read of the chain.
            let mut last_sequence = max_sequence(&chain_at_start);

            if top_level {
                let created = json!({
                    "id": response_id(self.request_id),
                    "object": "response",
                    "status": "in_progress",
                });
                level.emit(0, LoopEventKind::Created, created);
            }

            let mut iterations: u32 = 0;
            loop {
                if iterations >= self.config.max_response_iterations {
                    if top_level {
                        let sequence = max_sequence(&chain_at_start) + i64::from(iterations) + 1;
                        let payload = json!({"type": "max_iterations_exceeded"});
                        level.emit(sequence, LoopEventKind::Failed, payload);
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
                        if top_level && level.sink.is_some() {
                            let sequence = last_sequence + 1;
                            level.emit(sequence, LoopEventKind::Completed, payload.clone());
                        }
                        return Ok(payload);
                    }
                    NextAction::Fail(payload) => {
                        if top_level && level.sink.is_some() {
                            let sequence = last_sequence + 1;
                            level.emit(sequence, LoopEventKind::Failed, payload.clone());
                        }
                        return Err(LoopError::Failed(payload));
                    }
                    NextAction::AppendSteps(descriptors) => {
                        if descriptors.is_empty() {
                            return Err(LoopError::EmptyAction);
                        }
                        let prev = prev_step.as_deref();
                        let (recorded, marked) = match self
                            .store
                            .record_steps(self.request_id, scope_parent, prev, &descriptors)
                            .await?
                        {
                            Some(recorded) if recorded.len() == descriptors.len() => {
                                (recorded, true)
                            }
                            Some(recorded) => {
                                return Err(LoopError::Store(StoreError::new(format!(
                                    "record_steps returned {} steps for {} descriptors",
                                    recorded.len(),
                                    descriptors.len()
                                ))));
                            }
                            None => (
                                self.record_siblings(scope_parent, prev, &descriptors)
                                    .await?,
                                false,
                            ),
                        };
                        // Built in a loop, not with a closure: a closure here makes the
                        // boxed future's lifetimes too general for the compiler.
                        let mut runs = Vec::with_capacity(recorded.len());
                        for (descriptor, step) in descriptors.iter().zip(&recorded) {
                            let run =
                                self.execute_step(&level, sink, &kinds, step, descriptor, marked);
                            runs.push(run);
                        }
                        // Bounded, siblings start in order and results come back in
                        // order; a sibling waits for a slot, never for a sibling's sibling.
                        let outcomes: Vec<Result<(), LoopError>> = match self
                            .config
                            .max_concurrent_steps
                        {
                            None => join_all(runs).await,
                            Some(limit) => stream::iter(runs).buffered(limit.get()).collect().await,
                        };
                        for outcome in outcomes {
                            outcome?;
                        }
                        prev_step = recorded.last().map(|r| r.id.clone());
                        let newest = recorded.iter().map(|r| r.sequence).max().unwrap_or(0);
                        last_sequence = last_sequence.max(newest);
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

    /// Runs one step, first marking it processing unless `marked` (recorded so).
    /// The step's own failure is persisted with `fail_step` and swallowed; store
    /// failures and malformed steps abort the loop. `sink` is the response's
    /// bridge, handed on to a sub-agent this step may run.
    async fn execute_step(
        &self,
        level: &Level<'_>,
        sink: Option<&BridgeSender>,
        kinds: &ToolKinds,
        step: &RecordedStep,
        descriptor: &StepDescriptor,
        marked: bool,
    ) -> Result<(), LoopError> {
        if !marked {
            self.store.mark_step_processing(&step.id).await?;
        }
        // A tool call's payload is read here; a model call's goes upstream as
        // it is, so a long conversation held as text is never parsed.
        let payload = match descriptor.kind {
            StepKind::ModelCall => Cow::Owned(Value::Null),
            StepKind::ToolCall => descriptor.request_payload.value(),
        };
        let payload = payload.as_ref();
        let tool_name = match descriptor.kind {
            StepKind::ModelCall => None,
            StepKind::ToolCall => {
                Some(payload.get("name").and_then(Value::as_str).ok_or_else(|| {
                    ExecutorError::Execution("tool_call request_payload missing 'name'".into())
                })?)
            }
        };
        let info = StepInfo {
            request_id: self.request_id,
            step_id: &step.id,
            sequence: step.sequence,
            kind: descriptor.kind,
            tool_name,
            depth: level.depth,
            scope_parent: level.scope_parent,
        };
        let started = Instant::now();
        let headers = self.observer.step_started(&info);
        let (outcome, upstream_status) = match tool_name {
            None => {
                let request = &descriptor.request_payload;
                self.model_call(level, step, request, headers).await?
            }
            Some(name) => {
                let result = self.tool_call(sink, kinds, step, name, payload, level.depth);
                (result.await, None)
            }
        };
        match outcome {
            Ok(result) => {
                let output = tool_name
                    .filter(|_| level.sink.is_some())
                    .map(|name| tool_result(step, payload, name, compact_json(&result), None));
                let usage = result.get("usage").filter(|_| tool_name.is_none()).cloned();
                self.store.complete_step(&step.id, result).await?;
                if let Some(output) = output {
                    level.emit(step.sequence, LoopEventKind::OutputItemDone, output);
                }
                let end = StepEnd {
                    state: "completed",
                    duration: started.elapsed(),
                    upstream_status,
                    usage: usage.as_ref(),
                    error: None,
                };
                self.observer.step_finished(&info, &end);
                Ok(())
            }
            Err(error @ LoopError::Store(_)) => Err(error),
            Err(error) => {
                let failure = error.to_payload();
                let upstream_status = match &error {
                    LoopError::Executor(e) => e.status(),
                    _ => None,
                };
                self.store.fail_step(&step.id, failure.clone()).await?;
                if let Some(name) = tool_name.filter(|_| level.sink.is_some()) {
                    // What the model is told: the error's message.
                    let message = failure
                        .get("message")
                        .cloned()
                        .unwrap_or_else(|| json!("the tool failed"));
                    let output = compact_json(&json!({ "error": message }));
                    let result = tool_result(step, payload, name, output, Some(message));
                    level.emit(step.sequence, LoopEventKind::OutputItemDone, result);
                }
                let end = StepEnd {
                    state: "failed",
                    duration: started.elapsed(),
                    upstream_status,
                    usage: None,
                    error: Some(&failure),
                };
                self.observer.step_finished(&info, &end);
                Ok(())
            }
        }
    }

    /// Fires a model call; returns its outcome and the upstream's status on
    /// success. A step without a `sub_request_id` aborts the loop.
    async fn model_call(
        &self,
        level: &Level<'_>,
        step: &RecordedStep,
        request_payload: &Payload,
        headers: Vec<(String, String)>,
    ) -> Result<(Result<Value, LoopError>, Option<u16>), LoopError> {
        let sub_request_id = step.sub_request_id.as_deref().ok_or_else(|| {
            ExecutorError::Execution(
                "model_call step has no sub_request_id; \
                 MultiStepStore.record_step must set it for model calls"
                    .into(),
            )
        })?;
        let body = request_payload
            .to_json()
            .map_err(|e| ExecutorError::Execution(format!("model call body serialize: {e}")))?;
        let call = ModelCall {
            target: self.target.clone(),
            body,
            stream: request_payload.streams(),
            sub_request_id: sub_request_id.to_owned(),
            sequence: step.sequence,
            scope: level.scope.clone(),
            headers,
        };
        Ok(
            match spawn_model_call(self.client.clone(), call, level.sink.cloned()).await {
                Ok(answer) => (Ok(answer.body), Some(answer.status)),
                Err(error) => (Err(LoopError::from(error)), None),
            },
        )
    }

    async fn tool_call(
        &self,
        sink: Option<&BridgeSender>,
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
                self.level(sink, Some(&step.id), depth + 1).await
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
}

fn max_sequence(chain: &[ChainStep]) -> i64 {
    chain.iter().map(|s| s.sequence).max().unwrap_or(0)
}

/// The event body of a tool step's result: the call it answers (the model's
/// id for it when the step carries one, else one made from the sequence), the
/// tool's name, the text the model is given and, for a failed step, the error.
fn tool_result(
    step: &RecordedStep,
    request: &Value,
    name: &str,
    output: String,
    error: Option<Value>,
) -> Value {
    let call_id = match request.get("call_id") {
        Some(Value::String(id)) => id.clone(),
        _ => format!("call_step_{}", step.sequence),
    };
    // The arguments as the call made them, for a stream that shows the call
    // with its result (an MCP call's item carries both).
    let arguments = request.get("args").map(compact_json);
    let mut result = json!({
        "type": "function_call_output",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "output": output,
    });
    if let (Some(error), Some(object)) = (error, result.as_object_mut()) {
        object.insert("error".into(), error);
    }
    result
}
