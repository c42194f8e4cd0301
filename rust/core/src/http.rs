//! The HTTP client model calls go through, with fusillade's semantics: one
//! pooled reqwest client, Bearer auth only when a key is set, the step's
//! sub-request id stamped on every request, streaming chosen by the request's
//! path or its `stream` flag, and split timeouts.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
};
use tokio::time::Instant;

use crate::error::{ExecutorError, TimeoutPhase};
use crate::sse::DEFAULT_MAX_EVENT_BYTES;

/// The default name of the header carrying a step's `sub_request_id`.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "X-Request-Id";

/// How to build an [`HttpClient`].
#[derive(Debug, Clone)]
pub struct HttpClientConfig {
    /// Header that carries each model call's `sub_request_id`.
    pub request_id_header: String,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Paths whose requests stream even without `stream: true` in the body.
    pub streamable_paths: Vec<String>,
    /// From sending the request to the first SSE event (or, for a buffered
    /// answer, its first body bytes): connect, upload, headers and first event.
    pub first_chunk_timeout: Option<Duration>,
    /// Longest silence allowed between two body chunks.
    pub chunk_timeout: Option<Duration>,
    /// Whole request, from sending to the last byte of the answer.
    pub body_timeout: Option<Duration>,
    /// Longest time the upstream may stop taking the request body.
    pub upload_stall_timeout: Option<Duration>,
    /// Largest single SSE event accepted; larger fails the step.
    pub max_event_bytes: usize,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            request_id_header: DEFAULT_REQUEST_ID_HEADER.into(),
            headers: Vec::new(),
            streamable_paths: Vec::new(),
            first_chunk_timeout: Some(Duration::from_secs(120)),
            chunk_timeout: Some(Duration::from_secs(60)),
            body_timeout: Some(Duration::from_secs(600)),
            upload_stall_timeout: Some(Duration::from_secs(30)),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// A configuration the client cannot be built from.
#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    /// A header name is not a valid HTTP token.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A header value has characters HTTP forbids.
    #[error("invalid value for header {0:?}")]
    HeaderValue(String),
    /// reqwest could not build its client.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A pooled HTTP client for model calls. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    request_id_header: HeaderName,
    headers: HeaderMap,
    config: Arc<HttpClientConfig>,
}

/// One POST to send.
pub struct PostRequest<'a> {
    /// The full URL.
    pub url: &'a str,
    /// The JSON body.
    pub body: Bytes,
    /// The Bearer key, if any.
    pub bearer: Option<&'a str>,
    /// Stamped in the request-id header, when there is one.
    pub request_id: Option<&'a str>,
    /// Headers for this request only; an invalid one is left out.
    pub headers: &'a [(String, String)],
    /// Whether the answer is expected as an SSE stream.
    pub streaming: bool,
}

/// Bodies up to this size go out in one piece; larger ones are fed in pieces of
/// this size so an upload stall can be seen.
const UPLOAD_PIECE: usize = 64 * 1024;

