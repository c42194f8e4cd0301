//! The Open Responses event stream, encoded from a response's loop events.
//!
//! [`ResponsesEncoder`] turns the loop's events (live deltas, tool results, the
//! terminal event) into the spec's stream: `response.created` and
//! `response.in_progress`, then per output item `output_item.added`, its content
//! events and `output_item.done`, then `response.completed` (or `incomplete` /
//! `failed`) carrying the full response, each frame `event: <type>\ndata: <one
//! line of JSON>\n\n`, and `data: [DONE]` at the end. `sequence_number` counts
//! every event from 0; `output_index` is each item's position in the response.
//!
//! Items, their ids and the terminal event names come from [`crate::items`],
//! as the assembly's do, so streamed items and the final response are the
//! same items. An item stays open until its step can no longer add to it:
//! when tool results arrive (the next round) or the response ends.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::events::{EventData, LoopEvent, LoopEventKind};
use crate::items::{
    self, McpOutcome, function_call_id, function_output_id, mcp_approval_request_id, mcp_call_id,
    message_id, reasoning_id,
};
use crate::json_text;

/// The name of the tool step that compacts a response's context: its output
/// is a `compaction` item, not a function call's output. The dot keeps it
/// apart from every function name a request can give.
pub const COMPACTION_TOOL: &str = "stepwell.compaction";

/// A function the model can call that an MCP server serves: the stream shows
/// its calls as `mcp_call` items (or, when each call needs the client's
/// approval, `mcp_approval_request` items), not as function calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRoute {
    /// The server's label.
    pub server_label: String,
    /// The tool's name on that server.
    pub tool: String,
    /// Whether a call waits for the client's approval instead of running.
    pub approval: bool,
}

/// An MCP call whose arguments are complete, waiting for its result.
#[derive(Debug)]
struct Awaiting {
    call_id: String,
    id: String,
    index: usize,
    route: McpRoute,
    arguments: String,
    /// Run on the client's approval: its call id is the approval request's.
    approved: bool,
}

#[derive(Debug)]
enum Open {
    Reasoning {
        sequence: i64,
        id: String,
        index: usize,
        text: String,
    },
    Message {
        sequence: i64,
        id: String,
        index: usize,
        text: String,
    },
    FunctionCall {
        sequence: i64,
        id: String,
        index: usize,
        call_id: String,
        name: String,
        arguments: String,
        route: Option<McpRoute>,
    },
}

/// `object` with `key` set to `value` (moved in, not copied).
fn with_field(mut object: Value, key: &str, value: Value) -> Value {
    if let Some(fields) = object.as_object_mut() {
        fields.insert(key.into(), value);
    }
    object
}

/// The value of `object`'s `key`, moved out (null left in its place).
fn take_field(object: &mut Value, key: &str) -> Value {
    object.get_mut(key).map(Value::take).unwrap_or_default()
}

/// Begins a frame of `kind` written field by field: its event line, and
/// the opening of its body.
fn open_frame(kind: &str, out: &mut String) {
    out.push_str("event: ");
    out.push_str(kind);
    out.push_str("\ndata: {");
}

/// What a delta frame holds besides its type and sequence number.
#[derive(Debug, Clone, Copy)]
struct DeltaFields<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: Option<usize>,
    delta: &'a str,
    /// Whether it carries an (empty) `logprobs` list.
    logprobs: bool,
}

impl<'a> DeltaFields<'a> {
    /// The delta of an item's first content part.
    fn content(item_id: &'a str, output_index: usize, delta: &'a str) -> Self {
        DeltaFields {
            item_id,
            output_index,
            content_index: Some(0),
            delta,
            logprobs: false,
        }
    }
}

/// Encodes one response's events as the Open Responses SSE stream.
#[derive(Debug)]
pub struct ResponsesEncoder {
    request_id: String,
    sequence_number: u64,
    next_output_index: usize,
    open: Vec<Open>,
    /// The functions MCP servers serve, by the name the model calls.
    mcp: HashMap<String, McpRoute>,
    awaiting: Vec<Awaiting>,
    /// The response as announced by `response.created`, for a failure that
    /// carries no response of its own.
    snapshot: Value,
}

