//! Driving a Rust future on the event loop's own thread.
//!
//! The response loop spends its time awaiting Python: store, tools, sink. Were
//! it polled on a tokio worker, every such call would cross threads twice (a
//! wake-up of the event loop, then one of the worker), and on a virtual machine
//! each crossing costs tens of microseconds. So the loop future is polled here,
//! on the event loop thread, from jobs of the loop's [`LoopWaker`]: a call into
//! Python and its answer never leave the thread. The heavy part of a model call
//! (HTTP, SSE parsing, reassembly) is spawned onto tokio by the core itself and
//! runs in parallel with Python.
//!
//! The future is polled inside the tokio runtime's context, so it may spawn
//! tasks and use tokio's timers.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::BoxFuture;
use pyo3::prelude::*;

use crate::aio::LoopWaker;

/// What a driven future ended with: its output, or the payload of its panic.
pub type Outcome<T> = Result<T, Box<dyn Any + Send>>;

type OnDone<T> = Box<dyn for<'py> FnOnce(Python<'py>, Outcome<T>) + Send>;

/// A future polled on the event loop thread.
pub struct LocalTask<T: Send + 'static> {
    future: Mutex<Option<BoxFuture<'static, T>>>,
    on_done: Mutex<Option<OnDone<T>>>,
    scheduled: AtomicBool,
    waker: Arc<LoopWaker>,
}

impl<T: Send + 'static> LocalTask<T> {
    /// Schedules `future` on the loop of `waker`; `on_done` gets its outcome on
    /// the loop thread unless the task is cancelled first.
    pub fn spawn(
        waker: Arc<LoopWaker>,
        future: BoxFuture<'static, T>,
        on_done: impl for<'py> FnOnce(Python<'py>, Outcome<T>) + Send + 'static,
    ) -> Arc<Self> {
        let task = Arc::new(Self {
            future: Mutex::new(Some(future)),
            on_done: Mutex::new(Some(Box::new(on_done))),
            scheduled: AtomicBool::new(false),
            waker,
        });
        task.schedule();
        task
    }

    /// Drops the future (aborting everything it awaits) without calling
    /// `on_done`. Call it on the loop thread.
    pub fn cancel(&self) {
        let future = self.future.lock().ok().and_then(|mut f| f.take());
        if let Ok(mut on_done) = self.on_done.lock() {
            on_done.take();
        }
        drop(future);
    }

    fn schedule(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = self.clone();
        self.waker.post(Box::new(move |py| task.poll(py)));
    }

    fn poll(self: &Arc<Self>, py: Python<'_>) {
        self.scheduled.store(false, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
        let outcome = {
            let Ok(mut slot) = self.future.lock() else {
                return;
            };
            let Some(future) = slot.as_mut() else {
                return; // finished or cancelled
            };
            let outcome = match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => return,
                Ok(Poll::Ready(value)) => Ok(value),
                Err(panic) => Err(panic),
            };
            slot.take();
            outcome
        };
        let on_done = self.on_done.lock().ok().and_then(|mut d| d.take());
        if let Some(on_done) = on_done {
            on_done(py, outcome);
        }
    }
}

/// Something the awaitable's done-callback can cancel.
trait Cancel: Send + Sync {
    fn cancel(&self);
}

impl<T: Send + 'static> Cancel for LocalTask<T> {
    fn cancel(&self) {
        LocalTask::cancel(self);
    }
}

/// Done-callback of an awaitable: a cancelled awaitable cancels its task.
#[pyclass(frozen)]
struct CancelOnDone {
    task: Arc<dyn Cancel>,
}

#[pymethods]
impl CancelOnDone {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.cancel();
        }
        Ok(())
    }
}

/// Drives `work` on the event loop thread and returns an asyncio future that
/// `to_python` completes with its outcome (a result, or an exception to set).
/// Cancelling the future drops `work`.
pub fn awaitable<'py, T: Send + 'static>(
    event_loop: &Bound<'py, PyAny>,
    waker: Arc<LoopWaker>,
    work: BoxFuture<'static, T>,
    to_python: impl for<'a> FnOnce(Python<'a>, Outcome<T>) -> PyResult<Bound<'a, PyAny>>
    + Send
    + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    let future = event_loop.call_method0("create_future")?;
    let completer = future.clone().unbind();
    let task = LocalTask::spawn(waker, work, move |py, outcome| {
        let future = completer.bind(py);
        // Cancelled meanwhile: nobody is waiting for the outcome.
        if future
            .call_method0("done")
            .and_then(|done| done.is_truthy())
            .unwrap_or(true)
        {
            return;
        }
        let _ = match to_python(py, outcome) {
            Ok(value) => future.call_method1("set_result", (value,)),
            Err(error) => future.call_method1("set_exception", (error.value(py),)),
        };
    });
    future.call_method1("add_done_callback", (CancelOnDone { task },))?;
    Ok(future)
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "unknown panic"
    }
}

impl<T: Send + 'static> Wake for LocalTask<T> {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}
