//! Awaiting Python callables from Rust futures, on the caller's asyncio loop.
//!
//! Every call into user code (store, tool executor, sink) is scheduled onto the
//! event loop that awaited `run_response_loop`, inside the context captured
//! when the call began: user code runs on the thread it expects, so an
//! `asyncio.Lock` or a sync method behaves as in plain asyncio code. A method may
//! return a value or an awaitable; an awaitable is run as a task.
//!
//! pyo3-async-runtimes cancels the Rust future when the awaiting task is
//! cancelled, but does not cancel the Python coroutines that future was
//! awaiting. [`PyCall`] does: dropping it before it resolves cancels its task.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pyo3::exceptions::{PyRuntimeError, asyncio::CancelledError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use pyo3_async_runtimes::TaskLocals;
use tokio::sync::oneshot;

type CallResult = PyResult<Py<PyAny>>;

static ENSURE_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static IS_AWAITABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn ensure_future(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    ENSURE_FUTURE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("ensure_future")?.unbind())
        })
        .map(|f| f.bind(py))
}

fn is_awaitable(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    IS_AWAITABLE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("inspect")?.getattr("isawaitable")?.unbind())
        })
        .map(|f| f.bind(py))
}

/// The caller's event loop and context, captured once per `run_response_loop`.
pub struct PyLoop {
    event_loop: Py<PyAny>,
    context: Py<PyAny>,
}

impl PyLoop {
    /// Captures the loop and context from pyo3-async-runtimes' task locals.
    pub fn new(py: Python<'_>, locals: &TaskLocals) -> Self {
        Self {
            event_loop: locals.event_loop(py).unbind(),
            context: locals.context(py).unbind(),
        }
    }

    /// Schedules `func(*args)` on the event loop; the returned future resolves
    /// with its result, awaited if it is awaitable.
    pub fn call(&self, py: Python<'_>, func: Bound<'_, PyAny>, args: Bound<'_, PyTuple>) -> PyCall {
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(Mutex::new(CallState::default()));
        let start = StartCall {
            func: func.unbind(),
            args: args.unbind(),
            tx: Some(tx),
            state: state.clone(),
        };
        let scheduled = self.call_soon_threadsafe(py, start);
        let mut call = PyCall {
            rx,
            state,
            event_loop: self.event_loop.clone_ref(py),
            done: false,
            early: None,
        };
        if let Err(error) = scheduled {
            call.early = Some(Err(error));
        }
        call
    }

    fn call_soon_threadsafe(&self, py: Python<'_>, start: StartCall) -> PyResult<()> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("context", self.context.bind(py))?;
        self.event_loop
            .bind(py)
            .call_method("call_soon_threadsafe", (start,), Some(&kwargs))?;
        Ok(())
    }
}

#[derive(Default)]
struct CallState {
    /// The task running the awaitable, once started.
    task: Option<Py<PyAny>>,
    /// The Rust side gave up: do not start, or cancel what was started.
    abandoned: bool,
}

/// Runs on the event loop thread: calls the function and, for an awaitable
/// result, starts a task and waits for it through [`FinishCall`].
#[pyclass]
struct StartCall {
    func: Py<PyAny>,
    args: Py<PyTuple>,
    tx: Option<oneshot::Sender<CallResult>>,
    state: Arc<Mutex<CallState>>,
}

#[pymethods]
impl StartCall {
    fn __call__(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        if self.state.lock().map_or(true, |state| state.abandoned) {
            return Ok(());
        }
        // The lock is not held while user code runs: a Rust thread dropping the
        // call must never wait on Python.
        let value = match self.func.bind(py).call1(self.args.bind(py)) {
            Ok(value) => value,
            Err(error) => {
                let _ = tx.send(Err(error));
                return Ok(());
            }
        };
        let awaitable = match is_awaitable(py).and_then(|f| f.call1((&value,))?.is_truthy()) {
            Ok(awaitable) => awaitable,
            Err(error) => {
                let _ = tx.send(Err(error));
                return Ok(());
            }
        };
        if !awaitable {
            let _ = tx.send(Ok(value.unbind()));
            return Ok(());
        }
        // If this fails, `tx` is dropped with the callback and the waiting future
        // reports a closed channel; the error itself goes to the loop's handler.
        let task = ensure_future(py)?.call1((&value,))?;
        task.call_method1("add_done_callback", (FinishCall { tx: Some(tx) },))?;
        let abandoned = match self.state.lock() {
            Ok(mut state) if !state.abandoned => {
                state.task = Some(task.clone().unbind());
                false
            }
            _ => true,
        };
        if abandoned {
            task.call_method0("cancel")?;
        }
        Ok(())
    }
}

/// Done-callback of the task: hands its result to the waiting Rust future.
#[pyclass]
struct FinishCall {
    tx: Option<oneshot::Sender<CallResult>>,
}

#[pymethods]
impl FinishCall {
    fn __call__(&mut self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let result = if task.call_method0("cancelled")?.is_truthy()? {
            Err(CancelledError::new_err(
                "the awaited coroutine was cancelled",
            ))
        } else {
            task.call_method0("result").map(Bound::unbind)
        };
        let _ = tx.send(result);
        Ok(())
    }
}

/// A Python call in flight. Resolves with the call's result; dropping it first
/// cancels the call.
pub struct PyCall {
    rx: oneshot::Receiver<CallResult>,
    state: Arc<Mutex<CallState>>,
    event_loop: Py<PyAny>,
    done: bool,
    /// Set when scheduling itself failed (closed loop).
    early: Option<CallResult>,
}

impl Future for PyCall {
    type Output = CallResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CallResult> {
        if let Some(result) = self.early.take() {
            self.done = true;
            return Poll::Ready(result);
        }
        let polled = Pin::new(&mut self.rx).poll(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.done = true;
                Poll::Ready(result.unwrap_or_else(|_| {
                    Err(PyRuntimeError::new_err(
                        "the event loop dropped a stepwell callback before it completed",
                    ))
                }))
            }
        }
    }
}

impl Drop for PyCall {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let task = match self.state.lock() {
            Ok(mut state) => {
                state.abandoned = true;
                state.task.take()
            }
            Err(_) => None,
        };
        let Some(task) = task else {
            return;
        };
        // The interpreter may be finalizing; then there is nothing left to cancel.
        let _ = Python::try_attach(|py| {
            if let Ok(cancel) = task.bind(py).getattr("cancel") {
                // Fails only if the loop is closed, when the task cannot run anyway.
                let _ = self
                    .event_loop
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (cancel,));
            }
        });
    }
}
