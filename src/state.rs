//! What every worker shares: the published settings snapshot (swapped atomically, read once per
//! request), the actors' addresses, the record queue, and how the last reload went. It sits
//! below the handlers and the settings watcher, and imports none of them.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::credentials::{ApplyCredentials, CredentialResolver, CredentialRules};
use crate::metrics::{ApplyMetrics, Flush, MetricsAggregator, Recorder};
use crate::pricing::PriceTable;
use crate::quotas::Ledger;
use crate::settings::{Settings, SettingsError};
use crate::upstream::{ApplyUpstream, UpstreamPlan, UpstreamPool};

/// One settings generation as the request path sees it: a request loads it once and finishes on
/// it even if a reload publishes a newer one meanwhile.
pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub settings: Arc<Settings>,
    pub credentials: Arc<CredentialRules>,
    pub upstream: Arc<UpstreamPlan>,
    /// The price table, for charging quota spend where a request finishes.
    pub prices: Arc<PriceTable>,
}

/// How the last reload went, for `/stats` `settings.last_reload`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    pub ok: bool,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Settings that changed in the file but only apply after a restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
}

/// Shared by every worker.
pub struct AppState {
    current: ArcSwap<Snapshot>,
    pub started_at: SystemTime,
    last_reload: Mutex<Option<ReloadStatus>>,
    /// Cancelled by a second stop signal: everything in flight ends at once.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub recorder: Recorder,
    pub pool: Addr<UpstreamPool>,
    pub resolver: Addr<CredentialResolver>,
    pub aggregator: Addr<MetricsAggregator>,
    /// Quota spend and requests in flight, read and counted by every worker.
    pub quotas: Arc<Ledger>,
    /// OpenTelemetry export: its settings follow each generation, its counters show in
    /// `/stats` and `/metrics`.
    pub otlp: Arc<crate::otlp::Export>,
}

impl AppState {
    pub fn new(
        first: Snapshot,
        recorder: Recorder,
        pool: Addr<UpstreamPool>,
        resolver: Addr<CredentialResolver>,
        aggregator: Addr<MetricsAggregator>,
        quotas: Arc<Ledger>,
        otlp: Arc<crate::otlp::Export>,
    ) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
            started_at: SystemTime::now(),
            last_reload: Mutex::new(None),
            shutdown: tokio_util::sync::CancellationToken::new(),
            recorder,
            pool,
            resolver,
            aggregator,
            quotas,
            otlp,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Waits (briefly) for the records of requests that were just cut off, then writes the
    /// state file: what ended during shutdown is in it.
    pub async fn flush_for_exit(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.recorder.open_records() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if let Err(err) = self.aggregator.send(Flush).await {
            tracing::error!("could not flush stats: {err}");
        }
    }

    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.last_reload.lock().map(|s| s.clone()).unwrap_or(None)
    }

    pub fn set_last_reload(&self, status: ReloadStatus) {
        if let Ok(mut last) = self.last_reload.lock() {
            *last = Some(status);
        }
    }

    /// Asks each actor to take `settings`, then publishes their results as one snapshot.
    /// Returns the new generation; on an error the current snapshot stays.
    pub async fn apply(&self, settings: Arc<Settings>) -> Result<u64, ApplyError> {
        let generation = self.snapshot().generation + 1;
        let quotas = settings.quotas.clone();
        let snapshot = build_snapshot(
            &self.resolver,
            &self.pool,
            &self.aggregator,
            settings,
            generation,
        )
        .await?;
        // Quotas change with the snapshot: the next request is judged by the new limits.
        self.quotas.apply(quotas);
        self.otlp.configure(crate::otlp::ExportConfig::of(
            &snapshot.settings,
            &snapshot.credentials.otlp_headers,
        ));
        self.current.store(Arc::new(snapshot));
        Ok(generation)
    }
}

/// Why settings could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("an actor did not answer: {0}")]
    Mailbox(#[from] MailboxError),
}

/// Hands `settings` to each actor and gathers what they build into one snapshot. The
/// credentials go first: they are the part that can refuse.
pub async fn build_snapshot(
    resolver: &Addr<CredentialResolver>,
    pool: &Addr<UpstreamPool>,
    aggregator: &Addr<MetricsAggregator>,
    settings: Arc<Settings>,
    generation: u64,
) -> Result<Snapshot, ApplyError> {
    let credentials = resolver.send(ApplyCredentials(settings.clone())).await??;
    let prices = Arc::new(PriceTable::new(settings.pricing.clone()));
    aggregator
        .send(ApplyMetrics {
            prices: (*prices).clone(),
        })
        .await?;
    let upstream = pool
        .send(ApplyUpstream {
            settings: settings.clone(),
        })
        .await?;
    Ok(Snapshot {
        generation,
        loaded_at: SystemTime::now(),
        settings,
        credentials,
        upstream,
        prices,
    })
}

/// Knobs for tests of sluice's own behaviour; production runs use the defaults.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Make the aggregator take this long per record (to show the request path never waits).
    pub aggregator_delay_per_record: std::time::Duration,
    /// Override how many records may wait for the aggregator (to show drops are counted).
    pub record_queue_capacity: Option<usize>,
    /// Run without a store at all, its sink not registered: the baseline benchmarks compare a
    /// store against (`/stats` and `/usage` then answer 503).
    pub without_store: bool,
}

impl Tuning {
    /// Reads the test hooks `SLUICE_TEST_AGGREGATOR_DELAY_MS`,
    /// `SLUICE_TEST_RECORD_QUEUE_CAPACITY` and `SLUICE_TEST_WITHOUT_STORE=1`. Compiled only with
    /// the `test-hooks` feature, which the test suite and the benchmarks turn on; a release build
    /// has none of these names in it.
    #[cfg(feature = "test-hooks")]
    pub fn from_env() -> Self {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Self {
            aggregator_delay_per_record: number("SLUICE_TEST_AGGREGATOR_DELAY_MS")
                .map(std::time::Duration::from_millis)
                .unwrap_or_default(),
            record_queue_capacity: number("SLUICE_TEST_RECORD_QUEUE_CAPACITY").map(|n| n as usize),
            without_store: number("SLUICE_TEST_WITHOUT_STORE") == Some(1),
        }
    }

    /// Without the `test-hooks` feature: the production defaults, always.
    #[cfg(not(feature = "test-hooks"))]
    pub fn from_env() -> Self {
        Self::default()
    }
}