/// The frame terminating the stream.
pub const DONE_FRAME: &str = "data: [DONE]\n\n";

impl ResponsesEncoder {
    /// An encoder for the response of `request_id`.
    pub fn new(request_id: &str) -> Self {
        Self {
            request_id: request_id.to_owned(),
            sequence_number: 0,
            next_output_index: 0,
            open: Vec::new(),
            mcp: HashMap::new(),
            awaiting: Vec::new(),
            snapshot: Value::Null,
        }
    }

    /// The functions MCP servers serve in this response, by the name the
    /// model calls them by.
    pub fn with_mcp(mut self, mcp: HashMap<String, McpRoute>) -> Self {
        self.mcp = mcp;
        self
    }

    /// Items the response has before any step (the listings of its MCP
    /// servers' tools), each added and done at once.
    pub fn announce(&mut self, announced: &[Value], out: &mut String) {
        for item in announced {
            let id = item.get("id").cloned().unwrap_or(Value::Null);
            let index = self.add_item(item.clone(), out);
            let listing = item.get("type").and_then(Value::as_str) == Some("mcp_list_tools");
            if listing {
                let body = json!({"item_id": id, "output_index": index});
                self.frame("response.mcp_list_tools.in_progress", body.clone(), out);
                let failed = item.get("error").is_some_and(|e| !e.is_null());
                let name = if failed {
                    "response.mcp_list_tools.failed"
                } else {
                    "response.mcp_list_tools.completed"
                };
                self.frame(name, body, out);
            }
            self.frame(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
                out,
            );
        }
    }

    /// `response.created` and `response.in_progress` for `response` (its
    /// `output` is sent empty).
    pub fn start(&mut self, mut response: Value, out: &mut String) {
        if let Some(object) = response.as_object_mut() {
            object.insert("output".into(), json!([]));
            object.insert("status".into(), json!("in_progress"));
        }
        self.response_frame("response.created", &response, out);
        self.response_frame("response.in_progress", &response, out);
        self.snapshot = response;
    }

    /// Continues a stream that another encoder began (before a crash or a
    /// takeover): no frames now; the next one is numbered `next_sequence`, and
    /// the next item takes `next_output_index`. `response` is the response as
    /// announced, for a failure that carries none of its own.
    pub fn resume(&mut self, response: Value, next_sequence: u64, next_output_index: usize) {
        self.snapshot = response;
        self.sequence_number = next_sequence;
        self.next_output_index = next_output_index;
    }

    /// Appends the frames `event` produces. A sub-agent's events are not part of
    /// the spec's stream and produce none.
    pub fn encode(&mut self, event: &LoopEvent, out: &mut String) {
        if event.scope.is_some() {
            return;
        }
        match (event.kind, &event.data) {
            (LoopEventKind::ReasoningDelta, data) => {
                let Some(delta) = data.delta() else { return };
                let (id, index) = self.reasoning(event.sequence, out);
                let fields = DeltaFields::content(&id, index, delta);
                self.delta_frame("response.reasoning.delta", fields, out);
            }
            (LoopEventKind::OutputTextDelta, data) => {
                let Some(delta) = data.delta() else { return };
                self.close_reasoning(event.sequence, out);
                let (id, index) = self.message(event.sequence, delta, out);
                let fields = DeltaFields {
                    logprobs: true,
                    ..DeltaFields::content(&id, index, delta)
                };
                self.delta_frame("response.output_text.delta", fields, out);
            }
            (LoopEventKind::FunctionCallArgumentsDelta, data) => {
                let (call_id, name, delta) = match data {
                    EventData::ArgumentsDelta {
                        call_id,
                        name,
                        delta,
                    } => (
                        call_id.to_string(),
                        name.as_deref().unwrap_or(""),
                        delta.as_str(),
                    ),
                    _ => return,
                };
                self.close_reasoning(event.sequence, out);
                let (id, index, route) =
                    self.function_call(event.sequence, &call_id, name, delta, out);
                let kind = match route {
                    None => "response.function_call_arguments.delta",
                    Some(false) => "response.mcp_call_arguments.delta",
                    // An approval request has no arguments stream of its own.
                    Some(true) => return,
                };
                let fields = DeltaFields {
                    content_index: None,
                    ..DeltaFields::content(&id, index, delta)
                };
                self.delta_frame(kind, fields, out);
            }
            (LoopEventKind::OutputItemDone, EventData::Json(result)) => {
                // A tool result: the round that called the tool is over.
                self.close_all(out);
                if self.mcp_result(event.sequence, result, out) {
                    return;
                }
                let item = self.tool_item(event.sequence, result);
                let index = self.add_item(item.clone(), out);
                self.frame(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                    out,
                );
            }
            (LoopEventKind::Completed | LoopEventKind::Failed, EventData::Json(payload)) => {
                self.close_all(out);
                // Calls that never ran: the response ended first.
                for awaiting in std::mem::take(&mut self.awaiting) {
                    self.finish_mcp_call(awaiting, McpOutcome::Incomplete, out);
                }
                self.terminal(event.kind, payload, out);
            }
            // `response.created` was sent by `start`; other shapes carry nothing.
            _ => {}
        }
    }

