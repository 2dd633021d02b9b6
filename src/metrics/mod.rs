//! Where usage is counted: finished-request records go fire-and-forget to the
//! MetricsAggregator actor, which aggregates them off the request path, answers `/stats` and
//! `/metrics`, logs the `sluice::usage` event, and persists counters to the state file.

pub mod exposition;
pub mod record;
pub mod state_file;
pub mod stats;
pub mod tap;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use hdrhistogram::Histogram;
use serde::Serialize;

pub use record::{Outcome, RequestRecord};
pub use tap::UsageTap;

use crate::pricing::PriceTable;
use stats::{Counters, Groups, RateLimitState, StatsBook};

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
    fn take(&self, spare: &mut Vec<RequestRecord>) {
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
    addr: Recipient<Drain>,
    queue: Arc<RecordQueue>,
}

impl Recorder {
    pub fn new(addr: Recipient<Drain>, queue: Arc<RecordQueue>) -> Self {
        Self { addr, queue }
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

/// How long records may wait before they are counted (and logged).
const DRAIN_DELAY: Duration = Duration::from_millis(5);

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

/// Latency percentiles in milliseconds: the `LAT` object of `/stats`.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Microsecond latencies, 1 µs to 1 h at 3 significant digits.
struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
        )
    }
}

impl Latency {
    fn record(&mut self, duration: Duration) {
        self.0
            .saturating_record(duration.as_micros().clamp(1, u64::MAX as u128) as u64);
    }

    fn summary(&self) -> LatencySummary {
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: self.0.len(),
            p50: ms(self.0.value_at_quantile(0.50)),
            p90: ms(self.0.value_at_quantile(0.90)),
            p99: ms(self.0.value_at_quantile(0.99)),
            max: ms(self.0.max()),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LatencyReport {
    pub ttfb: LatencySummary,
    pub total: LatencySummary,
    pub overhead: LatencySummary,
}

/// What the aggregator knows, for `/stats` (the handler adds settings and process facts).
/// Field order is SPEC's `/stats` order.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    #[serde(skip)]
    pub counting_since: String,
    pub totals: Counters,
    pub by_route: BTreeMap<String, Counters>,
    pub by_model: BTreeMap<String, Counters>,
    pub by_source: BTreeMap<String, Counters>,
    pub by_credential: BTreeMap<String, Counters>,
    pub by_caller: BTreeMap<String, Counters>,
    pub by_session: BTreeMap<String, Counters>,
    pub by_status: BTreeMap<String, u64>,
    pub latency_ms: LatencyReport,
    pub rate_limits: BTreeMap<String, RateLimitState>,
    pub unpriced_models: BTreeMap<String, u64>,
}

/// Receives one record per finished request and aggregates it.
pub struct MetricsAggregator {
    book: StatsBook,
    ttfb: Latency,
    total: Latency,
    overhead: Latency,
    exposition: exposition::Exposition,
    prices: PriceTable,
    state_file: Option<PathBuf>,
    flush_interval: Duration,
    flush_timer: Option<SpawnHandle>,
    dirty: bool,
    /// Shared with the Recorder: records waiting, and those the request path had to drop.
    queue: Arc<RecordQueue>,
    /// The previous batch's buffer, kept for its allocation.
    spare: Vec<RequestRecord>,
    /// Test hook: how long each record takes to handle (simulates a slow aggregator).
    delay_per_record: Duration,
}

impl MetricsAggregator {
    /// Restores counters from `state_file` when it is readable; an unreadable one is moved
    /// aside (never deleted) and counting starts afresh.
    pub fn new(
        state_file: Option<PathBuf>,
        flush_interval: Duration,
        prices: PriceTable,
        queue: Arc<RecordQueue>,
    ) -> Self {
        let fresh = || StatsBook::new(stats::rfc3339(SystemTime::now()));
        let mut state_file = state_file;
        let book = match state_file.as_deref().map(state_file::load) {
            Some(state_file::Loaded::Restored(book)) => *book,
            Some(state_file::Loaded::Stuck) => {
                state_file = None;
                fresh()
            }
            _ => fresh(),
        };
        Self {
            book,
            ttfb: Latency::default(),
            total: Latency::default(),
            overhead: Latency::default(),
            exposition: exposition::Exposition::default(),
            prices,
            state_file,
            flush_interval,
            flush_timer: None,
            dirty: false,
            queue,
            spare: Vec::new(),
            delay_per_record: Duration::ZERO,
        }
    }

    /// Test hook: slower record handling.
    pub fn with_delay_per_record(mut self, delay: Duration) -> Self {
        self.delay_per_record = delay;
        self
    }

    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        if let Some(path) = &self.state_file {
            match state_file::save(path, &self.book) {
                Ok(()) => self.dirty = false,
                Err(err) => {
                    tracing::error!(path = %path.display(), "cannot write the state file: {err}")
                }
            }
        }
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.flush_timer.take() {
            ctx.cancel_future(handle);
        }
        self.flush_timer = Some(ctx.run_interval(self.flush_interval, |act, _| act.flush()));
    }

