//! Latency percentiles: microsecond histograms, summarised in milliseconds for `/stats`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::RequestRecord;

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

/// The three latencies of every finished request.
#[derive(Default)]
pub struct Latencies {
    ttfb: Latency,
    total: Latency,
    overhead: Latency,
}

impl Latencies {
    pub fn record(&mut self, record: &RequestRecord) {
        if let Some(ttfb) = record.ttfb {
            self.ttfb.record(ttfb);
        }
        self.total.record(record.total);
        if let Some(overhead) = record.overhead {
            self.overhead.record(overhead);
        }
    }

    pub fn report(&self) -> LatencyReport {
        LatencyReport {
            ttfb: self.ttfb.summary(),
            total: self.total.summary(),
            overhead: self.overhead.summary(),
        }
    }
}
