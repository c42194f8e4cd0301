//! A Python `EventSink` as the core's sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use pyo3::exceptions::asyncio::CancelledError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use stepwell_core::LoopEvent;
use stepwell_core::traits::{EventSink, SinkError};

use crate::callee::Callee;
use crate::event::PyLoopEvent;

/// Adapts a Python sink: one `emit_many(list)` per batch when the sink has it,
/// else `emit(event)` per event. Failures are logged once and swallowed.
///
/// Batches handed to Python hold at most [`PY_BATCH`] events. Every event object
/// counts toward CPython's cyclic-GC threshold (700 live allocations) until the
/// sink is done with it; larger batches made the collector run over each batch,
/// which cost more than the events themselves.
pub struct PySink {
    callee: Callee,
    batched: bool,
    warned: Arc<AtomicBool>,
}

/// The most events one `emit_many` call receives.
const PY_BATCH: usize = 512;

impl PySink {
    /// Wraps a sink, checking once whether it offers `emit_many`.
    pub fn new(py: Python<'_>, callee: Callee) -> Self {
        let batched = callee.has_method(py, "emit_many");
        Self {
            callee,
            batched,
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn send(
        &self,
        method: &'static str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
    ) -> Result<(), SinkError> {
        let warned = self.warned.clone();
        let finish = move |outcome: PyResult<Bound<'_, PyAny>>| {
            outcome.map(drop).map_err(|error| {
                // A cancelled emit is the loop being cancelled, not a broken sink.
                let cancelled = Python::attach(|py| error.is_instance_of::<CancelledError>(py));
                if !cancelled && !warned.swap(true, Ordering::Relaxed) {
                    warn(&error);
                }
                SinkError(error.to_string())
            })
        };
        match self.callee.call(method, args, finish).await {
            Ok(result) => result,
            Err(gone) => Err(SinkError(gone.to_string())),
        }
    }
}

/// Logs a sink failure on the `stepwell` logger (on the loop thread).
fn warn(error: &PyErr) {
    Python::attach(|py| {
        let logged = py.import("logging").and_then(|logging| {
            logging.call_method1("getLogger", ("stepwell",))?.call_method1(
                "warning",
                (
                    "event sink raised %r; the response goes on and later sink errors are not logged",
                    error.value(py),
                ),
            )
        });
        // Logging is best effort: nothing may stop the loop here.
        drop(logged);
    });
}

impl EventSink for PySink {
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if self.batched {
                let mut first_error = Ok(());
                let mut events = events.into_iter().peekable();
                while events.peek().is_some() {
                    let batch: Vec<LoopEvent> = events.by_ref().take(PY_BATCH).collect();
                    let sent = self
                        .send("emit_many", move |py| {
                            (PyList::new(py, batch.into_iter().map(PyLoopEvent::from))?,)
                                .into_pyobject(py)
                        })
                        .await;
                    if first_error.is_ok() {
                        first_error = sent;
                    }
                }
                return first_error;
            }
            let mut first_error = Ok(());
            for event in events {
                let sent = self
                    .send("emit", move |py| {
                        (PyLoopEvent::from(event),).into_pyobject(py)
                    })
                    .await;
                if first_error.is_ok() {
                    first_error = sent;
                }
            }
            first_error
        })
    }
}
