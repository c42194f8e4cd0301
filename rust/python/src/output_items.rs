//! The Open Responses item ids and tool-output text of `stepwell_core::output_items`,
//! for the Python assembly: one rule, whichever side renders an item.

use pyo3::prelude::*;
use stepwell_core::output_items;

use crate::convert;

/// The id of the assistant message a model step produced.
#[pyfunction]
fn message_id(request_id: &str, sequence: i64) -> String {
    output_items::message_id(request_id, sequence)
}

/// The id of the reasoning item a model step produced.
#[pyfunction]
fn reasoning_id(request_id: &str, sequence: i64) -> String {
    output_items::reasoning_id(request_id, sequence)
}

/// The id of a function call a model step made.
#[pyfunction]
fn function_call_id(request_id: &str, sequence: i64, call_id: &str) -> String {
    output_items::function_call_id(request_id, sequence, call_id)
}

/// The id of the output of a tool step.
#[pyfunction]
fn function_output_id(request_id: &str, sequence: i64) -> String {
    output_items::function_output_id(request_id, sequence)
}

/// Compact JSON with sorted keys: the text of a tool's output.
#[pyfunction]
fn compact_json(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(output_items::compact_json(&convert::from_py(
        value,
        "the value",
    )?))
}

/// Adds these functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(message_id, m)?)?;
    m.add_function(wrap_pyfunction!(reasoning_id, m)?)?;
    m.add_function(wrap_pyfunction!(function_call_id, m)?)?;
    m.add_function(wrap_pyfunction!(function_output_id, m)?)?;
    m.add_function(wrap_pyfunction!(compact_json, m)?)?;
    Ok(())
}
