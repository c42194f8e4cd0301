//! Error types of the engine, one per layer: the store's, a tool's, a step's
//! execution, and the loop's own.

use std::error::Error as StdError;
use std::time::Duration;

use serde_json::{Value, json};

/// Any error a trait implementation wants to carry as the cause.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The store failed. Aborts the loop: a store that cannot persist cannot be trusted
/// to resume.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl StoreError {
    /// A store error with no underlying cause.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A store error caused by `source` (kept so bindings can chain it).
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The underlying cause, if any.
    pub fn cause(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

/// A tool call failed; the step is marked failed and the loop goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The executor does not serve this tool.
    #[error("tool not found: {0}")]
    NotFound(String),
    /// The tool ran and failed.
    #[error("{0}")]
    ExecutionError(String),
    /// The model's arguments do not fit the tool.
    #[error("invalid tool arguments: {0}")]
    InvalidArguments(String),
    /// The tool took too long.
    #[error("tool timed out: {0}")]
    Timeout(String),
}

/// Which limit of a model call ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// No first chunk (connect, upload, headers, first event) in time.
    FirstChunk(Duration),
    /// Too long a silence between two chunks.
    Chunk(Duration),
    /// The whole request took too long.
    Body(Duration),
    /// The upstream stopped taking the request body.
    UploadStall(Duration),
}

impl TimeoutPhase {
    /// The stable code naming this limit in error payloads.
    pub fn code(self) -> &'static str {
        match self {
            TimeoutPhase::FirstChunk(_) => "first_chunk_timeout",
            TimeoutPhase::Chunk(_) => "chunk_timeout",
            TimeoutPhase::Body(_) => "body_timeout",
            TimeoutPhase::UploadStall(_) => "upload_stall_timeout",
        }
    }

    fn limit(self) -> Duration {
        match self {
            TimeoutPhase::FirstChunk(d)
            | TimeoutPhase::Chunk(d)
            | TimeoutPhase::Body(d)
            | TimeoutPhase::UploadStall(d) => d,
        }
    }
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            TimeoutPhase::FirstChunk(_) => "no first chunk",
            TimeoutPhase::Chunk(_) => "no chunk",
            TimeoutPhase::Body(_) => "response not complete",
            TimeoutPhase::UploadStall(_) => "request body upload stalled",
        };
        write!(f, "{what} within {:?}", self.limit())
    }
}

/// A step could not be executed.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The named tool does not exist.
    #[error("tool not found: {0}")]
    NotFound(String),
    /// The step ran and failed (tool error, malformed step, unparseable body).
    #[error("{0}")]
    Execution(String),
    /// The upstream answered with a non-2xx status.
    #[error("model call returned HTTP {status}: {body}")]
    Upstream {
        /// The HTTP status.
        status: u16,
        /// The response body, verbatim.
        body: String,
    },
    /// The request never got a complete answer (connect, reset, read failure).
    #[error("model call transport error: {0}")]
    Transport(String),
    /// A limit of the model call ran out.
    #[error("model call timed out: {0}")]
    Timeout(TimeoutPhase),
    /// The stream ended before `[DONE]` with a choice still unfinished.
    #[error("model call stream ended before [DONE] with no finish_reason")]
    StreamTruncated,
    /// The stream could not be read as SSE (invalid UTF-8, an oversized event).
    #[error("model call stream is invalid: {0}")]
    InvalidStream(String),
    /// The executor itself failed while listing its tools.
    #[error("{message}")]
    Executor {
        /// What failed.
        message: String,
        /// The executor's own error.
        #[source]
        source: Option<BoxError>,
    },
}

