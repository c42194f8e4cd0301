//! A chat-completions upstream for the benchmarks.
//!
//! `stepwell-bench-upstream [PORT]` listens on 127.0.0.1 (port 0 picks one) and
//! prints `listening on http://127.0.0.1:PORT`. Every POST is answered from
//! memory; the request body's `model` chooses the answer:
//!
//! - `stream-N` with `"stream": true`: N `chat.completion.chunk` events in
//!   vLLM's shape, each carrying 1–4 short tokens, then a usage chunk and
//!   `[DONE]`. Rendered once per N and cached, then written in large writes.
//! - `tool`: a call of the tool `lookup`, then (once the last message is the
//!   tool's result) one small `chat.completion`.
//! - anything else: one small non-streaming `chat.completion`.
//!
//! A POST whose body has no `messages` is a tool call: it is answered
//! `{"found": 1}`.
//!
//! HTTP/1.1 with keep-alive and `Content-Length`, so clients pool connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Cache = Arc<Mutex<HashMap<usize, Arc<Vec<u8>>>>>;

const TOKENS: [&str; 8] = [
    "The", " quick", " brown", " fox", " jumps", " over", " the", " dog.",
];

/// The SSE body of a stream of `chunks` chunks.
fn render_stream(chunks: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(chunks * 240);
    for i in 0..chunks {
        // 1–4 tokens per chunk, cycling, so deltas vary in size as real ones do.
        let tokens = 1 + i % 4;
        let content: String = TOKENS
            .iter()
            .cycle()
            .skip(i % TOKENS.len())
            .take(tokens)
            .copied()
            .collect();
        let chunk = serde_json::json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": content}, "logprobs": null, "finish_reason": null}],
        });
        body.extend_from_slice(b"data: ");
        body.extend_from_slice(chunk.to_string().as_bytes());
        body.extend_from_slice(b"\n\n");
    }
    let last = serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}],
    });
    let usage = serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "bench", "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": chunks + 10},
    });
    for extra in [last, usage] {
        body.extend_from_slice(format!("data: {extra}\n\n").as_bytes());
    }
    body.extend_from_slice(b"data: [DONE]\n\n");
    body
}

fn completion() -> Vec<u8> {
    serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    })
    .to_string()
    .into_bytes()
}

fn tool_call() -> Vec<u8> {
    serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_bench", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })
    .to_string()
    .into_bytes()
}

/// The non-streaming answer to `body`: a tool's result, a tool call, or text.
fn json_answer(request: &Value) -> Vec<u8> {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return br#"{"found": 1}"#.to_vec();
    };
    let last_role = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str);
    if request.get("model").and_then(Value::as_str) == Some("tool") && last_role != Some("tool") {
        return tool_call();
    }
    completion()
}

fn chunks_asked(request: &Value) -> Option<usize> {
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    request
        .get("model")?
        .as_str()?
        .strip_prefix("stream-")?
        .parse()
        .ok()
}

/// Reads one request; `None` when the client closed the connection.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(buf.get(..head_end)?).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = head_end + 4 + length;
            if buf.len() >= total {
                let body = buf.get(head_end + 4..total)?.to_vec();
                buf.drain(..total);
                return Some(body);
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    }
}

async fn serve(mut socket: TcpStream, cache: Cache) {
    let _ = socket.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(body) = read_request(&mut socket, &mut buf).await {
        // Parsed once: a long conversation's body is not read twice.
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (content_type, payload) = match chunks_asked(&request) {
            Some(chunks) => {
                let cached = cache.lock().ok().and_then(|c| c.get(&chunks).cloned());
                let payload = match cached {
                    Some(payload) => payload,
                    None => {
                        let payload = Arc::new(render_stream(chunks));
                        if let Ok(mut c) = cache.lock() {
                            c.insert(chunks, payload.clone());
                        }
                        payload
                    }
                };
                ("text/event-stream", payload)
            }
            None => ("application/json", Arc::new(json_answer(&request))),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        if socket.write_all(head.as_bytes()).await.is_err()
            || socket.write_all(&payload).await.is_err()
        {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let cache: Cache = Arc::default();
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(serve(socket, cache.clone()));
    }
}
