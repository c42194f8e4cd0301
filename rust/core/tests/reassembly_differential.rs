//! The reassembler against an independent one (`openai-reassembler`), on the
//! recorded fixtures that crate ships (SGLang and Dynamo streams) and on hostile
//! streams of our own. Both must agree on everything a client reads: content,
//! refusal, reasoning, tool calls, finish reasons, text, usage.

// Test scaffolding: a failed unwrap here is a failed test, which is its job.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use stepwell_core::chunk::Chunk;
use stepwell_core::reassemble::Reassembler;

/// The fixtures folder of the `openai-reassembler` crate cargo resolved.
fn fixtures_dir() -> PathBuf {
    // For this platform only (other platforms' crates need not be downloaded),
    // and offline when every crate already is.
    let host = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .unwrap();
    let host = String::from_utf8(host.stdout).unwrap();
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_owned();
    let metadata = |offline: bool| {
        let mut command = Command::new(env!("CARGO"));
        command.args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &host,
        ]);
        if offline {
            command.arg("--offline");
        }
        command
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .output()
            .unwrap()
    };
    let mut output = metadata(true);
    if !output.status.success() {
        output = metadata(false);
    }
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "openai-reassembler")
        .unwrap();
    let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
    manifest.parent().unwrap().join("fixtures")
}

/// What a client reads of a completion, with absent and null made equal.
fn reading(completion: &Value) -> Value {
    let text = |v: &Value| if v.is_null() { json!("") } else { v.clone() };
    let choices: Vec<Value> = completion["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let m = &c["message"];
            let calls: Vec<Value> = m["tool_calls"]
                .as_array()
                .map(|calls| {
                    calls
                        .iter()
                        .map(|t| {
                            json!([
                                t["id"],
                                t["function"]["name"],
                                text(&t["function"]["arguments"])
                            ])
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "index": c["index"],
                "finish_reason": c["finish_reason"],
                "text": text(&c["text"]),
                "content": text(&m["content"]),
                "refusal": text(&m["refusal"]),
                "reasoning": text(&m["reasoning_content"]),
                "tool_calls": calls,
            })
        })
        .collect();
    json!({"model": completion["model"], "choices": choices, "usage": completion["usage"]})
}

fn ours(events: &[String]) -> Value {
    let mut reassembler = Reassembler::default();
    for data in events {
        if let Some(chunk) = Chunk::parse(data) {
            reassembler.push(&chunk);
        }
    }
    reassembler.finish()
}

fn theirs(events: &[String]) -> Value {
    let mut reassembler = openai_reassembler::Reassembler::new();
    for data in events {
        reassembler.push(&eventsource_stream::Event {
            event: "message".into(),
            data: data.clone(),
            id: String::new(),
            retry: None,
        });
    }
    serde_json::from_str(&reassembler.finish().unwrap()).unwrap()
}

fn event_data(chunks: &[Value]) -> Vec<String> {
    chunks
        .iter()
        .map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

#[test]
fn agrees_on_the_recorded_fixtures() {
    let mut compared = 0;
    for provider in std::fs::read_dir(fixtures_dir()).unwrap() {
        for fixture in std::fs::read_dir(provider.unwrap().path()).unwrap() {
            let path = fixture.unwrap().path();
            let fixture: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            // The Responses API fixtures are not chat-completion streams.
            let Some(chunks) = fixture["chunks"].as_array() else {
                continue;
            };
            let events = event_data(chunks);
            assert_eq!(
                reading(&ours(&events)),
                reading(&theirs(&events)),
                "{}",
                path.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= 6, "only {compared} fixtures found");
}

fn chunk(choices: Value) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices})
}

#[test]
fn agrees_on_hostile_streams() {
    let cases: Vec<Vec<Value>> = vec![
        // Tool call name and arguments split oddly, ids only on first pieces,
        // interleaved calls, empty and null pieces.
        vec![
            chunk(
                json!([{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[
                {"index":0,"id":"a","type":"function","function":{"name":"ge","arguments":""}}]}}]),
            ),
            chunk(json!([{"index":0,"delta":{"tool_calls":[
                {"index":1,"id":"b","type":"function","function":{"name":"other","arguments":"{"}},
                {"index":0,"function":{"name":"t","arguments":null}}]}}])),
            chunk(
                json!([{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"k\":"}}]}}]),
            ),
            chunk(
                json!([{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"}"}}]}}]),
            ),
            chunk(
                json!([{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},
                          "finish_reason":"tool_calls"}]),
            ),
        ],
        // Two choices out of order, refusal, reasoning, unicode and escapes,
        // keep-alive chunks with empty choices, usage last.
        vec![
            chunk(json!([{"index":1,"delta":{"role":"assistant","content":"B\u{e9}"}}])),
            chunk(json!([])),
            chunk(
                json!([{"index":0,"delta":{"reasoning_content":"th\"in\nk"}},
                         {"index":1,"delta":{"refusal":"no 🙂"}}]),
            ),
            chunk(
                json!([{"index":0,"delta":{"content":"A\\u0000"},"finish_reason":"stop"},
                         {"index":1,"delta":{},"finish_reason":"content_filter"}]),
            ),
            json!({"id":"c","object":"chat.completion.chunk","model":"m","choices":[],
                   "usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}),
        ],
        // A finish reason that changes, and a late role.
        vec![
            chunk(json!([{"index":0,"delta":{"content":"x"},"finish_reason":"length"}])),
            chunk(
                json!([{"index":0,"delta":{"content":"y","role":"assistant"},"finish_reason":"stop"}]),
            ),
        ],
    ];
    for (n, chunks) in cases.iter().enumerate() {
        let events = event_data(chunks);
        assert_eq!(
            reading(&ours(&events)),
            reading(&theirs(&events)),
            "case {n}"
        );
    }
}

#[test]
fn malformed_chunks_are_skipped_not_fatal() {
    // openai-reassembler gives up on the first malformed chunk; stepwell skips it
    // and keeps the rest, so it is compared with the clean stream instead.
    let clean = vec![
        chunk(json!([{"index":0,"delta":{"content":"a"}}])),
        chunk(json!([{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}])),
    ];
    let mut dirty = event_data(&clean);
    dirty.insert(1, "{not json".into());
    dirty.insert(0, "[1, 2]".into());
    assert_eq!(
        reading(&ours(&dirty)),
        reading(&theirs(&event_data(&clean)))
    );
}
