//! `stepwell._core.post_json`: the HTTP call of an `HttpTools` tool, fired through
//! the core's `HttpClient` (the model calls' pool and timeouts) and awaited from
//! asyncio.

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use stepwell_core::ExecutorError;
use stepwell_core::tool_post::post_tool;

use crate::aio::waker_for;
use crate::client::{PyHttpClient, default_client};
use crate::local::{awaitable, panic_message};

/// POSTs `body` (JSON text) to `url` through `client` (the shared default one
/// when `None`) and resolves to `(status, body text)`; raises `TimeoutError`
/// when a limit ran out (`timeout` seconds for the whole request, or the
/// client's own) and `ConnectionError` when no answer came. Cancelling the
/// awaitable aborts the request.
#[pyfunction]
#[pyo3(signature = (url, body, headers, timeout, client = None))]
pub fn post_json<'py>(
    py: Python<'py>,
    url: String,
    body: String,
    headers: BTreeMap<String, String>,
    timeout: f64,
    client: Option<PyRef<'py, PyHttpClient>>,
) -> PyResult<Bound<'py, PyAny>> {
    let timeout = Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| PyValueError::new_err("timeout must be a positive number of seconds"))?;
    let client = match client {
        Some(client) => client.inner.clone(),
        None => default_client(py)?,
    };
    let headers = headers.into_iter().collect();
    let work = post_tool(client, url, body.into_bytes(), headers, timeout);
    let event_loop = pyo3_async_runtimes::tokio::get_current_loop(py)?;
    let waker = waker_for(&event_loop)?;
    awaitable(
        &event_loop,
        waker,
        Box::pin(work),
        move |py, outcome| match outcome {
            Ok(Ok(reply)) => (reply.status, reply.body)
                .into_pyobject(py)
                .map(Bound::into_any),
            Ok(Err(ExecutorError::Timeout(phase))) => {
                Err(PyTimeoutError::new_err(phase.to_string()))
            }
            Ok(Err(error)) => Err(PyConnectionError::new_err(error.to_string())),
            Err(panic) => Err(PyRuntimeError::new_err(format!(
                "stepwell panicked: {}",
                panic_message(&*panic)
            ))),
        },
    )
}
