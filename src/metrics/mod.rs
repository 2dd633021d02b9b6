//! Where usage is counted. Finished-request records leave the request path through a bounded
//! queue ([`queue`]); the MetricsAggregator actor drains it in batches off the request path,
//! prices each record once, and hands every batch to its sinks: the views behind `/stats`
//! ([`views`]), the Prometheus exposition ([`exposition`]), the usage log line ([`usage_log`]),
//! and the UpstreamPool's health. A new consumer of records is a new [`Sink`].

pub mod counters;
pub mod exposition;
pub mod latency;
pub mod queue;
pub mod record;
pub mod stats;
pub mod tap;
pub mod usage_log;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

pub use counters::Counters;
pub use queue::{
    Drain, PendingRecord, RecordQueue, Recorder, CLIENT_CLOSED_REQUEST, QUEUE_CAPACITY,
};
pub use record::{Outcome, RequestRecord};
pub use tap::UsageTap;
pub use views::UsageReport;

use crate::pricing::PriceTable;

/// How long records may wait before they are counted (and logged): a busy proxy's records then
/// arrive in batches, one wakeup of the aggregator's thread per batch, not per request.
const DRAIN_DELAY: Duration = Duration::from_millis(5);

/// A finished request with its price, as every sink receives it.
pub struct Finished {
    pub record: RequestRecord,
    /// `None` when the model has no price in the table.
    pub cost: Option<f64>,
}

/// A consumer of finished requests. Sinks run on the aggregator's thread, one batch at a time:
/// they may take their time, never the request path's.
pub trait Sink {
    fn accept(&mut self, batch: &[Finished]);
}

/// Receives every finished request and fans it out to the sinks.
pub struct MetricsAggregator {
    prices: PriceTable,
    views: views::Views,
    exposition: exposition::Exposition,
    /// The sinks nobody queries: the log line, upstream health.
    others: Vec<Box<dyn Sink>>,
    /// Shared with the Recorder: records waiting, and those the request path had to drop.
    queue: Arc<RecordQueue>,
    /// The previous batch's buffers, kept for their allocations.
    spare: Vec<Finished>,
    spare_records: Vec<RequestRecord>,
    #[cfg(feature = "test-hooks")]
    delay_per_record: Duration,
}

impl MetricsAggregator {
    pub fn new(prices: PriceTable, queue: Arc<RecordQueue>, others: Vec<Box<dyn Sink>>) -> Self {
        Self {
            prices,
            views: views::Views::default(),
            exposition: exposition::Exposition::default(),
            others,
            queue,
            spare: Vec::new(),
            spare_records: Vec::new(),
            #[cfg(feature = "test-hooks")]
            delay_per_record: Duration::ZERO,
        }
    }

    /// Adds metrics that another part of sluice keeps (read at each scrape of `/metrics`).
    pub fn with_collector(
        mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) -> Self {
        self.exposition.register_collector(collector);
        self
    }

    /// Starts `rate_limits` with states seen before this process (oldest first), as the store
    /// kept them; states that do not parse are skipped.
    pub fn with_rate_limits(mut self, states: Vec<(String, (i64, String))>) -> Self {
        self.views
            .restore_rate_limits(states.into_iter().filter_map(|(credential, (_, json))| {
                Some((credential, serde_json::from_str(&json).ok()?))
            }));
        self
    }

    /// Test hook: take this long per record (to show the request path never waits for it).
    #[cfg(feature = "test-hooks")]
    pub fn with_delay_per_record(mut self, delay: Duration) -> Self {
        self.delay_per_record = delay;
        self
    }

