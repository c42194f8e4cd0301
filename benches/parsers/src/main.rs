//! Parses one vLLM-shaped chunk (content delta) and one tool-call chunk over and
//! over with each parser into the same borrowed view of the fields stepwell
//! reads, and prints ns per chunk: `cargo run --release -p stepwell-bench-parsers`.
//!
//! - stepwell's scanner (`Chunk::parse`) and serde_json into `Chunk`: the real thing.
//! - sonic-rs (SIMD) into a mirror of `Chunk` whose raw fields are its `LazyValue`.
//! - simd-json into the same mirror with raw fields skipped (`IgnoredAny`: less
//!   work than the others do), from a copy of the bytes, since it parses in place.

// A benchmark's failure to parse its own input is a bug to stop on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Instant;

use serde::Deserialize;
use serde::de::IgnoredAny;
use stepwell_core::chunk::Chunk;

// The mirrors' fields are read by parsing them, which is what is measured.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a, R: Deserialize<'de>"))]
struct Mirror<'a, R> {
    id: Option<R>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    created: Option<R>,
    model: Option<R>,
    system_fingerprint: Option<R>,
    usage: Option<R>,
    #[serde(borrow)]
    choices: Option<Vec<MirrorChoice<'a>>>,
    error: Option<R>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct MirrorChoice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<MirrorDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct MirrorDelta<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<MirrorCall<'a>>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct MirrorCall<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<MirrorFunction<'a>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct MirrorFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// What every parser must find, so none is measured skipping the work.
fn content_len(choices: Option<&[MirrorChoice<'_>]>) -> usize {
    let delta = choices
        .and_then(|c| c.first())
        .and_then(|c| c.delta.as_ref());
    let text = delta.and_then(|d| d.content.as_deref()).map_or(0, str::len);
    let args = delta
        .and_then(|d| d.tool_calls.as_ref())
        .and_then(|calls| calls.first())
        .and_then(|call| call.function.as_ref())
        .and_then(|f| f.arguments.as_deref())
        .map_or(0, str::len);
    text + args
}

/// The same for stepwell's own view.
fn view_len(chunk: &Chunk<'_>) -> usize {
    let delta = chunk.choices().first().and_then(|c| c.delta.as_ref());
    let text = delta.and_then(|d| d.content.as_deref()).map_or(0, str::len);
    let args = delta
        .and_then(|d| d.tool_calls.as_ref())
        .and_then(|calls| calls.first())
        .and_then(|call| call.function.as_ref())
        .and_then(|f| f.arguments.as_deref())
        .map_or(0, str::len);
    text + args
}

fn stepwell(text: &str) -> usize {
    view_len(&Chunk::parse(text).unwrap())
}

fn serde_json_view(text: &str) -> usize {
    view_len(&Chunk::parse_with_serde(text).unwrap())
}

fn sonic(text: &str) -> usize {
    let chunk: Mirror<'_, sonic_rs::LazyValue<'_>> = sonic_rs::from_str(text).unwrap();
    black_box((&chunk.id, &chunk.object, &chunk.created, &chunk.model));
    black_box((&chunk.system_fingerprint, &chunk.usage, &chunk.error));
    content_len(chunk.choices.as_deref())
}

fn simd(text: &str, scratch: &mut Vec<u8>) -> usize {
    scratch.clear();
    scratch.extend_from_slice(text.as_bytes());
    let chunk: Mirror<'_, IgnoredAny> = simd_json::serde::from_slice(scratch).unwrap();
    black_box(&chunk.object);
    content_len(chunk.choices.as_deref())
}

fn time(name: &str, text: &str, mut parse: impl FnMut(&str) -> usize) {
    const N: usize = 1_000_000;
    let expected = parse(text);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..N {
            assert_eq!(parse(black_box(text)), expected);
        }
        best = best.min(start.elapsed().as_nanos() as f64 / N as f64);
    }
    println!("| {name} | {} | {best:.0} |", text.len());
}

fn main() {
    let content = serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "delta": {"content": " tok3"}, "logprobs": null,
                     "finish_reason": null}],
    })
    .to_string();
    let tool = serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                     "function": {"arguments": "{\"city\": \"Pa"}}]}, "logprobs": null,
                     "finish_reason": null}],
    })
    .to_string();
    println!("| parser | chunk bytes | ns per chunk |\n|---|---|---|");
    for text in [&content, &tool] {
        time("stepwell scanner (Chunk::parse)", text, stepwell);
        time(
            "serde_json (Chunk::parse_with_serde)",
            text,
            serde_json_view,
        );
        time("sonic-rs (SIMD)", text, sonic);
        let mut scratch = Vec::new();
        time("simd-json (raw fields skipped)", text, |t| {
            simd(t, &mut scratch)
        });
    }
}
