//! Where usage is counted: finished-request records go fire-and-forget to the
//! MetricsAggregator actor, which aggregates them off the request path.

pub mod record;
pub mod tap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

pub use record::{Outcome, RequestRecord};
pub use tap::UsageTap;

/// Records waiting in the aggregator's mailbox beyond this are dropped (and counted), so a
/// slow aggregator can never hold up or exhaust the request path.
pub const MAILBOX_CAPACITY: usize = 65_536;

/// The request path's handle on the aggregator: never blocks, never fails the request.
#[derive(Clone)]
pub struct Recorder {
    addr: Recipient<RequestRecord>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    pub fn new(addr: Recipient<RequestRecord>) -> Self {
        Self {
            addr,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn record(&self, record: RequestRecord) {
        if self.addr.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records lost because the aggregator's mailbox was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Message for RequestRecord {
    type Result = ();
}

/// Receives one record per finished request and aggregates it.
#[derive(Default)]
pub struct MetricsAggregator {
    requests: u64,
}

impl Actor for MetricsAggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Handler<RequestRecord> for MetricsAggregator {
    type Result = ();

    fn handle(&mut self, record: RequestRecord, _: &mut Self::Context) {
        self.requests += 1;
        tracing::info!(
            target: "sluice::usage",
            route = %record.route,
            method = %record.method,
            path = %record.path,
            status = record.status,
            outcome = record.outcome.as_str(),
            "request finished"
        );
    }
}