    /// Prices every waiting record and hands the batch to each sink; log lines go out in one
    /// write.
    fn drain(&mut self) {
        let mut records = std::mem::take(&mut self.spare_records);
        self.queue.take(&mut records);
        let mut batch = std::mem::take(&mut self.spare);
        batch.extend(records.drain(..).map(|record| {
            #[cfg(feature = "test-hooks")]
            if !self.delay_per_record.is_zero() {
                std::thread::sleep(self.delay_per_record);
            }
            let cost = record
                .priced_usd
                .or_else(|| self.prices.cost_usd(record.model.as_deref(), &record.usage));
            Finished { record, cost }
        }));
        if batch.is_empty() {
            self.spare = batch;
            self.spare_records = records;
            return;
        }
        crate::logging::batched(|| {
            self.views.accept(&batch);
            self.exposition.accept(&batch);
            for sink in &mut self.others {
                sink.accept(&batch);
            }
        });
        batch.clear();
        self.spare = batch;
        self.spare_records = records;
    }
}

impl Actor for MetricsAggregator {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.drain();
    }
}

impl Handler<Drain> for MetricsAggregator {
    type Result = ();

    /// Counting waits a few milliseconds so that records arrive in batches. `/stats`,
    /// `/metrics` and shutdown drain first, so nothing they report is late.
    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        ctx.run_later(DRAIN_DELAY, |act, _| act.drain());
    }
}

/// `/stats`: the views' report. Everything recorded before is counted first (and handed to the
/// store).
#[derive(Message)]
#[rtype(result = "UsageReport")]
pub struct GetReport;

impl Handler<GetReport> for MetricsAggregator {
    type Result = MessageResult<GetReport>;

    fn handle(&mut self, _: GetReport, _: &mut Self::Context) -> Self::Result {
        self.drain();
        MessageResult(self.views.report())
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

/// Count everything recorded so far now (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for MetricsAggregator {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.drain();
    }
}

/// New settings: pricing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyMetrics {
    pub prices: PriceTable,
}

impl Handler<ApplyMetrics> for MetricsAggregator {
    type Result = ();

    fn handle(&mut self, msg: ApplyMetrics, _: &mut Self::Context) {
        self.prices = msg.prices;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::SystemTime;

    use crate::settings::default_pricing;
    use crate::usage::Usage;

    /// Each record's model and cost, as a sink saw them.
    type Seen = Vec<(Option<String>, Option<f64>)>;

    /// A sink that keeps what it was given.
    struct Kept(Arc<Mutex<Seen>>);

    impl Sink for Kept {
        fn accept(&mut self, batch: &[Finished]) {
            let mut kept = self.0.lock().unwrap();
            kept.extend(batch.iter().map(|f| (f.record.model.clone(), f.cost)));
        }
    }

    fn record(model: &str, input: u64, output: u64) -> RequestRecord {
        RequestRecord {
            finished_at: SystemTime::now(),
            route: "/anthropic".into(),
            method: "POST".into(),
            path: "/anthropic/v1/messages".into(),
            status: 200,
            model: Some(model.into()),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            },
            streamed: false,
            outcome: Outcome::Completed,
            ..RequestRecord::default()
        }
    }

    #[actix_rt::test]
    async fn every_record_is_priced_once_and_reaches_every_sink_and_the_views() {
        let queue = RecordQueue::new(16);
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Kept(kept.clone()))];
        let prices = PriceTable::new(default_pricing());
        let aggregator = MetricsAggregator::new(prices, queue.clone(), sinks).start();
        let recorder = Recorder::new(aggregator.clone().recipient(), queue);
        // Sonnet: $3 in, $15 out per million tokens (a prompt under its 200K long-context line).
        recorder.record(record("claude-sonnet-4-5", 100_000, 10_000));
        recorder.record(record("no-such-model", 10, 10));
        let report = aggregator.send(GetReport).await.unwrap();
        assert_eq!(report.unpriced_models["no-such-model"], 1);
        let kept = kept.lock().unwrap().clone();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].0.as_deref(), Some("claude-sonnet-4-5"));
        assert!((kept[0].1.unwrap() - 0.45).abs() < 1e-9, "{kept:?}");
        assert_eq!(kept[1].1, None);
        let text = aggregator.send(RenderMetrics).await.unwrap();
        assert!(text.contains("sluice_requests_total{"), "{text}");
    }
}
