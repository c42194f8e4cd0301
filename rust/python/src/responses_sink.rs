//! `stepwell._core.ResponsesStream`: a sink that encodes a response's events as
//! the Open Responses SSE stream in Rust and hands each batch's frames to a
//! Python callable as one string.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use pyo3::prelude::*;
use stepwell_core::LoopEvent;
use stepwell_core::responses_stream::{DONE_FRAME, McpRoute, ResponsesEncoder};
use stepwell_core::traits::{EventSink, SinkError};

use crate::aio::LoopHandle;
use crate::callee::Callee;
use crate::convert;
use crate::owned;

/// Encodes the events of the response `request_id`; `on_frames(text)` receives
/// the encoded frames, batch by batch, on the event loop thread. `mcp` maps
/// each function an MCP server serves, by the name the model calls, to its
/// server's label, its tool name there and whether a call needs approval.
#[pyclass(frozen, name = "ResponsesStream", module = "stepwell._core")]
pub struct PyResponsesStream {
    encoder: Arc<Mutex<ResponsesEncoder>>,
    on_frames: Py<PyAny>,
}

#[pymethods]
impl PyResponsesStream {
    #[new]
    #[pyo3(signature = (request_id, on_frames, mcp=None))]
    fn new(
        request_id: &str,
        on_frames: Py<PyAny>,
        mcp: Option<HashMap<String, (String, String, bool)>>,
    ) -> Self {
        let routes = mcp
            .unwrap_or_default()
            .into_iter()
            .map(|(name, (server_label, tool, approval))| {
                let route = McpRoute {
                    server_label,
                    tool,
                    approval,
                };
                (name, route)
            })
            .collect();
        let encoder = ResponsesEncoder::new(request_id).with_mcp(routes);
        Self {
            encoder: Arc::new(Mutex::new(encoder)),
            on_frames,
        }
    }

    /// The frames of the items the response has before any step (its MCP
    /// servers' tool listings), after `start`.
    fn announce(&self, items: &Bound<'_, PyAny>) -> PyResult<String> {
        let items = convert::from_py(items, "the items")?;
        let mut out = String::new();
        if let (Ok(mut encoder), Some(items)) = (self.encoder.lock(), items.as_array()) {
            encoder.announce(items, &mut out);
        }
        Ok(out)
    }

    /// The frames announcing `response`: `response.created`, `response.in_progress`.
    fn start(&self, response: &Bound<'_, PyAny>) -> PyResult<String> {
        let response = convert::from_py(response, "the response")?;
        let mut out = String::new();
        if let Ok(mut encoder) = self.encoder.lock() {
            encoder.start(response, &mut out);
        }
        Ok(out)
    }

    /// Continues a stream begun elsewhere: the next frame is numbered
    /// `next_sequence` and the next item takes `next_output_index`.
    fn resume(
        &self,
        response: &Bound<'_, PyAny>,
        next_sequence: u64,
        next_output_index: usize,
    ) -> PyResult<()> {
        let response = convert::from_py(response, "the response")?;
        if let Ok(mut encoder) = self.encoder.lock() {
            encoder.resume(response, next_sequence, next_output_index);
        }
        Ok(())
    }

    /// The frame that ends the stream.
    #[staticmethod]
    fn done() -> &'static str {
        DONE_FRAME
    }
}

impl PyResponsesStream {
    /// The core sink that encodes into this stream, calling back on `handle`'s loop.
    pub fn sink(&self, py: Python<'_>, handle: LoopHandle) -> ResponsesSink {
        ResponsesSink {
            encoder: self.encoder.clone(),
            on_frames: Callee::new(self.on_frames.clone_ref(py), handle),
        }
    }
}

/// About the length of a delta frame but for its text.
const FRAME_BYTES: usize = 192;

/// Encodes a batch in Rust, then makes one Python call with the frames.
pub struct ResponsesSink {
    encoder: Arc<Mutex<ResponsesEncoder>>,
    on_frames: Callee,
}

impl EventSink for ResponsesSink {
    fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        // Room for as many delta frames, so a long batch is not copied again
        // and again as it grows.
        let mut frames = String::with_capacity(events.len().saturating_mul(FRAME_BYTES));
        if let Ok(mut encoder) = self.encoder.lock() {
            for event in &events {
                encoder.encode(event, &mut frames);
            }
        }
        Box::pin(async move {
            if frames.is_empty() {
                return Ok(());
            }
            let call = self.on_frames.call(
                "__call__",
                // A response's last batch repeats its whole text in each of
                // its `.done` frames and the response: handed over as
                // `owned` hands a long text, it is never held twice.
                move |py| (owned::long_str(py, frames)?,).into_pyobject(py),
                |outcome| outcome.map(drop).map_err(|e| SinkError(e.to_string())),
            );
            call.await
                .unwrap_or_else(|gone| Err(SinkError(gone.to_string())))
        })
    }
}
