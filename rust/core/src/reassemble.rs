//! Incremental reassembly of a streamed chat completion.
//!
//! Each `chat.completion.chunk` is folded in as it is read, so memory grows with
//! the content, not with the number of chunks. [`Reassembler::finish`] yields the
//! `chat.completion` a non-streaming call would have returned: content and
//! refusal concatenated, tool calls merged by index, the last finish reason, and
//! usage from the usage chunk. Legacy completions (`text`) are reassembled too.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Folds chunks into one completion.
#[derive(Debug, Default)]
pub struct Reassembler {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    legacy: bool,
    choices: BTreeMap<u64, ChoiceAcc>,
    usage: Option<Value>,
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    reasoning_content: Option<String>,
    text: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallAcc>,
    finish_reason: Option<Value>,
}

#[derive(Debug, Default)]
struct ToolCallAcc {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

fn append(slot: &mut Option<String>, piece: Option<&str>) {
    if let Some(piece) = piece {
        slot.get_or_insert_with(String::new).push_str(piece);
    }
}

fn keep_first(slot: &mut Option<Value>, value: Option<&Value>) {
    if slot.is_none()
        && let Some(value) = value.filter(|v| !v.is_null())
    {
        *slot = Some(value.clone());
    }
}

/// The `index` of a choice or tool-call delta, or its position in the array
/// when an upstream leaves `index` out.
pub(crate) fn index_or_position(item: &Value, position: usize) -> u64 {
    item.get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64)
}

impl Reassembler {
    /// Folds one parsed chunk in. Chunks that are not objects are ignored.
    pub fn push(&mut self, chunk: &Value) {
        let Some(chunk) = chunk.as_object() else {
            return;
        };
        keep_first(&mut self.id, chunk.get("id"));
        keep_first(&mut self.created, chunk.get("created"));
        keep_first(&mut self.model, chunk.get("model"));
        keep_first(
            &mut self.system_fingerprint,
            chunk.get("system_fingerprint"),
        );
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        if chunk.get("object").and_then(Value::as_str) == Some("text_completion") {
            self.legacy = true;
        }
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return;
        };
        for (position, choice) in choices.iter().enumerate() {
            let index = index_or_position(choice, position);
            let acc = self.choices.entry(index).or_default();
            if let Some(text) = choice.get("text").and_then(Value::as_str) {
                self.legacy = true;
                append(&mut acc.text, Some(text));
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                acc.finish_reason = Some(reason.clone());
            }
            if let Some(delta) = choice.get("delta") {
                acc.push_delta(delta);
            }
        }
    }

    /// The reassembled completion.
    pub fn finish(self) -> Value {
        let legacy = self.legacy;
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, acc)| acc.finish(index, legacy))
            .collect();
        let mut out = Map::new();
        out.insert("id".into(), self.id.unwrap_or_else(|| json!("")));
        out.insert(
            "object".into(),
            json!(if legacy {
                "text_completion"
            } else {
                "chat.completion"
            }),
        );
        out.insert("created".into(), self.created.unwrap_or_else(|| json!(0)));
        out.insert("model".into(), self.model.unwrap_or_else(|| json!("")));
        if let Some(fingerprint) = self.system_fingerprint {
            out.insert("system_fingerprint".into(), fingerprint);
        }
        out.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = self.usage {
            out.insert("usage".into(), usage);
        }
        Value::Object(out)
    }
}

impl ChoiceAcc {
    fn push_delta(&mut self, delta: &Value) {
        if let Some(role) = delta.get("role").and_then(Value::as_str) {
            self.role = Some(role.to_owned());
        }
        append(
            &mut self.content,
            delta.get("content").and_then(Value::as_str),
        );
        append(
            &mut self.refusal,
            delta.get("refusal").and_then(Value::as_str),
        );
        append(
            &mut self.reasoning_content,
            delta.get("reasoning_content").and_then(Value::as_str),
        );
        let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for (position, call) in calls.iter().enumerate() {
            let index = index_or_position(call, position);
            let acc = self.tool_calls.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                acc.id = Some(id.to_owned());
            }
            if let Some(kind) = call.get("type").and_then(Value::as_str) {
                acc.kind = Some(kind.to_owned());
            }
            if let Some(function) = call.get("function") {
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    acc.name.push_str(name);
                }
                if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                    acc.arguments.push_str(arguments);
                }
            }
        }
    }

    fn finish(self, index: u64, legacy: bool) -> Value {
        let finish_reason = self.finish_reason.unwrap_or(Value::Null);
        if legacy {
            return json!({
                "index": index,
                "text": self.text.unwrap_or_default(),
                "finish_reason": finish_reason,
            });
        }
        let mut message = Map::new();
        message.insert(
            "role".into(),
            json!(self.role.unwrap_or_else(|| "assistant".into())),
        );
        message.insert("content".into(), json!(self.content));
        if let Some(refusal) = self.refusal {
            message.insert("refusal".into(), json!(refusal));
        }
        if let Some(reasoning) = self.reasoning_content {
            message.insert("reasoning_content".into(), json!(reasoning));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .into_values()
                .map(|call| {
                    json!({
                        "id": call.id.unwrap_or_default(),
                        "type": call.kind.unwrap_or_else(|| "function".into()),
                        "function": {"name": call.name, "arguments": call.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        json!({"index": index, "message": message, "finish_reason": finish_reason})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(chunks: &[Value]) -> Value {
        let mut r = Reassembler::default();
        for chunk in chunks {
            r.push(chunk);
        }
        r.finish()
    }

    #[test]
    fn text_and_usage() {
        let out = fold(&[
            json!({"id":"c1","object":"chat.completion.chunk","created":5,"model":"m",
                   "choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}),
            json!({"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}),
        ]);
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["id"], "c1");
        assert_eq!(out["choices"][0]["message"]["content"], "Hello");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert_eq!(out["usage"]["total_tokens"], 5);
    }

    #[test]
    fn tool_calls_merge_by_index() {
        let out = fold(&[
            json!({"choices":[{"index":0,"delta":{"tool_calls":[
                {"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}},
                {"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":"{\"y"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":1}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\":2}"}}]},
                   "finish_reason":"tool_calls"}]}),
        ]);
        let calls = &out["choices"][0]["message"]["tool_calls"];
        assert_eq!(calls[0]["id"], "call_a");
        assert_eq!(calls[0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(calls[1]["function"]["name"], "g");
        assert_eq!(calls[1]["function"]["arguments"], "{\"y\":2}");
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn legacy_text_completion() {
        let out = fold(&[
            json!({"object":"text_completion","choices":[{"index":0,"text":"a"}]}),
            json!({"object":"text_completion","choices":[{"index":0,"text":"b","finish_reason":"length"}]}),
        ]);
        assert_eq!(out["object"], "text_completion");
        assert_eq!(out["choices"][0]["text"], "ab");
        assert_eq!(out["choices"][0]["finish_reason"], "length");
    }
}
