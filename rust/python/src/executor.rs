//! A Python `ToolExecutor` as the core's executor.

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
    pub ctx: Py<PyAny>,
}

/// Maps the `stepwell.ToolError` family onto the core's; any other exception is
/// an execution error, so a buggy tool fails its step and the loop goes on.
fn tool_error(error: PyErr) -> ToolError {
    let message = Python::attach(|py| {
        let text = error.value(py).to_string();
        let kind = PyErrors::get(py).map(|e| e.classify_tool_error(py, &error));
        (text, kind)
    });
    match message {
        (text, Ok(Some("not_found"))) => ToolError::NotFound(text),
        (text, Ok(Some("invalid_arguments"))) => ToolError::InvalidArguments(text),
        (text, Ok(Some("timeout"))) => ToolError::Timeout(text),
        (text, Ok(Some(_))) => ToolError::ExecutionError(text),
        _ => ToolError::ExecutionError(error.to_string()),
    }
}

impl ToolExecutor for PyToolExecutor {
    fn tools<'a>(
        &'a self,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Vec<ToolSchema>, ExecutorError>> {
        Box::pin(async move {
            self.callee
                .invoke(
                    "tools",
                    |py| (self.ctx.bind(py),).into_pyobject(py),
                    convert::tool_schemas,
                )
                .await
                .map_err(|error| ExecutorError::Executor {
                    message: format!("tool_executor.tools raised {error}"),
                    source: Some(Box::new(error)),
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
        Box::pin(async move {
            self.callee
                .invoke(
                    "execute",
                    |py| {
                        let args = convert::to_py(py, arguments)?;
                        (tool_name, tool_call_id, args, self.ctx.bind(py)).into_pyobject(py)
                    },
                    |result| convert::from_py(result, "the tool's result"),
                )
                .await
                .map_err(tool_error)
        })
    }
}
