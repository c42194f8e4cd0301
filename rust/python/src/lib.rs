//! `stepwell._core`: the native module behind the `stepwell` package.
//!
//! It exposes `run_response_loop`, `HttpClient`, `LoopEvent`, the sinks written in Rust and the
//! Open Responses items, and adapts the
//! caller's Python store, tool executor and sink to the core's traits. All
//! behaviour lives in `stepwell-core`; this crate only adapts.

mod aio;
#[cfg(target_os = "linux")]
mod big_blocks;
mod callee;
mod client;
mod config;
mod convert;
mod counting_sink;
mod errors;
mod event;
mod executor;
mod http_tool;
mod items;
mod json_value;
mod local;
mod observer;
mod owned;
mod responses_sink;
mod run;
mod sealed_log;
mod sink;
mod store;

use pyo3::prelude::*;

/// Big blocks of the extension's own are mapped on their own (see `big_blocks`).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: big_blocks::BigBlocks = big_blocks::BigBlocks;

/// One tokio worker unless `TOKIO_WORKER_THREADS` asks for more. The core's
/// work on tokio (HTTP, SSE parsing, reassembly) is a small share of a
/// response's next to the event loop's, and a second worker mostly wakes to
/// find nothing: with every wake-up of the first it is woken too, on the CPU
/// the event loop, the upstream or a client needs at that moment.
fn one_tokio_worker() {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(1).enable_all();
        pyo3_async_runtimes::tokio::init(builder);
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    one_tokio_worker();
    m.add_class::<client::PyHttpClient>()?;
    m.add_class::<event::PyLoopEvent>()?;
    m.add_class::<counting_sink::PyCountingSink>()?;
    m.add_class::<responses_sink::PyResponsesStream>()?;
    m.add_function(wrap_pyfunction!(run::run_response_loop, m)?)?;
    m.add_function(wrap_pyfunction!(http_tool::post_json, m)?)?;
    m.add_function(wrap_pyfunction!(config::loop_config_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(config::check_loop_config, m)?)?;
    m.add_function(wrap_pyfunction!(owned::hand_long_texts_over_in_pieces, m)?)?;
    m.add_function(wrap_pyfunction!(aio::yield_to_loop, m)?)?;
    items::register(m)?;
    sealed_log::register(m)?;
    // A test hook, not part of the module's API: only a process that asks
    // for it (the test suite) gets it.
    if std::env::var_os("STEPWELL_TEST_HOOKS").is_some_and(|v| !v.is_empty()) {
        m.add_function(wrap_pyfunction!(run::_panic_probe, m)?)?;
    }
    Ok(())
}
