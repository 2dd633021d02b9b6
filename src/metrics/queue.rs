//! How finished-request records leave the request path: a bounded queue pushed to without
//! waiting and drained by the MetricsAggregator in batches, and the [`PendingRecord`] that makes
//! sure every request yields exactly one record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix::prelude::*;

use super::record::{Outcome, RequestRecord};

/// Records waiting for the aggregator beyond this are dropped (and counted), so a slow
/// aggregator can never hold up or exhaust the request path.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Finished-request records on their way to the aggregator: a bounded queue the request path
/// pushes to without waiting, and the aggregator drains in batches.
///
/// Why not one actor message per record: each message to an actor on another thread wakes that
/// thread, and under load those wakeups (futex, context switches) cost more than the counting.
/// Here only a push into an empty queue wakes the aggregator, so a busy proxy sends it one
/// wakeup per batch; and the bound is exact (an actix mailbox grants every sender clone a slot
/// of its own, so it cannot bound many short-lived senders).
pub struct RecordQueue {
    items: Mutex<Vec<RequestRecord>>,
    capacity: usize,
    dropped: AtomicU64,
    /// Requests begun whose record has not been handed over yet (shutdown waits for them).
    open: AtomicU64,
}

impl RecordQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            items: Mutex::new(Vec::new()),
            capacity,
            dropped: AtomicU64::new(0),
            open: AtomicU64::new(0),
        })
    }

    /// Swaps the waiting records out (into `spare`, reusing its allocation).
    pub(super) fn take(&self, spare: &mut Vec<RequestRecord>) {
        let mut items = self
            .items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::swap(&mut *items, spare);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The request path's handle on the aggregator: never blocks, never fails the request.
#[derive(Clone)]
pub struct Recorder {
    /// Shared: a `Recipient`'s own clone allocates, and every request clones its recorder.
    addr: Arc<Recipient<Drain>>,
    queue: Arc<RecordQueue>,
}

impl Recorder {
    pub fn new(addr: Recipient<Drain>, queue: Arc<RecordQueue>) -> Self {
        Self {
            addr: Arc::new(addr),
            queue,
        }
    }

    /// Starts the record of a request: whatever happens to the request from here on (answered,
    /// refused, or dropped because the client left), exactly one record will be sent.
    pub fn open(&self, record: RequestRecord) -> PendingRecord {
        self.queue.open.fetch_add(1, Ordering::AcqRel);
        PendingRecord {
            record: Some(record),
            recorder: self.clone(),
        }
    }

    /// Requests whose record has not been sent yet.
    pub fn open_records(&self) -> u64 {
        self.queue.open.load(Ordering::Acquire)
    }

    /// Sends a finished record (one that [`open`](Self::open) began).
    pub fn record(&self, record: RequestRecord) {
        let _ = self
            .queue
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        let was_empty = {
            let mut items = self
                .queue
                .items
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if items.len() >= self.queue.capacity {
                self.queue.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            items.push(record);
            items.len() == 1
        };
        if was_empty {
            self.addr.do_send(Drain);
        }
    }

    /// Records lost because the aggregator was saturated.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }
}

/// A request's record while the request is being handled. Dropped unfinished — the client
/// left before the upstream answered, so actix dropped the handler — it records `client_gone`.
pub struct PendingRecord {
    record: Option<RequestRecord>,
    recorder: Recorder,
}

/// Status recorded for a client that left before any answer (nginx's convention).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl PendingRecord {
    pub fn get_mut(&mut self) -> &mut RequestRecord {
        self.record
            .as_mut()
            .expect("a pending record is present until it is finished")
    }

    /// Hands the record to whoever finishes it (the UsageTap), which then sends it.
    pub fn hand_over(&mut self) -> RequestRecord {
        self.record
            .take()
            .expect("a pending record is handed over once")
    }

    /// Takes the record back unsent: the request turned out to be something that is recorded
    /// otherwise (a WebSocket, whose responses are each a record of their own).
    pub fn discard(&mut self) -> Option<RequestRecord> {
        let record = self.record.take()?;
        let _ = self
            .recorder
            .queue
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        Some(record)
    }

    /// Finishes the record now with `status` and `outcome`.
    pub fn finish(&mut self, status: u16, outcome: Outcome, received: std::time::Instant) {
        if let Some(mut record) = self.record.take() {
            record.status = status;
            record.outcome = outcome;
            record.total = received.elapsed();
            record.finished_at = SystemTime::now();
            self.recorder.record(record);
        }
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.status = CLIENT_CLOSED_REQUEST;
            record.outcome = Outcome::ClientGone;
            record.finished_at = SystemTime::now();
            self.recorder.record(record);
        }
    }
}

/// Records are waiting: take them all.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;
