//! Plain data the loop reads and writes: step descriptors, store answers, tool
//! schemas, configuration. No behaviour lives here.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde_json::Value;

use crate::payload::Payload;

/// What a step does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// POST the step's `request_payload` to the upstream chat-completions endpoint.
    ModelCall,
    /// Run a tool named by `request_payload.name`.
    ToolCall,
}

impl StepKind {
    /// The wire name used by stores and the Python face.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::ModelCall => "model_call",
            StepKind::ToolCall => "tool_call",
        }
    }

    /// Parses the wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "model_call" => Some(StepKind::ModelCall),
            "tool_call" => Some(StepKind::ToolCall),
            _ => None,
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step the transition function wants appended to the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDescriptor {
    /// What the step does.
    pub kind: StepKind,
    /// The model request body, or `{"name": ..., "args": ...}` for a tool call.
    pub request_payload: Payload,
}

/// What the store's transition function decides should happen next in a scope.
#[derive(Debug, Clone, PartialEq)]
pub enum NextAction {
    /// Record these steps (in order, chained) and run them concurrently.
    AppendSteps(Vec<StepDescriptor>),
    /// The scope is done; the payload is its result.
    Complete(Value),
    /// The scope failed; the payload describes why.
    Fail(Value),
}

/// The store's answer to `record_step`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedStep {
    /// The step's id, unique within the store.
    pub id: String,
    /// The step's sequence, allocated atomically per request.
    pub sequence: i64,
    /// Id stamped on the outgoing model request; stores must set it for model calls.
    pub sub_request_id: Option<String>,
}

/// One persisted step of a scope's chain, as `list_chain` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainStep {
    /// The step's id.
    pub id: String,
    /// The step's sequence within its request.
    pub sequence: i64,
}

/// How a tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// Handed to `ToolExecutor::execute`.
    Http,
    /// Runs a sub-loop scoped under the calling step.
    Agent,
}

/// A tool the executor serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSchema {
    /// The name model tool calls use.
    pub name: String,
    /// How the loop dispatches a call to it.
    pub kind: ToolKind,
}

/// Per-request context handed to the tool executor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestContext {
    /// The model the request is for, when known.
    pub model: Option<String>,
    /// Anything the embedding application wants its tools to see.
    pub extensions: Value,
}

/// What the bridge does with live deltas that do not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop them: the upstream read never waits for a client.
    #[default]
    DropNewest,
    /// Wait for room: back-pressure from the sink to the upstream read.
    Block,
}

impl Overflow {
    /// The wire name: `drop_newest` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropNewest => "drop_newest",
            Overflow::Block => "block",
        }
    }

    /// Parses `drop_newest` or `block`.
    pub fn parse(name: &str) -> Option<Self> {
        [Overflow::DropNewest, Overflow::Block]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

/// The loop's safety caps, its fan-out bound and how it treats its sink.
///
/// This is the one source of every default; the Python face reads them from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopConfig {
    /// Deepest sub-agent recursion allowed; deeper fails with `MaxDepthExceeded`.
    pub max_response_step_depth: u32,
    /// Most transition rounds one loop level may take.
    pub max_response_iterations: u32,
    /// Capacity of the bounded channel between the upstream read and the sink.
    pub bridge_capacity: NonZeroUsize,
    /// What happens to live events when that channel is full.
    pub bridge_overflow: Overflow,
    /// How long events still queued when the response is terminal may take to
    /// reach the sink before they are dropped; `None` waits as long as it takes.
    pub sink_drain_timeout: Option<Duration>,
    /// Most sibling steps of one level running at once; `None` runs them all.
    pub max_concurrent_steps: Option<NonZeroUsize>,
    /// Forward sub-agents' events to the sink, tagged with their depth and scope.
    pub subagent_events: bool,
}

/// The default bridge capacity: a burst of deltas from a fast model while a
/// client is briefly stalled, without unbounded growth.
const DEFAULT_BRIDGE_CAPACITY: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(capacity) => capacity,
    None => NonZeroUsize::MIN,
};

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            max_response_step_depth: 8,
            max_response_iterations: 10,
            bridge_capacity: DEFAULT_BRIDGE_CAPACITY,
            bridge_overflow: Overflow::DropNewest,
            sink_drain_timeout: Some(Duration::from_secs(5)),
            max_concurrent_steps: None,
            subagent_events: false,
        }
    }
}

/// Where model calls go.
///
/// `endpoint` and `path` stay apart because the HTTP client decides whether a
/// request streams by its path; the URL is their concatenation.
#[derive(Clone, Default)]
pub struct UpstreamTarget {
    /// Scheme, host and any prefix, e.g. `http://127.0.0.1:3001/ai`.
    pub endpoint: String,
    /// The API path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Bearer token; `None` or empty sends no `Authorization` header.
    pub api_key: Option<String>,
}

impl UpstreamTarget {
    /// The full request URL.
    pub fn url(&self) -> String {
        format!("{}{}", self.endpoint, self.path)
    }

    /// The key to send, if there is a non-empty one.
    pub fn bearer(&self) -> Option<&str> {
        self.api_key.as_deref().filter(|k| !k.is_empty())
    }
}

// Hand-written so the key can never reach a log line through `{:?}`.
impl fmt::Debug for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTarget")
            .field("endpoint", &self.endpoint)
            .field("path", &self.path)
            .field("api_key", &self.bearer().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let target = UpstreamTarget {
            endpoint: "http://h".into(),
            path: "/p".into(),
            api_key: Some("sk-secret".into()),
        };
        let shown = format!("{target:?}");
        assert!(!shown.contains("sk-secret"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn empty_key_means_no_bearer() {
        let target = UpstreamTarget {
            api_key: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(target.bearer(), None);
    }

    #[test]
    fn step_kind_round_trips() {
        for kind in [StepKind::ModelCall, StepKind::ToolCall] {
            assert_eq!(StepKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(StepKind::parse("nope"), None);
    }
}