impl ExecutorError {
    /// The stable code naming what went wrong, carried in error payloads.
    pub fn code(&self) -> &'static str {
        match self {
            ExecutorError::NotFound(_) => "tool_not_found",
            ExecutorError::Execution(_) => "execution_error",
            ExecutorError::Upstream { .. } => "upstream_error",
            ExecutorError::Transport(_) => "transport_error",
            ExecutorError::Timeout(phase) => phase.code(),
            ExecutorError::StreamTruncated => "stream_truncated",
            ExecutorError::InvalidStream(_) => "invalid_stream",
            ExecutorError::Executor { .. } => "executor_failed",
        }
    }

    /// The HTTP status this error carries, when the upstream gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ExecutorError::Upstream { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<ToolError> for ExecutorError {
    fn from(e: ToolError) -> Self {
        match e {
            ToolError::NotFound(name) => ExecutorError::NotFound(name),
            other => ExecutorError::Execution(other.to_string()),
        }
    }
}

/// Why [`run_response_loop`](crate::run_response_loop) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The transition function returned `Fail(payload)`.
    #[error("response loop failed: {0}")]
    Failed(Value),
    /// `max_response_iterations` rounds passed without a terminal action.
    #[error("response loop exceeded max_response_iterations cap")]
    MaxIterationsExceeded,
    /// Sub-agent recursion went deeper than `max_response_step_depth`.
    #[error("response loop sub-agent recursion exceeded max_response_step_depth cap")]
    MaxDepthExceeded,
    /// The transition function returned `AppendSteps([])`.
    #[error("transition function returned AppendSteps with no descriptors")]
    EmptyAction,
    /// The store failed.
    #[error("response loop storage error: {0}")]
    Store(#[from] StoreError),
    /// A step could not be executed, or the executor failed.
    #[error("response loop executor error: {0}")]
    Executor(#[from] ExecutorError),
}

impl LoopError {
    /// The `type` tag of this error's payload.
    pub fn type_tag(&self) -> &'static str {
        match self {
            LoopError::Failed(_) => "failed",
            LoopError::MaxIterationsExceeded => "max_iterations_exceeded",
            LoopError::MaxDepthExceeded => "max_depth_exceeded",
            LoopError::EmptyAction => "empty_action",
            LoopError::Store(_) => "store_error",
            LoopError::Executor(_) => "executor_error",
        }
    }

    /// The JSON persisted with `fail_step` and carried by exceptions:
    /// `{"type", "message"}`; executor errors add a `code` naming the failure and,
    /// when the upstream gave one, its `status`. A `Failed` error's payload is
    /// the transition's own.
    pub fn to_payload(&self) -> Value {
        if let LoopError::Failed(failed) = self {
            return failed.clone();
        }
        let mut payload = serde_json::Map::new();
        payload.insert("type".into(), json!(self.type_tag()));
        payload.insert("message".into(), json!(self.to_string()));
        if let LoopError::Executor(e) = self {
            payload.insert("code".into(), json!(e.code()));
            if let Some(status) = e.status() {
                payload.insert("status".into(), json!(status));
            }
        }
        Value::Object(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_match_the_design() {
        let cases = [
            (LoopError::MaxIterationsExceeded, "max_iterations_exceeded"),
            (LoopError::MaxDepthExceeded, "max_depth_exceeded"),
            (LoopError::EmptyAction, "empty_action"),
            (LoopError::Store(StoreError::new("x")), "store_error"),
            (
                LoopError::Executor(ExecutorError::Execution("x".into())),
                "executor_error",
            ),
        ];
        for (error, tag) in cases {
            let payload = error.to_payload();
            assert_eq!(payload["type"], tag);
            assert!(payload["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn upstream_errors_carry_status() {
        let error = LoopError::Executor(ExecutorError::Upstream {
            status: 503,
            body: "busy".into(),
        });
        let payload = error.to_payload();
        assert_eq!(payload["status"], 503);
        assert_eq!(payload["code"], "upstream_error");
        assert!(
            payload["message"]
                .as_str()
                .is_some_and(|m| m.contains("busy"))
        );
    }

    #[test]
    fn failed_payload_is_passed_through() {
        let payload = json!({"type": "custom", "why": 1});
        assert_eq!(LoopError::Failed(payload.clone()).to_payload(), payload);
    }
}
