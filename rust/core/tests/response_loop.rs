//! The loop end to end in pure Rust: an in-memory store, a tool executor, a
//! collecting sink, and a real HTTP upstream on loopback.

// Test scaffolding: a failed unwrap here is a failed test, which is its job.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::Mutex;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use stepwell_core::response_loop::LoopRun;
use stepwell_core::traits::SinkError;
use stepwell_core::{
    ChainStep, EventSink, HttpClient, HttpClientConfig, LoopConfig, LoopError, LoopEvent,
    MultiStepStore, NextAction, RecordedStep, RequestContext, StepDescriptor, StepKind, StoreError,
    ToolError, ToolExecutor, ToolKind, ToolSchema, UpstreamTarget, run_response_loop,
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
    sink: &Collect,
    config: LoopConfig,
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
        executor: &Echo,
        ctx: &ctx,
        target: &target,
        client: &client,
        config,
        request_id: "r",
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
                request_payload: json!({"model": "m", "stream": true}),
            },
            StepDescriptor {
                kind: StepKind::ToolCall,
                request_payload: json!({"name": "echo", "args": {"x": 1}}),
            },
            StepDescriptor {
                kind: StepKind::ToolCall,
                request_payload: json!({"name": "missing"}),
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
            request_payload: json!({"name": "echo"}),
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
