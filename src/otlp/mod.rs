//! OpenTelemetry export (`[otlp]`): the finished-request records the MetricsAggregator gets,
//! pushed to a collector as OTLP/HTTP protobuf — cumulative GenAI metrics every `interval_s`
//! and, with `traces = true`, one span per request. [`OtlpSink`] runs on the aggregator's
//! thread and only counts and queues; the [`export`] thread does the HTTP, with a bounded
//! queue, retries and backoff, so a collector that is down or slow never reaches the request
//! path and never grows memory.

pub mod attributes;
pub mod export;
pub mod headers;
pub mod metrics;
pub mod spans;
pub mod traceparent;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Serialize;

pub use headers::OtlpHeaders;
pub use traceparent::TraceParent;

use crate::metrics::{Finished, Sink};
use crate::settings::{OtlpSettings, Settings};

/// Spans waiting for the exporter at most; more are dropped (and counted) while it is behind.
pub const SPAN_QUEUE_CAPACITY: usize = 2048;
/// Spans per export request at most.
pub const SPAN_BATCH: usize = 512;

/// What the exporter needs of one settings generation.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub settings: OtlpSettings,
    pub headers: OtlpHeaders,
    /// `gen_ai.provider.name` per route prefix.
    pub providers: Vec<(String, Option<String>)>,
}

impl ExportConfig {
    /// `None` when the settings have no `[otlp]`.
    pub fn of(settings: &Settings, headers: &OtlpHeaders) -> Option<Self> {
        let otlp = settings.otlp.clone()?;
        Some(Self {
            settings: otlp,
            headers: headers.clone(),
            providers: settings
                .routes
                .iter()
                .map(|r| {
                    (
                        r.prefix.clone(),
                        attributes::provider_name(r.protocol.as_str()),
                    )
                })
                .collect(),
        })
    }

    /// The record's provider (its route's protocol), else the one of the route as configured.
    fn provider_of(&self, record: &crate::metrics::RequestRecord) -> Option<String> {
        match record.provider {
            Some(protocol) => attributes::provider_name(protocol),
            None => self.provider(&record.route),
        }
    }

    fn provider(&self, route: &str) -> Option<String> {
        self.providers
            .iter()
            .find(|(prefix, _)| prefix == route)
            .and_then(|(_, provider)| provider.clone())
    }
}

/// Shared by the sink (aggregator thread), the exporter thread and `/stats`/`/metrics`.
pub struct Export {
    config: ArcSwapOption<ExportConfig>,
    resource: Resource,
    /// `None` while export is off.
    metrics: Mutex<Option<metrics::MetricsState>>,
    spans: Mutex<VecDeque<Span>>,
    wake: tokio::sync::Notify,
    started: AtomicBool,
    closing: AtomicBool,
    closed: AtomicBool,
    counts: Counts,
    last_error: Mutex<Option<String>>,
    failing: AtomicBool,
}

#[derive(Default)]
struct Counts {
    exported: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    dropped_spans: AtomicU64,
    exported_spans: AtomicU64,
}

/// `/stats` `otlp`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OtlpStatus {
    pub enabled: bool,
    /// Export requests the collector accepted.
    pub exported: u64,
    /// Attempts that failed (each retry counts).
    pub failed: u64,
    /// Export requests given up: after their retries, or refused for good by the collector.
    pub dropped: u64,
    pub exported_spans: u64,
    /// Spans lost: their queue was full, or their request was given up.
    pub dropped_spans: u64,
    pub queued_spans: usize,
    /// The collector does not take exports now (since the last success).
    pub failing: bool,
    /// The last failure: a status or a connection error, never a header.
    pub last_error: Option<String>,
}

impl Export {
    /// `instance`: the store's instance name, reused as `service.instance.id`.
    pub fn new(instance: &str) -> Arc<Self> {
        Arc::new(Self {
            config: ArcSwapOption::empty(),
            resource: resource(instance),
            metrics: Mutex::new(None),
            spans: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            started: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            counts: Counts::default(),
            last_error: Mutex::new(None),
            failing: AtomicBool::new(false),
        })
    }

