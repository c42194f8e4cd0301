//! A Python `ToolExecutor` as the core's executor.

use std::sync::Arc;

use futures::future::BoxFuture;
use pyo3::prelude::*;
use serde_json::Value;
use stepwell_core::{ExecutorError, RequestContext, ToolError, ToolExecutor, ToolSchema};

use crate::callee::Callee;
use crate::convert;
use crate::errors::PyErrors;

/// Adapts a Python tool executor. The Python `RequestContext` the caller passed
/// is handed to it unchanged; the core's copy is not used.
pub struct PyToolExecutor {
    pub callee: Callee,
    pub ctx: Arc<Py<PyAny>>,
}

/// Maps the `stepwell.ToolError` family onto the core's; any other exception is
/// an execution error, so a buggy tool fails its step and the loop goes on.
/// Runs on the loop thread.
fn tool_error(py: Python<'_>, error: PyErr) -> ToolError {
    let text = error.value(py).to_string();
    match PyErrors::get(py).map(|errors| errors.classify_tool_error(py, &error)) {
        Ok(Some("not_found")) => ToolError::NotFound(text),
        Ok(Some("invalid_arguments")) => ToolError::InvalidArguments(text),
        Ok(Some("timeout")) => ToolError::Timeout(text),
        Ok(Some(_)) => ToolError::ExecutionError(text),
        _ => ToolError::ExecutionError(error.to_string()),
    }
}

impl ToolExecutor for PyToolExecutor {
    fn tools<'a>(
        &'a self,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Vec<ToolSchema>, ExecutorError>> {
        let ctx = self.ctx.clone();
        let call = self.callee.call(
            "tools",
            move |py| (ctx.bind(py),).into_pyobject(py),
            |outcome| {
                outcome
                    .and_then(|schemas| convert::tool_schemas(&schemas))
                    .map_err(|error| ExecutorError::Executor {
                        message: format!("tool_executor.tools raised {error}"),
                        source: Some(Box::new(error)),
                    })
            },
        );
        Box::pin(async move {
            call.await.unwrap_or_else(|gone| {
                Err(ExecutorError::Executor {
                    message: format!("tool_executor.tools: {gone}"),
                    source: None,
                })
            })
        })
    }

    fn execute<'a>(
        &'a self,
        tool_name: &'a str,
        tool_call_id: &'a str,
        arguments: &'a Value,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        let (name, call_id, arguments) = (
            tool_name.to_owned(),
            tool_call_id.to_owned(),
            arguments.clone(),
        );
        let ctx = self.ctx.clone();
        let call = self.callee.call(
            "execute",
            move |py| {
                let arguments = convert::to_py(py, &arguments)?;
                (name, call_id, arguments, ctx.bind(py)).into_pyobject(py)
            },
            |outcome| {
                outcome
                    .and_then(|result| convert::from_py(&result, "the tool's result"))
                    .map_err(|error| Python::attach(|py| tool_error(py, error)))
            },
        );
        Box::pin(async move {
            call.await
                .unwrap_or_else(|gone| Err(ToolError::ExecutionError(gone.to_string())))
        })
    }
}
