//! A typed, borrowing view of one streamed chunk.
//!
//! Each SSE event's data is parsed once into [`Chunk`], which borrows its
//! strings from the event (copying only those with escapes) and skips every
//! field stepwell does not use. Metadata that is only needed once per stream
//! (`id`, `model`, `usage`, an embedded `error`) stays raw JSON until then. Both
//! delta extraction and reassembly read the same view, so no event is parsed
//! twice and no JSON tree is built per chunk.
//!
//! [`Chunk::parse`] first tries [`scan`], a hand-written single-pass reader for
//! exactly this shape, about twice as fast as serde on these small objects; on
//! anything it is not sure of (escapes in keys, duplicate keys, deep nesting)
//! it defers to serde, which decides. Both give the same view for every input
//! the scanner accepts (tested differentially and by fuzzing).

mod repeat;
mod scan;

pub use repeat::RepeatedShape;

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A JSON value kept as its source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(pub &'a str);

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(deserializer).map(|raw| Raw(raw.get()))
    }
}

impl Raw<'_> {
    /// The source text.
    pub fn get(&self) -> &str {
        self.0
    }
}

/// One `chat.completion.chunk` (or legacy `text_completion` chunk).
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Chunk<'a> {
    /// The completion id, raw.
    #[serde(borrow)]
    pub id: Option<Raw<'a>>,
    /// `chat.completion.chunk` or `text_completion`.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub object: Option<Cow<'a, str>>,
    /// Creation time, raw.
    #[serde(borrow)]
    pub created: Option<Raw<'a>>,
    /// The model, raw.
    #[serde(borrow)]
    pub model: Option<Raw<'a>>,
    /// The fingerprint, raw.
    #[serde(borrow)]
    pub system_fingerprint: Option<Raw<'a>>,
    /// Token usage, raw; sent on the last chunk when asked for.
    #[serde(borrow)]
    pub usage: Option<Raw<'a>>,
    /// The choices this chunk advances.
    #[serde(borrow, default)]
    pub choices: Option<Vec<Choice<'a>>>,
    /// An error object some upstreams embed in the stream instead of a status.
    #[serde(borrow)]
    pub error: Option<Raw<'a>>,
}

/// One choice of a chunk.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Choice<'a> {
    /// The choice's index; its position in `choices` when absent.
    pub index: Option<u64>,
    /// Chat completions: what this chunk adds to the message.
    #[serde(borrow)]
    pub delta: Option<Delta<'a>>,
    /// Legacy completions: the text this chunk adds.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub text: Option<Cow<'a, str>>,
    /// Set on the choice's last chunk.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// What one chunk adds to a choice's message.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Delta<'a> {
    /// Usually only on the first chunk.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub role: Option<Cow<'a, str>>,
    /// A piece of the assistant's text.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub content: Option<Cow<'a, str>>,
    /// A piece of a refusal.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub refusal: Option<Cow<'a, str>>,
    /// A piece of reasoning (vLLM, SGLang, DeepSeek).
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// A piece of reasoning, as newer servers name it.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub reasoning: Option<Cow<'a, str>>,
    /// Pieces of tool calls, by index.
    #[serde(borrow)]
    pub tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

impl Delta<'_> {
    /// The reasoning piece, under either name.
    pub fn reasoning_piece(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
    }
}

/// A piece of one tool call.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct ToolCallDelta<'a> {
    /// Which call this piece belongs to; its position when absent.
    pub index: Option<u64>,
    /// The call id; upstreams send it only on the call's first piece.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub id: Option<Cow<'a, str>>,
    /// Always `function` today.
    #[serde(borrow, default, rename = "type", deserialize_with = "borrowed_str")]
    pub kind: Option<Cow<'a, str>>,
    /// The function's name and a piece of its arguments.
    #[serde(borrow)]
    pub function: Option<FunctionDelta<'a>>,
}

/// A piece of a function call.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct FunctionDelta<'a> {
    /// The name (sometimes split over pieces too).
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub name: Option<Cow<'a, str>>,
    /// A piece of the JSON arguments.
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub arguments: Option<Cow<'a, str>>,
}

/// An optional string that borrows from the input when it has no escapes.
/// (serde borrows a bare `Cow<str>` field, but not one inside an `Option`.)
fn borrowed_str<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(deserializer)?.map(|b| b.0))
}

impl<'a> Chunk<'a> {
    /// Parses one event's data; `None` for anything that is not a chunk object.
    pub fn parse(data: &'a str) -> Option<Self> {
        match scan::chunk(data) {
            Some(chunk) => Some(chunk),
            None => Self::parse_with_serde(data),
        }
    }

    /// The reference parse: serde, field by field.
    pub fn parse_with_serde(data: &'a str) -> Option<Self> {
        serde_json::from_str(data).ok()
    }

    /// The fast parse alone: `None` where it defers to serde.
    pub fn parse_fast(data: &'a str) -> Option<Self> {
        scan::chunk(data)
    }

    /// The choices, or none.
    pub fn choices(&self) -> &[Choice<'a>] {
        self.choices.as_deref().unwrap_or_default()
    }
}

/// The index an item declares, or its position when it declares none.
pub fn index_or(index: Option<u64>, position: usize) -> u64 {
    index.unwrap_or(position as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_skips_unknown_fields() {
        let data = r#"{"id":"c1","object":"chat.completion.chunk","nvext":{"x":[1,2]},
            "choices":[{"index":0,"delta":{"content":"plain","role":"assistant"},"logprobs":null}]}"#;
        let chunk = Chunk::parse(data).unwrap();
        let delta = chunk.choices()[0].delta.as_ref().unwrap();
        assert!(matches!(delta.content, Some(Cow::Borrowed("plain"))));
        assert_eq!(chunk.id.map(|r| r.0), Some("\"c1\""));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let chunk = Chunk::parse(r#"{"choices":[{"delta":{"content":"a\nb\u00e9"}}]}"#).unwrap();
        let delta = chunk.choices()[0].delta.as_ref().unwrap();
        assert_eq!(delta.content.as_deref(), Some("a\nbé"));
    }

    #[test]
    fn nulls_and_missing_choices_are_fine_and_garbage_is_none() {
        let chunk = Chunk::parse(r#"{"choices":null,"usage":{"total_tokens":3}}"#).unwrap();
        assert!(chunk.choices().is_empty());
        assert!(Chunk::parse("[1,2]").is_none());
        assert!(Chunk::parse("{not json").is_none());
        assert!(Chunk::parse(r#"{"choices":[{"delta":{"content":5}}]}"#).is_none());
    }
}