    /// Ends the `mcp_call` a tool result answers, if it is an MCP call's;
    /// whether it was. A call that ran on the client's approval (one no
    /// model step of this response made) is added here, done at once.
    fn mcp_result(&mut self, sequence: i64, result: &Value, out: &mut String) -> bool {
        let call_id = result.get("call_id").and_then(Value::as_str).unwrap_or("");
        let position = self.awaiting.iter().position(|a| a.call_id == call_id);
        let awaiting = match position {
            Some(position) => self.awaiting.remove(position),
            None => {
                let name = result.get("name").and_then(Value::as_str).unwrap_or("");
                let Some(route) = self.mcp.get(name).cloned() else {
                    return false;
                };
                let id = mcp_call_id(&self.request_id, sequence, call_id);
                let arguments = result
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let item = items::mcp_call(
                    &id,
                    &route.server_label,
                    &route.tool,
                    &arguments,
                    McpOutcome::InProgress,
                    Some(call_id),
                );
                let index = self.add_item(item, out);
                Awaiting {
                    call_id: call_id.to_owned(),
                    id,
                    index,
                    route,
                    arguments,
                    approved: true,
                }
            }
        };
        let body = json!({"item_id": awaiting.id, "output_index": awaiting.index});
        let outcome = match result.get("error") {
            Some(error) => {
                self.frame("response.mcp_call.failed", body, out);
                McpOutcome::Failed(error)
            }
            None => {
                self.frame("response.mcp_call.completed", body, out);
                McpOutcome::Completed(result.get("output").unwrap_or(&Value::Null))
            }
        };
        self.finish_mcp_call(awaiting, outcome, out);
        true
    }

    fn finish_mcp_call(&mut self, awaiting: Awaiting, outcome: McpOutcome<'_>, out: &mut String) {
        let route = &awaiting.route;
        let approval = awaiting.approved.then_some(awaiting.call_id.as_str());
        let item = items::mcp_call(
            &awaiting.id,
            &route.server_label,
            &route.tool,
            &awaiting.arguments,
            outcome,
            approval,
        );
        self.frame(
            "response.output_item.done",
            json!({"output_index": awaiting.index, "item": item}),
            out,
        );
    }

