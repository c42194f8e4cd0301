//! The bounded bridge between a response's loop and its sink.
//!
//! Every event of a response passes through one ordered queue, drained into the
//! sink by its own future, so a stalled client never holds up the loop: a step
//! completes when its upstream answer is read, whatever the sink is doing.
//!
//! Live deltas are bounded. By default the upstream read never waits for a
//! client (a stalled sink would stall the read and trip the upstream's idle
//! timeout): deltas that do not fit are dropped and counted
//! ([`Overflow::DropNewest`], onwards' behaviour). A caller that wants every
//! delta and accepts that a slow sink slows the read chooses [`Overflow::Block`].
//! Control events (`created`, `output_item.done`, the terminal event) are never
//! dropped; there are a handful per step. The reassembled step result does not
//! pass through here and is never affected.
//!
//! Senders push a whole batch (every delta of one network read) under one lock
//! with one wake-up, and the receiver takes what is queued at each wake-up (up
//! to the sink's `max_batch`) as one batch for the sink: a fast stream costs a
//! few crossings per read, not one per event. A sink that fails is detached;
//! whatever it never received is counted (see [`BridgeReceiver::undelivered`]).

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::events::LoopEvent;
use crate::traits::{EventSink, SinkError};
use crate::types::Overflow;

struct State {
    events: VecDeque<LoopEvent>,
    senders: usize,
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    overflow: Overflow,
    /// Deltas dropped on overflow, and events discarded after a detach.
    dropped: AtomicU64,
    /// Events of the sink call under way, not delivered until it returns.
    in_flight: AtomicU64,
    /// Wakes the receiver: events arrived, or the last sender left.
    readable: Notify,
    /// Wakes blocked senders: the receiver took events.
    writable: Notify,
}

/// The sending half, held by the loop and every model call it runs.
pub struct BridgeSender {
    shared: Arc<Shared>,
}

/// The receiving half, drained into a sink.
pub struct BridgeReceiver {
    shared: Arc<Shared>,
}

/// Creates a bridge holding at most `capacity` undelivered deltas.
pub fn bounded(capacity: NonZeroUsize, overflow: Overflow) -> (BridgeSender, BridgeReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            events: VecDeque::new(),
            senders: 1,
        }),
        capacity: capacity.get(),
        overflow,
        dropped: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (
        BridgeSender {
            shared: shared.clone(),
        },
        BridgeReceiver { shared },
    )
}

impl Clone for BridgeSender {
    fn clone(&self) -> Self {
        if let Ok(mut state) = self.shared.state.lock() {
            state.senders += 1;
        }
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for BridgeSender {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.senders -= 1;
        }
        self.shared.readable.notify_one();
    }
}

impl BridgeSender {
    /// Queues a control event. Never dropped, never waits.
    pub fn send_control(&self, event: LoopEvent) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.events.push_back(event);
        }
        self.shared.readable.notify_one();
    }

    /// Queues live deltas, in order, emptying `events`. What does not fit is
    /// dropped or waited for, as the overflow policy says.
    pub async fn send_deltas(&self, events: &mut Vec<LoopEvent>) {
        let mut pending = events.drain(..);
        loop {
            // Registered before looking, so room made after the look still wakes us.
            let writable = self.shared.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            let full = {
                let Ok(mut state) = self.shared.state.lock() else {
                    return;
                };
                let room = self.shared.capacity.saturating_sub(state.events.len());
                state.events.extend(pending.by_ref().take(room));
                pending.len() > 0
            };
            self.shared.readable.notify_one();
            if !full {
                return;
            }
            match self.shared.overflow {
                Overflow::DropNewest => {
                    let dropped = pending.len() as u64;
                    self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
                    return;
                }
                Overflow::Block => writable.await,
            }
        }
    }
}

impl BridgeReceiver {
    /// Delivers every event to `sink` in batches (each at most the sink's
    /// `max_batch`) until every sender is gone.
    ///
    /// The first error of the sink detaches it: it is handed to `on_detach`,
    /// and later events are discarded (and counted by
    /// [`BridgeReceiver::undelivered`]) instead of being offered to a sink
    /// that already failed. Dropping this future stops delivery at once.
    pub async fn drain_into(&self, sink: &dyn EventSink, on_detach: impl FnOnce(SinkError)) {
        let mut on_detach = Some(on_detach);
        let max_batch = sink.max_batch().max(1);
        loop {
            let (batch, done) = {
                let Ok(mut state) = self.shared.state.lock() else {
                    break;
                };
                let take = state.events.len().min(max_batch);
                let batch: Vec<LoopEvent> = state.events.drain(..take).collect();
                (batch, state.senders == 0 && state.events.is_empty())
            };
            if done && batch.is_empty() {
                break;
            }
            if batch.is_empty() {
                // A permit left by a notify between the look and here is kept,
                // so no wake-up is lost.
                self.shared.readable.notified().await;
                continue;
            }
            self.shared.writable.notify_waiters();
            if on_detach.is_none() {
                self.discard(batch.len());
                continue;
            }
            let count = batch.len() as u64;
            self.shared.in_flight.store(count, Ordering::Relaxed);
            let sent = sink.emit_many(batch).await;
            self.shared.in_flight.store(0, Ordering::Relaxed);
            if let Err(error) = sent {
                // The failed call's events are not known to have arrived.
                self.discard(count as usize);
                if let Some(report) = on_detach.take() {
                    report(error);
                }
            }
        }
    }