impl HttpClient {
    /// Builds a client from `config`.
    pub fn new(config: &HttpClientConfig) -> Result<Self, HttpConfigError> {
        let request_id_header = HeaderName::from_bytes(config.request_id_header.as_bytes())
            .map_err(|_| HttpConfigError::HeaderName(config.request_id_header.clone()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpConfigError::HeaderName(name.clone()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| HttpConfigError::HeaderValue(name.clone()))?;
            headers.insert(header, value);
        }
        let inner = reqwest::Client::builder()
            .build()
            .map_err(|e| HttpConfigError::Build(describe(&e)))?;
        Ok(Self {
            inner,
            request_id_header,
            headers,
            config: Arc::new(config.clone()),
        })
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &HttpClientConfig {
        &self.config
    }

    /// Whether a request to `path` with this `stream` flag streams.
    pub fn is_streaming(&self, path: &str, stream_flag: bool) -> bool {
        stream_flag || self.config.streamable_paths.iter().any(|p| p == path)
    }

    /// POSTs a JSON body and returns the response once its headers arrived,
    /// within the first-chunk and body deadlines and the upload-stall limit.
    pub async fn post_json(
        &self,
        request: PostRequest<'_>,
        deadlines: &Deadlines,
    ) -> Result<reqwest::Response, ExecutorError> {
        let mut builder = self
            .inner
            .post(request.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                ACCEPT,
                if request.streaming {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        if let Some(request_id) = request.request_id {
            let request_id = HeaderValue::from_str(request_id).map_err(|_| {
                ExecutorError::Execution("sub_request_id is not a valid header value".into())
            })?;
            builder = builder.header(self.request_id_header.clone(), request_id);
        }
        for (name, value) in request.headers {
            // These come from observers (trace context), not from the caller's
            // configuration: a malformed one must not fail the model call.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                builder = builder.header(name, value);
            }
        }
        if let Some(key) = request.bearer {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                // Never echo the key: say only that it is malformed.
                ExecutorError::Execution(
                    "api_key contains characters not allowed in a header".into(),
                )
            })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        let progress = Arc::new(UploadProgress::default());
        builder = if request.body.len() > UPLOAD_PIECE {
            let length = request.body.len();
            let pieces = UploadPieces {
                body: request.body,
                sent: 0,
                progress: progress.clone(),
            };
            builder
                .header(CONTENT_LENGTH, length)
                .body(reqwest::Body::wrap_stream(pieces))
        } else {
            progress.finish();
            builder.body(request.body)
        };
        let send = builder.send();
        tokio::select! {
            sent = send => sent.map_err(|e| ExecutorError::Transport(describe(&e))),
            phase = deadlines.first_chunk_or_body() => Err(ExecutorError::Timeout(phase)),
            phase = upload_watchdog(&progress, self.config.upload_stall_timeout) => {
                Err(ExecutorError::Timeout(phase))
            }
        }
    }
}

/// The deadlines of one request, fixed when it is sent.
pub struct Deadlines {
    first_chunk: Option<(Instant, Duration)>,
    body: Option<(Instant, Duration)>,
    chunk: Option<Duration>,
}

impl Deadlines {
    /// Starts the clock for a request made under `config`.
    pub fn start(config: &HttpClientConfig) -> Self {
        let now = Instant::now();
        Self {
            first_chunk: config.first_chunk_timeout.map(|d| (now + d, d)),
            body: config.body_timeout.map(|d| (now + d, d)),
            chunk: config.chunk_timeout,
        }
    }

    /// Like [`Deadlines::start`], with the whole request also held to `limit`.
    pub fn start_within(config: &HttpClientConfig, limit: Duration) -> Self {
        let mut deadlines = Self::start(config);
        let body = config.body_timeout.map_or(limit, |d| d.min(limit));
        deadlines.body = Some((Instant::now() + body, body));
        deadlines
    }

    /// The first chunk arrived: from now on only the idle and body limits apply.
    pub fn first_chunk_seen(&mut self) {
        self.first_chunk = None;
    }

    /// Resolves when the earliest of the first-chunk and body deadlines passes.
    pub async fn first_chunk_or_body(&self) -> TimeoutPhase {
        let (at, phase) = self.earliest(None);
        sleep_until(at).await;
        phase
    }

    /// Resolves when the next chunk is overdue: idle limit from now, or an
    /// earlier first-chunk or body deadline.
    pub async fn next_chunk(&self) -> TimeoutPhase {
        let idle = self.chunk.map(|d| (Instant::now() + d, d));
        let (at, phase) = self.earliest(idle);
        sleep_until(at).await;
        phase
    }

    fn earliest(&self, idle: Option<(Instant, Duration)>) -> (Option<Instant>, TimeoutPhase) {
        let candidates = [
            self.first_chunk
                .map(|(at, d)| (at, TimeoutPhase::FirstChunk(d))),
            idle.map(|(at, d)| (at, TimeoutPhase::Chunk(d))),
            self.body.map(|(at, d)| (at, TimeoutPhase::Body(d))),
        ];
        match candidates.into_iter().flatten().min_by_key(|(at, _)| *at) {
            Some((at, phase)) => (Some(at), phase),
            None => (None, TimeoutPhase::Body(Duration::MAX)),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When the request body last made progress, shared with its watchdog.
#[derive(Debug, Default)]
struct UploadProgress {
    last: Mutex<Option<Instant>>,
    done: AtomicBool,
}

impl UploadProgress {
    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }
}

/// Feeds the body to hyper in pieces. hyper asks for the next piece only once
/// the previous one is written, so a gap between asks is an upload stall.
struct UploadPieces {
    body: Bytes,
    sent: usize,
    progress: Arc<UploadProgress>,
}

impl Stream for UploadPieces {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.sent >= this.body.len() {
            this.progress.finish();
            return Poll::Ready(None);
        }
        this.progress.touch();
        let end = (this.sent + UPLOAD_PIECE).min(this.body.len());
        let piece = this.body.slice(this.sent..end);
        this.sent = end;
        Poll::Ready(Some(Ok(piece)))
    }
}

/// Resolves with an upload-stall timeout if the body stops moving for `limit`.
/// The clock starts at the first piece, so connecting is not counted.
async fn upload_watchdog(progress: &UploadProgress, limit: Option<Duration>) -> TimeoutPhase {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    // Polling at a fraction of the limit bounds detection lateness to 1/4 of it.
    let tick = (limit / 4).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(tick).await;
        if progress.done.load(Ordering::Acquire) {
            return std::future::pending().await;
        }
        let last = progress.last.lock().ok().and_then(|l| *l);
        if let Some(last) = last
            && last.elapsed() >= limit
        {
            return TimeoutPhase::UploadStall(limit);
        }
    }
}

/// reqwest's own message plus its causes, which hold the useful part
/// ("connection refused", "connection reset"). The URL is left out: the
/// message ends up in step rows and responses, and the upstream's address is
/// the operator's business, not the client's.
pub fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    if let Some(url) = error.url() {
        message = message.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_header_names_are_rejected() {
        let config = HttpClientConfig {
            request_id_header: "bad header".into(),
            ..Default::default()
        };
        assert!(matches!(
            HttpClient::new(&config),
            Err(HttpConfigError::HeaderName(_))
        ));
    }

    #[test]
    fn streaming_is_chosen_by_flag_or_path() {
        let config = HttpClientConfig {
            streamable_paths: vec!["/v1/chat/completions".into()],
            ..Default::default()
        };
        let client = HttpClient::new(&config).unwrap();
        assert!(client.is_streaming("/v1/chat/completions", false));
        assert!(client.is_streaming("/other", true));
        assert!(!client.is_streaming("/other", false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wins() {
        let config = HttpClientConfig {
            first_chunk_timeout: Some(Duration::from_secs(5)),
            chunk_timeout: Some(Duration::from_secs(2)),
            body_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let mut deadlines = Deadlines::start(&config);
        assert_eq!(
            deadlines.first_chunk_or_body().await,
            TimeoutPhase::FirstChunk(Duration::from_secs(5))
        );
        deadlines.first_chunk_seen();
        assert_eq!(
            deadlines.next_chunk().await,
            TimeoutPhase::Chunk(Duration::from_secs(2))
        );
    }
}
