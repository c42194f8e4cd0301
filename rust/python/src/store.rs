//! A Python `MultiStepStore` as the core's store.

use futures::future::BoxFuture;
use pyo3::prelude::*;
use serde_json::Value;
use stepwell_core::{
    ChainStep, MultiStepStore, NextAction, RecordedStep, StepDescriptor, StoreError,
};

use crate::callee::Callee;
use crate::convert;

/// Adapts a Python store. Any exception it raises, or a malformed answer,
/// becomes a [`StoreError`] that keeps the Python exception as its cause.
pub struct PyStore(pub Callee);

fn store_error(method: &str) -> impl FnOnce(PyErr) -> StoreError + '_ {
    move |error| StoreError::with_source(format!("store.{method} raised {error}"), error)
}

fn ignore(_: &Bound<'_, PyAny>) -> PyResult<()> {
    Ok(())
}

impl MultiStepStore for PyStore {
    fn next_action_for<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NextAction, StoreError>> {
        let method = "next_action_for";
        Box::pin(async move {
            self.0
                .invoke(
                    method,
                    |py| (request_id, scope_parent).into_pyobject(py),
                    convert::next_action,
                )
                .await
                .map_err(store_error(method))
        })
    }

    fn record_step<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
        prev_step: Option<&'a str>,
        descriptor: &'a StepDescriptor,
    ) -> BoxFuture<'a, Result<RecordedStep, StoreError>> {
        let method = "record_step";
        Box::pin(async move {
            self.0
                .invoke(
                    method,
                    |py| {
                        let descriptor = convert::py_step_descriptor(py, descriptor)?;
                        (request_id, scope_parent, prev_step, descriptor).into_pyobject(py)
                    },
                    convert::recorded_step,
                )
                .await
                .map_err(store_error(method))
        })
    }

    fn mark_step_processing<'a>(
        &'a self,
        step_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let method = "mark_step_processing";
        Box::pin(async move {
            self.0
                .invoke(method, |py| (step_id,).into_pyobject(py), ignore)
                .await
                .map_err(store_error(method))
        })
    }

    fn complete_step<'a>(
        &'a self,
        step_id: &'a str,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let method = "complete_step";
        Box::pin(async move {
            self.0
                .invoke(
                    method,
                    |py| (step_id, convert::to_py(py, payload)?).into_pyobject(py),
                    ignore,
                )
                .await
                .map_err(store_error(method))
        })
    }

    fn fail_step<'a>(
        &'a self,
        step_id: &'a str,
        error: &'a Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let method = "fail_step";
        Box::pin(async move {
            self.0
                .invoke(
                    method,
                    |py| (step_id, convert::to_py(py, error)?).into_pyobject(py),
                    ignore,
                )
                .await
                .map_err(store_error(method))
        })
    }

    fn list_chain<'a>(
        &'a self,
        request_id: &'a str,
        scope_parent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ChainStep>, StoreError>> {
        let method = "list_chain";
        Box::pin(async move {
            self.0
                .invoke(
                    method,
                    |py| (request_id, scope_parent).into_pyobject(py),
                    convert::chain,
                )
                .await
                .map_err(store_error(method))
        })
    }
}
