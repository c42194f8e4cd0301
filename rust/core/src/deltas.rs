//! Turns upstream chunks into live events: assistant text deltas and tool-call
//! argument deltas.
//!
//! Upstreams send a tool call's `id` only on the first chunk of each call index;
//! the extractor remembers it by index so every argument delta of one call
//! carries the same `call_id`.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::events::{LoopEvent, LoopEventKind};
use crate::reassemble::index_or_position;

/// Per-stream state of delta extraction.
#[derive(Debug, Default)]
pub struct DeltaExtractor {
    call_ids: HashMap<u64, String>,
}

/// The id used when an upstream never named a call.
const UNKNOWN_CALL_ID: &str = "call_unknown";

impl DeltaExtractor {
    /// Appends the events carried by one parsed chunk of the first choice.
    pub fn extract(&mut self, chunk: &Value, sequence: i64, out: &mut Vec<LoopEvent>) {
        let Some(delta) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first())
            .and_then(|choice| choice.get("delta"))
        else {
            return;
        };
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            out.push(LoopEvent {
                sequence,
                kind: LoopEventKind::OutputTextDelta,
                data: json!({ "delta": text }),
            });
        }
        let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for (position, call) in calls.iter().enumerate() {
            let index = index_or_position(call, position);
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                self.call_ids.insert(index, id.to_owned());
            }
            let Some(arguments) = call
                .get("function")
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            else {
                continue;
            };
            let call_id = self
                .call_ids
                .get(&index)
                .map_or(UNKNOWN_CALL_ID, String::as_str);
            out.push(LoopEvent {
                sequence,
                kind: LoopEventKind::FunctionCallArgumentsDelta,
                data: json!({ "call_id": call_id, "delta": arguments }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_is_kept_across_chunks_by_index() {
        let mut extractor = DeltaExtractor::default();
        let mut out = Vec::new();
        for chunk in [
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"f","arguments":"{"}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"arguments":"["}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]}}]}),
            json!({"choices":[{"delta":{"content":"hi"}}]}),
            json!({"choices":[]}),
        ] {
            extractor.extract(&chunk, 4, &mut out);
        }
        let ids: Vec<_> = out.iter().map(|e| e.data.get("call_id").cloned()).collect();
        assert_eq!(
            ids,
            vec![
                Some(json!("call_a")),
                Some(json!("call_b")),
                Some(json!("call_a")),
                None
            ]
        );
        assert!(out.iter().all(|e| e.sequence == 4));
        assert_eq!(
            out.last().map(|e| e.kind),
            Some(LoopEventKind::OutputTextDelta)
        );
    }
}
