//! Assembles sluice: starts the actors, publishes the first settings snapshot, serves HTTP, and
//! shuts down gracefully on SIGTERM/SIGINT.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use arc_swap::ArcSwap;

use crate::credentials::{ApplyCredentials, CredentialResolver, CredentialRules};
use crate::logging::{self, RequestSpan};
use crate::metrics::{MetricsAggregator, Recorder};
use crate::proxy;
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

/// Shared by every worker.
pub struct AppState {
    current: ArcSwap<Snapshot>,
    pub recorder: Recorder,
    pub pool: Addr<UpstreamPool>,
    pub resolver: Addr<CredentialResolver>,
    pub aggregator: Addr<MetricsAggregator>,
}

impl AppState {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Asks each actor to take `settings`, then publishes their results as one snapshot.
    pub async fn apply(
        &self,
        settings: Arc<Settings>,
        generation: u64,
    ) -> Result<(), MailboxError> {
        let snapshot = build_snapshot(&self.resolver, &self.pool, settings, generation).await?;
        self.current.store(Arc::new(snapshot));
        Ok(())
    }
}

async fn build_snapshot(
    resolver: &Addr<CredentialResolver>,
    pool: &Addr<UpstreamPool>,
    settings: Arc<Settings>,
    generation: u64,
) -> Result<Snapshot, MailboxError> {
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
    server: actix_web::dev::Server,
}

impl Running {
    /// Serves until stopped, then flushes what must survive.
    pub async fn wait(self) -> io::Result<()> {
        let result = self.server.await;
        tracing::info!("stopped");
        result
    }
}

/// Starts the actors and the HTTP server on the current actix system.
pub async fn start(settings: Settings) -> io::Result<Running> {
    let settings = Arc::new(settings);
    let resolver = CredentialResolver::default().start();
    let pool = UpstreamPool::default().start();
    // The aggregator gets a thread of its own so that aggregation never competes with the
    // arbiter that runs the other actors.
    let aggregator = MetricsAggregator::start_in_arbiter(&Arbiter::new().handle(), |_| {
        MetricsAggregator::default()
    });
    let first = build_snapshot(&resolver, &pool, settings.clone(), 1)
        .await
        .map_err(io::Error::other)?;
    let state = web::Data::new(AppState {
        current: ArcSwap::from_pointee(first),
        recorder: Recorder::new(aggregator.clone().recipient()),
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
            .route("/healthz", web::get().to(healthz))
            .default_service(web::to(proxy::forward))
    })
    .disable_signals()
    .shutdown_timeout(settings.shutdown_grace.as_secs())
    .backlog(4096);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    let server = server.bind(settings.listen)?;
    let addrs = server.addrs();
    let server = server.run();
    // Handlers first, so that a stop signal never meets the default action (instant death).
    install_signal_handlers(server.handle())?;
    for addr in &addrs {
        tracing::info!(%addr, "listening");
    }
    Ok(Running {
        addrs,
        handle: server.handle(),
        state,
        server,
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// First SIGTERM/SIGINT: stop accepting and let in-flight requests finish (up to
/// `shutdown_grace_s`). A second one: stop at once.
fn install_signal_handlers(handle: ServerHandle) -> io::Result<()> {
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
                    tracing::info!("SIGHUP received");
                    continue;
                }
            }
            if stopping {
                tracing::warn!("second stop signal: stopping now");
                handle.stop(false).await;
                return;
            }
            stopping = true;
            tracing::info!("stop signal: no new connections, letting requests in flight finish");
            let handle = handle.clone();
            actix_rt::spawn(async move { handle.stop(true).await });
        }
    });
    Ok(())
}
