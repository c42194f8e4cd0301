//! A Python object whose methods the core awaits.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::aio::PyLoop;

/// A user object (store, executor, sink) plus the loop its methods run on.
pub struct Callee {
    obj: Py<PyAny>,
    event_loop: Arc<PyLoop>,
}

impl Callee {
    /// Wraps `obj`, whose methods will run on `event_loop`.
    pub fn new(obj: Py<PyAny>, event_loop: Arc<PyLoop>) -> Self {
        Self { obj, event_loop }
    }

    /// Whether the object has a callable attribute `name`.
    pub fn has_method(&self, py: Python<'_>, name: &str) -> bool {
        self.obj
            .bind(py)
            .getattr(name)
            .is_ok_and(|m| m.is_callable())
    }

    /// Calls `method(*args)` on the event loop, awaits it, and converts the result
    /// under the GIL. No GIL is held while waiting.
    pub async fn invoke<T>(
        &self,
        method: &str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
        convert: impl for<'py> FnOnce(&Bound<'py, PyAny>) -> PyResult<T>,
    ) -> PyResult<T> {
        let call = Python::attach(|py| {
            let func = self.obj.bind(py).getattr(method)?;
            let args = args(py)?;
            Ok::<_, PyErr>(self.event_loop.call(py, func, args))
        })?;
        let result = call.await?;
        Python::attach(|py| convert(result.bind(py)))
    }
}
