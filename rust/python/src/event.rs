//! `stepwell.LoopEvent`: one live event, rendered to SSE in Rust.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use stepwell_core::{LoopEvent, LoopEventKind};

use crate::convert;

/// One event of a response's live stream.
#[pyclass(frozen, name = "LoopEvent", module = "stepwell._core")]
pub struct PyLoopEvent {
    inner: LoopEvent,
}

impl From<LoopEvent> for PyLoopEvent {
    fn from(inner: LoopEvent) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PyLoopEvent {
    #[new]
    fn new(sequence: i64, kind: &str, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let kind = LoopEventKind::parse(kind)
            .ok_or_else(|| PyValueError::new_err(format!("unknown event kind {kind:?}")))?;
        let data = convert::from_py(data, "LoopEvent.data")?;
        Ok(LoopEvent {
            sequence,
            kind,
            data,
        }
        .into())
    }

    /// The sequence of the step that produced the event (0 for `response.created`).
    #[getter]
    fn sequence(&self) -> i64 {
        self.inner.sequence
    }

    /// The Open Responses event name, e.g. `response.output_text.delta`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    /// The event's JSON body, as a fresh Python object on each access.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::to_py(py, &self.inner.data)
    }

    /// The event as one SSE frame (`id`, `event`, one-line `data`).
    fn sse(&self) -> String {
        self.inner.to_sse()
    }

    fn __repr__(&self) -> String {
        format!(
            "LoopEvent(sequence={}, kind={:?}, data={})",
            self.inner.sequence,
            self.inner.kind.as_str(),
            self.inner.data
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyLoopEvent>()
            .is_ok_and(|other| other.get().inner == self.inner)
    }
}
