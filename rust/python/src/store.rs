//! A Python `MultiStepStore` as the core's store.

use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use serde_json::Value;
use stepwell_core::{
    ChainStep, MultiStepStore, NextAction, RecordedStep, StepDescriptor, StoreError,
};

use crate::callee::Callee;
use crate::convert;

/// Adapts a Python store. Any exception it raises, or a malformed answer,
/// becomes a [`StoreError`] that keeps the Python exception as its cause.
pub struct PyStore(pub Callee);

impl PyStore {
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
        match self.0.call(method, args, finish).await {
            Ok(result) => result,
            Err(gone) => Err(StoreError::new(format!("store.{method}: {gone}"))),
        }
    }
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
        let ids = (
            request_id.to_owned(),
            scope_parent.map(str::to_owned),
            prev_step.map(str::to_owned),
        );
        // Encoded here, off the interpreter, and handed over as text: the
        // shipped stores write it as it is, and a payload that carries a long
        // conversation is never rebuilt as Python objects only to be encoded.
        let kind = descriptor.kind;
        let encoded = serde_json::to_string(&descriptor.request_payload);
        Box::pin(async move {
            let encoded = encoded.map_err(|error| {
                StoreError::new(format!("store.record_step: payload not encodable: {error}"))
            })?;
            self.call(
                "record_step",
                move |py| {
                    let descriptor = convert::py_encoded_step_descriptor(py, kind, encoded)?;
                    (ids.0, ids.1, ids.2, descriptor).into_pyobject(py)
                },
                convert::recorded_step,
            )
            .await
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
            move |py| (step_id, convert::to_py(py, &payload)?).into_pyobject(py),
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
