//! The loop end to end in pure Rust: an in-memory store, a tool executor, a
//! collecting sink, and a real HTTP upstream on loopback.

// Test scaffolding: a failed unwrap here is a failed test, which is its job.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use stepwell_core::observe::{StepEnd, StepInfo, Unobserved};
use stepwell_core::response_loop::LoopRun;
use stepwell_core::traits::SinkError;
use stepwell_core::{
    ChainStep, EventSink, HttpClient, HttpClientConfig, LoopConfig, LoopError, LoopEvent,
    LoopObserver, MultiStepStore, NextAction, RecordedStep, RequestContext, StepDescriptor,
    StepKind, StoreError, ToolError, ToolExecutor, ToolKind, ToolSchema, UpstreamTarget,
    run_response_loop,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
struct Row {
    id: String,
    sequence: i64,
    scope: Option<String>,
    state: &'static str,
    payload: Option<Value>,
}

/// Answers `next_action_for` from a script, one item per call.
struct ScriptStore {
    script: Mutex<Vec<NextAction>>,
    rows: Mutex<Vec<Row>>,
}

impl ScriptStore {
    fn new(mut script: Vec<NextAction>) -> Self {
        script.reverse();
        Self {
            script: Mutex::new(script),
            rows: Mutex::new(Vec::new()),
        }
    }

    fn rows(&self) -> Vec<Row> {
        self.rows.lock().unwrap().clone()
    }

    fn set(&self, id: &str, state: &'static str, payload: Option<Value>) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.iter_mut().find(|r| r.id == id).unwrap();
        row.state = state;
        row.payload = payload;
    }
}

impl MultiStepStore for ScriptStore {
    fn next_action_for<'a>(
        &'a self,
        _request_id: &'a str,
        _scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NextAction, StoreError>> {
        let next = self.script.lock().unwrap().pop();
        Box::pin(async move { next.ok_or_else(|| StoreError::new("script exhausted")) })
    }

    fn record_step<'a>(
        &'a self,
        _request_id: &'a str,
        scope_parent: Option<&'a str>,
        _prev_step: Option<&'a str>,
        descriptor: &'a StepDescriptor,
    ) -> BoxFuture<'a, Result<RecordedStep, StoreError>> {
        let mut rows = self.rows.lock().unwrap();
        let sequence = rows.len() as i64 + 1;
        let id = format!("step{sequence}");
        rows.push(Row {
            id: id.clone(),
            sequence,
            scope: scope_parent.map(str::to_owned),
            state: "pending",
            payload: None,
        });
        let sub_request_id =
            (descriptor.kind == StepKind::ModelCall).then(|| format!("sub-{sequence}"));
        Box::pin(async move {
            Ok(RecordedStep {
                id,
                sequence,
                sub_request_id,
            })
        })
    }

    fn mark_step_processing<'a>(
        &'a self,
        step_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.set(step_id, "processing", None);
        Box::pin(async { Ok(()) })
    }

    fn complete_step<'a>(
        &'a self,
        step_id: &'a str,
        payload: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.set(step_id, "completed", Some(payload));
        Box::pin(async { Ok(()) })
    }

    fn fail_step<'a>(
        &'a self,
        step_id: &'a str,
        error: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.set(step_id, "failed", Some(error));
        Box::pin(async { Ok(()) })
    }

    fn list_chain<'a>(
        &'a self,
        _request_id: &'a str,
        scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ChainStep>, StoreError>> {
        let chain = self
            .rows()
            .into_iter()
            .filter(|r| r.scope.as_deref() == scope_parent)
            .map(|r| ChainStep {
                id: r.id,
                sequence: r.sequence,
            })
            .collect();
        Box::pin(async move { Ok(chain) })
    }
}

struct Echo;

impl ToolExecutor for Echo {
    fn tools<'a>(
        &'a self,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Vec<ToolSchema>, stepwell_core::ExecutorError>> {
        Box::pin(async {
            Ok(vec![ToolSchema {
                name: "echo".into(),
                kind: ToolKind::Http,
            }])
        })
    }

    fn execute<'a>(
        &'a self,
        tool_name: &'a str,
        _tool_call_id: &'a str,
        arguments: &'a Value,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            match tool_name {
                "echo" => Ok(arguments.clone()),
                other => Err(ToolError::NotFound(other.into())),
            }
        })
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<LoopEvent>>);

