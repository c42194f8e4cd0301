//! Fires one model call: POST the step's request, and for a streaming request
//! parse the SSE as it arrives, forward live deltas to the bridge and reassemble
//! the final completion in the same pass.

use futures::StreamExt;
use serde_json::Value;

use crate::bridge::BridgeSender;
use crate::deltas::DeltaExtractor;
use crate::error::ExecutorError;
use crate::http::{HttpClient, describe};
use crate::reassemble::Reassembler;
use crate::sse::SseParser;
use crate::types::UpstreamTarget;

/// One model call to make.
pub struct ModelCall<'a> {
    /// Where to send it.
    pub target: &'a UpstreamTarget,
    /// The chat-completions body; `stream: true` selects the streaming path.
    pub request_payload: &'a Value,
    /// Stamped in the request-id header.
    pub sub_request_id: &'a str,
    /// The step's sequence, carried by every live event.
    pub sequence: i64,
}

/// Sends the call and returns the completion JSON. Live deltas go to `live`.
pub async fn fire_model_call(
    client: &HttpClient,
    call: &ModelCall<'_>,
    live: Option<&BridgeSender>,
) -> Result<Value, ExecutorError> {
    let wants_stream = call
        .request_payload
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let body = serde_json::to_vec(call.request_payload)
        .map_err(|e| ExecutorError::Execution(format!("model call body serialize: {e}")))?;
    let response = client
        .post_json(
            &call.target.url(),
            body,
            call.target.bearer(),
            call.sub_request_id,
            wants_stream,
        )
        .await?;

    let status = response.status();
    if !status.is_success() {
        let body = response
            .text()
            .await
            .map_err(|e| ExecutorError::Transport(describe(&e)))?;
        return Err(ExecutorError::Upstream {
            status: status.as_u16(),
            body,
        });
    }
    let is_sse = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if wants_stream && is_sse {
        read_stream(response, call.sequence, live).await
    } else {
        // An upstream may ignore `stream: true` and answer with one JSON body.
        let body = response
            .text()
            .await
            .map_err(|e| ExecutorError::Transport(describe(&e)))?;
        serde_json::from_str(&body)
            .map_err(|e| ExecutorError::Execution(format!("model call body parse: {e}")))
    }
}

async fn read_stream(
    response: reqwest::Response,
    sequence: i64,
    live: Option<&BridgeSender>,
) -> Result<Value, ExecutorError> {
    let mut parser = SseParser::default();
    let mut reassembler = Reassembler::default();
    let mut extractor = DeltaExtractor::default();
    let mut events = Vec::new();
    let mut deltas = Vec::new();
    let mut bytes = response.bytes_stream();
    let mut finished = false;
    while !finished {
        let chunk = match bytes.next().await {
            Some(chunk) => chunk.map_err(|e| ExecutorError::Transport(describe(&e)))?,
            None => {
                parser.finish(&mut events).map_err(sse_error)?;
                finished = true;
                bytes::Bytes::new()
            }
        };
        parser.feed(&chunk, &mut events).map_err(sse_error)?;
        for event in events.drain(..) {
            if event.data == "[DONE]" {
                finished = true;
                break;
            }
            // A malformed chunk carries no deltas; it must not end the stream.
            let Ok(parsed) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if let Some(error) = embedded_error(&parsed, &event.data) {
                return Err(error);
            }
            reassembler.push(&parsed);
            if let Some(live) = live {
                extractor.extract(&parsed, sequence, &mut deltas);
                for delta in deltas.drain(..) {
                    live.send(delta);
                }
            }
        }
    }
    Ok(reassembler.finish())
}

/// An error object inside the stream turns the answer into an error status: its
/// `code` when that is an HTTP error status, else 500.
fn embedded_error(parsed: &Value, raw: &str) -> Option<ExecutorError> {
    let error = parsed.get("error").filter(|e| e.is_object())?;
    let status = error
        .get("code")
        .and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(500);
    Some(ExecutorError::Upstream {
        status,
        body: raw.to_owned(),
    })
}

fn sse_error(e: crate::sse::SseError) -> ExecutorError {
    ExecutorError::Execution(format!("model call stream: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_error_status_comes_from_its_code() {
        let status = |v: Value| embedded_error(&v, "").and_then(|e| e.status());
        assert_eq!(status(json!({"error": {"code": 429}})), Some(429));
        assert_eq!(status(json!({"error": {"code": "503"}})), Some(503));
        assert_eq!(status(json!({"error": {"code": 42}})), Some(500));
        assert_eq!(status(json!({"error": {"message": "x"}})), Some(500));
        assert_eq!(status(json!({"choices": []})), None);
    }
}
