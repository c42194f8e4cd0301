//! Incremental reassembly of a streamed completion.
//!
//! Each chunk is folded in as it is read, so memory grows with the content, not
//! with the number of chunks. [`Reassembler::finish`] yields the body a
//! non-streaming call would have returned: content, refusal and reasoning
//! concatenated, tool calls merged by index, the last finish reason, usage from
//! the usage chunk, several choices by index, and legacy completions (`text`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::chunk::{Chunk, Delta, Raw, index_or};

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
    finish_reason: Option<String>,
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

/// Keeps the first non-null value of a metadata field.
fn keep_first(slot: &mut Option<Value>, raw: Option<Raw<'_>>) {
    if slot.is_none()
        && let Some(value) = raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
        && !value.is_null()
    {
        *slot = Some(value);
    }
}

impl Reassembler {
    /// Folds one chunk in.
    pub fn push(&mut self, chunk: &Chunk<'_>) {
        keep_first(&mut self.id, chunk.id);
        keep_first(&mut self.created, chunk.created);
        keep_first(&mut self.model, chunk.model);
        keep_first(&mut self.system_fingerprint, chunk.system_fingerprint);
        if let Some(usage) = chunk
            .usage
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
            .filter(Value::is_object)
        {
            self.usage = Some(usage);
        }
        if chunk.object.as_deref() == Some("text_completion") {
            self.legacy = true;
        }
        for (position, choice) in chunk.choices().iter().enumerate() {
            let acc = self
                .choices
                .entry(index_or(choice.index, position))
                .or_default();
            if let Some(text) = choice.text.as_deref() {
                self.legacy = true;
                append(&mut acc.text, Some(text));
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                acc.finish_reason = Some(reason.to_owned());
            }
            if let Some(delta) = &choice.delta {
                acc.push_delta(delta);
            }
        }
    }

    /// Folds in a chunk that repeats the one folded last but for its content
    /// (see [`RepeatedShape`](crate::chunk::RepeatedShape)): choice `index`'s
    /// content grows by `text`, and nothing else changes.
    pub fn push_content(&mut self, index: u64, text: &str) {
        append(
            &mut self.choices.entry(index).or_default().content,
            Some(text),
        );
    }

    /// Whether every choice seen so far has its finish reason (and there is one).
    pub fn all_choices_finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.values().all(|c| c.finish_reason.is_some())
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
    fn push_delta(&mut self, delta: &Delta<'_>) {
        if let Some(role) = delta.role.as_deref() {
            self.role = Some(role.to_owned());
        }
        append(&mut self.content, delta.content.as_deref());
        append(&mut self.refusal, delta.refusal.as_deref());
        append(&mut self.reasoning_content, delta.reasoning_piece());
        for (position, call) in delta.tool_calls.iter().flatten().enumerate() {
            let acc = self
                .tool_calls
                .entry(index_or(call.index, position))
                .or_default();
            if let Some(id) = call.id.as_deref() {
                acc.id = Some(id.to_owned());
            }
            if let Some(kind) = call.kind.as_deref() {
                acc.kind = Some(kind.to_owned());
            }
            if let Some(function) = &call.function {
                acc.name
                    .push_str(function.name.as_deref().unwrap_or_default());
                acc.arguments
                    .push_str(function.arguments.as_deref().unwrap_or_default());
            }
        }
    }

    fn finish(self, index: u64, legacy: bool) -> Value {
        if legacy {
            let mut choice = Map::new();
            choice.insert("index".into(), json!(index));
            choice.insert("text".into(), Value::String(self.text.unwrap_or_default()));
            choice.insert("finish_reason".into(), json!(self.finish_reason));
            return Value::Object(choice);
        }
        let mut message = Map::new();
        message.insert(
            "role".into(),
            json!(self.role.unwrap_or_else(|| "assistant".into())),
        );
        // Moved, not copied by `json!`: the content can be most of the body.
        message.insert(
            "content".into(),
            self.content.map_or(Value::Null, Value::String),
        );
        if let Some(refusal) = self.refusal {
            message.insert("refusal".into(), Value::String(refusal));
        }
        if let Some(reasoning) = self.reasoning_content {
            message.insert("reasoning_content".into(), Value::String(reasoning));
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
        let mut choice = Map::new();
        choice.insert("index".into(), json!(index));
        choice.insert("message".into(), Value::Object(message));
        choice.insert("finish_reason".into(), json!(self.finish_reason));
        Value::Object(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(chunks: &[Value]) -> Value {
        let mut r = Reassembler::default();
        let texts: Vec<String> = chunks.iter().map(Value::to_string).collect();
        for text in &texts {
            r.push(&Chunk::parse(text).unwrap());
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
    fn several_choices_reasoning_and_refusal() {
        let out = fold(&[
            json!({"choices":[{"index":1,"delta":{"content":"B"}},{"index":0,"delta":{"reasoning_content":"hm"}}]}),
            json!({"choices":[{"index":0,"delta":{"reasoning":"m","content":"A"},"finish_reason":"stop"},
                              {"index":1,"delta":{"refusal":"no"},"finish_reason":"stop"}]}),
        ]);
        assert_eq!(out["choices"][0]["message"]["reasoning_content"], "hmm");
        assert_eq!(out["choices"][0]["message"]["content"], "A");
        assert_eq!(out["choices"][1]["message"]["content"], "B");
        assert_eq!(out["choices"][1]["message"]["refusal"], "no");
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
