//! Fires one model call: POST the step's request, and for a streaming answer
//! parse the SSE as it arrives, forward live deltas to the bridge and reassemble
//! the final completion in the same pass, under the client's timeouts.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::bridge::BridgeSender;
use crate::chunk::{Chunk, RepeatedShape};
use crate::deltas::DeltaExtractor;
use crate::error::ExecutorError;
use crate::events::{EventScope, LoopEvent};
use crate::http::{Deadlines, HttpClient, PostRequest, describe};
use crate::reassemble::Reassembler;
use crate::sse::{SseError, SseEventRef, SseParser};
use crate::types::UpstreamTarget;

/// One model call to make.
#[derive(Debug, Clone)]
pub struct ModelCall {
    /// Where to send it.
    pub target: UpstreamTarget,
    /// The chat-completions body, encoded (once, without a copy of the
    /// step's payload: it carries the whole conversation so far).
    pub body: Bytes,
    /// Whether the body asks for a stream (`stream: true`).
    pub stream: bool,
    /// Stamped in the request-id header.
    pub sub_request_id: String,
    /// The step's sequence, carried by every live event.
    pub sequence: i64,
    /// The sub-agent the call runs in, carried by every live event; `None` at
    /// the top level.
    pub scope: Option<Arc<EventScope>>,
    /// Headers for this request only (a `traceparent`, say), after the client's own.
    pub headers: Vec<(String, String)>,
}

/// A model call's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelAnswer {
    /// The upstream's HTTP status (2xx: any other status is an error).
    pub status: u16,
    /// The completion: the one JSON body, or the stream reassembled.
    pub body: Value,
}

/// Runs the call as a tokio task of its own, so reading and parsing the stream
/// happen on tokio's workers whatever thread drives the loop (the Python face
/// drives it on the event loop's thread). Dropping the returned future aborts
/// the task, and with it the request.
pub async fn spawn_model_call(
    client: HttpClient,
    call: ModelCall,
    live: Option<BridgeSender>,
) -> Result<ModelAnswer, ExecutorError> {
    let task = AbortOnDrop(tokio::spawn(async move {
        fire_model_call(&client, &call, live.as_ref()).await
    }));
    match task.await {
        Ok(result) => result,
        Err(error) => Err(ExecutorError::Execution(format!(
            "model call task failed: {error}"
        ))),
    }
}

