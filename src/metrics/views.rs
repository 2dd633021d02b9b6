//! What `/stats` shows beside the store's counters: latency percentiles, the latest rate-limit
//! state per credential and the models seen without a price. Bounded and kept in memory; the
//! rate-limit states are also kept in the store (and restored at start), latency and unpriced
//! models count since this process started.

use std::collections::BTreeMap;

use serde::Serialize;

use super::latency::{Latencies, LatencyReport};
use super::stats::{RateLimitState, Recent, UnpricedModels, MAX_RECENT_KEYS};
use super::{Finished, Sink};

/// The views' part of `/stats`, in `/stats` order.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub latency_ms: LatencyReport,
    pub rate_limits: BTreeMap<String, RateLimitState>,
    pub unpriced_models: BTreeMap<String, u64>,
    /// The groups above that count only since this process started (the rest come from the
    /// store, or, for `rate_limits`, are restored from it at start).
    pub since_start: [&'static str; 2],
    /// `rate_limits`: credentials let go; `unpriced_models`: requests counted under "other".
    #[serde(skip)]
    pub folded: BTreeMap<String, u64>,
}

pub struct Views {
    latencies: Latencies,
    rate_limits: Recent<RateLimitState>,
    unpriced_models: UnpricedModels,
}

impl Default for Views {
    fn default() -> Self {
        Self {
            latencies: Latencies::default(),
            rate_limits: Recent::new(MAX_RECENT_KEYS),
            unpriced_models: UnpricedModels::default(),
        }
    }
}

/// The parts of the views that count only what this process saw (a restart starts them
/// afresh): named in `/stats` `since_start`.
pub const SINCE_START: [&str; 2] = ["latency_ms", "unpriced_models"];

impl Views {
    /// Rate-limit states seen before this process, oldest first.
    pub fn restore_rate_limits(
        &mut self,
        states: impl IntoIterator<Item = (String, RateLimitState)>,
    ) {
        for (credential, state) in states {
            self.rate_limits.set(&credential, state);
        }
    }

    pub fn report(&self) -> UsageReport {
        UsageReport {
            latency_ms: self.latencies.report(),
            rate_limits: self.rate_limits.to_map(),
            unpriced_models: self.unpriced_models.counts().clone(),
            since_start: SINCE_START,
            folded: BTreeMap::from([
                ("rate_limits".to_string(), self.rate_limits.evicted()),
                ("unpriced_models".to_string(), self.unpriced_models.folded()),
            ]),
        }
    }
}

impl Sink for Views {
    fn accept(&mut self, batch: &[Finished]) {
        for finished in batch {
            let record = &finished.record;
            self.latencies.record(record);
            self.unpriced_models.add(record, finished.cost);
            if let Some(state) = RateLimitState::of_record(record) {
                let key = record.credential.as_deref().unwrap_or("none");
                self.rate_limits.set(key, state);
            }
        }
    }
}
