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
//! with one wake-up, and the receiver takes everything queued at each wake-up as
//! one batch for the sink: a fast stream costs a few crossings per read, not
//! one per event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::events::LoopEvent;
use crate::traits::EventSink;

/// What the sender does with deltas that do not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop them.
    #[default]
    DropNewest,
    /// Wait for room: back-pressure from the sink to the upstream read.
    Block,
}

impl Overflow {
    /// Parses `drop_newest` or `block`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "drop_newest" => Some(Overflow::DropNewest),
            "block" => Some(Overflow::Block),
            _ => None,
        }
    }
}

struct State {
    events: VecDeque<LoopEvent>,
    senders: usize,
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    overflow: Overflow,
    dropped: AtomicU64,
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

/// Creates a bridge holding at most `capacity` undelivered deltas (at least 1).
pub fn bounded(capacity: usize, overflow: Overflow) -> (BridgeSender, BridgeReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            events: VecDeque::new(),
            senders: 1,
        }),
        capacity: capacity.max(1),
        overflow,
        dropped: AtomicU64::new(0),
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
    /// Delivers every event to `sink` in batches until every sender is gone.
    /// Returns how many deltas were dropped on overflow.
    pub async fn drain_into(self, sink: &dyn EventSink) -> u64 {
        loop {
            let (batch, done) = {
                let Ok(mut state) = self.shared.state.lock() else {
                    break;
                };
                (std::mem::take(&mut state.events), state.senders == 0)
            };
            if batch.is_empty() {
                if done {
                    break;
                }
                // A permit left by a notify between the look and here is kept,
                // so no wake-up is lost.
                self.shared.readable.notified().await;
                continue;
            }
            self.shared.writable.notify_waiters();
            // A failing sink never stops the drain: later events may still get through.
            let _ = sink.emit_many(Vec::from(batch)).await;
        }
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LoopEventKind;
    use crate::traits::SinkError;
    use futures::future::BoxFuture;
    use serde_json::json;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Vec<i64>>>);

    impl EventSink for Collect {
        fn emit_many<'a>(&'a self, events: Vec<LoopEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
            if let Ok(mut batches) = self.0.lock() {
                batches.push(events.iter().map(|e| e.sequence).collect());
            }
            Box::pin(async { Err(SinkError("always fails".into())) })
        }
    }

    fn event(sequence: i64) -> LoopEvent {
        LoopEvent {
            sequence,
            kind: LoopEventKind::OutputTextDelta,
            data: crate::events::EventData::Json(json!({})),
        }
    }

    #[tokio::test]
    async fn drops_newest_deltas_when_full_but_never_control_events() {
        let (tx, rx) = bounded(2, Overflow::DropNewest);
        tx.send_deltas(&mut (0..5).map(event).collect()).await;
        tx.send_control(event(9));
        drop(tx);
        let sink = Collect::default();
        let dropped = rx.drain_into(&sink).await;
        assert_eq!(dropped, 3);
        let batches = sink.0.lock().unwrap().clone();
        // The oldest two survive and the control event follows, in one batch,
        // despite the failing sink.
        assert_eq!(batches, vec![vec![0, 1, 9]]);
    }

    #[tokio::test]
    async fn block_keeps_every_event_in_order() {
        let (tx, rx) = bounded(3, Overflow::Block);
        let sink = Collect::default();
        let produce = async move {
            for start in (0..50).step_by(7) {
                let mut batch: Vec<LoopEvent> = (start..(start + 7).min(50)).map(event).collect();
                tx.send_deltas(&mut batch).await;
            }
        };
        let ((), dropped) = tokio::join!(produce, rx.drain_into(&sink));
        assert_eq!(dropped, 0);
        let delivered: Vec<i64> = sink.0.lock().unwrap().iter().flatten().copied().collect();
        assert_eq!(delivered, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_drain_ends_when_the_last_clone_is_dropped() {
        let (tx, rx) = bounded(4, Overflow::Block);
        let clone = tx.clone();
        drop(tx);
        let drain = tokio::spawn(async move { rx.drain_into(&Collect::default()).await });
        clone.send_control(event(1));
        drop(clone);
        assert_eq!(drain.await.unwrap(), 0);
    }
}
