//! `stepwell.LoopEvent`: one live event, rendered to SSE in Rust.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use stepwell_core::{EventData, LoopEvent, LoopEventKind};

use crate::convert;

static KIND_NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

/// The kind's name as one interned Python string, shared by every event.
fn kind_name(py: Python<'_>, kind: LoopEventKind) -> Py<PyString> {
    let names = KIND_NAMES.get_or_init(py, || {
        LoopEventKind::ALL
            .iter()
            .map(|k| PyString::intern(py, k.as_str()).unbind())
            .collect()
    });
    let position = LoopEventKind::ALL.iter().position(|k| *k == kind);
    match position.and_then(|p| names.get(p)) {
        Some(name) => name.clone_ref(py),
        None => PyString::new(py, kind.as_str()).unbind(),
    }
}

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

impl PyLoopEvent {
    /// The Python object for `event`, kept out of the cyclic garbage collector.
    ///
    /// pyo3 makes every class a GC type, so each event counted toward and was
    /// traversed by CPython's young-generation collections, which a stream of
    /// events triggers every few hundred; that cost about 7% of a streamed chunk.
    /// An event holds no Python object, so it can never be part of a cycle, and
    /// the collector has nothing to find in it: CPython untracks its own
    /// atomic-only tuples and dicts for the same reason.
    pub fn untracked(py: Python<'_>, event: LoopEvent) -> PyResult<Bound<'_, PyLoopEvent>> {
        let object = Bound::new(py, Self::from(event))?;
        // SAFETY: `object` is a live object of a GC type that this thread holds
        // (with the GIL); untracking it only removes it from the collector's
        // lists, and deallocation untracks only what is still tracked.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(object.as_ptr().cast()) };
        Ok(object)
    }
}

#[pymethods]
impl PyLoopEvent {
    #[new]
    fn new(sequence: i64, kind: &str, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let kind = LoopEventKind::parse(kind)
            .ok_or_else(|| PyValueError::new_err(format!("unknown event kind {kind:?}")))?;
        let data = EventData::Json(convert::from_py(data, "LoopEvent.data")?);
        Ok(LoopEvent::new(sequence, kind, data).into())
    }

    /// The sequence of the step that produced the event (0 for `response.created`).
    #[getter]
    fn sequence(&self) -> i64 {
        self.inner.sequence
    }

    /// The Open Responses event name, e.g. `response.output_text.delta`.
    #[getter]
    fn kind(&self, py: Python<'_>) -> Py<PyString> {
        kind_name(py, self.inner.kind)
    }

    /// The event's JSON body, as a fresh Python object on each access.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.inner.data {
            EventData::Delta(delta) => {
                let dict = PyDict::new(py);
                dict.set_item(intern!(py, "delta"), delta.as_str())?;
                Ok(dict.into_any())
            }
            EventData::ArgumentsDelta {
                call_id,
                name,
                delta,
            } => {
                let dict = PyDict::new(py);
                dict.set_item(intern!(py, "call_id"), &**call_id)?;
                if let Some(name) = name {
                    dict.set_item(intern!(py, "name"), &**name)?;
                }
                dict.set_item(intern!(py, "delta"), delta.as_str())?;
                Ok(dict.into_any())
            }
            EventData::Json(value) => convert::to_py(py, value),
        }
    }

    /// How deep the sub-agent that produced the event runs; 0 at the top level.
    #[getter]
    fn depth(&self) -> u32 {
        self.inner.depth()
    }

    /// The step that called the sub-agent that produced the event; `None` at
    /// the top level.
    #[getter]
    fn scope_parent(&self) -> Option<&str> {
        self.inner.scope_parent()
    }

    /// The `delta` text of a delta event, else `None` (no dict is built).
    #[getter]
    fn delta(&self) -> Option<&str> {
        self.inner.data.delta()
    }

    fn __repr__(&self) -> String {
        format!(
            "LoopEvent(sequence={}, kind={:?}, data={}, depth={})",
            self.inner.sequence,
            self.inner.kind.as_str(),
            self.inner.data,
            self.inner.depth()
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyLoopEvent>().is_ok_and(|other| {
            let other = &other.get().inner;
            other.sequence == self.inner.sequence
                && other.kind == self.inner.kind
                && other.scope == self.inner.scope
                && other.data.to_json() == self.inner.data.to_json()
        })
    }
}
