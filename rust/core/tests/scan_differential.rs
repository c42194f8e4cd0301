//! The fast chunk scanner against serde, its reference: on generated chunks,
//! pretty or compact, whole or corrupted, whenever the scanner answers it must
//! answer exactly what serde does; and on well-formed chunks it must answer.

// Test scaffolding: a failed unwrap here is a failed test, which is its job.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use stepwell_core::chunk::Chunk;

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z \"\\\\/\n\t\u{0}\u{1f}é🙂{}\\[\\]:,]{0,8}").unwrap()
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a string field: mostly strings, sometimes null or a wrong type.
fn string_field() -> impl Strategy<Value = Value> {
    prop_oneof![6 => text().prop_map(Value::String), 1 => Just(Value::Null), 1 => any_json()]
}

fn index_field() -> impl Strategy<Value = Value> {
    prop_oneof![4 => (0u64..5).prop_map(|n| json!(n)), 1 => Just(Value::Null), 1 => any_json()]
}

fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let extras = proptest::collection::btree_map("[a-z_]{1,8}", any_json(), 0..3);
    let chosen: Vec<_> = fields
        .into_iter()
        .map(|(key, value)| proptest::option::weighted(0.7, value).prop_map(move |v| (key, v)))
        .collect();
    (chosen, extras)
        .prop_map(|(chosen, extras)| {
            let mut map: Map<String, Value> = extras.into_iter().collect();
            for (key, value) in chosen {
                if let Some(value) = value {
                    map.insert(key.to_string(), value);
                }
            }
            Value::Object(map)
        })
        .boxed()
}

fn chunk_json() -> BoxedStrategy<Value> {
    let function = object_of(vec![
        ("name", string_field().boxed()),
        ("arguments", string_field().boxed()),
    ]);
    let tool_call = object_of(vec![
        ("index", index_field().boxed()),
        ("id", string_field().boxed()),
        ("type", string_field().boxed()),
        (
            "function",
            prop_oneof![4 => function, 1 => Just(Value::Null)].boxed(),
        ),
    ]);
    let delta = object_of(vec![
        ("role", string_field().boxed()),
        ("content", string_field().boxed()),
        ("refusal", string_field().boxed()),
        ("reasoning_content", string_field().boxed()),
        ("reasoning", string_field().boxed()),
        (
            "tool_calls",
            prop_oneof![
                4 => proptest::collection::vec(tool_call, 0..3).prop_map(Value::Array),
                1 => Just(Value::Null),
            ]
            .boxed(),
        ),
    ]);
    let choice = object_of(vec![
        ("index", index_field().boxed()),
        (
            "delta",
            prop_oneof![4 => delta, 1 => Just(Value::Null)].boxed(),
        ),
        ("text", string_field().boxed()),
        ("finish_reason", string_field().boxed()),
    ]);
    object_of(vec![
        ("id", any_json().boxed()),
        ("object", string_field().boxed()),
        ("created", any_json().boxed()),
        ("model", any_json().boxed()),
        ("usage", any_json().boxed()),
        (
            "error",
            prop_oneof![3 => Just(Value::Null), 1 => any_json()].boxed(),
        ),
        (
            "choices",
            prop_oneof![
                4 => proptest::collection::vec(choice, 0..3).prop_map(Value::Array),
                1 => Just(Value::Null),
            ]
            .boxed(),
        ),
    ])
}

/// Renders `value` compact or pretty, then maybe corrupts it at `cut`.
fn render(value: &Value, pretty: bool, corruption: u8, cut: usize) -> String {
    let mut text = if pretty {
        serde_json::to_string_pretty(value).unwrap()
    } else {
        serde_json::to_string(value).unwrap()
    };
    let cut = (0..=cut % (text.len() + 1))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    match corruption % 6 {
        0 => text.truncate(cut),
        1 => text.insert(cut, ','),
        2 => text.insert_str(cut, "\"content\":\"x\","),
        3 => text.insert(cut, '\\'),
        _ => {}
    }
    text
}

/// A string literal's body written with escapes of every kind, `\\u` ones
/// included: surrogate pairs, lone halves, and pairs in the wrong order.
fn escaped_body() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z {}:,]{1,4}",
        prop::sample::select(vec![
            "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"
        ])
        .prop_map(str::to_owned),
        (0u32..0x10000).prop_map(|u| format!("\\u{u:04x}")),
        (0xD800u32..0xDC00, 0xDC00u32..0xE000)
            .prop_map(|(high, low)| format!("\\u{high:04X}\\u{low:04x}")),
        prop::sample::select(vec!["\\ud83d", "\\ude42", "\\ude42\\ud83d", "\\x", "\\u12"])
            .prop_map(str::to_owned),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decodes_escapes_as_serde_does(body in escaped_body()) {
        let text = format!(
            r#"{{"choices":[{{"delta":{{"tool_calls":[{{"function":{{"arguments":"{body}"}}}}]}}}}]}}"#
        );
        let reference = Chunk::parse_with_serde(&text);
        if let Some(fast) = Chunk::parse_fast(&text) {
            prop_assert_eq!(Some(fast), reference, "{}", text);
        } else {
            // The scanner defers only where serde refuses too.
            prop_assert!(reference.is_none(), "{}", text);
        }
    }

    #[test]
    fn answers_only_what_serde_answers(
        value in chunk_json(), pretty in any::<bool>(), corruption in any::<u8>(), cut in any::<usize>()
    ) {
        let text = render(&value, pretty, corruption, cut);
        if let Some(fast) = Chunk::parse_fast(&text) {
            prop_assert_eq!(Some(fast), Chunk::parse_with_serde(&text), "{}", text);
        }
    }

    #[test]
    fn answers_well_formed_chunks(value in chunk_json(), pretty in any::<bool>()) {
        let text = render(&value, pretty, 5, 0);
        // Wherever serde reads a chunk from an object, the scanner must read it too
        // (its only deferrals are duplicate keys and deep nesting, absent here).
        if let Some(reference) = Chunk::parse_with_serde(&text) {
            prop_assert_eq!(Chunk::parse_fast(&text), Some(reference), "{}", text);
        }
    }
}
