//! Running Python work from Rust futures without ever entering Python on a
//! tokio thread.
//!
//! Every piece of Python work the core needs (calling a store method, starting
//! its coroutine, converting its answer, completing the awaitable handed back to
//! the caller, cancelling a task) is a [`Job`] posted to the [`LoopWaker`] of the
//! caller's event loop. The waker queues the job and writes one byte to a
//! socket pair whose reading end the event loop watches (`loop.add_reader`); the
//! loop thread then runs every queued job with the GIL. A tokio thread never
//! takes the GIL, so it can never be caught inside Python when the interpreter
//! finalizes (pyo3-async-runtimes' own completion path does exactly that and
//! crashes the process at exit now and then), never blocks the event loop, and
//! never contends for the GIL with it.
//!
//! pyo3-async-runtimes cancels Rust work when the awaiting task is cancelled but
//! leaves the Python coroutines that work awaited running. [`PyCall`] cancels
//! them: dropping it before it resolves posts a job that cancels its task.
//!
//! A call whose answer comes later (a task, a future) is finished by a
//! done-callback on the loop thread, which then runs at once the jobs that
//! answer posted (the poll of the Rust future it woke), not a turn later.
//!
//! A coroutine becomes a task through `stepwell._eager`: on Python 3.12 and later
//! an eager one, so a store or tool call that finishes without suspending
//! answers in the same job, with no turn of the event loop.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pyo3::exceptions::asyncio::CancelledError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use tokio::sync::oneshot;

/// How long one wake-up of the loop keeps running jobs the core goes on
/// posting. A core fed faster than Python consumes (a model streaming at once)
/// would otherwise keep the loop thread in here for the whole response: every
/// other task waits, and what the jobs hand to Python (a stream's frames,
/// waiting for the event log's commit) piles up in memory.
const DRAIN_BUDGET: Duration = Duration::from_millis(1);

/// Python work to run on the event loop thread, with the GIL.
pub type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

/// The queue of jobs for one event loop, and the socket pair that wakes it.
pub struct LoopWaker {
    queue: Mutex<Queue>,
    writer: UnixStream,
    reader: UnixStream,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// The loop thread is running jobs and will look at the queue again before
    /// it stops, so a post needs no wake-up byte.
    draining: bool,
}

impl LoopWaker {
    fn new() -> std::io::Result<Self> {
        let (writer, reader) = UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        Ok(Self {
            queue: Mutex::new(Queue::default()),
            writer,
            reader,
        })
    }

    /// Queues a job for the loop thread. Takes no GIL; safe from any thread.
    pub fn post(&self, job: Job) {
        let wake = match self.queue.lock() {
            Ok(mut queue) => {
                let wake = queue.jobs.is_empty() && !queue.draining;
                queue.jobs.push(job);
                wake
            }
            // A poisoned queue means a job panicked mid-push; nothing can run.
            Err(_) => return,
        };
        // One byte wakes the loop for the whole batch. A full socket buffer
        // means a wake-up is already pending, so the error is harmless.
        if wake {
            let _ = (&self.writer).write(&[1]);
        }
    }

    /// Runs `work` on the loop thread, then at once the jobs it posted (the
    /// poll of a future it woke, say), rather than a turn of the loop later
    /// through the socket: a Python call's answer goes back into the core in
    /// the callback that delivers it.
    fn run_here(self: &Arc<Self>, py: Python<'_>, work: impl FnOnce()) {
        let inside = match self.queue.lock() {
            Ok(mut queue) => std::mem::replace(&mut queue.draining, true),
            Err(_) => return work(),
        };
        work();
        if inside {
            return; // the drain under way takes what `work` posted
        }
        // Not draining before: the queue was empty (a post wakes otherwise),
        // so the jobs now queued are those `work` posted.
        self.run_queue(py);
    }

