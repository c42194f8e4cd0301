//! The bounded bridge between a response's loop and its sink.
//!
//! Every event of a response passes through one ordered channel, drained into
//! the sink by a task of its own, so the loop never waits on the client except
//! where it must: control events (`created`, `output_item.done`, the terminal
//! event) always wait for room, while live deltas follow the overflow policy.
//!
//! By default the upstream read never waits for a client: a stalled sink would
//! stall the read and trip the upstream's idle timeout. So when the channel is
//! full the sender drops the newest event and counts it ([`Overflow::DropNewest`],
//! onwards' behaviour). A caller that wants every event and accepts that a slow
//! sink slows the upstream read chooses [`Overflow::Block`]. The reassembled step
//! result does not pass through here and is never affected.
//!
//! The receiving side delivers everything queued at each wake-up as one batch, so
//! a fast stream costs one sink call per batch rather than one per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::events::LoopEvent;
use crate::traits::EventSink;

/// What the sender does when the channel is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the event that does not fit.
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

/// The sending half, held by the loop and every model call it runs.
#[derive(Clone)]
pub struct BridgeSender {
    tx: mpsc::Sender<LoopEvent>,
    overflow: Overflow,
    dropped: Arc<AtomicU64>,
}

/// The receiving half, drained into a sink.
pub struct BridgeReceiver {
    rx: mpsc::Receiver<LoopEvent>,
    dropped: Arc<AtomicU64>,
}

/// Creates a bridge holding at most `capacity` undelivered events (at least 1).
pub fn bounded(capacity: usize, overflow: Overflow) -> (BridgeSender, BridgeReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        BridgeSender {
            tx,
            overflow,
            dropped: dropped.clone(),
        },
        BridgeReceiver { rx, dropped },
    )
}

impl BridgeSender {
    /// Queues a control event, waiting for room: these are never dropped.
    pub async fn send_control(&self, event: LoopEvent) {
        if self.tx.send(event).await.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a live delta. When the channel is full it drops the event or
    /// waits, as the overflow policy says; with the sink gone it drops it.
    pub async fn send(&self, event: LoopEvent) {
        let sent = match self.overflow {
            Overflow::DropNewest => self.tx.try_send(event).is_ok(),
            Overflow::Block => self.tx.send(event).await.is_ok(),
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl BridgeReceiver {
    /// Delivers every event to `sink` in batches until the sender is dropped.
    /// Returns how many events were dropped on overflow.
    pub async fn drain_into(mut self, sink: &dyn EventSink) -> u64 {
        let mut batch = Vec::new();
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while let Ok(next) = self.rx.try_recv() {
                batch.push(next);
            }
            // A failing sink never stops the drain: later events may still get through.
            let _ = sink.emit_many(std::mem::take(&mut batch)).await;
        }
        self.dropped.load(Ordering::Relaxed)
    }

    /// Discards everything until the sender is dropped (no sink attached).
    pub async fn discard(mut self) {
        while self.rx.recv().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LoopEventKind;
    use crate::traits::SinkError;
    use futures::future::BoxFuture;
    use serde_json::json;
    use std::sync::Mutex;

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
            data: json!({}),
        }
    }

    #[tokio::test]
    async fn drops_newest_when_full_and_batches_the_rest() {
        let (tx, rx) = bounded(2, Overflow::DropNewest);
        for sequence in 0..5 {
            tx.send(event(sequence)).await;
        }
        drop(tx);
        let sink = Collect::default();
        let dropped = rx.drain_into(&sink).await;
        assert_eq!(dropped, 3);
        let batches = sink.0.lock().map(|b| b.clone()).unwrap_or_default();
        // The oldest two survive, delivered in one batch despite the failing sink.
        assert_eq!(batches, vec![vec![0, 1]]);
    }

    #[tokio::test]
    async fn block_keeps_every_event() {
        let (tx, rx) = bounded(2, Overflow::Block);
        let sink = Collect::default();
        let produce = async move {
            for sequence in 0..50 {
                tx.send(event(sequence)).await;
            }
        };
        let ((), dropped) = tokio::join!(produce, rx.drain_into(&sink));
        assert_eq!(dropped, 0);
        let delivered: Vec<i64> = sink.0.lock().unwrap().iter().flatten().copied().collect();
        assert_eq!(delivered, (0..50).collect::<Vec<_>>());
    }
}
