//! The `run_response_loop` entry point: gathers the Python arguments, runs the
//! core loop on tokio, and hands the result back as an asyncio awaitable.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::Value;
use stepwell_core::response_loop::LoopRun;
use stepwell_core::{EventSink, LoopConfig, LoopError, RequestContext, UpstreamTarget};

use crate::aio::PyLoop;
use crate::callee::Callee;
use crate::client::{PyHttpClient, default_client};
use crate::convert;
use crate::errors::PyErrors;
use crate::executor::PyToolExecutor;
use crate::sink::PySink;
use crate::store::PyStore;

fn target_from(target: &Bound<'_, PyAny>) -> PyResult<UpstreamTarget> {
    Ok(UpstreamTarget {
        endpoint: target.getattr("endpoint")?.extract()?,
        path: target.getattr("path")?.extract()?,
        api_key: target.getattr("api_key")?.extract()?,
    })
}

fn config_from(config: &Bound<'_, PyAny>) -> PyResult<LoopConfig> {
    let field = |name: &str| {
        config.getattr(name)?.extract::<u64>().map_err(|_| {
            PyValueError::new_err(format!("LoopConfig.{name} must be a non-negative integer"))
        })
    };
    let small = |name: &str| {
        u32::try_from(field(name)?)
            .map_err(|_| PyValueError::new_err(format!("LoopConfig.{name} is too large")))
    };
    Ok(LoopConfig {
        max_response_step_depth: small("max_response_step_depth")?,
        max_response_iterations: small("max_response_iterations")?,
        bridge_capacity: usize::try_from(field("bridge_capacity")?)
            .map_err(|_| PyValueError::new_err("LoopConfig.bridge_capacity is too large"))?,
    })
}

/// Drives a response to a terminal state; see `stepwell.run_response_loop`.
#[pyfunction]
#[pyo3(signature = (store, tool_executor, ctx, target, *, request_id, sink, scope_parent, config, client))]
#[allow(clippy::too_many_arguments)]
pub fn run_response_loop<'py>(
    py: Python<'py>,
    store: Py<PyAny>,
    tool_executor: Py<PyAny>,
    ctx: Py<PyAny>,
    target: &Bound<'py, PyAny>,
    request_id: String,
    sink: Option<Py<PyAny>>,
    scope_parent: Option<String>,
    config: &Bound<'py, PyAny>,
    client: Option<PyRef<'py, PyHttpClient>>,
) -> PyResult<Bound<'py, PyAny>> {
    let target = target_from(target)?;
    let config = config_from(config)?;
    let client = match client {
        Some(client) => client.inner.clone(),
        None => default_client(py)?,
    };
    let core_ctx = RequestContext {
        model: ctx
            .bind(py)
            .getattr("model")
            .ok()
            .and_then(|m| m.extract().ok()),
        // Extensions may hold live Python objects; they reach Python tools through
        // the original context, not through the core.
        extensions: Value::Null,
    };
    // Make sure the exception classes import now, not first inside the loop.
    PyErrors::get(py)?;
    convert::PyTypes::get(py)?;

    let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
    let event_loop = Arc::new(PyLoop::new(py, &locals));
    let store = PyStore(Callee::new(store, event_loop.clone()));
    let executor = PyToolExecutor {
        callee: Callee::new(tool_executor, event_loop.clone()),
        ctx,
    };
    let sink = sink.map(|sink| PySink::new(py, Callee::new(sink, event_loop)));

    let work = async move {
        let run = LoopRun {
            store: &store,
            executor: &executor,
            ctx: &core_ctx,
            target: &target,
            client: &client,
            config,
            request_id: &request_id,
        };
        let sink = sink.as_ref().map(|s| s as &dyn EventSink);
        stepwell_core::run_response_loop(&run, sink, scope_parent.as_deref()).await
    };
    guarded(py, locals, work)
}

/// Test hook: an awaitable whose Rust future panics, to prove a panic surfaces
/// as a `stepwell.LoopError` and never reaches the interpreter.
#[pyfunction]
pub fn _panic_probe(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
    guarded(py, locals, async { deliberate_panic() })
}

#[allow(clippy::panic)]
fn deliberate_panic() -> Result<Value, LoopError> {
    panic!("deliberate panic from _panic_probe")
}

/// Runs the loop future on tokio as an asyncio awaitable, turning its errors and
/// any panic into `stepwell.errors` exceptions.
fn guarded<'py>(
    py: Python<'py>,
    locals: pyo3_async_runtimes::TaskLocals,
    work: impl Future<Output = Result<Value, LoopError>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    let fut =
        async move {
            let outcome = AssertUnwindSafe(work).catch_unwind().await;
            Python::attach(|py| {
                let errors = PyErrors::get(py)?;
                match outcome {
                    Ok(Ok(payload)) => Ok(convert::to_py(py, &payload)?.unbind()),
                    Ok(Err(error)) => Err(errors.loop_error(py, &error)),
                    Err(panic) => Err(errors
                        .internal(py, format!("stepwell panicked: {}", panic_message(&panic)))),
                }
            })
        };
    pyo3_async_runtimes::tokio::future_into_py_with_locals(py, locals, fut)
}

fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "unknown panic"
    }
}
