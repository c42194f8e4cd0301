//! Conversions between the Python face's types and the core's.
//!
//! JSON payloads cross as `serde_json::Value` (via pythonize, and a direct
//! walk of the plain types on the way in); a step descriptor's payload still
//! held as JSON text stays that text. The Python data
//! classes live in `stepwell.types` and `stepwell.errors`; they are imported once
//! per process and read by attribute, so any object of the right shape works.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use serde_json::Value;
use stepwell_core::{
    ChainStep, NextAction, Payload, RecordedStep, StepDescriptor, StepKind, ToolKind, ToolSchema,
};

/// The Python classes the shims build and recognise.
pub struct PyTypes {
    pub step_descriptor: Py<PyAny>,
    pub step_kind: Py<PyAny>,
    pub append_steps: Py<PyAny>,
    pub complete: Py<PyAny>,
    pub fail: Py<PyAny>,
}

static TYPES: PyOnceLock<PyTypes> = PyOnceLock::new();

impl PyTypes {
    /// The classes of `stepwell.types`, imported on first use.
    pub fn get(py: Python<'_>) -> PyResult<&PyTypes> {
        TYPES.get_or_try_init(py, || {
            let types = py.import("stepwell.types")?;
            let class = |name: &str| types.getattr(name).map(Bound::unbind);
            Ok(PyTypes {
                step_descriptor: class("StepDescriptor")?,
                step_kind: class("StepKind")?,
                append_steps: class("AppendSteps")?,
                complete: class("Complete")?,
                fail: class("Fail")?,
            })
        })
    }
}

/// JSON value → Python object.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(PyErr::from)
}

/// Python object → JSON value; `what` names it in the error.
pub fn from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    crate::json_value::json_value(obj)
        .map_err(|e| PyTypeError::new_err(format!("{what} is not JSON-serialisable: {e}")))
}

fn attr<'py>(obj: &Bound<'py, PyAny>, name: &str, what: &str) -> PyResult<Bound<'py, PyAny>> {
    obj.getattr(name).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} has no attribute {name:?} (got {})",
            type_name(obj)
        ))
    })
}

fn extract<'py, T: for<'a> FromPyObject<'a, 'py>>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    what: &str,
) -> PyResult<T> {
    attr(obj, name, what)?
        .extract::<T>()
        .map_err(|_| PyTypeError::new_err(format!("{what}.{name} has the wrong type")))
}

/// The type name of `obj`, for error messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "<unknown>".into())
}

/// A string-valued enum member (`StepKind.MODEL_CALL`) or a plain string → `str`.
fn enum_str(value: &Bound<'_, PyAny>) -> PyResult<String> {
    match value.getattr("value") {
        Ok(inner) => inner.extract(),
        Err(_) => value.extract(),
    }
}

/// A Python `StepDescriptor` → the core's.
pub fn step_descriptor(obj: &Bound<'_, PyAny>) -> PyResult<StepDescriptor> {
    let what = "StepDescriptor";
    let kind_name = enum_str(&attr(obj, "kind", what)?)
        .map_err(|_| PyTypeError::new_err("StepDescriptor.kind must be a StepKind"))?;
    let kind = StepKind::parse(&kind_name).ok_or_else(|| {
        PyTypeError::new_err(format!(
            "StepDescriptor.kind must be 'model_call' or 'tool_call', got {kind_name:?}"
        ))
    })?;
    let request_payload = match encoded_request(obj)? {
        Some(text) => Payload::from_text(text.to_str()?.to_owned()).map_err(|error| {
            PyTypeError::new_err(format!(
                "StepDescriptor.request_payload is not JSON: {error}"
            ))
        })?,
        None => from_py(
            &attr(obj, "request_payload", what)?,
            "StepDescriptor.request_payload",
        )?
        .into(),
    };
    Ok(StepDescriptor {
        kind,
        request_payload,
    })
}