    fn report(&self, since: Option<i64>) -> UsageReport {
        let Groups {
            totals,
            by_route,
            by_model,
            by_source,
            by_credential,
            by_caller,
            by_session,
            by_status,
        } = self.book.window(since);
        UsageReport {
            counting_since: match since {
                Some(since) => self.book.counting_since.clone().max(stats::rfc3339(
                    std::time::UNIX_EPOCH + Duration::from_secs(since.max(0) as u64),
                )),
                None => self.book.counting_since.clone(),
            },
            totals,
            by_route,
            by_model,
            by_source,
            by_credential,
            by_caller,
            by_session: by_session
                .into_iter()
                .map(|(k, s)| (k, s.counters))
                .collect(),
            by_status,
            latency_ms: LatencyReport {
                ttfb: self.ttfb.summary(),
                total: self.total.summary(),
                overhead: self.overhead.summary(),
            },
            rate_limits: self.book.rate_limits.clone(),
            unpriced_models: self.book.unpriced_models.clone(),
        }
    }
}

impl Actor for MetricsAggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.schedule_flush(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.drain();
        self.flush();
    }
}

impl MetricsAggregator {
    /// Counts every waiting record; their log lines go out in one write.
    fn drain(&mut self) {
        let mut batch = std::mem::take(&mut self.spare);
        self.queue.take(&mut batch);
        if batch.is_empty() {
            self.spare = batch;
            return;
        }
        crate::logging::batched(|| {
            for record in batch.drain(..) {
                self.count(record);
            }
        });
        self.spare = batch;
    }

    fn count(&mut self, record: RequestRecord) {
        if !self.delay_per_record.is_zero() {
            std::thread::sleep(self.delay_per_record);
        }
        let cost = self.prices.cost_usd(record.model.as_deref(), &record.usage);
        self.book.add(&record, cost);
        if let Some(ttfb) = record.ttfb {
            self.ttfb.record(ttfb);
        }
        self.total.record(record.total);
        if let Some(overhead) = record.overhead {
            self.overhead.record(overhead);
        }
        self.exposition.observe(&record, cost.unwrap_or(0.0));
        self.dirty = true;
        log_usage(&record, cost);
    }
}

impl Handler<Drain> for MetricsAggregator {
    type Result = ();

    /// Counting waits a few milliseconds so that a busy proxy's records arrive in batches (one
    /// wakeup of this thread per batch, not per request). `/stats`, `/metrics` and shutdown drain
    /// first, so nothing they report is late.
    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        ctx.run_later(DRAIN_DELAY, |act, _| act.drain());
    }
}

/// The one `sluice::usage` INFO event per finished request. Never a secret: the credential is a
/// fingerprint, the path has no query string.
fn log_usage(record: &RequestRecord, cost: Option<f64>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    tracing::info!(
        target: "sluice::usage",
        request_id = %record.request_id,
        route = %record.route,
        method = %record.method,
        path = %record.path,
        status = record.status,
        model = %record.model.as_deref().unwrap_or(""),
        source = %record.source.map(|s| s.as_str()).unwrap_or(""),
        credential = %record.credential.as_deref().unwrap_or(""),
        caller = %record.caller.as_deref().unwrap_or(""),
        session = %record.session.as_deref().unwrap_or(""),
        input_tokens = record.usage.input_tokens,
        output_tokens = record.usage.output_tokens,
        cache_creation_input_tokens = record.usage.cache_creation_input_tokens,
        cache_read_input_tokens = record.usage.cache_read_input_tokens,
        cost_usd = cost.unwrap_or(0.0),
        ttfb_ms = record.ttfb.map(ms).unwrap_or(0.0),
        total_ms = ms(record.total),
        overhead_ms = record.overhead.map(ms).unwrap_or(0.0),
        outcome = %record.outcome.as_str(),
        "request finished"
    );
}

/// `/stats`: the report, over all time or since a unix second.
#[derive(Message)]
#[rtype(result = "UsageReport")]
pub struct GetReport {
    pub since: Option<i64>,
}

impl Handler<GetReport> for MetricsAggregator {
    type Result = MessageResult<GetReport>;

    fn handle(&mut self, msg: GetReport, _: &mut Self::Context) -> Self::Result {
        self.drain();
        MessageResult(self.report(msg.since))
    }
}

/// `/metrics`: the Prometheus text exposition.
#[derive(Message)]
#[rtype(result = "String")]
pub struct RenderMetrics;

impl Handler<RenderMetrics> for MetricsAggregator {
    type Result = String;

    fn handle(&mut self, _: RenderMetrics, _: &mut Self::Context) -> String {
        self.drain();
        self.exposition.set_dropped(self.queue.dropped());
        self.exposition.render()
    }
}

/// Write the state file now (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for MetricsAggregator {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.drain();
        self.flush();
    }
}

/// New settings: pricing, state file location and flush interval.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyMetrics {
    pub prices: PriceTable,
    pub state_file: Option<PathBuf>,
    pub flush_interval: Duration,
}

impl Handler<ApplyMetrics> for MetricsAggregator {
    type Result = ();

    fn handle(&mut self, msg: ApplyMetrics, ctx: &mut Self::Context) {
        self.prices = msg.prices;
        if msg.state_file != self.state_file {
            // Counters continue; the next flush writes them to the new place.
            self.state_file = msg.state_file;
            self.dirty = true;
        }
        if msg.flush_interval != self.flush_interval {
            self.flush_interval = msg.flush_interval;
            self.schedule_flush(ctx);
        }
    }
}
