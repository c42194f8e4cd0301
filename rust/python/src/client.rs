//! `stepwell.HttpClient`: the pooled client model calls go through.

use std::collections::BTreeMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use stepwell_core::http::{DEFAULT_REQUEST_ID_HEADER, HttpClient, HttpClientConfig};

/// The HTTP client for model calls. One client pools connections across every
/// step and loop that uses it; `run_response_loop` uses a shared default one
/// when none is given.
#[pyclass(frozen, name = "HttpClient", module = "stepwell._core")]
pub struct PyHttpClient {
    pub inner: HttpClient,
    request_id_header: String,
}

#[pymethods]
impl PyHttpClient {
    #[new]
    #[pyo3(signature = (*, request_id_header = DEFAULT_REQUEST_ID_HEADER.to_string(), headers = None))]
    fn new(request_id_header: String, headers: Option<BTreeMap<String, String>>) -> PyResult<Self> {
        let config = HttpClientConfig {
            request_id_header: request_id_header.clone(),
            headers: headers.unwrap_or_default().into_iter().collect(),
        };
        let inner = HttpClient::new(&config).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self {
            inner,
            request_id_header,
        })
    }

    /// The header that carries each model call's `sub_request_id`.
    #[getter]
    fn request_id_header(&self) -> &str {
        &self.request_id_header
    }

    fn __repr__(&self) -> String {
        format!("HttpClient(request_id_header={:?})", self.request_id_header)
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