    /// The item a tool step's result is in the response.
    fn tool_item(&self, sequence: i64, result: &Value) -> Value {
        let output = result.get("output").cloned().unwrap_or(json!(""));
        if result.get("name").and_then(Value::as_str) == Some(COMPACTION_TOOL) {
            let sealed: Value = output
                .as_str()
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null);
            let content = sealed
                .get("encrypted_content")
                .and_then(Value::as_str)
                .unwrap_or("");
            return items::compaction(&items::compaction_id(&self.request_id, sequence), content);
        }
        let call_id = result.get("call_id").cloned().unwrap_or(Value::Null);
        items::function_call_output(
            &function_output_id(&self.request_id, sequence),
            &call_id,
            &output,
        )
    }

    fn terminal(&mut self, kind: LoopEventKind, payload: &Value, out: &mut String) {
        let is_response = payload.get("object").and_then(Value::as_str) == Some("response");
        let failed;
        let response = if is_response {
            payload
        } else {
            failed = self.failed(payload);
            &failed
        };
        let status = match kind {
            LoopEventKind::Completed => response.get("status").and_then(Value::as_str),
            _ => None,
        };
        // A completion the loop ended without a status of its own is completed.
        let name = match status.and_then(items::terminal_event) {
            Some(name) => name,
            None if kind == LoopEventKind::Completed => "response.completed",
            None => "response.failed",
        };
        self.response_frame(name, response, out);
    }

    /// A loop error (e.g. the iteration cap) as the announced response, failed.
    fn failed(&self, error: &Value) -> Value {
        let mut failed = self.snapshot.clone();
        if let Some(object) = failed.as_object_mut() {
            let code = error.get("type").cloned().unwrap_or(json!("loop_error"));
            let message = error
                .get("message")
                .cloned()
                .unwrap_or_else(|| json!(code.as_str().unwrap_or("the response failed")));
            object.insert("status".into(), json!("failed"));
            object.insert("error".into(), json!({"code": code, "message": message}));
        }
        failed
    }

    /// A frame whose body is `{"response": response}`, written as `frame`
    /// would write it without copying the response into a body of its own.
    fn response_frame(&mut self, kind: &str, response: &Value, out: &mut String) {
        open_frame(kind, out);
        json_text::push_key(out, "response");
        json_text::push_value(out, response);
        out.push(',');
        self.close_frame(kind, out);
    }

    /// Ends a frame that `open_frame` began and whose other fields (those
    /// that sort before `sequence_number`) are written, each followed by a
    /// comma: its number and type close its body, in the order `frame`
    /// writes them.
    fn close_frame(&mut self, kind: &str, out: &mut String) {
        json_text::push_key(out, "sequence_number");
        json_text::push_number(out, self.sequence_number);
        out.push(',');
        json_text::push_key(out, "type");
        json_text::push_string(out, kind);
        out.push_str("}\n\n");
        self.sequence_number += 1;
    }

    /// Appends the frame of `body`; gives `body` back, so a long text moved
    /// into it can be moved on into the next frame rather than copied.
    fn frame(&mut self, kind: &str, mut body: Value, out: &mut String) -> Value {
        if let Some(object) = body.as_object_mut() {
            object.insert("type".into(), json!(kind));
            object.insert("sequence_number".into(), json!(self.sequence_number));
        }
        self.sequence_number += 1;
        // serde_json writes no raw newlines, so `data` stays one line.
        out.push_str("event: ");
        out.push_str(kind);
        out.push_str("\ndata: ");
        json_text::push_value(out, &body);
        out.push_str("\n\n");
        body
    }

    /// A delta frame, written as `frame` would write it (its keys in the
    /// same order) without building its body: a stream is mostly these.
    fn delta_frame(&mut self, kind: &str, fields: DeltaFields<'_>, out: &mut String) {
        open_frame(kind, out);
        if let Some(content_index) = fields.content_index {
            json_text::push_key(out, "content_index");
            json_text::push_number(out, content_index as u64);
            out.push(',');
        }
        json_text::push_key(out, "delta");
        json_text::push_string(out, fields.delta);
        out.push(',');
        json_text::push_key(out, "item_id");
        json_text::push_string(out, fields.item_id);
        if fields.logprobs {
            out.push_str(",\"logprobs\":[]");
        }
        out.push(',');
        json_text::push_key(out, "output_index");
        json_text::push_number(out, fields.output_index as u64);
        out.push(',');
        self.close_frame(kind, out);
    }

    fn add_item(&mut self, item: Value, out: &mut String) -> usize {
        let index = self.next_output_index;
        self.next_output_index += 1;
        self.frame(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
            out,
        );
        index
    }

    fn reasoning(&mut self, sequence: i64, out: &mut String) -> (String, usize) {
        let found = self.open.iter().find_map(|o| match o {
            Open::Reasoning {
                sequence: s,
                id,
                index,
                ..
            } if *s == sequence => Some((id.clone(), *index)),
            _ => None,
        });
        if let Some(found) = found {
            return found;
        }
        let id = reasoning_id(&self.request_id, sequence);
        let index = self.add_item(items::reasoning(&id, None), out);
        self.open.push(Open::Reasoning {
            sequence,
            id: id.clone(),
            index,
            text: String::new(),
        });
        (id, index)
    }

    fn message(&mut self, sequence: i64, delta: &str, out: &mut String) -> (String, usize) {
        for open in &mut self.open {
            if let Open::Message {
                sequence: s,
                id,
                index,
                text,
            } = open
                && *s == sequence
            {
                text.push_str(delta);
                return (id.clone(), *index);
            }
        }
        let id = message_id(&self.request_id, sequence);
        let index = self.add_item(items::message(&id, "in_progress", None, vec![]), out);
        self.frame(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": items::output_text("", json!([]))}),
            out,
        );
        self.open.push(Open::Message {
            sequence,
            id: id.clone(),
            index,
            text: delta.to_owned(),
        });
        (id, index)
    }

    fn function_call(
        &mut self,
        sequence: i64,
        call_id: &str,
        name: &str,
        delta: &str,
        out: &mut String,
    ) -> (String, usize, Option<bool>) {
        for open in &mut self.open {
            if let Open::FunctionCall {
                sequence: s,
                id,
                index,
                call_id: c,
                arguments,
                route,
                ..
            } = open
                && *s == sequence
                && c == call_id
            {
                arguments.push_str(delta);
                return (id.clone(), *index, route.as_ref().map(|r| r.approval));
            }
        }
        let route = self.mcp.get(name).cloned();
        let (id, item) = match &route {
            None => {
                let id = function_call_id(&self.request_id, sequence, call_id);
                let item = items::function_call(&id, call_id, name, "", "in_progress");
                (id, item)
            }
            Some(route) if route.approval => {
                let id = mcp_approval_request_id(&self.request_id, sequence, call_id);
                let item = items::mcp_approval_request(&id, &route.server_label, &route.tool, "");
                (id, item)
            }
            Some(route) => {
                let id = mcp_call_id(&self.request_id, sequence, call_id);
                let label = &route.server_label;
                let item =
                    items::mcp_call(&id, label, &route.tool, "", McpOutcome::InProgress, None);
                (id, item)
            }
        };
        let index = self.add_item(item, out);
        if route.as_ref().is_some_and(|r| !r.approval) {
            self.frame(
                "response.mcp_call.in_progress",
                json!({"item_id": id, "output_index": index}),
                out,
            );
        }
        let approval = route.as_ref().map(|r| r.approval);
        self.open.push(Open::FunctionCall {
            sequence,
            id: id.clone(),
            index,
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            arguments: delta.to_owned(),
            route,
        });
        (id, index, approval)
    }

    fn close_reasoning(&mut self, sequence: i64, out: &mut String) {
        let position = self
            .open
            .iter()
            .position(|o| matches!(o, Open::Reasoning { sequence: s, .. } if *s == sequence));
        if let Some(position) = position {
            let open = self.open.remove(position);
            self.close(open, false, out);
        }
    }

    fn close_all(&mut self, out: &mut String) {
        let open = std::mem::take(&mut self.open);
        let calling: Vec<i64> = open
            .iter()
            .filter_map(|o| match o {
                Open::FunctionCall { sequence, .. } => Some(*sequence),
                _ => None,
            })
            .collect();
        for item in open {
            let called_tools = match &item {
                Open::Message { sequence, .. } => calling.contains(sequence),
                _ => false,
            };
            self.close(item, called_tools, out);
        }
    }

    /// Ends an open item; `called_tools` says whether a message's step also
    /// called tools (its phase).
    fn close(&mut self, open: Open, called_tools: bool, out: &mut String) {
        match open {
            Open::Reasoning {
                id, index, text, ..
            } => {
                self.frame(
                    "response.reasoning.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                    out,
                );
                let item = items::reasoning(&id, Some(&text));
                self.frame(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                    out,
                );
            }
            Open::Message {
                id, index, text, ..
            } => {
                // The text is moved from frame to frame, never copied: a long
                // answer's is megabytes.
                let done = json!({"item_id": id, "output_index": index, "content_index": 0,
                                  "logprobs": []});
                let done = with_field(done, "text", Value::String(text));
                let mut done = self.frame("response.output_text.done", done, out);
                let part = items::output_text("", json!([]));
                let part = with_field(part, "text", take_field(&mut done, "text"));
                let body = json!({"item_id": id, "output_index": index, "content_index": 0});
                let body = with_field(body, "part", part);
                let mut body = self.frame("response.content_part.done", body, out);
                let part = take_field(&mut body, "part");
                let phase = items::phase(called_tools);
                let item = items::message(&id, "completed", Some(phase), vec![part]);
                self.frame(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                    out,
                );
            }
            Open::FunctionCall {
                id,
                index,
                arguments,
                route: Some(route),
                call_id,
                ..
            } => {
                if route.approval {
                    let item = items::mcp_approval_request(
                        &id,
                        &route.server_label,
                        &route.tool,
                        &arguments,
                    );
                    self.frame(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                        out,
                    );
                    return;
                }
                self.frame(
                    "response.mcp_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": arguments}),
                    out,
                );
                // Done once its result comes (or the response ends first).
                self.awaiting.push(Awaiting {
                    call_id,
                    id,
                    index,
                    route,
                    arguments,
                    approved: false,
                });
            }
            Open::FunctionCall {
                id,
                index,
                call_id,
                name,
                arguments,
                route: None,
                ..
            } => {
                self.frame(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name,
                           "arguments": arguments}),
                    out,
                );
                let item = items::function_call(&id, &call_id, &name, &arguments, "completed");
                self.frame(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                    out,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn events(text: &str) -> Vec<Value> {
        text.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|frame| {
                let (head, data) = frame.split_once("\ndata: ").unwrap();
                let value: Value = serde_json::from_str(data).unwrap();
                assert_eq!(head.strip_prefix("event: "), value["type"].as_str());
                value
            })
            .collect()
    }

    #[test]
    fn response_frames_are_written_as_their_bodies_print() {
        let response = json!({"id": "resp_\"r\"", "object": "response", "output": [{"a": 1}],
                              "text": "é\n🦊", "usage": null});
        let (mut fast, mut printed) = (ResponsesEncoder::new("r"), ResponsesEncoder::new("r"));
        let (mut one, mut other) = (String::new(), String::new());
        fast.response_frame("response.completed", &response, &mut one);
        printed.frame(
            "response.completed",
            json!({ "response": response }),
            &mut other,
        );
        assert_eq!(one, other);
        assert_eq!(fast.sequence_number, printed.sequence_number);
    }

    #[test]
    fn delta_frames_are_written_as_their_bodies_print() {
        let texts = [
            "",
            "Hello",
            "é \"q\" \\ \n\t\u{1}\u{1f}\u{7f} 🦊",
            "\u{2028}",
        ];
        for (kind, content_index, logprobs) in [
            ("response.output_text.delta", Some(3), true),
            ("response.reasoning.delta", Some(0), false),
            ("response.function_call_arguments.delta", None, false),
        ] {
            for delta in texts {
                let mut fast = ResponsesEncoder::new("r");
                let mut printed = ResponsesEncoder::new("r");
                fast.sequence_number = 41;
                printed.sequence_number = 41;
                let fields = DeltaFields {
                    item_id: "msg_\"x\"",
                    output_index: 7,
                    content_index,
                    delta,
                    logprobs,
                };
                let mut body =
                    json!({"item_id": fields.item_id, "output_index": 7, "delta": delta});
                if let Some(index) = content_index {
                    body["content_index"] = json!(index);
                }
                if logprobs {
                    body["logprobs"] = json!([]);
                }
                let (mut one, mut other) = (String::new(), String::new());
                fast.delta_frame(kind, fields, &mut one);
                printed.frame(kind, body, &mut other);
                assert_eq!(one, other);
                assert_eq!(fast.sequence_number, printed.sequence_number);
            }
        }
    }

    fn delta(sequence: i64, kind: LoopEventKind, data: EventData) -> LoopEvent {
        LoopEvent::new(sequence, kind, data)
    }

    #[test]
    fn a_resumed_stream_continues_the_numbering_and_the_indexes() {
        let mut encoder = ResponsesEncoder::new("r");
        encoder.resume(json!({"id": "resp_r", "object": "response"}), 7, 2);
        let mut out = String::new();
        let event = delta(
            5,
            LoopEventKind::OutputTextDelta,
            EventData::Delta("x".into()),
        );
        encoder.encode(&event, &mut out);
        let events = events(&out);
        assert_eq!(events[0]["type"], "response.output_item.added");
        assert_eq!(events[0]["sequence_number"], 7);
        assert_eq!(events[0]["output_index"], 2);
        assert_eq!(
            events.last().unwrap()["sequence_number"],
            7 + events.len() - 1
        );
    }

    #[test]
    fn a_text_answer_then_completion() {
        let mut encoder = ResponsesEncoder::new("r");
        let mut out = String::new();
        encoder.start(
            json!({"id": "resp_r", "object": "response", "status": "queued"}),
            &mut out,
        );
        for piece in ["Hel", "lo"] {
            let event = delta(
                1,
                LoopEventKind::OutputTextDelta,
                EventData::Delta(piece.into()),
            );
            encoder.encode(&event, &mut out);
        }
        let done = json!({"id": "resp_r", "object": "response", "status": "completed"});
        encoder.encode(
            &delta(2, LoopEventKind::Completed, EventData::Json(done)),
            &mut out,
        );
        let events = events(&out);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let numbers: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, (0..10).collect::<Vec<_>>());
        assert_eq!(events[6]["text"], "Hello");
        assert_eq!(events[2]["item"]["id"], "msg_r_1");
        assert_eq!(events[1]["response"]["status"], "in_progress");
    }

    #[test]
    fn function_calls_and_tool_outputs_get_their_own_indexes() {
        let mut encoder = ResponsesEncoder::new("r");
        let mut out = String::new();
        encoder.start(json!({"object": "response"}), &mut out);
        for (call, piece) in [("a", "{\"x\""), ("b", "{}"), ("a", ":1}")] {
            let data = EventData::ArgumentsDelta {
                call_id: Arc::from(call),
                name: Some(Arc::from("f")),
                delta: piece.into(),
            };
            encoder.encode(
                &delta(1, LoopEventKind::FunctionCallArgumentsDelta, data),
                &mut out,
            );
        }
        let output = json!({"type": "function_call_output", "call_id": "a", "output": "{}"});
        encoder.encode(
            &delta(2, LoopEventKind::OutputItemDone, EventData::Json(output)),
            &mut out,
        );
        let events = events(&out);
        let done: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "response.output_item.done")
            .collect();
        assert_eq!(done.len(), 3);
        assert_eq!(done[0]["item"]["arguments"], "{\"x\":1}");
        assert_eq!(done[0]["output_index"], 0);
        assert_eq!(done[1]["output_index"], 1);
        assert_eq!(done[2]["item"]["id"], "fco_r_2");
        assert_eq!(done[2]["output_index"], 2);
    }

    #[test]
    fn a_loop_error_fails_the_announced_response() {
        let mut encoder = ResponsesEncoder::new("r");
        let mut out = String::new();
        encoder.start(json!({"id": "resp_r", "object": "response"}), &mut out);
        let error = json!({"type": "max_iterations_exceeded"});
        encoder.encode(
            &delta(9, LoopEventKind::Failed, EventData::Json(error)),
            &mut out,
        );
        let last = events(&out).pop().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"]["code"], "max_iterations_exceeded");
    }

    fn routed(approval: bool) -> ResponsesEncoder {
        let route = McpRoute {
            server_label: "calc".into(),
            tool: "add".into(),
            approval,
        };
        ResponsesEncoder::new("r").with_mcp(HashMap::from([("calc__add".to_owned(), route)]))
    }

    fn call_delta(piece: &str) -> LoopEvent {
        let data = EventData::ArgumentsDelta {
            call_id: Arc::from("c"),
            name: Some(Arc::from("calc__add")),
            delta: piece.into(),
        };
        delta(1, LoopEventKind::FunctionCallArgumentsDelta, data)
    }

    #[test]
    fn an_mcp_call_is_one_item_done_with_its_result() {
        let mut encoder = routed(false);
        let mut out = String::new();
        encoder.start(json!({"object": "response"}), &mut out);
        for piece in ["{\"a\"", ":1}"] {
            encoder.encode(&call_delta(piece), &mut out);
        }
        let result = json!({"call_id": "c", "name": "calc__add", "output": "{\"result\":1}"});
        encoder.encode(
            &delta(2, LoopEventKind::OutputItemDone, EventData::Json(result)),
            &mut out,
        );
        let events = events(&out);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types[2..],
            [
                "response.output_item.added",
                "response.mcp_call.in_progress",
                "response.mcp_call_arguments.delta",
                "response.mcp_call_arguments.delta",
                "response.mcp_call_arguments.done",
                "response.mcp_call.completed",
                "response.output_item.done",
            ]
        );
        let done = &events.last().unwrap()["item"];
        assert_eq!(done["type"], "mcp_call");
        assert_eq!(done["id"], "mcp_r_1_c");
        assert_eq!(done["arguments"], "{\"a\":1}");
        assert_eq!(done["output"], "{\"result\":1}");
        assert_eq!(done["status"], "completed");
        assert_eq!(events.last().unwrap()["output_index"], 0);
    }

    #[test]
    fn a_failed_mcp_call_carries_its_error_and_an_unrun_one_is_incomplete() {
        let mut encoder = routed(false);
        let mut out = String::new();
        encoder.encode(&call_delta("{}"), &mut out);
        let result = json!({"call_id": "c", "name": "calc__add", "output": "x", "error": "boom"});
        encoder.encode(
            &delta(2, LoopEventKind::OutputItemDone, EventData::Json(result)),
            &mut out,
        );
        let failed = events(&out).pop().unwrap();
        assert_eq!(failed["item"]["status"], "failed");
        assert_eq!(failed["item"]["error"]["content"][0]["text"], "boom");

        let mut encoder = routed(false);
        let mut out = String::new();
        encoder.encode(&call_delta("{}"), &mut out);
        let done = json!({"object": "response", "status": "completed"});
        encoder.encode(
            &delta(2, LoopEventKind::Completed, EventData::Json(done)),
            &mut out,
        );
        let events = events(&out);
        assert_eq!(events[events.len() - 2]["item"]["status"], "incomplete");
    }

    #[test]
    fn a_call_that_needs_approval_streams_as_an_approval_request() {
        let mut encoder = routed(true);
        let mut out = String::new();
        encoder.encode(&call_delta("{}"), &mut out);
        let done = json!({"object": "response", "status": "completed"});
        encoder.encode(
            &delta(2, LoopEventKind::Completed, EventData::Json(done)),
            &mut out,
        );
        let events = events(&out);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.output_item.added",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(events[1]["item"]["type"], "mcp_approval_request");
        assert_eq!(events[1]["item"]["id"], "mcpr_r_1_c");
        assert_eq!(events[1]["item"]["arguments"], "{}");
    }

    #[test]
    fn an_approved_call_is_added_when_its_result_comes() {
        let mut encoder = routed(false);
        let mut out = String::new();
        let result = json!({"call_id": "mcpr_q_1_c", "name": "calc__add",
                            "arguments": "{}", "output": "2"});
        encoder.encode(
            &delta(1, LoopEventKind::OutputItemDone, EventData::Json(result)),
            &mut out,
        );
        let events = events(&out);
        assert_eq!(events[0]["type"], "response.output_item.added");
        let done = &events.last().unwrap()["item"];
        assert_eq!(done["approval_request_id"], "mcpr_q_1_c");
        assert_eq!(done["output"], "2");
    }

    #[test]
    fn listings_are_announced_before_any_step() {
        let mut encoder = ResponsesEncoder::new("r");
        let mut out = String::new();
        let listing = json!({"type": "mcp_list_tools", "id": "mcpl_r_0", "server_label": "calc",
                             "tools": [], "error": null});
        encoder.announce(&[listing], &mut out);
        let types: Vec<String> = events(&out)
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            types,
            [
                "response.output_item.added",
                "response.mcp_list_tools.in_progress",
                "response.mcp_list_tools.completed",
                "response.output_item.done"
            ]
        );
    }
}