/// The JSON text a descriptor's payload was made from
/// (`StepDescriptor.with_encoded_request`), while Python has not decoded it:
/// kept as text, it is never built as Python objects only to be walked. `None`
/// for a descriptor whose payload is a value.
fn encoded_request<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
    let py = obj.py();
    let Ok(fields) = obj.getattr(intern!(py, "__dict__")) else {
        return Ok(None);
    };
    let Ok(fields) = fields.cast_exact::<PyDict>() else {
        return Ok(None);
    };
    if fields.contains(intern!(py, "request_payload"))? {
        return Ok(None);
    }
    let encoded = fields.get_item(intern!(py, "_request_json"))?;
    Ok(encoded.and_then(|text| text.cast_exact::<PyString>().ok().cloned()))
}

/// A Python `StepDescriptor` of `kind` whose request payload is the JSON text
/// `encoded` (decoded only if Python reads it).
pub fn py_encoded_step_descriptor<'py>(
    py: Python<'py>,
    kind: StepKind,
    encoded: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    // JSON text is UTF-8 (made from a `str`, or by serde_json): checked all the same.
    let encoded = std::str::from_utf8(encoded)
        .map_err(|error| PyTypeError::new_err(format!("a step's payload is not UTF-8: {error}")))?;
    let types = PyTypes::get(py)?;
    let kind = types.step_kind.bind(py).call1((kind.as_str(),))?;
    let fields = PyDict::new(py);
    fields.set_item("kind", kind)?;
    types
        .step_descriptor
        .bind(py)
        .call_method("with_encoded_request", (encoded,), Some(&fields))
}

/// A Python `NextAction` (`AppendSteps`, `Complete` or `Fail`) → the core's.
pub fn next_action(obj: &Bound<'_, PyAny>) -> PyResult<NextAction> {
    let py = obj.py();
    let types = PyTypes::get(py)?;
    if obj.is_instance(types.append_steps.bind(py))? {
        let steps = attr(obj, "steps", "AppendSteps")?;
        let descriptors = steps
            .try_iter()?
            .map(|step| step.and_then(|s| step_descriptor(&s)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(NextAction::AppendSteps(descriptors))
    } else if obj.is_instance(types.complete.bind(py))? {
        Ok(NextAction::Complete(from_py(
            &attr(obj, "payload", "Complete")?,
            "Complete.payload",
        )?))
    } else if obj.is_instance(types.fail.bind(py))? {
        Ok(NextAction::Fail(from_py(
            &attr(obj, "payload", "Fail")?,
            "Fail.payload",
        )?))
    } else {
        Err(PyTypeError::new_err(format!(
            "next_action_for must return AppendSteps, Complete or Fail, got {}",
            type_name(obj)
        )))
    }
}

/// A Python `RecordedStep` → the core's.
pub fn recorded_step(obj: &Bound<'_, PyAny>) -> PyResult<RecordedStep> {
    let what = "RecordedStep";
    Ok(RecordedStep {
        id: extract(obj, "id", what)?,
        sequence: extract(obj, "sequence", what)?,
        sub_request_id: extract(obj, "sub_request_id", what)?,
    })
}

/// A Python list of `ChainStep` → the core's (only `id` and `sequence` matter to the loop).
pub fn chain(obj: &Bound<'_, PyAny>) -> PyResult<Vec<ChainStep>> {
    obj.try_iter()?
        .map(|step| {
            let step = step?;
            Ok(ChainStep {
                id: extract(&step, "id", "ChainStep")?,
                sequence: extract(&step, "sequence", "ChainStep")?,
            })
        })
        .collect()
}

/// A Python list of `ToolSchema` → the core's.
pub fn tool_schemas(obj: &Bound<'_, PyAny>) -> PyResult<Vec<ToolSchema>> {
    obj.try_iter()?
        .map(|schema| {
            let schema = schema?;
            let kind_name = enum_str(&attr(&schema, "kind", "ToolSchema")?)?;
            let kind = match kind_name.as_str() {
                "http" => ToolKind::Http,
                "agent" => ToolKind::Agent,
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "ToolSchema.kind must be 'http' or 'agent', got {other:?}"
                    )));
                }
            };
            Ok(ToolSchema {
                name: extract(&schema, "name", "ToolSchema")?,
                kind,
            })
        })
        .collect()
}
