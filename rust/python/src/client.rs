//! `stepwell.HttpClient`: the pooled client model calls go through.

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use stepwell_core::http::{HttpClient, HttpClientConfig};

/// The HTTP client for model calls. One client pools connections across every
/// step and loop that uses it; `run_response_loop` uses a shared default one
/// when none is given. Timeouts are in seconds; `None` disables one.
#[pyclass(frozen, name = "HttpClient", module = "stepwell._core")]
pub struct PyHttpClient {
    pub inner: HttpClient,
}

fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    PyValueError::new_err(format!("{name} must be a positive number of seconds"))
                })
        })
        .transpose()
}

/// A default of the core's `HttpClientConfig`, in seconds: the signature's
/// defaults come from there, so there is one source for each.
fn default_seconds(field: fn(&HttpClientConfig) -> Option<Duration>) -> Option<f64> {
    field(&HttpClientConfig::default()).map(|d| d.as_secs_f64())
}

fn show(value: Option<Duration>) -> String {
    value.map_or_else(|| "None".into(), |d| d.as_secs_f64().to_string())
}

#[pymethods]
impl PyHttpClient {
    #[new]
    #[pyo3(signature = (
        *,
        first_chunk_timeout = default_seconds(|c| c.first_chunk_timeout),
        chunk_timeout = default_seconds(|c| c.chunk_timeout),
        body_timeout = default_seconds(|c| c.body_timeout),
        upload_stall_timeout = default_seconds(|c| c.upload_stall_timeout),
        streamable_paths = Vec::new(),
        request_id_header = HttpClientConfig::default().request_id_header,
        headers = None,
        max_event_bytes = HttpClientConfig::default().max_event_bytes,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        first_chunk_timeout: Option<f64>,
        chunk_timeout: Option<f64>,
        body_timeout: Option<f64>,
        upload_stall_timeout: Option<f64>,
        streamable_paths: Vec<String>,
        request_id_header: String,
        headers: Option<BTreeMap<String, String>>,
        max_event_bytes: usize,
    ) -> PyResult<Self> {
        if max_event_bytes == 0 {
            return Err(PyValueError::new_err("max_event_bytes must be at least 1"));
        }
        let config = HttpClientConfig {
            request_id_header,
            headers: headers.unwrap_or_default().into_iter().collect(),
            streamable_paths,
            first_chunk_timeout: seconds("first_chunk_timeout", first_chunk_timeout)?,
            chunk_timeout: seconds("chunk_timeout", chunk_timeout)?,
            body_timeout: seconds("body_timeout", body_timeout)?,
            upload_stall_timeout: seconds("upload_stall_timeout", upload_stall_timeout)?,
            max_event_bytes,
        };
        let inner = HttpClient::new(&config).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self { inner })
    }

    /// The header that carries each model call's `sub_request_id`.
    #[getter]
    fn request_id_header(&self) -> &str {
        &self.inner.config().request_id_header
    }

    /// Paths whose requests stream even without `stream: true`.
    #[getter]
    fn streamable_paths(&self) -> Vec<String> {
        self.inner.config().streamable_paths.clone()
    }

    fn __repr__(&self) -> String {
        let config = self.inner.config();
        format!(
            "HttpClient(first_chunk_timeout={}, chunk_timeout={}, body_timeout={}, \
             upload_stall_timeout={}, streamable_paths={:?}, request_id_header={:?})",
            show(config.first_chunk_timeout),
            show(config.chunk_timeout),
            show(config.body_timeout),
            show(config.upload_stall_timeout),
            config.streamable_paths,
            config.request_id_header,
        )
    }
}

static DEFAULT_CLIENT: PyOnceLock<HttpClient> = PyOnceLock::new();

/// The process-wide default client, built on first use.
pub fn default_client(py: Python<'_>) -> PyResult<HttpClient> {
    DEFAULT_CLIENT
        .get_or_try_init(py, || {
            HttpClient::new(&HttpClientConfig::default())
                .map_err(|e| PyValueError::new_err(e.to_string()))
        })
        .cloned()
}
