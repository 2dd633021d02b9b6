//! Assembles sluice: starts the actors, publishes the first settings snapshot, serves HTTP, and
//! shuts down gracefully on SIGTERM/SIGINT.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use arc_swap::ArcSwap;

use crate::admin;
use crate::credentials::{ApplyCredentials, CredentialResolver, CredentialRules};
use crate::logging::{self, RequestSpan};
use crate::metrics::{
    ApplyMetrics, Flush, MetricsAggregator, RecordQueue, Recorder, QUEUE_CAPACITY,
};
use crate::pricing::PriceTable;
use crate::proxy;
use crate::settings::watcher::{Reload, SettingsWatcher};
use crate::settings::Settings;
use crate::upstream::{ApplyUpstream, UpstreamPlan, UpstreamPool, WorkerClients};

/// One settings generation as the request path sees it: a request loads it once and finishes on
/// it even if a reload publishes a newer one meanwhile.
pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub settings: Arc<Settings>,
    pub credentials: Arc<CredentialRules>,
    pub upstream: Arc<UpstreamPlan>,
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
}

impl AppState {
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
    /// Returns the new generation.
    pub async fn apply(&self, settings: Arc<Settings>) -> Result<u64, MailboxError> {
        let generation = self.snapshot().generation + 1;
        let snapshot = build_snapshot(
            &self.resolver,
            &self.pool,
            &self.aggregator,
            settings,
            generation,
        )
        .await?;
        self.current.store(Arc::new(snapshot));
        Ok(generation)
    }
}

async fn build_snapshot(
    resolver: &Addr<CredentialResolver>,
    pool: &Addr<UpstreamPool>,
    aggregator: &Addr<MetricsAggregator>,
    settings: Arc<Settings>,
    generation: u64,
) -> Result<Snapshot, MailboxError> {
    aggregator
        .send(ApplyMetrics {
            prices: PriceTable::new(settings.pricing.clone()),
            state_file: settings.stats.state_file.clone(),
            flush_interval: settings.stats.flush_interval,
        })
        .await?;
    let credentials = resolver.send(ApplyCredentials(settings.clone())).await?;
    let upstream = pool
        .send(ApplyUpstream {
            settings: settings.clone(),
            generation,
        })
        .await?;
    Ok(Snapshot {
        generation,
        loaded_at: SystemTime::now(),
        settings,
        credentials,
        upstream,
    })
}

/// A running sluice: where it listens and how to stop it.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub handle: ServerHandle,
    pub state: web::Data<AppState>,
    pub watcher: Addr<SettingsWatcher>,
    /// The running server (spawned at start, so it serves even if nobody waits on it).
    server: tokio::task::JoinHandle<io::Result<()>>,
}

impl Running {
    /// Serves until stopped, then flushes what must survive.
    pub async fn wait(self) -> io::Result<()> {
        let result = self
            .server
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        self.state.flush_for_exit().await;
        tracing::info!("stopped");
        result
    }
}

/// Knobs for tests of sluice's own behaviour; production runs use the defaults.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Make the aggregator take this long per record (to show the request path never waits).
    pub aggregator_delay_per_record: std::time::Duration,
    /// Override how many records may wait for the aggregator (to show drops are counted).
    pub record_queue_capacity: Option<usize>,
}

impl Tuning {
    /// Reads the test hooks `SLUICE_TEST_AGGREGATOR_DELAY_MS` and
    /// `SLUICE_TEST_RECORD_QUEUE_CAPACITY`; both are unset in real use.
    pub fn from_env() -> Self {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Self {
            aggregator_delay_per_record: number("SLUICE_TEST_AGGREGATOR_DELAY_MS")
                .map(std::time::Duration::from_millis)
                .unwrap_or_default(),
            record_queue_capacity: number("SLUICE_TEST_RECORD_QUEUE_CAPACITY").map(|n| n as usize),
        }
    }
}

