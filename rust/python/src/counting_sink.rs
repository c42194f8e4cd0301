//! `stepwell.testing.CountingSink`: a sink that never leaves Rust.
//!
//! It counts events and delta characters without calling into Python, so a
//! loop run with it measures the engine alone: the ceiling any Python sink is
//! compared against.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use pyo3::prelude::*;
use stepwell_core::LoopEvent;
use stepwell_core::traits::{EventSink, SinkError};

/// The counters, shared between the Python object and the running loops.
#[derive(Debug, Default)]
pub struct Counts {
    events: AtomicU64,
    delta_chars: AtomicU64,
}

impl EventSink for Counts {
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        let chars: usize = events
            .iter()
            .filter_map(|e| e.data.delta())
            .map(|delta| delta.chars().count())
            .sum();
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.delta_chars.fetch_add(chars as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// Counts the events of every loop it is passed to, in Rust.
#[pyclass(frozen, name = "CountingSink", module = "stepwell._core")]
pub struct PyCountingSink {
    pub counts: Arc<Counts>,
}

#[pymethods]
impl PyCountingSink {
    #[new]
    fn new() -> Self {
        Self {
            counts: Arc::default(),
        }
    }

    /// Events received so far.
    #[getter]
    fn events(&self) -> u64 {
        self.counts.events.load(Ordering::Relaxed)
    }

    /// Characters of every `delta` received so far.
    #[getter]
    fn delta_chars(&self) -> u64 {
        self.counts.delta_chars.load(Ordering::Relaxed)
    }

    fn __repr__(&self) -> String {
        format!(
            "CountingSink(events={}, delta_chars={})",
            self.events(),
            self.delta_chars()
        )
    }
}
