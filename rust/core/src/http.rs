//! The HTTP client model calls go through: one pooled reqwest client, Bearer auth
//! only when a key is set, and the step's sub-request id stamped on every request.

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::error::ExecutorError;

/// The default name of the header carrying a step's `sub_request_id`.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "X-Request-Id";

/// How to build an [`HttpClient`].
#[derive(Debug, Clone)]
pub struct HttpClientConfig {
    /// Header that carries each model call's `sub_request_id`.
    pub request_id_header: String,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            request_id_header: DEFAULT_REQUEST_ID_HEADER.into(),
            headers: Vec::new(),
        }
    }
}

/// A configuration the client cannot be built from.
#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    /// A header name is not a valid HTTP token.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A header value has characters HTTP forbids.
    #[error("invalid value for header {0:?}")]
    HeaderValue(String),
    /// reqwest could not build its client.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A pooled HTTP client for model calls. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    request_id_header: HeaderName,
    headers: HeaderMap,
}

impl HttpClient {
    /// Builds a client from `config`.
    pub fn new(config: &HttpClientConfig) -> Result<Self, HttpConfigError> {
        let request_id_header = HeaderName::from_bytes(config.request_id_header.as_bytes())
            .map_err(|_| HttpConfigError::HeaderName(config.request_id_header.clone()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpConfigError::HeaderName(name.clone()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| HttpConfigError::HeaderValue(name.clone()))?;
            headers.insert(header, value);
        }
        let inner = reqwest::Client::builder()
            .build()
            .map_err(|e| HttpConfigError::Build(describe(&e)))?;
        Ok(Self {
            inner,
            request_id_header,
            headers,
        })
    }

    /// POSTs a JSON body and returns the response once its headers arrived.
    pub async fn post_json(
        &self,
        url: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
        request_id: &str,
        wants_stream: bool,
    ) -> Result<reqwest::Response, ExecutorError> {
        let mut request = self
            .inner
            .post(url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                ACCEPT,
                if wants_stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(body);
        let request_id = HeaderValue::from_str(request_id).map_err(|_| {
            ExecutorError::Execution("sub_request_id is not a valid header value".into())
        })?;
        request = request.header(self.request_id_header.clone(), request_id);
        if let Some(key) = bearer {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                // Never echo the key: say only that it is malformed.
                ExecutorError::Execution(
                    "api_key contains characters not allowed in a header".into(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        request
            .send()
            .await
            .map_err(|e| ExecutorError::Transport(describe(&e)))
    }
}

/// reqwest's own message plus its causes, which hold the useful part
/// ("connection refused", "connection reset").
pub fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_header_names_are_rejected() {
        let config = HttpClientConfig {
            request_id_header: "bad header".into(),
            ..Default::default()
        };
        assert!(matches!(
            HttpClient::new(&config),
            Err(HttpConfigError::HeaderName(_))
        ));
    }
}