    /// Runs queued jobs until none is left, including jobs those jobs post,
    /// for at most [`DRAIN_BUDGET`]: then the rest waits for the next turn of
    /// the loop. Called on the loop thread by [`Drain`].
    fn run_jobs(self: &Arc<Self>, py: Python<'_>) {
        let mut buf = [0u8; 256];
        loop {
            match (&self.reader).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.run_queue(py);
    }

    fn run_queue(self: &Arc<Self>, py: Python<'_>) {
        let started = Instant::now();
        // A request made outside a drain is not this one's.
        YIELD.set(Yield::No);
        loop {
            // Taking the jobs and clearing `draining` happen under the lock a
            // poster takes, so a job is either taken here or wakes the loop.
            let jobs = match self.queue.lock() {
                Ok(mut queue) if !queue.jobs.is_empty() && started.elapsed() >= DRAIN_BUDGET => {
                    queue.draining = false;
                    drop(queue);
                    // The jobs left wake the loop again once it has run what
                    // else is ready (the event log's commit, other sockets).
                    let _ = (&self.writer).write(&[1]);
                    return;
                }
                Ok(mut queue) => {
                    queue.draining = !queue.jobs.is_empty();
                    std::mem::take(&mut queue.jobs)
                }
                Err(_) => return,
            };
            if jobs.is_empty() {
                return;
            }
            let mut jobs = jobs.into_iter();
            let mut stopped = Yield::No;
            for job in jobs.by_ref() {
                // A panicking job loses only itself: its waiter sees the loop gone.
                let _ = catch_unwind(AssertUnwindSafe(|| job(py)));
                stopped = YIELD.replace(Yield::No);
                if stopped != Yield::No {
                    break;
                }
            }
            if stopped != Yield::No {
                let rest: Vec<Job> = jobs.collect();
                let past_readers = stopped == Yield::PastReaders;
                match self.queue.lock() {
                    Ok(mut queue) => {
                        // Before what was posted meanwhile: jobs keep their order.
                        queue.jobs.splice(0..0, rest);
                        // Going on past the readers (`resume_later`), what is
                        // posted until then waits for it, with no wake-up.
                        queue.draining = past_readers;
                    }
                    Err(_) => return,
                }
                if past_readers {
                    self.resume_later(py);
                } else {
                    // The jobs left wake the loop again once it has run what is ready.
                    let _ = (&self.writer).write(&[1]);
                }
                return;
            }
        }
    }

    /// Goes on with a drain stopped by [`yield_to_loop`] two turns of the
    /// loop later. The job that asked started a task (the event log's commit)
    /// that runs on the next turn and wakes its readers (a stream's first
    /// delta) for the one after: the jobs left wait until those have run. A
    /// wake-up byte would have them run on the next turn, ahead of the readers.
    fn resume_later(self: &Arc<Self>, py: Python<'_>) {
        let drain = Drain {
            waker: self.clone(),
        };
        let scheduled = cached(py, &GET_RUNNING_LOOP, "asyncio", "get_running_loop")
            .and_then(|get| get.call0())
            .and_then(|event_loop| {
                let call_soon = event_loop.getattr("call_soon")?;
                call_soon.call1((call_soon.clone(), drain))
            });
        if scheduled.is_err() {
            // No loop running here (it is closing): the byte wakes it if it
            // ever runs again.
            if let Ok(mut queue) = self.queue.lock() {
                queue.draining = false;
            }
            let _ = (&self.writer).write(&[1]);
        }
    }
}

/// Whether, and for how long, the drain under way stops after a job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Yield {
    No,
    /// Until the next turn of the loop.
    Turn,
    /// Until what the next turn's tasks wake has run.
    PastReaders,
}

thread_local! {
    /// Set by [`yield_to_loop`]: the drain under way on this thread stops
    /// after the job that set it.
    static YIELD: std::cell::Cell<Yield> = const { std::cell::Cell::new(Yield::No) };
}

/// Asks the drain of jobs under way on this thread (the core's calls into
/// Python) to stop after the current job and let the loop run what is ready
/// (a task the job started) before the jobs left, which go on the next turn;
/// with `past_readers`, also what that task wakes (the readers of a commit it
/// makes): they go on two turns later. Outside a drain it does nothing.
///
/// Going past the readers costs a turn of the loop to every job waiting, so
/// it suits a loop with little else to do: a busy one has its drains broken
/// up for a few readers.
#[pyfunction]
#[pyo3(signature = (past_readers=false))]
pub fn yield_to_loop(past_readers: bool) {
    let mode = if past_readers {
        Yield::PastReaders
    } else {
        Yield::Turn
    };
    YIELD.with(|flag| flag.set(mode));
}

