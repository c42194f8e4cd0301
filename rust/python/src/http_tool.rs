//! `stepwell._core.post_json`: the HTTP call of an `HttpTools` tool, fired from
//! the Rust core (reqwest on tokio) and awaited from asyncio.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use stepwell_core::http::describe;

use crate::aio::waker_for;
use crate::local::{awaitable, panic_message};

fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| reqwest::Client::builder().build().map_err(|e| describe(&e)))
        .as_ref()
        .map_err(Clone::clone)
}

/// What a tool's POST came to.
enum Answer {
    Reply(u16, String),
    TimedOut,
    Failed(String),
}

/// POSTs `body` (JSON text) to `url` and resolves to `(status, body text)`;
/// raises `TimeoutError` after `timeout` seconds and `ConnectionError` when no
/// answer came. The request runs on tokio; the awaitable completes on the loop.
#[pyfunction]
#[pyo3(signature = (url, body, headers, timeout))]
pub fn post_json<'py>(
    py: Python<'py>,
    url: String,
    body: String,
    headers: BTreeMap<String, String>,
    timeout: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let timeout = Duration::try_from_secs_f64(timeout)
        .map_err(|_| PyValueError::new_err("timeout must be a positive number of seconds"))?;
    let client = client().map_err(PyRuntimeError::new_err)?;
    let mut request = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(timeout);
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let work = async move {
        let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if e.is_timeout() => return Answer::TimedOut,
                Err(e) => return Answer::Failed(describe(&e)),
            };
            let status = response.status().as_u16();
            match response.text().await {
                Ok(text) => Answer::Reply(status, text),
                Err(e) if e.is_timeout() => Answer::TimedOut,
                Err(e) => Answer::Failed(describe(&e)),
            }
        });
        let abort = task.abort_handle();
        // Dropping this future (a cancelled tool call) aborts the request too.
        let _guard = AbortGuard(abort);
        task.await
            .unwrap_or_else(|e| Answer::Failed(format!("tool request task failed: {e}")))
    };
    let event_loop = pyo3_async_runtimes::tokio::get_current_loop(py)?;
    let waker = waker_for(&event_loop)?;
    awaitable(
        &event_loop,
        waker,
        Box::pin(work),
        move |py, outcome| match outcome {
            Ok(Answer::Reply(status, text)) => {
                (status, text).into_pyobject(py).map(Bound::into_any)
            }
            Ok(Answer::TimedOut) => Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
                "no answer within {:?}",
                timeout
            ))),
            Ok(Answer::Failed(message)) => {
                Err(pyo3::exceptions::PyConnectionError::new_err(message))
            }
            Err(panic) => Err(PyRuntimeError::new_err(format!(
                "stepwell panicked: {}",
                panic_message(&*panic)
            ))),
        },
    )
}

struct AbortGuard(tokio::task::AbortHandle);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