/// A task handle that aborts its task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Sends the call and returns its answer. Live deltas go to `live`.
pub async fn fire_model_call(
    client: &HttpClient,
    call: &ModelCall,
    live: Option<&BridgeSender>,
) -> Result<ModelAnswer, ExecutorError> {
    let streaming = client.is_streaming(&call.target.path, call.stream);
    let url = call.target.url();
    let request = PostRequest {
        url: &url,
        body: call.body.clone(),
        bearer: call.target.bearer(),
        request_id: Some(&call.sub_request_id),
        headers: &call.headers,
        streaming,
    };
    let mut deadlines = Deadlines::start(client.config());
    let response = client.post_json(request, &deadlines).await?;

    let status = response.status();
    let is_sse = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut bytes = response.bytes_stream();
    if !status.is_success() {
        let body = read_to_end(&mut bytes, &mut deadlines).await?;
        return Err(ExecutorError::Upstream {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let status = status.as_u16();
    if streaming && is_sse {
        let mut reader = StreamReader {
            parser: SseParser::new(client.config().max_event_bytes),
            reassembler: Reassembler::default(),
            extractor: DeltaExtractor::scoped(call.scope.clone()),
            shape: RepeatedShape::default(),
            sequence: call.sequence,
            live,
            first_sent: false,
        };
        let body = reader.read(&mut bytes, &mut deadlines).await?;
        return Ok(ModelAnswer { status, body });
    }
    // Buffered, or an upstream that ignored `stream: true` and sent one body.
    let body = read_to_end(&mut bytes, &mut deadlines).await?;
    let body = serde_json::from_slice(&body)
        .map_err(|e| ExecutorError::Execution(format!("model call body parse: {e}")))?;
    Ok(ModelAnswer { status, body })
}

/// The next body chunk, or the limit that ran out first.
pub(crate) async fn next_chunk(
    bytes: &mut (impl Stream<Item = reqwest::Result<Bytes>> + Unpin),
    deadlines: &Deadlines,
) -> Result<Option<Bytes>, ExecutorError> {
    tokio::select! {
        chunk = bytes.next() => chunk.transpose().map_err(|e| ExecutorError::Transport(describe(&e))),
        phase = deadlines.next_chunk() => Err(ExecutorError::Timeout(phase)),
    }
}

/// The whole body, within the deadlines.
pub(crate) async fn read_to_end(
    bytes: &mut (impl Stream<Item = reqwest::Result<Bytes>> + Unpin),
    deadlines: &mut Deadlines,
) -> Result<Vec<u8>, ExecutorError> {
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(bytes, deadlines).await? {
        deadlines.first_chunk_seen();
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// How long to wait, after `[DONE]`, for the end of the body.
const BODY_END_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// The state of one streamed answer being read.
struct StreamReader<'a> {
    parser: SseParser,
    reassembler: Reassembler,
    extractor: DeltaExtractor,
    /// The last chunk's shape: a chunk repeating it is not parsed again.
    shape: RepeatedShape,
    sequence: i64,
    live: Option<&'a BridgeSender>,
    /// Whether a live delta went over yet.
    first_sent: bool,
}

impl StreamReader<'_> {
    async fn read(
        &mut self,
        bytes: &mut (impl Stream<Item = reqwest::Result<Bytes>> + Unpin),
        deadlines: &mut Deadlines,
    ) -> Result<Value, ExecutorError> {
        let mut deltas = Vec::new();
        loop {
            let chunk = next_chunk(bytes, deadlines).await?;
            let (end, saw_event) = match (chunk.as_deref(), self.live) {
                (Some(read), Some(live)) if !self.first_sent => {
                    self.fold_first_early(read, live, &mut deltas).await?
                }
                (read, _) => self.fold(read, &mut deltas)?,
            };
            if saw_event {
                deadlines.first_chunk_seen();
            }
            // Every delta of this read goes over in one batch, before any ending.
            if let Some(live) = self.live
                && !deltas.is_empty()
            {
                live.send_deltas(&mut deltas).await;
            }
            match end {
                Some(End::Done) => {
                    // Read the body's end, which follows `[DONE]` at once, so the
                    // connection goes back to the pool; an upstream that holds it
                    // open loses the connection, not the answer.
                    let end = async { while let Some(Ok(_)) = bytes.next().await {} };
                    let _ = tokio::time::timeout(BODY_END_GRACE, end).await;
                    return Ok(std::mem::take(&mut self.reassembler).finish());
                }
                Some(End::Error(error)) => return Err(error),
                None if chunk.is_none() => {
                    // No `[DONE]`: complete only if every choice said it was finished.
                    return if self.reassembler.all_choices_finished() {
                        Ok(std::mem::take(&mut self.reassembler).finish())
                    } else {
                        Err(ExecutorError::StreamTruncated)
                    };
                }
                None => {}
            }
        }
    }

    /// Folds the reads up to the first live delta an event at a time, and sends
    /// that delta over the moment it is parsed, before the rest of the read.
    /// An upstream that answers fast delivers hundreds of events in one read;
    /// parsing and encoding all of them first would hold the first delta back
    /// for as long (a millisecond for 500). Later reads go over whole.
    async fn fold_first_early(
        &mut self,
        read: &[u8],
        live: &BridgeSender,
        deltas: &mut Vec<LoopEvent>,
    ) -> Result<(Option<End>, bool), ExecutorError> {
        let mut saw_event = false;
        let mut rest = read;
        // A blank line ends an event; a stream whose lines end in `\r\n` has
        // none of `\n\n` and is folded a read at a time, as later reads are.
        while let Some(cut) = memchr::memmem::find(rest, b"\n\n") {
            let (event, after) = rest.split_at(cut + 2);
            rest = after;
            let (end, saw) = self.fold(Some(event), deltas)?;
            saw_event |= saw;
            if end.is_some() {
                return Ok((end, saw_event));
            }
            if !deltas.is_empty() {
                live.send_deltas(deltas).await;
                self.first_sent = true;
                // The sink's drain was just woken: let it take the delta
                // before this task goes on parsing the rest of the read.
                tokio::task::yield_now().await;
                break;
            }
        }
        let (end, saw) = self.fold(Some(rest), deltas)?;
        Ok((end, saw_event || saw))
    }

    /// Parses one read (`None`: the end of the body) and folds its events into
    /// the reassembly and the live deltas, up to `[DONE]` or an embedded error.
    /// Returns how the stream ended, if it did, and whether any event came.
    fn fold(
        &mut self,
        chunk: Option<&[u8]>,
        deltas: &mut Vec<LoopEvent>,
    ) -> Result<(Option<End>, bool), ExecutorError> {
        let StreamReader {
            parser,
            reassembler,
            extractor,
            shape,
            sequence,
            live,
            ..
        } = self;
        let mut end = None;
        let mut saw_event = false;
        let mut on_event = |event: SseEventRef<'_>| {
            saw_event = true;
            if end.is_some() {
                return;
            }
            if event.data == "[DONE]" {
                end = Some(End::Done);
                return;
            }
            if let Some((index, text)) = shape.content(event.data) {
                reassembler.push_content(index, text);
                if live.is_some() {
                    extractor.content(text, *sequence);
                }
                return;
            }
            // A malformed chunk carries nothing usable; it must not end the stream.
            let Some(parsed) = Chunk::parse(event.data) else {
                return;
            };
            if let Some(error) = parsed.error {
                end = Some(End::Error(embedded_error(error.get(), event.data)));
                return;
            }
            reassembler.push(&parsed);
            if live.is_some() {
                extractor.extract(&parsed, *sequence);
            }
            shape.learn(event.data, &parsed);
        };
        match chunk {
            Some(chunk) => parser.feed_with(chunk, &mut on_event),
            None => parser.finish_with(&mut on_event),
        }
        .map_err(sse_error)?;
        // The read's deltas, sharing one buffer.
        extractor.flush(deltas);
        Ok((end, saw_event))
    }
}

/// How a stream ended before its bytes did.
enum End {
    Done,
    Error(ExecutorError),
}

/// An error object inside the stream turns the answer into an error status: its
/// `code` when that is an HTTP error status, else 500. The body is the event.
fn embedded_error(error: &str, raw: &str) -> ExecutorError {
    let code = serde_json::from_str::<Value>(error)
        .ok()
        .and_then(|e| e.get("code").cloned());
    let status = code
        .and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(500);
    ExecutorError::Upstream {
        status,
        body: raw.to_owned(),
    }
}

fn sse_error(e: SseError) -> ExecutorError {
    ExecutorError::InvalidStream(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_error_status_comes_from_its_code() {
        let status = |error: &str| embedded_error(error, "").status();
        assert_eq!(status(r#"{"code": 429}"#), Some(429));
        assert_eq!(status(r#"{"code": "503"}"#), Some(503));
        assert_eq!(status(r#"{"code": 42}"#), Some(500));
        assert_eq!(status(r#"{"message": "x"}"#), Some(500));
        assert_eq!(status("\"a string\""), Some(500));
    }
}