/// The `add_reader` callback, also scheduled by `resume_later`: runs the
/// queued jobs.
#[pyclass(frozen)]
struct Drain {
    waker: Arc<LoopWaker>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.waker.run_jobs(py);
    }
}

/// Keeps a loop's waker alive for as long as the loop is.
#[pyclass(frozen)]
struct WakerHandle {
    waker: Arc<LoopWaker>,
}

static WAKERS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ENSURE_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static IS_AWAITABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static IS_COROUTINE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EAGER_START: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn cached<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py))
}

/// The waker of `event_loop`, created and registered with `add_reader` on first
/// use. Must be called on the loop's thread.
pub fn waker_for(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<LoopWaker>> {
    let py = event_loop.py();
    // One waker per loop, dropped with it: keyed weakly by the loop.
    let wakers = WAKERS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("weakref")?
                    .getattr("WeakKeyDictionary")?
                    .call0()?
                    .unbind(),
            )
        })?
        .bind(py);
    let existing = wakers.call_method1("get", (event_loop,))?;
    if let Ok(handle) = existing.cast::<WakerHandle>() {
        return Ok(handle.get().waker.clone());
    }
    let waker = Arc::new(LoopWaker::new()?);
    let fd = waker.reader.as_raw_fd();
    event_loop.call_method1(
        "add_reader",
        (
            fd,
            Drain {
                waker: waker.clone(),
            },
        ),
    )?;
    wakers.set_item(
        event_loop,
        WakerHandle {
            waker: waker.clone(),
        },
    )?;
    Ok(waker)
}

/// The caller's event loop and the context captured when the call began.
#[derive(Clone)]
pub struct LoopHandle {
    waker: Arc<LoopWaker>,
    context: Arc<Py<PyAny>>,
}

/// The loop stopped answering: it was closed with the call still queued.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the event loop went away before the call completed")]
pub struct LoopGone;

/// How one Python outcome is turned into the Rust result, on the loop thread.
type Finish<T> = Box<dyn for<'py> FnOnce(PyResult<Bound<'py, PyAny>>) -> T + Send>;

impl LoopHandle {
    /// Captures the running loop's waker and the current context. Call it on
    /// the loop thread.
    pub fn new(event_loop: &Bound<'_, PyAny>, context: Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self {
            waker: waker_for(event_loop)?,
            context: Arc::new(context.unbind()),
        })
    }

    /// The waker of the captured loop.
    pub fn waker(&self) -> Arc<LoopWaker> {
        self.waker.clone()
    }

    /// Calls `obj.method(*args)` on the loop thread in the captured context,
    /// awaits its result if it is awaitable, and hands the outcome to `finish`
    /// there. `args` and `finish` run on the loop thread with the GIL.
    pub fn call<T: Send + 'static>(
        &self,
        obj: Arc<Py<PyAny>>,
        method: &'static str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
        finish: impl for<'py> FnOnce(PyResult<Bound<'py, PyAny>>) -> T + Send + 'static,
    ) -> PyCall<T> {
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(Mutex::new(CallState::default()));
        let job_state = state.clone();
        let context = self.context.clone();
        let finish: Finish<T> = Box::new(finish);
        let waker = self.waker.clone();
        self.waker.post(Box::new(move |py| {
            start_call(
                py, &obj, method, args, &context, &job_state, tx, finish, waker,
            );
        }));
        PyCall {
            rx,
            state,
            waker: self.waker.clone(),
            done: false,
        }
    }
}

#[derive(Default)]
struct CallState {
    /// The task running the call's awaitable, once started.
    task: Option<Py<PyAny>>,
    /// The Rust side gave up: do not start, or cancel what was started.
    abandoned: bool,
}

