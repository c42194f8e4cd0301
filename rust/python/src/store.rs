//! A Python `MultiStepStore` as the core's store.

use bytes::Bytes;
use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use serde_json::Value;
use stepwell_core::{
    ChainStep, MultiStepStore, NextAction, RecordedStep, StepDescriptor, StepKind, StoreError,
};

use crate::callee::Callee;
use crate::convert;
use crate::owned;

/// Adapts a Python store. Any exception it raises, or a malformed answer,
/// becomes a [`StoreError`] that keeps the Python exception as its cause.
pub struct PyStore {
    callee: Callee,
    /// Whether the store offers `record_steps`.
    batched: bool,
}

impl PyStore {
    /// Wraps a store, checking once whether it offers `record_steps`.
    pub fn new(py: Python<'_>, callee: Callee) -> Self {
        let batched = callee.has_method(py, "record_steps");
        Self { callee, batched }
    }

    /// Awaits `method` on the Python store and converts its answer on the loop
    /// thread.
    async fn call<T: Send + 'static>(
        &self,
        method: &'static str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
        convert: impl for<'py> FnOnce(&Bound<'py, PyAny>) -> PyResult<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let finish = move |outcome: PyResult<Bound<'_, PyAny>>| {
            outcome
                .and_then(|answer| convert(&answer))
                .map_err(|error| {
                    StoreError::with_source(format!("store.{method} raised {error}"), error)
                })
        };
        match self.callee.call(method, args, finish).await {
            Ok(result) => result,
            Err(gone) => Err(StoreError::new(format!("store.{method}: {gone}"))),
        }
    }
}

/// A descriptor's kind and its payload as JSON text, encoded here, off the
/// interpreter, and handed over as text: the shipped stores write it as it
/// is, and a payload that carries a long conversation is never rebuilt as
/// Python objects only to be encoded.
fn encode(descriptor: &StepDescriptor) -> Result<(StepKind, Bytes), StoreError> {
    descriptor
        .request_payload
        .to_json()
        .map(|text| (descriptor.kind, text))
        .map_err(|error| StoreError::new(format!("a step's payload is not encodable: {error}")))
}

fn encode_all(descriptors: &[StepDescriptor]) -> Result<Vec<(StepKind, Bytes)>, StoreError> {
    descriptors.iter().map(encode).collect()
}

/// Where a step is recorded (request, scope, previous step), owned.
fn owned_link(
    request_id: &str,
    scope_parent: Option<&str>,
    prev_step: Option<&str>,
) -> (String, Option<String>, Option<String>) {
    (
        request_id.to_owned(),
        scope_parent.map(str::to_owned),
        prev_step.map(str::to_owned),
    )
}

fn ignore(_: &Bound<'_, PyAny>) -> PyResult<()> {
    Ok(())
}

// Arguments are copied into owned values: the call runs later, on the loop
// thread, and must not borrow from a future that may be dropped first.
impl MultiStepStore for PyStore {
    fn next_action_for<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NextAction, StoreError>> {
        let args = (request_id.to_owned(), scope_parent.map(str::to_owned));
        Box::pin(self.call(
            "next_action_for",
            move |py| args.into_pyobject(py),
            convert::next_action,
        ))
    }

    fn record_step<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
        prev_step: Option<&'a str>,
        descriptor: &'a StepDescriptor,
    ) -> BoxFuture<'a, Result<RecordedStep, StoreError>> {
        let ids = owned_link(request_id, scope_parent, prev_step);
        let encoded = encode(descriptor);
        Box::pin(async move {
            let (kind, encoded) = encoded?;
            self.call(
                "record_step",
                move |py| {
                    let descriptor = convert::py_encoded_step_descriptor(py, kind, &encoded)?;
                    (ids.0, ids.1, ids.2, descriptor).into_pyobject(py)
                },
                convert::recorded_step,
            )
            .await
        })
    }

    fn record_steps<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
        prev_step: Option<&'a str>,
        descriptors: &'a [StepDescriptor],
    ) -> BoxFuture<'a, Result<Option<Vec<RecordedStep>>, StoreError>> {
        if !self.batched {
            return Box::pin(std::future::ready(Ok(None)));
        }
        let ids = owned_link(request_id, scope_parent, prev_step);
        let encoded = encode_all(descriptors);
        Box::pin(async move {
            let encoded = encoded?;
            let steps = self
                .call(
                    "record_steps",
                    move |py| {
                        let descriptors = encoded
                            .into_iter()
                            .map(|(kind, text)| {
                                convert::py_encoded_step_descriptor(py, kind, &text)
                            })
                            .collect::<PyResult<Vec<_>>>()?;
                        (ids.0, ids.1, ids.2, descriptors).into_pyobject(py)
                    },
                    |answer| {
                        answer
                            .try_iter()?
                            .map(|step| convert::recorded_step(&step?))
                            .collect::<PyResult<Vec<_>>>()
                    },
                )
                .await?;
            Ok(Some(steps))
        })
    }

    fn mark_step_processing<'a>(
        &'a self,
        step_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let step_id = step_id.to_owned();
        Box::pin(self.call(
            "mark_step_processing",
            move |py| (step_id,).into_pyobject(py),
            ignore,
        ))
    }

    fn complete_step<'a>(
        &'a self,
        step_id: &'a str,
        payload: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let step_id = step_id.to_owned();
        Box::pin(self.call(
            "complete_step",
            // By value: a completion's content is handed over, not copied whole.
            move |py| (step_id, owned::into_py(py, payload)?).into_pyobject(py),
            ignore,
        ))
    }

    fn fail_step<'a>(
        &'a self,
        step_id: &'a str,
        error: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let step_id = step_id.to_owned();
        Box::pin(self.call(
            "fail_step",
            move |py| (step_id, convert::to_py(py, &error)?).into_pyobject(py),
            ignore,
        ))
    }

    fn list_chain<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ChainStep>, StoreError>> {
        let args = (request_id.to_owned(), scope_parent.map(str::to_owned));
        Box::pin(self.call(
            "list_chain",
            move |py| args.into_pyobject(py),
            convert::chain,
        ))
    }
}
