//! A Python object whose methods the core awaits.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::aio::{LoopHandle, PyCall};

/// A user object (store, executor, sink) plus the loop its methods run on.
pub struct Callee {
    obj: Arc<Py<PyAny>>,
    handle: LoopHandle,
}

impl Callee {
    /// Wraps `obj`, whose methods will run on the loop of `handle`.
    pub fn new(obj: Py<PyAny>, handle: LoopHandle) -> Self {
        Self {
            obj: Arc::new(obj),
            handle,
        }
    }

    /// Whether the object has a callable attribute `name`.
    pub fn has_method(&self, py: Python<'_>, name: &str) -> bool {
        self.obj
            .bind(py)
            .getattr(name)
            .is_ok_and(|m| m.is_callable())
    }

    /// Calls `method(*args)` on the event loop and hands its outcome, awaited if
    /// awaitable, to `finish` there. No GIL is taken on the calling thread.
    pub fn call<T: Send + 'static>(
        &self,
        method: &'static str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
        finish: impl for<'py> FnOnce(PyResult<Bound<'py, PyAny>>) -> T + Send + 'static,
    ) -> PyCall<T> {
        self.handle.call(self.obj.clone(), method, args, finish)
    }
}