    /// Every event not delivered: deltas dropped on overflow, the events of a
    /// failed call and those discarded after it, the events of a call still
    /// under way (when the drain was given up), and events still queued.
    pub fn undelivered(&self) -> u64 {
        let queued = self.shared.state.lock().map_or(0, |s| s.events.len()) as u64;
        self.shared.dropped.load(Ordering::Relaxed)
            + self.shared.in_flight.load(Ordering::Relaxed)
            + queued
    }

    fn discard(&self, count: usize) {
        self.shared
            .dropped
            .fetch_add(count as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LoopEventKind;
    use futures::future::BoxFuture;
    use serde_json::json;

    /// Records each batch's sequences; fails every call when `.1` says so.
    struct Collect(Mutex<Vec<Vec<i64>>>, bool);

    impl Default for Collect {
        fn default() -> Self {
            Self(Mutex::default(), true)
        }
    }

    impl EventSink for Collect {
        fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
            if let Ok(mut batches) = self.0.lock() {
                batches.push(events.iter().map(|e| e.sequence).collect());
            }
            let fails = self.1;
            Box::pin(async move {
                if fails {
                    Err(SinkError("always fails".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn event(sequence: i64) -> LoopEvent {
        LoopEvent::new(
            sequence,
            LoopEventKind::OutputTextDelta,
            crate::events::EventData::Json(json!({})),
        )
    }

    fn capacity(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[tokio::test]
    async fn drops_newest_deltas_when_full_but_never_control_events() {
        let (tx, rx) = bounded(capacity(2), Overflow::DropNewest);
        tx.send_deltas(&mut (0..5).map(event).collect()).await;
        tx.send_control(event(9));
        drop(tx);
        let sink = Collect::default();
        let mut detached = None;
        rx.drain_into(&sink, |why| detached = Some(why)).await;
        // Three dropped on overflow, and the failed call's three.
        assert_eq!(rx.undelivered(), 6);
        let batches = sink.0.lock().unwrap().clone();
        // The oldest two survive and the control event follows, in one batch.
        assert_eq!(batches, vec![vec![0, 1, 9]]);
        assert_eq!(detached.map(|e| e.0), Some("always fails".to_string()));
    }

    #[tokio::test]
    async fn a_failed_sink_is_detached_and_later_events_are_counted() {
        let (tx, rx) = bounded(capacity(8), Overflow::Block);
        let sink = Collect::default();
        let mut reports = 0;
        let produce = async move {
            for sequence in 0..3 {
                tx.send_control(event(sequence));
                // Let the drain take each event as a batch of its own.
                tokio::task::yield_now().await;
            }
        };
        tokio::join!(produce, rx.drain_into(&sink, |_| reports += 1));
        assert_eq!(reports, 1);
        assert_eq!(sink.0.lock().unwrap().clone(), vec![vec![0]]);
        assert_eq!(rx.undelivered(), 3);
    }

    #[tokio::test]
    async fn block_keeps_every_event_in_order() {
        let (tx, rx) = bounded(capacity(3), Overflow::Block);
        let sink = Collect(Mutex::default(), false);
        let produce = async move {
            for start in (0..50).step_by(7) {
                let mut batch: Vec<LoopEvent> = (start..(start + 7).min(50)).map(event).collect();
                tx.send_deltas(&mut batch).await;
            }
        };
        tokio::join!(produce, rx.drain_into(&sink, |_| {}));
        assert_eq!(rx.undelivered(), 0);
        let delivered: Vec<i64> = sink.0.lock().unwrap().iter().flatten().copied().collect();
        assert_eq!(delivered, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_drain_ends_when_the_last_clone_is_dropped() {
        let (tx, rx) = bounded(capacity(4), Overflow::Block);
        let clone = tx.clone();
        drop(tx);
        let drain = tokio::spawn(async move {
            rx.drain_into(&Collect(Mutex::default(), false), |_| {})
                .await;
            rx.undelivered()
        });
        clone.send_control(event(1));
        drop(clone);
        assert_eq!(drain.await.unwrap(), 0);
    }
}