/// Starts the actors and the HTTP server on the current actix system.
pub async fn start(settings: Settings, tuning: Tuning) -> io::Result<Running> {
    let settings = Arc::new(settings);
    let resolver = CredentialResolver::default().start();
    let pool = UpstreamPool::default().start();
    // The aggregator gets a thread of its own: aggregation and state-file writes never compete
    // with the arbiter that runs the other actors, nor with the HTTP workers.
    let (state_file, flush_interval) = (
        settings.stats.state_file.clone(),
        settings.stats.flush_interval,
    );
    let prices = PriceTable::new(settings.pricing.clone());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let arbiter = Arbiter::new();
    let tuning_for_aggregator = tuning.clone();
    let queue = RecordQueue::new(tuning.record_queue_capacity.unwrap_or(QUEUE_CAPACITY));
    let aggregator_queue = queue.clone();
    arbiter.spawn_fn(move || {
        let aggregator =
            MetricsAggregator::new(state_file, flush_interval, prices, aggregator_queue)
                .with_delay_per_record(tuning_for_aggregator.aggregator_delay_per_record)
                .start();
        let _ = addr_tx.send(aggregator);
    });
    let aggregator: Addr<MetricsAggregator> = addr_rx.recv().map_err(io::Error::other)?;
    let recorder = Recorder::new(aggregator.clone().recipient(), queue);
    let first = build_snapshot(&resolver, &pool, &aggregator, settings.clone(), 1)
        .await
        .map_err(io::Error::other)?;
    let state = web::Data::new(AppState {
        current: ArcSwap::from_pointee(first),
        started_at: SystemTime::now(),
        last_reload: Mutex::new(None),
        shutdown: tokio_util::sync::CancellationToken::new(),
        recorder,
        pool,
        resolver,
        aggregator,
    });

    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            // awc's client is !Send: one set per worker, built lazily from the current plan.
            .app_data(web::Data::new(WorkerClients::default()))
            .wrap(actix_web::middleware::from_fn(logging::request_id_header))
            .wrap(tracing_actix_web::TracingLogger::<RequestSpan>::new())
            .route("/healthz", web::get().to(admin::healthz))
            .route("/stats", web::get().to(admin::stats))
            .route("/metrics", web::get().to(admin::metrics))
            .default_service(web::to(proxy::forward))
    })
    .disable_signals()
    // A client that closes its side has gone: end its stream at once (dropping the upstream
    // request with it) instead of streaming on until a write fails.
    .h1_allow_half_closed(false)
    .shutdown_timeout(settings.shutdown_grace.as_secs())
    .backlog(4096);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    let server = server.bind(settings.listen)?;
    let addrs = server.addrs();
    let server = server.run();
    let watcher = SettingsWatcher::start_watching(state.clone(), settings.source.clone());
    // Handlers first, so that a stop signal never meets the default action (instant death).
    install_signal_handlers(server.handle(), state.clone(), watcher.clone())?;
    for addr in &addrs {
        tracing::info!(%addr, "listening");
    }
    Ok(Running {
        addrs,
        handle: server.handle(),
        state,
        watcher,
        server: actix_rt::spawn(server),
    })
}

/// First SIGTERM/SIGINT: stop accepting and let in-flight requests finish (up to
/// `shutdown_grace_s`). A second one: stop at once.
fn install_signal_handlers(
    handle: ServerHandle,
    state: web::Data<AppState>,
    watcher: Addr<SettingsWatcher>,
) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    actix_rt::spawn(async move {
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
                _ = hup.recv() => {
                    watcher.do_send(Reload { reason: "SIGHUP" });
                    continue;
                }
            }
            if stopping {
                // actix-server runs stop commands one after another, so a forced stop would
                // wait behind the graceful one: end every stream ourselves, count them, leave.
                tracing::warn!("second stop signal: stopping now");
                state.shutdown.cancel();
                state.flush_for_exit().await;
                tracing::info!("stopped");
                std::process::exit(0);
            }
            stopping = true;
            tracing::info!("stop signal: no new connections, letting requests in flight finish");
            let handle = handle.clone();
            actix_rt::spawn(async move { handle.stop(true).await });
        }
    });
    Ok(())
}
