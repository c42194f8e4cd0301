//! The ids and JSON text of Open Responses output items, in one place: the
//! stream encoder ([`crate::responses_stream`]) and the Python assembly (through
//! `stepwell._core`) both name items and render tool outputs with these, so a
//! streamed item and the same item in the final response always agree.

use std::fmt::Write;

use serde_json::Value;

/// The id of the assistant message a model step produced.
pub fn message_id(request_id: &str, sequence: i64) -> String {
    format!("msg_{request_id}_{sequence}")
}

/// The id of the reasoning item a model step produced.
pub fn reasoning_id(request_id: &str, sequence: i64) -> String {
    format!("rs_{request_id}_{sequence}")
}

/// The id of a function call a model step made.
pub fn function_call_id(request_id: &str, sequence: i64, call_id: &str) -> String {
    format!("fc_{request_id}_{sequence}_{call_id}")
}

/// The id of the output of a tool step.
pub fn function_output_id(request_id: &str, sequence: i64) -> String {
    format!("fco_{request_id}_{sequence}")
}

/// Compact JSON with object keys sorted, whatever order the value keeps them
/// in: the text of a tool's output, identical wherever it is rendered.
pub fn compact_json(value: &Value) -> String {
    let mut out = String::new();
    write_sorted(value, &mut out);
    out
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (position, (key, item)) in entries.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_scalar(&Value::from(key.as_str()), out);
                out.push(':');
                write_sorted(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_level() {
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!("é\n"));
        let value = json!({"b": [Value::Object(inner)], "a": null});
        assert_eq!(
            compact_json(&value),
            r#"{"a":null,"b":[{"a":"é\n","z":1}]}"#
        );
    }

    #[test]
    fn ids_follow_one_rule() {
        assert_eq!(message_id("r", 2), "msg_r_2");
        assert_eq!(reasoning_id("r", 2), "rs_r_2");
        assert_eq!(function_call_id("r", 2, "c"), "fc_r_2_c");
        assert_eq!(function_output_id("r", 3), "fco_r_3");
    }
}
