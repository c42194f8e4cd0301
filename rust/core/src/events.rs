//! Events the loop emits to a sink: their names (the Open Responses event types)
//! and their SSE rendering.

use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};

/// Which Open Responses event a [`LoopEvent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEventKind {
    /// `response.created`: once, sequence 0, top level only.
    Created,
    /// `response.output_text.delta`: a piece of assistant text.
    OutputTextDelta,
    /// `response.reasoning.delta`: a piece of the model's reasoning.
    ReasoningDelta,
    /// `response.function_call_arguments.delta`: a piece of a tool call's arguments.
    FunctionCallArgumentsDelta,
    /// `response.output_item.done`: a tool step finished.
    OutputItemDone,
    /// `response.completed`: the response finished.
    Completed,
    /// `response.failed`: the response failed.
    Failed,
}

impl LoopEventKind {
    /// Every kind, in stream order of first appearance.
    pub const ALL: [LoopEventKind; 7] = [
        LoopEventKind::Created,
        LoopEventKind::ReasoningDelta,
        LoopEventKind::OutputTextDelta,
        LoopEventKind::FunctionCallArgumentsDelta,
        LoopEventKind::OutputItemDone,
        LoopEventKind::Completed,
        LoopEventKind::Failed,
    ];

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The Open Responses event name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopEventKind::Created => "response.created",
            LoopEventKind::OutputTextDelta => "response.output_text.delta",
            LoopEventKind::ReasoningDelta => "response.reasoning.delta",
            LoopEventKind::FunctionCallArgumentsDelta => "response.function_call_arguments.delta",
            LoopEventKind::OutputItemDone => "response.output_item.done",
            LoopEventKind::Completed => "response.completed",
            LoopEventKind::Failed => "response.failed",
        }
    }
}

/// A delta's text: a range of one buffer shared by every delta of a network
/// read. A read carries dozens of chunks; giving each delta its own `String`
/// meant an allocation per delta on the reading thread and a free on the
/// thread that delivers it, which cost more than parsing the chunk.
#[derive(Clone)]
pub struct SharedText {
    buffer: Arc<str>,
    start: usize,
    end: usize,
}

impl SharedText {
    /// The range `start..end` of `buffer` (empty if out of range).
    pub fn new(buffer: Arc<str>, start: usize, end: usize) -> Self {
        let (start, end) = if buffer.get(start..end).is_some() {
            (start, end)
        } else {
            (0, 0)
        };
        Self { buffer, start, end }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.buffer.get(self.start..self.end).unwrap_or_default()
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> Self {
        Self::new(Arc::from(text), 0, text.len())
    }
}

impl std::ops::Deref for SharedText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SharedText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for SharedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The JSON body of a [`LoopEvent`].
///
/// Live deltas, by far the most frequent events, are kept typed: building a JSON
/// map per delta would cost more than parsing the chunk that carried it. Every
/// other event carries a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// `{"delta": text}`: a text or reasoning delta.
    Delta(SharedText),
    /// `{"call_id": id, "name": name, "delta": arguments}`: a piece of a tool
    /// call's arguments.
    ArgumentsDelta {
        /// The call the piece belongs to, shared by all its pieces.
        call_id: Arc<str>,
        /// The function's name, once the upstream has sent it.
        name: Option<Arc<str>>,
        /// The piece.
        delta: SharedText,
    },
    /// Any other body.
    Json(Value),
}

impl EventData {
    /// The `delta` text, if the body has one.
    pub fn delta(&self) -> Option<&str> {
        match self {
            EventData::Delta(delta) | EventData::ArgumentsDelta { delta, .. } => Some(delta),
            EventData::Json(value) => value.get("delta").and_then(Value::as_str),
        }
    }

    /// The body as a JSON value.
    pub fn to_json(&self) -> Value {
        match self {
            EventData::Delta(delta) => json!({ "delta": delta.as_str() }),
            EventData::ArgumentsDelta {
                call_id,
                name,
                delta,
            } => match name {
                Some(name) => {
                    json!({ "call_id": &**call_id, "name": &**name, "delta": delta.as_str() })
                }
                None => json!({ "call_id": &**call_id, "delta": delta.as_str() }),
            },
            EventData::Json(value) => value.clone(),
        }
    }
}

impl fmt::Display for EventData {
    /// One line of JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventData::Delta(delta) => write!(f, "{{\"delta\":{}}}", Value::from(delta.as_str())),
            EventData::ArgumentsDelta { .. } => write!(f, "{}", self.to_json()),
            // serde_json never emits raw newlines, so this stays on one line.
            EventData::Json(value) => write!(f, "{value}"),
        }
    }
}

/// Where a sub-agent's event comes from: how deep the sub-agent runs and the
/// step that called it. Top-level events have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventScope {
    /// The sub-agent's depth, 1 for an agent called by a top-level step.
    pub depth: u32,
    /// The id of the step that called the sub-agent.
    pub scope_parent: String,
}

/// One event of a response's live stream.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopEvent {
    /// The sequence of the step that produced it (0 for `response.created`), so a
    /// client reconnecting with a cursor knows where it was.
    pub sequence: i64,
    /// Which event this is.
    pub kind: LoopEventKind,
    /// The event's body.
    pub data: EventData,
    /// The sub-agent that produced it; `None` at the top level. Shared by every
    /// event of one sub-agent level, so tagging a delta costs one reference count.
    pub scope: Option<Arc<EventScope>>,
}

impl LoopEvent {
    /// A top-level event.
    pub fn new(sequence: i64, kind: LoopEventKind, data: EventData) -> Self {
        Self {
            sequence,
            kind,
            data,
            scope: None,
        }
    }

    /// How deep the sub-agent that produced the event runs; 0 at the top level.
    pub fn depth(&self) -> u32 {
        self.scope.as_ref().map_or(0, |s| s.depth)
    }

    /// The step that called the sub-agent that produced the event, if any.
    pub fn scope_parent(&self) -> Option<&str> {
        self.scope.as_ref().map(|s| s.scope_parent.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_renders_as_one_line_of_json() {
        let delta = EventData::Delta("a\nb".into());
        assert_eq!(delta.to_string(), "{\"delta\":\"a\\nb\"}");
        let arguments = EventData::ArgumentsDelta {
            call_id: "c\"1".into(),
            name: None,
            delta: "{".into(),
        };
        let parsed: Value = serde_json::from_str(&arguments.to_string()).unwrap();
        assert_eq!(parsed, arguments.to_json());
        assert_eq!(parsed, json!({"call_id": "c\"1", "delta": "{"}));
    }
}
