//! Events the loop emits to a sink: their names (the Open Responses event types)
//! and their SSE rendering.

use serde_json::Value;

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

/// One event of a response's live stream.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopEvent {
    /// The sequence of the step that produced it (0 for `response.created`), so a
    /// client reconnecting with a cursor knows where it was.
    pub sequence: i64,
    /// Which event this is.
    pub kind: LoopEventKind,
    /// The event's JSON body.
    pub data: Value,
}

impl LoopEvent {
    /// Renders the event as one SSE frame: `id`, `event` and a one-line `data`.
    pub fn to_sse(&self) -> String {
        // serde_json never emits raw newlines, so `data` stays on one line.
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.sequence,
            self.kind.as_str(),
            self.data
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sse_frame_is_one_event_with_one_data_line() {
        let event = LoopEvent {
            sequence: 3,
            kind: LoopEventKind::OutputTextDelta,
            data: json!({"delta": "a\nb"}),
        };
        assert_eq!(
            event.to_sse(),
            "id: 3\nevent: response.output_text.delta\ndata: {\"delta\":\"a\\nb\"}\n\n"
        );
    }
}
