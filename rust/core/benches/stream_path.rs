//! The Rust stream path, stage by stage, on 200,000 vLLM-shaped chunks fed in
//! 16 KiB reads: SSE parsing, chunk parsing, reassembly, delta extraction.
//! `cargo bench -p stepwell-core --bench stream_path` prints ns per chunk.

// A benchmark's failure to parse its own input is a bug to stop on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use stepwell_core::chunk::{Chunk, RepeatedShape};
use stepwell_core::deltas::DeltaExtractor;
use stepwell_core::reassemble::Reassembler;
use stepwell_core::sse::SseParser;

const CHUNKS: usize = 200_000;

fn stream() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..CHUNKS {
        let chunk = serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": format!(" tok{}", i % 7)},
                         "logprobs": null, "finish_reason": null}],
        });
        body.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
    }
    body
}

fn run(reads: &[&[u8]], parse: bool, reassemble: bool, extract: bool, repeats: bool) -> usize {
    let mut parser = SseParser::default();
    let mut reassembler = Reassembler::default();
    let mut extractor = DeltaExtractor::default();
    let mut shape = RepeatedShape::default();
    let mut deltas = Vec::new();
    let mut events = 0;
    for read in reads {
        parser
            .feed_with(read, |event| {
                events += 1;
                if !parse {
                    return;
                }
                if repeats && let Some((index, text)) = shape.content(event.data) {
                    reassembler.push_content(index, text);
                    extractor.content(text, 1);
                    return;
                }
                let chunk = Chunk::parse(event.data).expect("bench chunks parse");
                if reassemble {
                    reassembler.push(&chunk);
                }
                if extract {
                    extractor.extract(&chunk, 1);
                }
                if repeats {
                    shape.learn(event.data, &chunk);
                }
            })
            .unwrap();
        extractor.flush(&mut deltas);
        deltas.clear();
    }
    std::hint::black_box(reassembler.finish());
    events
}

fn main() {
    let body = stream();
    let reads: Vec<&[u8]> = body.chunks(16 * 1024).collect();
    let stages = [
        ("SSE parse", false, false, false, false),
        ("+ chunk parse", true, false, false, false),
        ("+ reassembly", true, true, false, false),
        (
            "+ delta extraction (every chunk parsed)",
            true,
            true,
            true,
            false,
        ),
        (
            "the whole path, a chunk repeating the last one's shape not parsed again",
            true,
            true,
            true,
            true,
        ),
    ];
    println!("| stage | ns per chunk |\n|---|---|");
    for (name, parse, reassemble, extract, repeats) in stages {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            assert_eq!(run(&reads, parse, reassemble, extract, repeats), CHUNKS);
            best = best.min(start.elapsed().as_nanos() as f64 / CHUNKS as f64);
        }
        println!("| {name} | {best:.0} |");
    }
}
