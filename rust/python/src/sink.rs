//! A Python `EventSink` as the core's sink.

use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use stepwell_core::LoopEvent;
use stepwell_core::traits::{EventSink, SinkError};

use crate::callee::Callee;
use crate::event::PyLoopEvent;

/// Adapts a Python sink: one `emit_many(list)` per batch when the sink has it,
/// else one `emit(event)` per event (the core then hands over one event at a
/// time, so each returned call delivered exactly one). A failure is the core's
/// to handle: it detaches the sink and the observer logs why.
///
/// Batches handed to Python hold at most [`PY_BATCH`] events. Before events were
/// untracked from the cyclic GC (see [`PyLoopEvent::untracked`]), larger batches
/// made the collector walk each batch; since then 2048 measured no faster than
/// 512, and smaller batches keep each call short.
pub struct PySink {
    callee: Callee,
    batched: bool,
}

/// The most events one `emit_many` call receives.
const PY_BATCH: usize = 512;

impl PySink {
    /// Wraps a sink, checking once whether it offers `emit_many`.
    pub fn new(py: Python<'_>, callee: Callee) -> Self {
        let batched = callee.has_method(py, "emit_many");
        Self { callee, batched }
    }

    async fn send(
        &self,
        method: &'static str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
    ) -> Result<(), SinkError> {
        let finish = |outcome: PyResult<Bound<'_, PyAny>>| {
            outcome
                .map(drop)
                .map_err(|error| SinkError(error.to_string()))
        };
        match self.callee.call(method, args, finish).await {
            Ok(result) => result,
            Err(gone) => Err(SinkError(gone.to_string())),
        }
    }
}

impl EventSink for PySink {
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if self.batched {
                return self
                    .send("emit_many", move |py| {
                        let events = events
                            .into_iter()
                            .map(|event| PyLoopEvent::untracked(py, event))
                            .collect::<PyResult<Vec<_>>>()?;
                        (PyList::new(py, events)?,).into_pyobject(py)
                    })
                    .await;
            }
            for event in events {
                self.send("emit", move |py| {
                    (PyLoopEvent::untracked(py, event)?,).into_pyobject(py)
                })
                .await?;
            }
            Ok(())
        })
    }

    fn max_batch(&self) -> usize {
        if self.batched { PY_BATCH } else { 1 }
    }
}
