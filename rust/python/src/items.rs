//! `stepwell_core::items` for the Python face: the response ids, item shapes
//! and terminal event names, so the assembly builds every item with the same
//! code the stream encoder does.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use serde_json::Value;
use stepwell_core::items;
use stepwell_core::responses_stream::COMPACTION_TOOL;

use crate::convert;

/// The id of the response of `request_id`.
#[pyfunction]
fn response_id(request_id: &str) -> String {
    items::response_id(request_id)
}

/// The request id a response id names.
#[pyfunction]
fn request_id_of(response_id: &str) -> String {
    items::request_id_of(response_id).to_owned()
}

/// The id prefix of an item of type `kind`.
#[pyfunction]
fn id_prefix(kind: &str) -> &'static str {
    items::id_prefix(kind)
}

/// The stream's last event for a response ending in `status`, if it has one.
#[pyfunction]
fn terminal_event(status: &str) -> Option<&'static str> {
    items::terminal_event(status)
}

/// The reasoning item of a model step.
#[pyfunction]
fn reasoning_item<'py>(
    py: Python<'py>,
    request_id: &str,
    sequence: i64,
    text: Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::reasoning_id(request_id, sequence);
    let item = convert::to_py(py, &items::reasoning(&id, Some("")))?;
    with_text(&item, text)?;
    Ok(item)
}

/// Puts `text` into the first content part of `item`: the caller's own
/// `str`, not a copy of it made through Rust (a long answer's is megabytes,
/// and the response assembled from it is kept until its outcome is).
fn with_text<'py>(item: &Bound<'py, PyAny>, text: Bound<'py, PyString>) -> PyResult<()> {
    item.get_item("content")?
        .get_item(0)?
        .set_item("text", text)
}

/// The assistant message of a model step, finished; `called_tools` says
/// whether the step also called tools (its phase).
#[pyfunction]
fn message_item<'py>(
    py: Python<'py>,
    request_id: &str,
    sequence: i64,
    text: Bound<'py, PyString>,
    logprobs: &Bound<'py, PyAny>,
    called_tools: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::message_id(request_id, sequence);
    let part = items::output_text("", convert::from_py(logprobs, "logprobs")?);
    let phase = items::phase(called_tools);
    let item = convert::to_py(
        py,
        &items::message(&id, "completed", Some(phase), vec![part]),
    )?;
    with_text(&item, text)?;
    Ok(item)
}

/// A function call a model step made, finished.
#[pyfunction]
fn function_call_item<'py>(
    py: Python<'py>,
    request_id: &str,
    sequence: i64,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::function_call_id(request_id, sequence, call_id);
    let item = items::function_call(&id, call_id, name, arguments, "completed");
    convert::to_py(py, &item)
}

/// The output of a tool step, as the model is given it.
#[pyfunction]
fn function_output_item<'py>(
    py: Python<'py>,
    request_id: &str,
    sequence: i64,
    call_id: &str,
    output: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::function_output_id(request_id, sequence);
    let item = items::function_call_output(&id, &Value::from(call_id), &Value::from(output));
    convert::to_py(py, &item)
}

/// The `compaction` item of a compaction step.
#[pyfunction]
fn compaction_item<'py>(
    py: Python<'py>,
    request_id: &str,
    sequence: i64,
    encrypted_content: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::compaction_id(request_id, sequence);
    convert::to_py(py, &items::compaction(&id, encrypted_content))
}

/// An `mcp_call` item of a model step: `status` is `completed` (with
/// `output`), `failed` (with `error`), `incomplete` or `in_progress`.
#[pyfunction]
#[pyo3(signature = (request_id, sequence, call_id, server_label, name, arguments, status, output=None, error=None, approval_request_id=None))]
#[allow(clippy::too_many_arguments)]
fn mcp_call_item<'py>(
    py: Python<'py>,
    request_id: &str,
    sequence: i64,
    call_id: &str,
    server_label: &str,
    name: &str,
    arguments: &str,
    status: &str,
    output: Option<&str>,
    error: Option<&str>,
    approval_request_id: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::mcp_call_id(request_id, sequence, call_id);
    let output = Value::from(output);
    let error = Value::from(error);
    let outcome = match status {
        "completed" => items::McpOutcome::Completed(&output),
        "failed" => items::McpOutcome::Failed(&error),
        "incomplete" => items::McpOutcome::Incomplete,
        _ => items::McpOutcome::InProgress,
    };
    let item = items::mcp_call(
        &id,
        server_label,
        name,
        arguments,
        outcome,
        approval_request_id,
    );
    convert::to_py(py, &item)
}

/// An `mcp_approval_request` item of a model step.
#[pyfunction]
fn mcp_approval_request_item<'py>(
    py: Python<'py>,
    request_id: &str,
    sequence: i64,
    call_id: &str,
    server_label: &str,
    name: &str,
    arguments: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::mcp_approval_request_id(request_id, sequence, call_id);
    convert::to_py(
        py,
        &items::mcp_approval_request(&id, server_label, name, arguments),
    )
}

/// The `index`th `mcp_list_tools` item of a response.
#[pyfunction]
#[pyo3(signature = (request_id, index, server_label, tools, error=None))]
fn mcp_list_tools_item<'py>(
    py: Python<'py>,
    request_id: &str,
    index: usize,
    server_label: &str,
    tools: &Bound<'py, PyAny>,
    error: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let id = items::mcp_list_tools_id(request_id, index);
    let tools = convert::from_py(tools, "tools")?;
    convert::to_py(py, &items::mcp_list_tools(&id, server_label, tools, error))
}

/// Compact JSON with sorted keys: the text of a tool's output.
#[pyfunction]
fn compact_json(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(items::compact_json(&convert::from_py(value, "the value")?))
}

/// The messages of the chat-completions body `request` (JSON text), less
/// its system messages, as the inside of a JSON array: what a response that
/// continues the one whose last model call sent `request` carries from it.
/// Raises `ValueError` when `request` is not such a body.
#[pyfunction]
fn carried_messages(request: &str) -> PyResult<String> {
    stepwell_core::carried::carried_messages(request).map_err(|error| {
        PyValueError::new_err(format!("a stored model request is not valid: {error}"))
    })
}

/// Adds these functions, and the constants beside them, to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(response_id, m)?)?;
    m.add_function(wrap_pyfunction!(request_id_of, m)?)?;
    m.add_function(wrap_pyfunction!(id_prefix, m)?)?;
    m.add_function(wrap_pyfunction!(terminal_event, m)?)?;
    m.add_function(wrap_pyfunction!(reasoning_item, m)?)?;
    m.add_function(wrap_pyfunction!(message_item, m)?)?;
    m.add_function(wrap_pyfunction!(function_call_item, m)?)?;
    m.add_function(wrap_pyfunction!(function_output_item, m)?)?;
    m.add_function(wrap_pyfunction!(compaction_item, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_call_item, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_approval_request_item, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_list_tools_item, m)?)?;
    m.add_function(wrap_pyfunction!(compact_json, m)?)?;
    m.add_function(wrap_pyfunction!(carried_messages, m)?)?;
    m.add(
        "TERMINAL_EVENTS",
        PyTuple::new(m.py(), items::TERMINAL_EVENTS)?,
    )?;
    m.add("COMPACTION_TOOL", COMPACTION_TOOL)?;
    Ok(())
}
