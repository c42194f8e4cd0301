//! The `run_response_loop` entry point: gathers the Python arguments, runs the
//! core loop on tokio, and hands the result back as an asyncio awaitable.

use std::future::Future;
use std::sync::Arc;

use pyo3::prelude::*;
use serde_json::Value;
use stepwell_core::observe::{LoopObserver, Unobserved};
use stepwell_core::response_loop::LoopRun;
use stepwell_core::{EventSink, LoopError, RequestContext, UpstreamTarget};

use crate::aio::LoopHandle;
use crate::callee::Callee;
use crate::client::{PyHttpClient, default_client};
use crate::config::config_from;
use crate::convert;
use crate::counting_sink::PyCountingSink;
use crate::errors::PyErrors;
use crate::executor::PyToolExecutor;
use crate::local::{awaitable, panic_message};
use crate::observer::PyObserver;
use crate::owned;
use crate::responses_sink::PyResponsesStream;
use crate::sink::PySink;
use crate::store::PyStore;

fn target_from(target: &Bound<'_, PyAny>) -> PyResult<UpstreamTarget> {
    Ok(UpstreamTarget {
        endpoint: target.getattr("endpoint")?.extract()?,
        path: target.getattr("path")?.extract()?,
        api_key: target.getattr("api_key")?.extract()?,
    })
}

/// Drives a response to a terminal state; see `stepwell.run_response_loop`.
#[pyfunction]
#[pyo3(signature = (store, tool_executor, ctx, target, *, request_id, sink, scope_parent, config, client, observer))]
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
    observer: Option<Py<PyAny>>,
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
    let event_loop = locals.event_loop(py);
    let handle = LoopHandle::new(&event_loop, locals.context(py))?;
    let store = PyStore::new(py, Callee::new(store, handle.clone()));
    let executor = PyToolExecutor {
        callee: Callee::new(tool_executor, handle.clone()),
        ctx: Arc::new(ctx),
    };
    let sink: Option<Arc<dyn EventSink>> = match sink {
        None => None,
        Some(sink) => {
            let bound = sink.bind(py);
            Some(if let Ok(counting) = bound.cast::<PyCountingSink>() {
                counting.get().counts.clone()
            } else if let Ok(stream) = bound.cast::<PyResponsesStream>() {
                Arc::new(stream.get().sink(py, handle.clone()))
            } else {
                Arc::new(PySink::new(py, Callee::new(sink, handle.clone())))
            })
        }
    };

    let observer: Box<dyn LoopObserver> = match observer {
        Some(observer) => Box::new(PyObserver(observer)),
        None => Box::new(Unobserved),
    };

    let work = async move {
        let run = LoopRun {
            store: &store,
            executor: &executor,
            ctx: &core_ctx,
            target: &target,
            client: &client,
            config,
            request_id: &request_id,
            observer: &*observer,
        };
        let sink = sink.as_deref();
        stepwell_core::run_response_loop(&run, sink, scope_parent.as_deref()).await
    };
    spawn_guarded(&event_loop, handle, work)
}

/// Test hook: an awaitable whose Rust future panics, to prove a panic surfaces
/// as a `stepwell.LoopError` and never reaches the interpreter.
#[pyfunction]
pub fn _panic_probe(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
    let event_loop = locals.event_loop(py);
    let handle = LoopHandle::new(&event_loop, locals.context(py))?;
    spawn_guarded(&event_loop, handle, async { deliberate_panic() })
}

#[allow(clippy::panic)]
fn deliberate_panic() -> Result<Value, LoopError> {
    panic!("deliberate panic from _panic_probe")
}

/// Drives the loop on the event loop thread as an asyncio awaitable. Errors
/// become `stepwell.errors` exceptions and a panic becomes a `LoopError`.
fn spawn_guarded<'py>(
    event_loop: &Bound<'py, PyAny>,
    handle: LoopHandle,
    work: impl Future<Output = Result<Value, LoopError>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(event_loop, handle.waker(), Box::pin(work), |py, outcome| {
        let errors = PyErrors::get(py)?;
        match outcome {
            Ok(Ok(payload)) => owned::into_py(py, payload),
            Ok(Err(error)) => Err(errors.loop_error(py, &error)),
            Err(panic) => {
                Err(errors.internal(py, format!("stepwell panicked: {}", panic_message(&*panic))))
            }
        }
    })
}
