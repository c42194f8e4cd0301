//! Turns upstream chunks into live events: assistant text, reasoning and
//! tool-call argument deltas.
//!
//! Upstreams send a tool call's `id` only on the first chunk of each call index;
//! the extractor remembers it by index so every argument delta of one call
//! carries the same `call_id`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::chunk::{Chunk, index_or};
use crate::events::{EventData, EventScope, LoopEvent, LoopEventKind};

/// Per-stream state of delta extraction.
#[derive(Debug, Default)]
pub struct DeltaExtractor {
    call_ids: HashMap<u64, Arc<str>>,
    names: HashMap<u64, Arc<str>>,
    unknown: Option<Arc<str>>,
    scope: Option<Arc<EventScope>>,
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

    /// Appends the events carried by the first choice of one chunk.
    pub fn extract(&mut self, chunk: &Chunk<'_>, sequence: i64, out: &mut Vec<LoopEvent>) {
        let Some(delta) = chunk.choices().first().and_then(|c| c.delta.as_ref()) else {
            return;
        };
        let scope = &self.scope;
        let event = |kind, data| LoopEvent {
            sequence,
            kind,
            data,
            scope: scope.clone(),
        };
        if let Some(text) = delta.reasoning_piece().filter(|t| !t.is_empty()) {
            out.push(event(
                LoopEventKind::ReasoningDelta,
                EventData::Delta(text.to_owned()),
            ));
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            out.push(event(
                LoopEventKind::OutputTextDelta,
                EventData::Delta(text.to_owned()),
            ));
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
            out.push(event(
                LoopEventKind::FunctionCallArgumentsDelta,
                EventData::ArgumentsDelta {
                    call_id,
                    name: self.names.get(&index).cloned(),
                    delta: arguments.to_owned(),
                },
            ));
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
            extractor.extract(&Chunk::parse(&text).unwrap(), 4, &mut out);
        }
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
