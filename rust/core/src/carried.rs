//! What a response that continues another (`previous_response_id`) carries
//! from it: the messages that response's last model call sent, less its
//! system messages, as JSON text.
//!
//! A long conversation sends every earlier message on every turn. Read as
//! text from the earlier model call's stored payload and spliced as text into
//! the next one, those messages are never decoded into objects only to be
//! encoded again, so a turn's own cost does not grow with them.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A chat-completions body, as far as carrying reads it.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
}

/// A message, as far as carrying reads it.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
}

/// The messages of the chat-completions body `request` (JSON text), less its
/// system messages (instructions do not carry over), as the text of each,
/// joined by commas: the inside of a JSON array, empty when none is left.
/// Each message is kept byte for byte as it was in `request`.
pub fn carried_messages(request: &str) -> Result<String, serde_json::Error> {
    let request: Request<'_> = serde_json::from_str(request)?;
    let messages = request.messages.unwrap_or_default();
    let mut carried = String::with_capacity(messages.iter().map(|m| m.get().len() + 1).sum());
    for message in messages {
        let text = message.get();
        let read: Message<'_> = serde_json::from_str(text)?;
        if read.role.as_deref() == Some("system") {
            continue;
        }
        if !carried.is_empty() {
            carried.push(',');
        }
        carried.push_str(text);
    }
    Ok(carried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn carried(request: &Value) -> Value {
        let text = carried_messages(&request.to_string()).expect("a valid body");
        serde_json::from_str(&format!("[{text}]")).expect("the inside of an array")
    }

    #[test]
    fn every_message_but_the_system_ones_is_carried_in_order() {
        let request = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"x\": 1}"},
                {"role": "system", "content": "again"},
                {"content": "no role"},
            ],
        });
        let expected = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"x\": 1}"},
            {"content": "no role"},
        ]);
        assert_eq!(carried(&request), expected);
    }

    #[test]
    fn messages_are_kept_byte_for_byte() {
        let request = r#"{"messages": [ {"role" : "user", "content": "caf\u00e9 \"q\""} ,{"role":"system","content":"s"}]}"#;
        assert_eq!(
            carried_messages(request).expect("a valid body"),
            r#"{"role" : "user", "content": "caf\u00e9 \"q\""}"#
        );
    }

    #[test]
    fn a_role_written_with_escapes_is_still_read() {
        let request =
            r#"{"messages": [{"role": "\u0073ystem", "content": "s"}, {"role": "user"}]}"#;
        assert_eq!(
            carried_messages(request).expect("a valid body"),
            r#"{"role": "user"}"#
        );
    }

    #[test]
    fn a_body_without_messages_carries_none() {
        assert_eq!(carried_messages(r#"{"model": "m"}"#).expect("valid"), "");
        assert_eq!(
            carried_messages(r#"{"messages": null}"#).expect("valid"),
            ""
        );
        assert_eq!(carried_messages(r#"{"messages": []}"#).expect("valid"), "");
    }

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            r#"{"messages": {}}"#,
            r#"{"messages": ["text"]}"#,
            r#"{"messages": [{"role": 3}]}"#,
        ] {
            assert!(carried_messages(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