    /// Takes a settings generation's `[otlp]` (or its absence). Cumulative series keep counting
    /// across reloads while export stays on; turning it off forgets them and the queued spans.
    pub fn configure(self: &Arc<Self>, config: Option<ExportConfig>) {
        let on = config.is_some();
        let unchanged = self.config.load().as_deref() == config.as_ref();
        if unchanged {
            return;
        }
        let traces = config.as_ref().is_some_and(|c| c.settings.traces);
        self.config.store(config.map(Arc::new));
        if let Ok(mut metrics) = self.metrics.lock() {
            match (on, metrics.is_some()) {
                (true, false) => *metrics = Some(metrics::MetricsState::new(SystemTime::now())),
                (false, _) => *metrics = None,
                _ => {}
            }
        }
        if !traces {
            if let Ok(mut spans) = self.spans.lock() {
                spans.clear();
                spans.shrink_to_fit();
            }
        }
        if on && !self.started.swap(true, Ordering::SeqCst) {
            export::start(self.clone());
        }
        self.wake.notify_one();
    }

    pub fn status(&self) -> OtlpStatus {
        let counts = &self.counts;
        OtlpStatus {
            enabled: self.config.load().is_some(),
            exported: counts.exported.load(Ordering::Relaxed),
            failed: counts.failed.load(Ordering::Relaxed),
            dropped: counts.dropped.load(Ordering::Relaxed),
            exported_spans: counts.exported_spans.load(Ordering::Relaxed),
            dropped_spans: counts.dropped_spans.load(Ordering::Relaxed),
            queued_spans: self.spans.lock().map(|s| s.len()).unwrap_or(0),
            failing: self.failing.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// How many spans wait, and how many the queue may hold (for tests of the bound).
    pub fn queued_spans(&self) -> usize {
        self.spans.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Counts `batch` into the series and, with traces on, queues its spans (dropping what does
    /// not fit). Runs on the aggregator's thread; never waits on the network.
    fn accept(&self, batch: &[Finished]) {
        let Some(config) = self.config.load_full() else {
            return;
        };
        if let Ok(mut guard) = self.metrics.lock() {
            if let Some(state) = guard.as_mut() {
                for finished in batch {
                    let provider = config.provider_of(&finished.record);
                    let key = state.key(finished, provider);
                    state.add(key, finished);
                }
            }
        }
        if !config.settings.traces {
            return;
        }
        let mut dropped = 0u64;
        let waiting = match self.spans.lock() {
            Ok(mut spans) => {
                for finished in batch {
                    if spans.len() >= SPAN_QUEUE_CAPACITY {
                        dropped += 1;
                        continue;
                    }
                    let provider = config.provider_of(&finished.record);
                    spans.push_back(spans::request_span(finished, provider.as_deref()));
                }
                spans.len()
            }
            Err(_) => 0,
        };
        if dropped > 0 {
            self.counts
                .dropped_spans
                .fetch_add(dropped, Ordering::Relaxed);
        }
        if waiting >= SPAN_BATCH {
            self.wake.notify_one();
        }
    }

    /// At shutdown: one last export of the metrics and the waiting spans (no retries), waiting
    /// at most `budget` for it.
    pub fn close(&self, budget: std::time::Duration) {
        if !self.started.load(Ordering::SeqCst) || self.config.load().is_none() {
            return;
        }
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let deadline = std::time::Instant::now() + budget;
        while !self.closed.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// The aggregator's sink for export.
pub struct OtlpSink(pub Arc<Export>);

impl Sink for OtlpSink {
    fn accept(&mut self, batch: &[Finished]) {
        self.0.accept(batch);
    }
}

fn resource(instance: &str) -> Resource {
    Resource {
        attributes: vec![
            attributes::string("service.name", "sluice"),
            attributes::string("service.version", env!("CARGO_PKG_VERSION")),
            attributes::string("service.instance.id", instance),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "sluice".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// `/metrics`: the exporter's counters as `sluice_otlp_*` families.
pub struct OtlpCollector(pub Arc<Export>);

impl std::fmt::Debug for OtlpCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpCollector")
    }
}

impl prometheus_client::collector::Collector for OtlpCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let status = self.0.status();
        if !status.enabled && status.exported + status.failed == 0 {
            return Ok(());
        }
        let counters = [
            (
                "otlp_exported",
                "OTLP export requests the collector accepted",
                status.exported,
            ),
            (
                "otlp_failed",
                "OTLP export attempts that failed (each retry counts)",
                status.failed,
            ),
            (
                "otlp_dropped",
                "OTLP export requests given up after their retries",
                status.dropped,
            ),
            (
                "otlp_exported_spans",
                "Spans the collector accepted",
                status.exported_spans,
            ),
            (
                "otlp_dropped_spans",
                "Spans dropped: queue full or their request given up",
                status.dropped_spans,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric.encode(family)?;
        }
        let queued = ConstGauge::new(status.queued_spans as i64);
        queued.encode(encoder.encode_descriptor(
            "otlp_queued_spans",
            "Spans waiting for the exporter",
            None,
            MetricType::Gauge,
        )?)?;
        let failing = ConstGauge::new(i64::from(status.failing));
        failing.encode(encoder.encode_descriptor(
            "otlp_failing",
            "1 while the collector does not take exports",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RequestRecord;
    use std::time::Duration;

    fn config(traces: bool) -> ExportConfig {
        ExportConfig {
            settings: OtlpSettings {
                endpoint: url::Url::parse("http://127.0.0.1:1").unwrap(),
                headers_file: None,
                interval: Duration::from_secs(10),
                traces,
            },
            headers: OtlpHeaders::default(),
            providers: vec![("/anthropic".into(), Some("anthropic".into()))],
        }
    }

    /// An export whose thread is never started: what the sink does, alone.
    fn without_exporter(traces: bool) -> Arc<Export> {
        let export = Export::new("test-instance");
        export.started.store(true, Ordering::SeqCst);
        export.configure(Some(config(traces)));
        export
    }

    fn batch(n: usize) -> Vec<Finished> {
        (0..n)
            .map(|i| Finished {
                record: RequestRecord {
                    route: "/anthropic".into(),
                    path: "/anthropic/v1/messages".into(),
                    status: 200,
                    model: Some("claude-sonnet-4-5".into()),
                    session: Some(format!("session-{i}")),
                    ..RequestRecord::default()
                },
                cost: Some(0.001),
            })
            .collect()
    }

    #[test]
    fn spans_beyond_the_queue_are_dropped_and_counted() {
        let export = without_exporter(true);
        let mut sink = OtlpSink(export.clone());
        for _ in 0..10 {
            sink.accept(&batch(1000));
        }
        let status = export.status();
        assert_eq!(status.queued_spans, SPAN_QUEUE_CAPACITY);
        assert_eq!(status.dropped_spans, 10_000 - SPAN_QUEUE_CAPACITY as u64);
        // Sessions are span attributes, never series: one series for all 10,000 requests.
        let metrics = export.metrics.lock().unwrap();
        assert_eq!(metrics.as_ref().unwrap().series_count(), 1);
    }

    #[test]
    fn turning_traces_or_export_off_lets_go_of_what_waits() {
        let export = without_exporter(true);
        OtlpSink(export.clone()).accept(&batch(100));
        assert_eq!(export.queued_spans(), 100);
        export.configure(Some(config(false)));
        assert_eq!(export.queued_spans(), 0);
        OtlpSink(export.clone()).accept(&batch(100));
        assert_eq!(export.queued_spans(), 0);
        assert!(export.metrics.lock().unwrap().is_some());
        export.configure(None);
        assert!(export.metrics.lock().unwrap().is_none());
        assert!(!export.status().enabled);
    }
}
