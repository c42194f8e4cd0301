//! A Python observer (`stepwell._observe.RunObserver`) as the core's
//! [`LoopObserver`]: what the loop reports becomes log lines and spans in Python.
//!
//! The core calls an observer from the future that drives the loop, which this
//! crate polls on the event loop thread with the GIL held (see [`crate::local`]),
//! so each call is a direct Python call: no thread is crossed. An observer that
//! raises is reported as unraisable and otherwise ignored: observing a response
//! must never change it.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use stepwell_core::observe::{LoopObserver, StepEnd, StepInfo};

use crate::convert;

/// Forwards the loop's reports to a Python object's methods.
pub struct PyObserver(pub Py<PyAny>);

impl PyObserver {
    fn call<'py, T>(
        &self,
        py: Python<'py>,
        method: &str,
        args: impl FnOnce(Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyTuple>>,
        convert: impl FnOnce(Bound<'py, PyAny>) -> PyResult<T>,
    ) -> Option<T> {
        let observer = self.0.bind(py);
        let outcome = args(py)
            .and_then(|args| observer.call_method1(method, args))
            .and_then(convert);
        match outcome {
            Ok(value) => Some(value),
            Err(error) => {
                error.write_unraisable(py, Some(observer));
                None
            }
        }
    }
}

fn step_dict<'py>(py: Python<'py>, step: &StepInfo<'_>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("request_id", step.request_id)?;
    dict.set_item("step_id", step.step_id)?;
    dict.set_item("sequence", step.sequence)?;
    dict.set_item("kind", step.kind.as_str())?;
    dict.set_item("tool_name", step.tool_name)?;
    dict.set_item("depth", step.depth)?;
    dict.set_item("scope_parent", step.scope_parent)?;
    Ok(dict)
}

fn end_dict<'py>(py: Python<'py>, end: &StepEnd<'_>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("state", end.state)?;
    dict.set_item("duration", end.duration.as_secs_f64())?;
    dict.set_item("upstream_status", end.upstream_status)?;
    let json = |value: Option<&serde_json::Value>| value.map(|v| convert::to_py(py, v)).transpose();
    dict.set_item("usage", json(end.usage)?)?;
    dict.set_item("error", json(end.error)?)?;
    Ok(dict)
}

impl LoopObserver for PyObserver {
    fn step_started(&self, step: &StepInfo<'_>) -> Vec<(String, String)> {
        Python::attach(|py| {
            self.call(
                py,
                "step_started",
                |py| (step_dict(py, step)?,).into_pyobject(py),
                |headers| {
                    if headers.is_none() {
                        return Ok(Vec::new());
                    }
                    headers
                        .extract::<std::collections::BTreeMap<String, String>>()
                        .map(|map| map.into_iter().collect())
                },
            )
        })
        .unwrap_or_default()
    }

    fn step_finished(&self, step: &StepInfo<'_>, end: &StepEnd<'_>) {
        Python::attach(|py| {
            self.call(
                py,
                "step_finished",
                |py| (step_dict(py, step)?, end_dict(py, end)?).into_pyobject(py),
                |_| Ok(()),
            )
        });
    }

    fn sink_detached(&self, error: &str) {
        Python::attach(|py| {
            self.call(
                py,
                "sink_detached",
                |py| (error,).into_pyobject(py),
                |_| Ok(()),
            )
        });
    }

    fn sink_finished(&self, undelivered: u64) {
        Python::attach(|py| {
            self.call(
                py,
                "sink_finished",
                |py| (undelivered,).into_pyobject(py),
                |_| Ok(()),
            )
        });
    }
}