impl EventSink for Collect {
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        self.0.lock().unwrap().extend(events);
        Box::pin(async { Ok(()) })
    }
}

/// Serves one SSE answer per connection on loopback; returns the endpoint.
async fn sse_upstream(frames: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let frames = frames.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head and the body (the test bodies are small).
                loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                let mut body = String::new();
                for frame in &frames {
                    body.push_str(&format!("data: {frame}\n\n"));
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
                socket.write_all(head.as_bytes()).await.unwrap();
                socket.write_all(body.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            });
        }
    });
    endpoint
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

async fn run(
    store: &ScriptStore,
    endpoint: String,
    sink: &dyn EventSink,
    config: LoopConfig,
) -> Result<Value, LoopError> {
    run_with(store, &Echo, endpoint, sink, config, &Unobserved).await
}

async fn run_with(
    store: &ScriptStore,
    executor: &dyn ToolExecutor,
    endpoint: String,
    sink: &dyn EventSink,
    config: LoopConfig,
    observer: &dyn LoopObserver,
) -> Result<Value, LoopError> {
    let client = HttpClient::new(&HttpClientConfig::default()).unwrap();
    let target = UpstreamTarget {
        endpoint,
        path: "/v1/chat/completions".into(),
        api_key: None,
    };
    let ctx = RequestContext::default();
    let run = LoopRun {
        store,
        executor,
        ctx: &ctx,
        target: &target,
        client: &client,
        config,
        request_id: "r",
        observer,
    };
    run_response_loop(&run, Some(sink), None).await
}

#[tokio::test]
async fn streaming_model_call_and_tool_fan_out() {
    let endpoint = sse_upstream(vec![
        chunk(json!({"role": "assistant", "content": "Hi"}), None),
        chunk(json!({"content": " there"}), Some("stop")),
        "[DONE]".into(),
    ])
    .await;
    let store = ScriptStore::new(vec![
        NextAction::AppendSteps(vec![
            StepDescriptor {
                kind: StepKind::ModelCall,
                request_payload: json!({"model": "m", "stream": true}).into(),
            },
            StepDescriptor {
                kind: StepKind::ToolCall,
                request_payload: json!({"name": "echo", "args": {"x": 1}}).into(),
            },
            StepDescriptor {
                kind: StepKind::ToolCall,
                request_payload: json!({"name": "missing"}).into(),
            },
        ]),
        NextAction::Complete(json!("done")),
    ]);
    let sink = Collect::default();
    let result = run(&store, endpoint, &sink, LoopConfig::default())
        .await
        .unwrap();
    assert_eq!(result, json!("done"));

    let rows = store.rows();
    assert_eq!(
        rows.iter().map(|r| r.state).collect::<Vec<_>>(),
        ["completed", "completed", "failed"]
    );
    let completion = rows[0].payload.clone().unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(rows[1].payload, Some(json!({"x": 1})));
    assert_eq!(rows[2].payload.as_ref().unwrap()["type"], "executor_error");

    let events = sink.0.lock().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let deltas: Vec<&LoopEvent> = events
        .iter()
        .filter(|e| e.kind.as_str() == "response.output_text.delta")
        .collect();
    assert_eq!(
        deltas
            .iter()
            .map(|e| e.data.delta().unwrap())
            .collect::<String>(),
        "Hi there"
    );
    assert!(deltas.iter().all(|e| e.sequence == 1));
    assert_eq!(events.last().unwrap().sequence, 4);
}

/// Keeps each batch the sink is handed, as the kinds of its events.
#[derive(Default)]
struct Batches(Mutex<Vec<Vec<String>>>);

