//! A Python `EventSink` as the core's sink.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::types::PyList;
use stepwell_core::LoopEvent;
use stepwell_core::traits::{EventSink, SinkError};

use crate::callee::Callee;
use crate::event::PyLoopEvent;

/// Adapts a Python sink: one `emit_many(list)` per batch when the sink has it,
/// else `emit(event)` per event. Failures are logged once and swallowed.
pub struct PySink {
    callee: Callee,
    batched: bool,
    warned: AtomicBool,
}

impl PySink {
    /// Wraps a sink, checking once whether it offers `emit_many`.
    pub fn new(py: Python<'_>, callee: Callee) -> Self {
        let batched = callee.has_method(py, "emit_many");
        Self {
            callee,
            batched,
            warned: AtomicBool::new(false),
        }
    }

    async fn deliver(&self, events: Vec<LoopEvent>) -> PyResult<()> {
        if self.batched {
            return self
                .callee
                .invoke(
                    "emit_many",
                    |py| {
                        let list = PyList::new(py, events.into_iter().map(PyLoopEvent::from))?;
                        (list,).into_pyobject(py)
                    },
                    |_| Ok(()),
                )
                .await;
        }
        let mut first_error = None;
        for event in events {
            let sent = self
                .callee
                .invoke(
                    "emit",
                    |py| (PyLoopEvent::from(event),).into_pyobject(py),
                    |_| Ok(()),
                )
                .await;
            if let Err(error) = sent {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn warn_once(&self, error: &PyErr) {
        if self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        Python::attach(|py| {
            let logged = py.import("logging").and_then(|logging| {
                let logger = logging.call_method1("getLogger", ("stepwell",))?;
                logger.call_method1(
                    "warning",
                    ("event sink raised %s; the response goes on and later sink errors are not logged", error.value(py)),
                )
            });
            // Logging is best effort: nothing may stop the loop here.
            drop(logged);
        });
    }
}

impl EventSink for PySink {
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.deliver(events).await.map_err(|error| {
                self.warn_once(&error);
                SinkError(error.to_string())
            })
        })
    }
}
