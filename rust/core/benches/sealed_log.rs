//! Sealing a streamed response's event log, as the server does it: each batch
//! of frames sealed on its own as it is written, then the batches of the
//! ended response sealed into one log. Frames are shaped as `stepwell serve`
//! writes them (a 500-delta answer and the frames around it).
//! `cargo bench -p stepwell-core --bench sealed_log` prints ns per frame.

// A benchmark's failure to seal its own input is a bug to stop on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use stepwell_core::sealed_log::{Sealer, count_frames, seal};

const DELTAS: usize = 500;
const BATCH: usize = 128;
const ROUNDS: usize = 200;

fn response(status: &str, text: &str) -> String {
    format!(
        "{{\"id\":\"resp_0123456789abcdef0123456789abcdef\",\"object\":\"response\",\
         \"status\":\"{status}\",\"model\":\"stream-500\",\"output\":[{{\"type\":\"message\",\
         \"id\":\"msg_0123456789abcdef0123456789abcdef_1\",\"role\":\"assistant\",\
         \"content\":[{{\"type\":\"output_text\",\"text\":\"{text}\",\"annotations\":[]}}]}}],\
         \"tools\":[],\"usage\":null}}"
    )
}

/// The frames of one streamed response, in the batches a run hands over.
fn batches() -> Vec<String> {
    let item = "msg_0123456789abcdef0123456789abcdef_1";
    let mut frames = vec![
        format!(
            "event: response.created\ndata: {{\"response\":{},\"sequence_number\":0,\
             \"type\":\"response.created\"}}\n\n",
            response("in_progress", "")
        ),
        format!(
            "event: response.output_item.added\ndata: {{\"item\":{{\"id\":\"{item}\"}},\
             \"output_index\":0,\"sequence_number\":1,\"type\":\"response.output_item.added\"}}\n\n"
        ),
    ];
    let mut text = String::new();
    let tokens = [" the", " quick", " fox", "es"].into_iter().cycle();
    for (i, delta) in tokens.take(DELTAS).enumerate() {
        text.push_str(delta);
        frames.push(format!(
            "event: response.output_text.delta\ndata: {{\"content_index\":0,\"delta\":\"{delta}\",\
             \"item_id\":\"{item}\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":{},\
             \"type\":\"response.output_text.delta\"}}\n\n",
            i + 2
        ));
    }
    let next = DELTAS + 2;
    frames.push(format!(
        "event: response.output_text.done\ndata: {{\"content_index\":0,\"item_id\":\"{item}\",\
         \"output_index\":0,\"sequence_number\":{next},\"text\":\"{text}\",\
         \"type\":\"response.output_text.done\"}}\n\n"
    ));
    frames.push(format!(
        "event: response.completed\ndata: {{\"response\":{},\"sequence_number\":{},\
         \"type\":\"response.completed\"}}\n\n",
        response("completed", &text),
        next + 1
    ));
    frames.chunks(BATCH).map(|batch| batch.concat()).collect()
}

/// A stage's name, and its work on one response.
type Stage<'a> = (&'a str, Box<dyn FnMut() + 'a>);

fn per_frame(frames: usize, mut work: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            work();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / (ROUNDS * frames) as f64);
    }
    best
}

fn main() {
    let batches = batches();
    let frames: usize = batches.iter().map(|batch| count_frames(batch)).sum();
    let firsts: Vec<u64> = batches
        .iter()
        .scan(0, |next, batch| {
            let first = *next;
            *next += count_frames(batch) as u64;
            Some(first)
        })
        .collect();
    let rows: Vec<String> = batches
        .iter()
        .zip(&firsts)
        .map(|(batch, &first)| seal(batch, first).expect("bench frames seal"))
        .collect();
    let stages: [Stage<'_>; 3] = [
        (
            "count the frames of each batch",
            Box::new(|| {
                for batch in &batches {
                    std::hint::black_box(count_frames(batch));
                }
            }),
        ),
        (
            "seal each batch on its own (as it is written)",
            Box::new(|| {
                for (batch, &first) in batches.iter().zip(&firsts) {
                    std::hint::black_box(seal(batch, first));
                }
            }),
        ),
        (
            "seal the sealed batches into one log (at the end)",
            Box::new(|| {
                let mut sealer = Sealer::new(0);
                for (row, &first) in rows.iter().zip(&firsts) {
                    sealer
                        .push_sealed(row, first)
                        .expect("sealed rows read back");
                }
                std::hint::black_box(sealer.finish());
            }),
        ),
    ];
    println!("| stage ({frames} frames, batches of {BATCH}) | ns per frame |\n|---|---|");
    for (name, mut work) in stages {
        println!("| {name} | {:.0} |", per_frame(frames, &mut work));
    }
}
