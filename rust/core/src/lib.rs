//! The stepwell engine: drives a multi-step LLM response to a terminal state.
//!
//! This crate knows nothing of Python. It holds the response loop
//! ([`response_loop::run_response_loop`]), the traits it drives
//! ([`traits::MultiStepStore`], [`traits::ToolExecutor`], [`traits::EventSink`]), the
//! model-call path (HTTP client, SSE parser, delta extraction, reassembly) and the
//! bounded bridge that carries live events to a sink. The `stepwell-python` crate
//! adapts Python objects to these traits.

pub mod bridge;
pub mod carried;
pub mod chunk;
pub mod deltas;
pub mod error;
pub mod events;
pub mod http;
pub mod items;
pub mod json_text;
pub mod model_call;
pub mod observe;
pub mod payload;
pub mod reassemble;
pub mod response_loop;
pub mod responses_stream;
pub mod sealed_log;
pub mod sse;
pub mod tool_post;
pub mod traits;
pub mod types;

pub use error::{ExecutorError, LoopError, StoreError, TimeoutPhase, ToolError};
pub use events::{EventData, EventScope, LoopEvent, LoopEventKind};
pub use http::{HttpClient, HttpClientConfig};
pub use observe::{LoopObserver, StepEnd, StepInfo};
pub use payload::Payload;
pub use response_loop::run_response_loop;
pub use traits::{EventSink, MultiStepStore, ToolExecutor};
pub use types::{
    ChainStep, LoopConfig, NextAction, Overflow, RecordedStep, RequestContext, StepDescriptor,
    StepKind, ToolKind, ToolSchema, UpstreamTarget,
};
