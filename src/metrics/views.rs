//! The in-memory views behind `/stats`: counters per group (lifetime and per minute), latency
//! percentiles, rate-limit state; persisted to the state file so they survive restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::latency::{Latencies, LatencyReport};
use super::stats::{self, Groups, RateLimitState, StatsBook};
use super::{state_file, Finished, Sink};

/// What the views know, for `/stats` (the handler adds settings and process facts). Field
/// order is `/stats`' order.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    #[serde(skip)]
    pub counting_since: String,
    #[serde(flatten)]
    pub groups: Groups,
    pub latency_ms: LatencyReport,
    pub rate_limits: BTreeMap<String, RateLimitState>,
    pub unpriced_models: BTreeMap<String, u64>,
}

pub struct Views {
    book: StatsBook,
    latencies: Latencies,
    state_file: Option<PathBuf>,
    /// Counted since the last write of the state file.
    dirty: bool,
}

impl Views {
    /// Restores the book from `state_file` when it is readable; an unreadable one is moved
    /// aside (never deleted), and one that cannot be moved is left alone and not written.
    pub fn restore(state_file: Option<PathBuf>) -> Self {
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
            latencies: Latencies::default(),
            state_file,
            dirty: false,
        }
    }

    pub fn report(&self, since: Option<i64>) -> UsageReport {
        let counting_since = match since {
            Some(since) => self.book.counting_since.clone().max(stats::rfc3339(
                std::time::UNIX_EPOCH + Duration::from_secs(since.max(0) as u64),
            )),
            None => self.book.counting_since.clone(),
        };
        UsageReport {
            counting_since,
            groups: self.book.window(since),
            latency_ms: self.latencies.report(),
            rate_limits: self.book.rate_limits.clone(),
            unpriced_models: self.book.unpriced_models.clone(),
        }
    }

    /// Writes the state file when something was counted since the last write.
    pub fn flush(&mut self) {
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

    /// Counters continue; the next flush writes them to the new place.
    pub fn move_state_file(&mut self, state_file: Option<PathBuf>) {
        if state_file != self.state_file {
            self.state_file = state_file;
            self.dirty = true;
        }
    }
}

impl Sink for Views {
    fn accept(&mut self, batch: &[Finished]) {
        for finished in batch {
            self.book.add(&finished.record, finished.cost);
            self.latencies.record(&finished.record);
        }
        self.dirty |= !batch.is_empty();
    }
}
