//! Open Responses in one place: the ids, the shape of every item stepwell
//! produces and the stream's terminal event for each status. The stream
//! encoder ([`crate::responses_stream`]) and the Python assembly (through
//! `stepwell._core`) build items only with these, so a streamed item and the
//! same item in the final response always agree.

use std::fmt::Write;

use serde_json::{Value, json};

/// What every response id starts with, before its request id.
pub const RESPONSE_PREFIX: &str = "resp_";

/// The id of the response of `request_id`.
pub fn response_id(request_id: &str) -> String {
    format!("{RESPONSE_PREFIX}{request_id}")
}

/// The request id a response id names (an id without the prefix is taken as
/// a request id already).
pub fn request_id_of(response_id: &str) -> &str {
    response_id
        .strip_prefix(RESPONSE_PREFIX)
        .unwrap_or(response_id)
}

/// The id prefix of an item of type `kind` (`item` for a kind with none of
/// its own).
pub fn id_prefix(kind: &str) -> &'static str {
    match kind {
        "message" => "msg",
        "reasoning" => "rs",
        "function_call" => "fc",
        "function_call_output" => "fco",
        "compaction" => "cmp",
        "mcp_call" => "mcp",
        "mcp_approval_request" => "mcpr",
        "mcp_approval_response" => "mcpa",
        "mcp_list_tools" => "mcpl",
        _ => "item",
    }
}

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

/// The id of an MCP call a model step made.
pub fn mcp_call_id(request_id: &str, sequence: i64, call_id: &str) -> String {
    format!("mcp_{request_id}_{sequence}_{call_id}")
}

/// The id of the approval request for an MCP call a model step made.
pub fn mcp_approval_request_id(request_id: &str, sequence: i64, call_id: &str) -> String {
    format!("mcpr_{request_id}_{sequence}_{call_id}")
}

/// The id of the listing of an MCP server's tools, the `index`th of a response.
pub fn mcp_list_tools_id(request_id: &str, index: usize) -> String {
    format!("mcpl_{request_id}_{index}")
}

/// The id of the `compaction` item a compaction step produced.
pub fn compaction_id(request_id: &str, sequence: i64) -> String {
    format!("cmp_{request_id}_{sequence}")
}

/// The stream's last event for a response ending in `status`; `None` for a
/// status that has none (`cancelled`: its stream just ends).
pub fn terminal_event(status: &str) -> Option<&'static str> {
    match status {
        "completed" => Some("response.completed"),
        "incomplete" => Some("response.incomplete"),
        "failed" => Some("response.failed"),
        _ => None,
    }
}

/// Every event [`terminal_event`] can name.
pub const TERMINAL_EVENTS: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// A reasoning item; `None` for one still being written (no content yet).
pub fn reasoning(id: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(text) => json!([{"type": "reasoning_text", "text": text}]),
        None => json!([]),
    };
    json!({"type": "reasoning", "id": id, "summary": [], "content": content})
}

/// An `output_text` content part, with the log probabilities of its tokens
/// (an empty list when none were asked for).
pub fn output_text(text: &str, logprobs: Value) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs})
}

/// An assistant message. `phase` says whether it is the answer
/// (`final_answer`) or said on the way to one (`commentary`: its step also
/// called tools); it is left out while that is not yet known.
pub fn message(id: &str, status: &str, phase: Option<&str>, content: Vec<Value>) -> Value {
    let mut item = json!({"type": "message", "id": id, "status": status,
                          "role": "assistant", "content": content});
    if let (Some(phase), Some(object)) = (phase, item.as_object_mut()) {
        object.insert("phase".into(), json!(phase));
    }
    item
}

/// The phase of an assistant message whose step did (or did not) call tools.
pub fn phase(called_tools: bool) -> &'static str {
    if called_tools {
        "commentary"
    } else {
        "final_answer"
    }
}

/// A function call the model made.
pub fn function_call(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

/// The output of a tool step, as the model is given it.
pub fn function_call_output(id: &str, call_id: &Value, output: &Value) -> Value {
    json!({"type": "function_call_output", "id": id, "call_id": call_id,
           "output": output, "status": "completed"})
}

/// What became of an MCP call: its status, and its output or error.
#[derive(Debug, Clone, Copy)]
pub enum McpOutcome<'a> {
    /// Still running (or its arguments still coming).
    InProgress,
    /// The server answered: the text the model was given.
    Completed(&'a Value),
    /// The call failed: the message the model was told.
    Failed(&'a Value),
    /// The response ended before the call ran.
    Incomplete,
}

/// An `mcp_call` item: a call of the tool `name` of the server `server_label`.
pub fn mcp_call(
    id: &str,
    server_label: &str,
    name: &str,
    arguments: &str,
    outcome: McpOutcome<'_>,
    approval_request_id: Option<&str>,
) -> Value {
    let (status, output, error) = match outcome {
        McpOutcome::InProgress => ("in_progress", Value::Null, Value::Null),
        McpOutcome::Completed(output) => ("completed", output.clone(), Value::Null),
        McpOutcome::Failed(message) => {
            let content = json!([{"type": "text", "text": message}]);
            let error = json!({"type": "mcp_tool_execution_error", "content": content});
            ("failed", Value::Null, error)
        }
        McpOutcome::Incomplete => ("incomplete", Value::Null, Value::Null),
    };
    json!({"type": "mcp_call", "id": id, "server_label": server_label, "name": name,
           "arguments": arguments, "output": output, "error": error, "status": status,
           "approval_request_id": approval_request_id})
}

/// An `mcp_approval_request` item: a call that waits for the client's approval.
pub fn mcp_approval_request(id: &str, server_label: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "mcp_approval_request", "id": id, "server_label": server_label,
           "name": name, "arguments": arguments})
}

/// An `mcp_list_tools` item: the tools a server offered (or why it could not).
pub fn mcp_list_tools(id: &str, server_label: &str, tools: Value, error: Option<&str>) -> Value {
    json!({"type": "mcp_list_tools", "id": id, "server_label": server_label,
           "tools": tools, "error": error})
}

/// A `compaction` item: what stands for the context before it.
pub fn compaction(id: &str, encrypted_content: &str) -> Value {
    json!({"type": "compaction", "id": id, "encrypted_content": encrypted_content})
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
    fn response_ids_round_trip() {
        assert_eq!(response_id("r"), "resp_r");
        assert_eq!(request_id_of("resp_r"), "r");
        assert_eq!(request_id_of("r"), "r");
        assert_eq!(terminal_event("incomplete"), Some("response.incomplete"));
        assert_eq!(terminal_event("cancelled"), None);
    }

    #[test]
    fn a_message_has_a_phase_only_once_it_is_known() {
        let open = message("m", "in_progress", None, vec![]);
        assert!(open.get("phase").is_none());
        let done = message(
            "m",
            "completed",
            Some(phase(true)),
            vec![output_text("x", json!([]))],
        );
        assert_eq!(done["phase"], "commentary");
        assert_eq!(done["content"][0]["text"], "x");
    }

    #[test]
    fn ids_follow_one_rule() {
        assert_eq!(message_id("r", 2), "msg_r_2");
        assert_eq!(reasoning_id("r", 2), "rs_r_2");
        assert_eq!(function_call_id("r", 2, "c"), "fc_r_2_c");
        assert_eq!(function_output_id("r", 3), "fco_r_3");
        assert_eq!(compaction_id("r", 4), "cmp_r_4");
        assert_eq!(id_prefix("function_call_output"), "fco");
        assert_eq!(id_prefix("web_search_call"), "item");
    }
}