/// Runs on the loop thread: calls the method, and for an awaitable result starts
/// a task whose done-callback finishes the call.
#[allow(clippy::too_many_arguments)]
fn start_call<T: Send + 'static>(
    py: Python<'_>,
    obj: &Py<PyAny>,
    method: &str,
    args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
    context: &Py<PyAny>,
    state: &Mutex<CallState>,
    tx: oneshot::Sender<T>,
    finish: Finish<T>,
    waker: Arc<LoopWaker>,
) {
    if state.lock().map_or(true, |s| s.abandoned) {
        return;
    }
    let context = context.bind(py);
    // The user's code and the task it starts both run in the caller's context.
    let value = args(py).and_then(|args| {
        let mut call = vec![obj.bind(py).getattr(method)?];
        call.extend(args.iter());
        context.call_method1("run", PyTuple::new(py, call)?)
    });
    let value = match value {
        Ok(value) => value,
        Err(error) => {
            let _ = tx.send(finish(Err(error)));
            return;
        }
    };
    let task = match start_awaiting(py, &value, context) {
        Ok(Started::Done(answer)) => {
            let _ = tx.send(finish(Ok(answer)));
            return;
        }
        Ok(Started::Task(task)) => task,
        Err(error) => {
            let _ = tx.send(finish(Err(error)));
            return;
        }
    };
    let complete: Complete = Box::new(move |outcome| {
        let _ = tx.send(finish(outcome));
    });
    let on_done = FinishCall {
        complete: Mutex::new(Some(complete)),
        waker,
    };
    if task.call_method1("add_done_callback", (on_done,)).is_err() {
        let _ = task.call_method0("cancel");
        return;
    }
    let abandoned = match state.lock() {
        Ok(mut s) if !s.abandoned => {
            s.task = Some(task.clone().unbind());
            false
        }
        _ => true,
    };
    if abandoned {
        let _ = task.call_method0("cancel");
    }
}

/// How a called method's value is to be awaited.
enum Started<'py> {
    /// Already the answer: the value was not awaitable, or a coroutine that
    /// finished in its first step.
    Done(Bound<'py, PyAny>),
    /// A task that will have the answer.
    Task(Bound<'py, PyAny>),
}

/// Starts awaiting `value` in `context`. A coroutine is started by
/// `stepwell._eager.start` (eagerly where Python can: one that never suspends
/// then answers without a turn of the event loop). Any other awaitable becomes
/// a task.
fn start_awaiting<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    context: &Bound<'py, PyAny>,
) -> PyResult<Started<'py>> {
    if cached(py, &IS_COROUTINE, "inspect", "iscoroutine")?
        .call1((value,))?
        .is_truthy()?
    {
        let (finished, outcome): (bool, Bound<'py, PyAny>) =
            cached(py, &EAGER_START, "stepwell._eager", "start")?
                .call1((context, value))?
                .extract()?;
        return Ok(if finished {
            Started::Done(outcome)
        } else {
            Started::Task(outcome)
        });
    }
    let awaitable = cached(py, &IS_AWAITABLE, "inspect", "isawaitable")?
        .call1((value,))?
        .is_truthy()?;
    if !awaitable {
        return Ok(Started::Done(value.clone()));
    }
    let ensure_future = cached(py, &ENSURE_FUTURE, "asyncio", "ensure_future")?;
    context
        .call_method1("run", (ensure_future, value))
        .map(Started::Task)
}

type Complete = Box<dyn for<'py> FnOnce(PyResult<Bound<'py, PyAny>>) + Send>;

/// Done-callback of a call's task: finishes the call with the task's outcome.
#[pyclass(frozen)]
struct FinishCall {
    complete: Mutex<Option<Complete>>,
    waker: Arc<LoopWaker>,
}

#[pymethods]
impl FinishCall {
    fn __call__(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(complete) = self.complete.lock().ok().and_then(|mut c| c.take()) else {
            return Ok(());
        };
        let outcome = if task.call_method0("cancelled")?.is_truthy()? {
            Err(CancelledError::new_err(
                "the awaited coroutine was cancelled",
            ))
        } else {
            task.call_method0("result")
        };
        self.waker.run_here(task.py(), || complete(outcome));
        Ok(())
    }
}

/// A Python call in flight. Resolves with what its `finish` made of the outcome;
/// dropping it first cancels the call.
pub struct PyCall<T> {
    rx: oneshot::Receiver<T>,
    state: Arc<Mutex<CallState>>,
    waker: Arc<LoopWaker>,
    done: bool,
}

impl<T> Future for PyCall<T> {
    type Output = Result<T, LoopGone>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = Pin::new(&mut self.rx).poll(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.done = true;
                Poll::Ready(result.map_err(|_| LoopGone))
            }
        }
    }
}

impl<T> Drop for PyCall<T> {
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
        if let Some(task) = task {
            self.waker.post(Box::new(move |py| {
                let _ = task.bind(py).call_method0("cancel");
            }));
        }
    }
}
