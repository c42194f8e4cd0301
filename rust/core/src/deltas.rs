//! Turns upstream chunks into live events: assistant text, reasoning and
//! tool-call argument deltas.
//!
//! Upstreams send a tool call's `id` only on the first chunk of each call index;
//! the extractor remembers it by index so every argument delta of one call
//! carries the same `call_id`.
//!
//! Deltas are collected chunk by chunk and handed out by [`DeltaExtractor::flush`],
//! once per network read, all sharing one text buffer (see
//! [`SharedText`](crate::events::SharedText)).

use std::collections::HashMap;
use std::sync::Arc;

use crate::chunk::{Chunk, index_or};
use crate::events::{EventData, EventScope, LoopEvent, LoopEventKind, SharedText};

/// Per-stream state of delta extraction.
#[derive(Debug, Default)]
pub struct DeltaExtractor {
    call_ids: HashMap<u64, Arc<str>>,
    names: HashMap<u64, Arc<str>>,
    unknown: Option<Arc<str>>,
    scope: Option<Arc<EventScope>>,
    /// The text of the deltas extracted since the last flush, end to end.
    text: String,
    /// Those deltas, each with its range of `text`.
    pending: Vec<Pending>,
}

/// A delta waiting for its read to end.
#[derive(Debug)]
struct Pending {
    sequence: i64,
    kind: LoopEventKind,
    start: usize,
    end: usize,
    /// `(call_id, name)` of an arguments delta.
    call: Option<(Arc<str>, Option<Arc<str>>)>,
}

/// The id used when an upstream never named a call.
const UNKNOWN_CALL_ID: &str = "call_unknown";

impl DeltaExtractor {
    /// An extractor whose events carry `scope` (a sub-agent's stream).
    pub fn scoped(scope: Option<Arc<EventScope>>) -> Self {
        Self {
            scope,
            ..Self::default()
        }
    }

    /// Collects the events carried by the first choice of one chunk; they come
    /// out at the next [`DeltaExtractor::flush`].
    pub fn extract(&mut self, chunk: &Chunk<'_>, sequence: i64) {
        let Some(delta) = chunk.choices().first().and_then(|c| c.delta.as_ref()) else {
            return;
        };
        if let Some(text) = delta.reasoning_piece().filter(|t| !t.is_empty()) {
            self.collect(sequence, LoopEventKind::ReasoningDelta, text, None);
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            self.collect(sequence, LoopEventKind::OutputTextDelta, text, None);
        }
        for (position, call) in delta.tool_calls.iter().flatten().enumerate() {
            let index = index_or(call.index, position);
            if let Some(id) = call.id.as_deref() {
                self.call_ids.insert(index, Arc::from(id));
            }
            if let Some(name) = call.function.as_ref().and_then(|f| f.name.as_deref())
                && !name.is_empty()
            {
                self.names.insert(index, Arc::from(name));
            }
            let Some(arguments) = call
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_deref())
                .filter(|a| !a.is_empty())
            else {
                continue;
            };
            let call_id = match self.call_ids.get(&index) {
                Some(id) => id.clone(),
                None => self
                    .unknown
                    .get_or_insert_with(|| Arc::from(UNKNOWN_CALL_ID))
                    .clone(),
            };
            let name = self.names.get(&index).cloned();
            self.collect(
                sequence,
                LoopEventKind::FunctionCallArgumentsDelta,
                arguments,
                Some((call_id, name)),
            );
        }
    }

    /// Collects the content delta of a chunk that repeats the one extracted
    /// last but for its content (see
    /// [`RepeatedShape`](crate::chunk::RepeatedShape)).
    pub fn content(&mut self, text: &str, sequence: i64) {
        if !text.is_empty() {
            self.collect(sequence, LoopEventKind::OutputTextDelta, text, None);
        }
    }

    fn collect(
        &mut self,
        sequence: i64,
        kind: LoopEventKind,
        text: &str,
        call: Option<(Arc<str>, Option<Arc<str>>)>,
    ) {
        let start = self.text.len();
        self.text.push_str(text);
        self.pending.push(Pending {
            sequence,
            kind,
            start,
            end: self.text.len(),
            call,
        });
    }

    /// Appends every event collected since the last flush to `out`, their texts
    /// in one shared buffer.
    pub fn flush(&mut self, out: &mut Vec<LoopEvent>) {
        if self.pending.is_empty() {
            return;
        }
        let buffer: Arc<str> = Arc::from(self.text.as_str());
        self.text.clear();
        for pending in self.pending.drain(..) {
            let text = SharedText::new(buffer.clone(), pending.start, pending.end);
            let data = match pending.call {
                None => EventData::Delta(text),
                Some((call_id, name)) => EventData::ArgumentsDelta {
                    call_id,
                    name,
                    delta: text,
                },
            };
            out.push(LoopEvent {
                sequence: pending.sequence,
                kind: pending.kind,
                data,
                scope: self.scope.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn call_id_is_kept_across_chunks_by_index() {
        let mut extractor = DeltaExtractor::default();
        let mut out = Vec::new();
        for chunk in [
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"f","arguments":"{"}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"arguments":"["}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]}}]}),
            json!({"choices":[{"delta":{"content":"hi","reasoning_content":"why"}}]}),
            json!({"choices":[]}),
        ] {
            let text = chunk.to_string();
            extractor.extract(&Chunk::parse(&text).unwrap(), 4);
        }
        extractor.flush(&mut out);
        let ids: Vec<Option<Value>> = out
            .iter()
            .map(|e| e.data.to_json().get("call_id").cloned())
            .collect();
        assert_eq!(
            ids,
            vec![
                Some(json!("call_a")),
                Some(json!("call_b")),
                Some(json!("call_a")),
                None,
                None
            ]
        );
        assert!(out.iter().all(|e| e.sequence == 4));
        let kinds: Vec<_> = out.iter().rev().take(2).map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                LoopEventKind::OutputTextDelta,
                LoopEventKind::ReasoningDelta
            ]
        );
    }
}
