//! `stepwell-bench-loadgen URL[,URL...] BODY CONCURRENCY REQUESTS MARKER`
//!
//! POSTs the JSON `BODY` to `URL` `REQUESTS` times over `CONCURRENCY` concurrent
//! connections, reading every answer to its end. With several URLs (one per
//! server process), the connections are spread over them round-robin. In each answer it counts the
//! occurrences of `MARKER` (e.g. `event: response.output_text.delta` for an
//! Open Responses stream, `"delta":{"content"` for a chat-completions one; an
//! empty marker counts nothing) and times the first. Prints one JSON line:
//! requests, errors, seconds, markers, and time to first marker (p50, p99, ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

struct Outcome {
    ok: bool,
    markers: u64,
    first: Option<Duration>,
}

/// Counts `marker` in a stream of pieces, across piece boundaries.
struct Counter<'m> {
    marker: &'m [u8],
    tail: Vec<u8>,
    count: u64,
}

impl Counter<'_> {
    fn feed(&mut self, piece: &[u8]) -> u64 {
        if self.marker.is_empty() {
            return 0;
        }
        self.tail.extend_from_slice(piece);
        let found = self
            .tail
            .windows(self.marker.len())
            .filter(|w| *w == self.marker)
            .count() as u64;
        self.count += found;
        // Keep what could be the start of a marker split by the next piece.
        let keep = self.marker.len().saturating_sub(1).min(self.tail.len());
        let cut = self.tail.len() - keep;
        self.tail.drain(..cut);
        found
    }
}

async fn one(client: &reqwest::Client, url: &str, body: &str, marker: &[u8]) -> Outcome {
    let started = Instant::now();
    let failed = Outcome {
        ok: false,
        markers: 0,
        first: None,
    };
    let Ok(response) = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
    else {
        return failed;
    };
    if !response.status().is_success() {
        return failed;
    }
    let mut counter = Counter {
        marker,
        tail: Vec::new(),
        count: 0,
    };
    let mut first = None;
    let mut pieces = response.bytes_stream();
    while let Some(piece) = pieces.next().await {
        let Ok(piece) = piece else { return failed };
        if counter.feed(&piece) > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
    }
    Outcome {
        ok: true,
        markers: counter.count,
        first,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted
        .get(rank.min(sorted.len() - 1))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, body, concurrency, requests, marker] = args.as_slice() else {
        eprintln!("usage: stepwell-bench-loadgen URL BODY CONCURRENCY REQUESTS MARKER");
        std::process::exit(2);
    };
    let (Ok(concurrency), Ok(requests)) = (concurrency.parse::<usize>(), requests.parse::<usize>())
    else {
        eprintln!("CONCURRENCY and REQUESTS must be numbers");
        std::process::exit(2);
    };
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("cannot build the client: {error}");
            std::process::exit(1);
        }
    };
    let urls: Vec<String> = url.split(',').map(str::to_owned).collect();
    let shared = Arc::new((client, urls, body.clone(), marker.clone().into_bytes()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (shared, next) = (shared.clone(), next.clone());
            tokio::spawn(async move {
                let (client, urls, body, marker) = &*shared;
                let url = urls
                    .get(worker % urls.len().max(1))
                    .map_or("", String::as_str);
                let mut outcomes = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    outcomes.push(one(client, url, body, marker).await);
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(requests);
    for worker in workers {
        if let Ok(done) = worker.await {
            outcomes.extend(done);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let errors = outcomes.iter().filter(|o| !o.ok).count();
    let markers: u64 = outcomes.iter().map(|o| o.markers).sum();
    let mut firsts: Vec<Duration> = outcomes.iter().filter_map(|o| o.first).collect();
    firsts.sort();
    println!(
        "{}",
        serde_json::json!({
            "requests": outcomes.len(),
            "errors": errors,
            "seconds": seconds,
            "markers": markers,
            "first_p50_ms": percentile(&firsts, 0.5),
            "first_p99_ms": percentile(&firsts, 0.99),
        })
    );
}
