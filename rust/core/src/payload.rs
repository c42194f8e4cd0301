//! A step's request payload: a JSON value, or JSON text kept as it came.
//!
//! A model call's payload carries the whole conversation so far. One handed
//! over as text (the Python face splices a long conversation in as the text it
//! was stored as) is validated once and then sent upstream and handed to the
//! store as that text: never built as a tree only to be encoded twice. One
//! given as a value is encoded once, on first need, and the store and the
//! request body share that text.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// A step's request payload. Two are equal when their JSON values are,
/// however each is held.
#[derive(Debug, Clone)]
pub struct Payload(Form);

#[derive(Debug, Clone)]
enum Form {
    /// A value, and its JSON text once it was needed.
    Value(Value, OnceLock<Bytes>),
    /// Valid JSON text.
    Text(Bytes),
}

impl Payload {
    /// The payload the JSON text `text` stands for; an error if it is not JSON.
    pub fn from_text(text: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_slice::<IgnoredAny>(&text)?;
        Ok(Self(Form::Text(text)))
    }

    /// The payload as a JSON value (parsed, for one that came as text).
    pub fn value(&self) -> Cow<'_, Value> {
        match &self.0 {
            Form::Value(value, _) => Cow::Borrowed(value),
            // Validated when made, so this parse does not fail.
            Form::Text(text) => Cow::Owned(serde_json::from_slice(text).unwrap_or(Value::Null)),
        }
    }

    /// The payload as JSON text (as it came, for one that came as text;
    /// encoded once, for a value).
    pub fn to_json(&self) -> Result<Bytes, serde_json::Error> {
        match &self.0 {
            Form::Value(value, encoded) => {
                if let Some(text) = encoded.get() {
                    return Ok(text.clone());
                }
                let text = Bytes::from(serde_json::to_vec(value)?);
                Ok(encoded.get_or_init(|| text).clone())
            }
            Form::Text(text) => Ok(text.clone()),
        }
    }

    /// Whether the payload asks for a streamed answer (`"stream": true`).
    pub fn streams(&self) -> bool {
        #[derive(Deserialize)]
        struct Streaming {
            #[serde(default)]
            stream: Option<Value>,
        }
        match &self.0 {
            Form::Value(value, _) => value.get("stream").and_then(Value::as_bool),
            Form::Text(text) => serde_json::from_slice::<Streaming>(text)
                .ok()
                .and_then(|read| read.stream)
                .and_then(|stream| stream.as_bool()),
        }
        .unwrap_or(false)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self(Form::Value(value, OnceLock::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_goes_out_byte_for_byte_and_reads_as_its_value() {
        let text = r#"{ "model":"m", "stream" : true, "messages": [{"content": "caf\u00e9"}] }"#;
        let payload = Payload::from_text(text).expect("valid JSON");
        assert_eq!(payload.to_json().expect("encodable"), text.as_bytes());
        assert_eq!(
            *payload.value(),
            json!({"model": "m", "stream": true, "messages": [{"content": "café"}]})
        );
        assert!(payload.streams());
    }

    #[test]
    fn a_value_is_encoded_once_and_its_text_shared() {
        let payload = Payload::from(json!({"model": "m", "messages": []}));
        let first = payload.to_json().expect("encodable");
        let second = payload.to_json().expect("encodable");
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert_eq!(
            payload,
            Payload::from_text(first.clone()).expect("valid JSON")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&first).expect("JSON"),
            json!({"model": "m", "messages": []})
        );
    }

    #[test]
    fn a_value_and_its_text_agree_on_streaming() {
        for (body, streams) in [
            (json!({"stream": true}), true),
            (json!({"stream": false}), false),
            (json!({"stream": "yes"}), false),
            (json!({"model": "m"}), false),
            (json!([1, 2]), false),
        ] {
            let text = Payload::from_text(body.to_string()).expect("valid JSON");
            assert_eq!(Payload::from(body.clone()).streams(), streams, "{body}");
            assert_eq!(text.streams(), streams, "{body}");
        }
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        for bad in ["", "{", r#"{"a": NaN}"#, r#"{"a": 1} trailing"#] {
            assert!(Payload::from_text(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