impl EventSink for Batches {
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        let kinds = events.iter().map(|e| e.kind.as_str().to_owned()).collect();
        self.0.lock().unwrap().push(kinds);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn the_first_delta_goes_to_the_sink_before_the_rest_of_its_read() {
    // The whole answer arrives in one write, as a fast upstream's does.
    let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    frames.extend((0..200).map(|i| chunk(json!({"content": format!("w{i} ")}), None)));
    frames.push(chunk(json!({}), Some("stop")));
    frames.push("[DONE]".into());
    let endpoint = sse_upstream(frames).await;
    let store = ScriptStore::new(vec![
        NextAction::AppendSteps(vec![StepDescriptor {
            kind: StepKind::ModelCall,
            request_payload: json!({"model": "m", "stream": true}).into(),
        }]),
        NextAction::Complete(json!("done")),
    ]);
    // The loop runs as a task of its own, as the Python face runs it, so the
    // sink's drain can take the first delta while the read is parsed on.
    let batches = tokio::spawn(async move {
        let sink = Batches::default();
        run(&store, endpoint, &sink, LoopConfig::default())
            .await
            .unwrap();
        sink.0.into_inner().unwrap()
    })
    .await
    .unwrap();
    let delta = "response.output_text.delta";
    let deltas_in = |batch: &Vec<String>| batch.iter().filter(|k| *k == delta).count();
    let first = batches.iter().find(|b| deltas_in(b) > 0).unwrap();
    assert_eq!(deltas_in(first), 1, "{batches:?}");
    assert_eq!(batches.iter().map(deltas_in).sum::<usize>(), 200);
}

#[tokio::test]
async fn empty_action_and_iteration_cap() {
    let sink = Collect::default();
    let store = ScriptStore::new(vec![NextAction::AppendSteps(vec![])]);
    let error = run(
        &store,
        "http://127.0.0.1:9".into(),
        &sink,
        LoopConfig::default(),
    )
    .await;
    assert!(matches!(error, Err(LoopError::EmptyAction)));

    let tool = || {
        NextAction::AppendSteps(vec![StepDescriptor {
            kind: StepKind::ToolCall,
            request_payload: json!({"name": "echo"}).into(),
        }])
    };
    let store = ScriptStore::new(vec![tool(), tool(), tool()]);
    let config = LoopConfig {
        max_response_iterations: 2,
        ..LoopConfig::default()
    };
    let error = run(&store, "http://127.0.0.1:9".into(), &sink, config).await;
    assert!(matches!(error, Err(LoopError::MaxIterationsExceeded)));
    assert_eq!(store.rows().len(), 2);
    let last = sink.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.kind.as_str(), "response.failed");
    assert_eq!(last.sequence, 3);
}

/// A sink whose every call waits forever.
struct Stalled(AtomicUsize);

impl EventSink for Stalled {
    fn emit_many<'a>(&'a self, _events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::pending())
    }
}

fn tool_step(name: &str) -> StepDescriptor {
    StepDescriptor {
        kind: StepKind::ToolCall,
        request_payload: json!({"name": name, "args": {}}).into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_sink_holds_the_loop_only_for_the_drain_timeout() {
    let store = ScriptStore::new(vec![
        NextAction::AppendSteps(vec![tool_step("echo")]),
        NextAction::Complete(json!("done")),
    ]);
    let sink = Stalled(AtomicUsize::new(0));
    let config = LoopConfig {
        sink_drain_timeout: Some(Duration::from_secs(2)),
        ..LoopConfig::default()
    };
    let started = tokio::time::Instant::now();
    let journal = Journal::default();
    let endpoint = "http://127.0.0.1:9".to_string();
    let result = run_with(&store, &Echo, endpoint, &sink, config, &journal).await;
    assert_eq!(result.unwrap(), json!("done"));
    // created, the tool's output_item.done and completed: none was delivered.
    let journal = journal.0.lock().unwrap().clone();
    assert_eq!(journal.last().map(String::as_str), Some("undelivered 3"));
    // Time is paused: the loop returned when the drain timeout ran out, not later.
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(sink.0.load(Ordering::SeqCst), 1);
    assert_eq!(store.rows()[0].state, "completed");
}

/// Counts tool calls in flight and the most seen at once; each call waits for
/// the test to let it go, so calls overlap as much as the loop allows.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
}

impl ToolExecutor for Gauge {
    fn tools<'a>(
        &'a self,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Vec<ToolSchema>, stepwell_core::ExecutorError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn execute<'a>(
        &'a self,
        _tool_name: &'a str,
        _tool_call_id: &'a str,
        _arguments: &'a Value,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            // Yield a few times so every sibling that may start does start.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(self.calls.fetch_add(1, Ordering::SeqCst)))
        })
    }
}

