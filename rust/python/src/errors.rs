//! The `stepwell.errors` exception classes, seen from Rust: core errors become
//! them, and tool exceptions are classified by them.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use stepwell_core::{ExecutorError, LoopError};

use crate::convert;

/// The exception classes of `stepwell.errors`.
pub struct PyErrors {
    loop_error: Py<PyAny>,
    loop_failed: Py<PyAny>,
    max_iterations: Py<PyAny>,
    max_depth: Py<PyAny>,
    empty_action: Py<PyAny>,
    store_error: Py<PyAny>,
    executor_error: Py<PyAny>,
    tool_error: Py<PyAny>,
    tool_not_found: Py<PyAny>,
    invalid_arguments: Py<PyAny>,
    tool_timeout: Py<PyAny>,
}

static ERRORS: PyOnceLock<PyErrors> = PyOnceLock::new();

impl PyErrors {
    /// The classes, imported on first use.
    pub fn get(py: Python<'_>) -> PyResult<&PyErrors> {
        ERRORS.get_or_try_init(py, || {
            let module = py.import("stepwell.errors")?;
            let class = |name: &str| module.getattr(name).map(Bound::unbind);
            Ok(PyErrors {
                loop_error: class("LoopError")?,
                loop_failed: class("LoopFailed")?,
                max_iterations: class("MaxIterationsExceeded")?,
                max_depth: class("MaxDepthExceeded")?,
                empty_action: class("EmptyAction")?,
                store_error: class("StoreError")?,
                executor_error: class("ExecutorError")?,
                tool_error: class("ToolError")?,
                tool_not_found: class("ToolNotFound")?,
                invalid_arguments: class("InvalidToolArguments")?,
                tool_timeout: class("ToolTimeout")?,
            })
        })
    }

    /// Which `ToolError` subclass `error` is: `not_found`, `invalid_arguments`,
    /// `timeout`, `execution` (any other `ToolError`), or `None` for a non-tool error.
    pub fn classify_tool_error(&self, py: Python<'_>, error: &PyErr) -> Option<&'static str> {
        let is = |class: &Py<PyAny>| error.is_instance(py, class.bind(py));
        if is(&self.tool_not_found) {
            Some("not_found")
        } else if is(&self.invalid_arguments) {
            Some("invalid_arguments")
        } else if is(&self.tool_timeout) {
            Some("timeout")
        } else if is(&self.tool_error) {
            Some("execution")
        } else {
            None
        }
    }

    /// The Python exception for a core loop error, with the store's or the
    /// executor's own exception as `__cause__` where there is one.
    pub fn loop_error(&self, py: Python<'_>, error: &LoopError) -> PyErr {
        match self.build(py, error) {
            Ok(err) => err,
            Err(err) => err,
        }
    }

    fn build(&self, py: Python<'_>, error: &LoopError) -> PyResult<PyErr> {
        let payload = convert::to_py(py, &error.to_payload())?;
        let message = error.to_string();
        let instance = match error {
            LoopError::Failed(_) => self.loop_failed.bind(py).call1((payload,))?,
            LoopError::MaxIterationsExceeded => {
                self.max_iterations.bind(py).call1((message, payload))?
            }
            LoopError::MaxDepthExceeded => self.max_depth.bind(py).call1((message, payload))?,
            LoopError::EmptyAction => self.empty_action.bind(py).call1((message, payload))?,
            LoopError::Store(_) => self.store_error.bind(py).call1((message, payload))?,
            LoopError::Executor(_) => self.executor_error.bind(py).call1((message, payload))?,
        };
        let err = PyErr::from_value(instance);
        let cause = match error {
            LoopError::Store(e) => e.cause(),
            LoopError::Executor(ExecutorError::Executor { source, .. }) => source.as_deref(),
            _ => None,
        };
        if let Some(py_cause) = cause.and_then(|c| c.downcast_ref::<PyErr>()) {
            err.set_cause(py, Some(py_cause.clone_ref(py)));
        }
        Ok(err)
    }

    /// A `LoopError` for a failure inside stepwell itself (a caught panic).
    pub fn internal(&self, py: Python<'_>, message: String) -> PyErr {
        let payload = serde_json::json!({"type": "internal_error", "message": message});
        match convert::to_py(py, &payload)
            .and_then(|p| self.loop_error.bind(py).call1((message, p)))
        {
            Ok(instance) => PyErr::from_value(instance),
            Err(err) => err,
        }
    }
}