#[tokio::test]
async fn bounded_fan_out_runs_at_most_the_limit_at_once() {
    for (limit, expected_most) in [(Some(4), 4), (None, 64)] {
        let steps: Vec<StepDescriptor> = (0..64).map(|_| tool_step("t")).collect();
        let store = ScriptStore::new(vec![
            NextAction::AppendSteps(steps),
            NextAction::Complete(json!("done")),
        ]);
        let gauge = Gauge::default();
        let config = LoopConfig {
            max_concurrent_steps: limit.and_then(NonZeroUsize::new),
            ..LoopConfig::default()
        };
        let sink = Collect::default();
        let result = run_with(
            &store,
            &gauge,
            "http://127.0.0.1:9".into(),
            &sink,
            config,
            &Unobserved,
        );
        assert_eq!(result.await.unwrap(), json!("done"));
        assert_eq!(gauge.most.load(Ordering::SeqCst), expected_most);
        let rows = store.rows();
        assert!(rows.iter().all(|r| r.state == "completed"));
        // Every sibling's result reaches the sink.
        let done: Vec<i64> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind.as_str() == "response.output_item.done")
            .map(|e| e.sequence)
            .collect();
        assert_eq!(done.len(), 64);
    }
}

/// An executor serving one `agent` tool and one `http` tool.
struct WithAgent;

impl ToolExecutor for WithAgent {
    fn tools<'a>(
        &'a self,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Vec<ToolSchema>, stepwell_core::ExecutorError>> {
        Box::pin(async {
            Ok(vec![
                ToolSchema {
                    name: "helper".into(),
                    kind: ToolKind::Agent,
                },
                ToolSchema {
                    name: "echo".into(),
                    kind: ToolKind::Http,
                },
            ])
        })
    }

    fn execute<'a>(
        &'a self,
        _tool_name: &'a str,
        _tool_call_id: &'a str,
        arguments: &'a Value,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move { Ok(arguments.clone()) })
    }
}

/// Records what it is told, as text.
#[derive(Default)]
struct Journal(Mutex<Vec<String>>);

impl LoopObserver for Journal {
    fn step_started(&self, step: &StepInfo<'_>) -> Vec<(String, String)> {
        self.0.lock().unwrap().push(format!(
            "start {} {} depth={}",
            step.sequence, step.kind, step.depth
        ));
        Vec::new()
    }

    fn step_finished(&self, step: &StepInfo<'_>, end: &StepEnd<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("end {} {}", step.sequence, end.state));
    }

    fn sink_finished(&self, undelivered: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("undelivered {undelivered}"));
    }
}

#[tokio::test]
async fn subagent_events_are_opt_in_and_tagged() {
    for forwarded in [false, true] {
        // Top level: call the agent; the agent's level: one echo, then done.
        let store = ScriptStore::new(vec![
            NextAction::AppendSteps(vec![tool_step("helper")]),
            NextAction::AppendSteps(vec![tool_step("echo")]),
            NextAction::Complete(json!("agent done")),
            NextAction::Complete(json!("done")),
        ]);
        let sink = Collect::default();
        let journal = Journal::default();
        let config = LoopConfig {
            subagent_events: forwarded,
            ..LoopConfig::default()
        };
        let endpoint = "http://127.0.0.1:9".to_string();
        let result = run_with(&store, &WithAgent, endpoint, &sink, config, &journal).await;
        assert_eq!(result.unwrap(), json!("done"));
        let events = sink.0.lock().unwrap().clone();
        let nested: Vec<&LoopEvent> = events.iter().filter(|e| e.depth() > 0).collect();
        if forwarded {
            assert_eq!(nested.len(), 1);
            assert_eq!(nested[0].kind.as_str(), "response.output_item.done");
            assert_eq!(nested[0].depth(), 1);
            assert_eq!(nested[0].scope_parent(), Some("step1"));
        } else {
            assert!(nested.is_empty());
        }
        // The agent's own terminal never reaches the stream: one completed, at the top.
        let terminals = events
            .iter()
            .filter(|e| e.kind.as_str() == "response.completed")
            .count();
        assert_eq!(terminals, 1);
        assert_eq!(
            journal.0.lock().unwrap().clone(),
            [
                "start 1 tool_call depth=0",
                "start 2 tool_call depth=1",
                "end 2 completed",
                "end 1 completed",
                "undelivered 0",
            ]
        );
    }
}
