//! Assembles sluice: starts the actors, publishes the first settings snapshot, serves HTTP, and
//! shuts down gracefully on SIGTERM/SIGINT.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::admin;
use crate::connection;
use crate::credentials::CredentialResolver;
use crate::logging::{self, RequestSpan};
use crate::metrics::usage_log::UsageLog;
use crate::metrics::{MetricsAggregator, RecordQueue, Recorder, Sink, QUEUE_CAPACITY};
use crate::otlp::{Export, ExportConfig, OtlpCollector, OtlpSink};
use crate::pricing::PriceTable;
use crate::proxy;
use crate::quotas::{Ledger, QuotaCollector};
use crate::reserved;
use crate::settings::watcher::{Reload, SettingsWatcher};
use crate::settings::{EnvSource, Settings};
use crate::state::{build_snapshot, AppState, Tuning};
use crate::store::{self, RateLimitLog, StoreHandle, StoreSink};
use crate::upstream::{HealthSink, UpstreamPool, WorkerClients};

/// How long a stopping sluice waits for its last OpenTelemetry export.
const OTLP_CLOSE_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// A running sluice: where it listens and how to stop it.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub handle: ServerHandle,
    pub state: web::Data<AppState>,
    pub watcher: Addr<SettingsWatcher>,
    /// The running server (spawned at start, so it serves even if nobody waits on it).
    server: tokio::task::JoinHandle<io::Result<()>>,
    store: Option<StoreHandle>,
    rate_limits: Option<RateLimitLog>,
}

impl Running {
    /// Serves until stopped, then flushes what must survive.
    pub async fn wait(self) -> io::Result<()> {
        let result = self
            .server
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        self.state.flush_for_exit().await;
        // What was counted last reaches the collector too (a short, bounded wait).
        let otlp = self.state.otlp.clone();
        let _ = tokio::task::spawn_blocking(move || otlp.close(OTLP_CLOSE_BUDGET)).await;
        let closed = close_store(self.store, self.rate_limits.as_ref());
        tracing::info!("stopped");
        result.and(closed)
    }
}

/// Starts the actors and the HTTP server on the current actix system.
pub async fn start(settings: Settings, tuning: Tuning) -> io::Result<Running> {
    let settings = Arc::new(settings);
    let resolver = CredentialResolver::new(EnvSource::Process).start();
    let pool = UpstreamPool::default().start();
    // The aggregator gets a thread of its own: aggregation never competes with the arbiter that
    // runs the other actors, nor with the HTTP workers.
    let prices = PriceTable::new(settings.pricing.clone());
    // A store that cannot be opened stops the start: never run without the rows it would lose.
    let secrets_dir = crate::secrets::base_dir(settings.source.as_deref(), &EnvSource::Process);
    let store = match store::options_from_settings(
        &settings.store,
        |k| std::env::var(k).ok(),
        &secrets_dir,
    ) {
        Ok(Some(_)) if tuning.without_store => None,
        Ok(Some(options)) => {
            let described = options.target.describe();
            let target = options.target.clone();
            let handle = off_runtime(|| store::open(options)).map_err(io::Error::other)?;
            tracing::info!(store = %described, "store open");
            off_runtime(|| import_state_file(&target, settings.stats.state_file.as_deref()));
            Some(handle)
        }
        Ok(None) => None,
        Err(err) => return Err(io::Error::other(err)),
    };
    // The latest rate-limit state per credential lives in the store too: a restart starts with
    // what was last seen.
    let (rate_limits, seen_rate_limits) = match &store {
        Some(handle) => {
            let target = handle.target().clone();
            let log = off_runtime(|| RateLimitLog::start(&target)).map_err(io::Error::other)?;
            let seen = off_runtime(|| store::load_rate_limits(&target)).unwrap_or_else(|err| {
                tracing::warn!("rate-limit states not restored: {err}");
                Vec::new()
            });
            (Some(log), seen)
        }
        None => (None, Vec::new()),
    };
    let instance = store::instance_name(&settings.listen);
    let otlp = Export::new(&instance);
    let store_sink = store.clone().map(|handle| {
        StoreSink::new(handle, instance.clone()).with_rate_limits(rate_limits.clone())
    });
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let arbiter = Arbiter::new();
    let queue = RecordQueue::new(tuning.record_queue_capacity.unwrap_or(QUEUE_CAPACITY));
    let aggregator_queue = queue.clone();
    let health = HealthSink::new(pool.clone().recipient());
    let quotas = Arc::new(Ledger::new(settings.quotas.clone()));
    if let Some(handle) = &store {
        off_runtime(|| charge_stored_spend(handle, &quotas, instance))?;
    }
    let quota_metrics = QuotaCollector::new(quotas.clone());
    let otlp_sink = OtlpSink(otlp.clone());
    let otlp_metrics = OtlpCollector(otlp.clone());
    arbiter.spawn_fn(move || {
        crate::service::short_time_slice();
        let mut sinks: Vec<Box<dyn Sink>> =
            vec![Box::new(UsageLog), Box::new(health), Box::new(otlp_sink)];
        if let Some(sink) = store_sink {
            sinks.push(Box::new(sink));
        }
        let aggregator = MetricsAggregator::new(prices, aggregator_queue, sinks)
            .with_collector(Box::new(quota_metrics))
            .with_collector(Box::new(otlp_metrics))
            .with_rate_limits(seen_rate_limits);
        #[cfg(feature = "test-hooks")]
        let aggregator = aggregator.with_delay_per_record(tuning.aggregator_delay_per_record);
        let _ = addr_tx.send(aggregator.start());
    });
    let aggregator: Addr<MetricsAggregator> = addr_rx.recv().map_err(io::Error::other)?;
    let recorder = Recorder::new(aggregator.clone().recipient(), queue);
    let first = build_snapshot(&resolver, &pool, &aggregator, settings.clone(), 1)
        .await
        .map_err(io::Error::other)?;
    otlp.configure(ExportConfig::of(
        &first.settings,
        &first.credentials.otlp_headers,
    ));
    let state = web::Data::new(AppState::new(
        first, recorder, pool, resolver, aggregator, quotas, otlp,
    ));

    let app_state = state.clone();
    let store_access = web::Data::new(admin::StoreAccess(store.clone()));
    let app = move || {
        // Runs once on each worker's thread as it starts.
        crate::service::short_time_slice();
        App::new()
            .app_data(app_state.clone())
            .app_data(store_access.clone())
            // awc's client is !Send: one set per worker, built lazily from the current plan.
            .app_data(web::Data::new(WorkerClients::default()))
            .wrap(actix_web::middleware::from_fn(reserved::answer_reserved))
            .wrap(actix_web::middleware::from_fn(crate::browser_guard::guard))
            .wrap(actix_web::middleware::from_fn(logging::request_id_header))
            .wrap(tracing_actix_web::TracingLogger::<RequestSpan>::new())
            .wrap(actix_web::middleware::from_fn(
                connection::close_means_close,
            ))
            .route("/healthz", get_or_head().to(admin::healthz))
            .route("/stats", get_or_head().to(admin::stats))
            .route("/metrics", get_or_head().to(admin::metrics))
            // A scope: its prefix is compared as text, where a `/dashboard/{file:.*}` route
            // would run its regex for every proxied request that reaches the router.
            .service(
                web::scope("/dashboard")
                    .route("", get_or_head().to(admin::dashboard))
                    .route("/{file:.*}", get_or_head().to(admin::dashboard)),
            )
            .route("/usage", get_or_head().to(admin::usage))
            .default_service(web::to(proxied))
    };
    let workers = match settings.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (addrs, server) = match &settings.tls {
        None => {
            let server = HttpServer::new(app)
                .workers(workers)
                .disable_signals()
                .on_connect(connection::on_connect)
                // A client that closes its side has gone: end its stream at once (dropping the
                // upstream request with it) instead of streaming on until a write fails.
                .h1_allow_half_closed(false)
                // An answer's head and its first bytes often leave in separate writes (an HTTP/2
                // upstream delivers them apart, SSE events come one by one): without
                // TCP_NODELAY, Nagle's algorithm holds each small write until the client's
                // delayed ACK, up to 40 ms.
                .tcp_nodelay(true)
                .shutdown_timeout(settings.shutdown_grace.as_secs())
                .backlog(BACKLOG)
                .bind(settings.listen)?;
            (server.addrs(), server.run())
        }
        Some(_) => {
            let state = state.clone();
            let current = move || {
                state
                    .snapshot()
                    .credentials
                    .tls
                    .as_ref()
                    .map(|t| t.0.clone())
            };
            let tls = Arc::new(crate::tls::server_config(current));
            let listener = tcp_listener(settings.listen)?;
            let addrs = vec![listener.local_addr()?];
            // The same settings as the plain listener's; the connections' own in `https`.
            let builder = actix_server::Server::build()
                .workers(workers)
                .disable_signals()
                .shutdown_timeout(settings.shutdown_grace.as_secs())
                .backlog(BACKLOG);
            let server = crate::https::listen(builder, listener, tls, app)?.run();
            (addrs, server)
        }
    };
    let watcher = SettingsWatcher::start_watching(state.clone(), settings.source.clone());
    // Handlers first, so that a stop signal never meets the default action (instant death).
    install_signal_handlers(
        server.handle(),
        state.clone(),
        watcher.clone(),
        (store.clone(), rate_limits.clone()),
    )?;
    for addr in &addrs {
        tracing::info!(%addr, "listening");
    }
    let listening: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    crate::service::ready(&listening.join(", "));
    Ok(Running {
        addrs,
        handle: server.handle(),
        state,
        watcher,
        server: actix_rt::spawn(server),
        store,
        rate_limits,
    })
}

/// Connections the kernel holds for us before they are accepted.
const BACKLOG: u32 = 4096;

/// A listening socket with sluice's backlog (std's `bind` listens with 128).
fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: `listen` on a socket this function owns; a second `listen` only sets the backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Runs `work` on a thread of its own and waits for it. The PostgreSQL client blocks on a
/// runtime of its own, which cannot start on a thread that is driving this async one.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Spend the store holds counts against quotas: at start, every row of the open windows (a
/// restart forgets nothing); with a shared store, other instances' rows as they arrive.
fn charge_stored_spend(
    store: &StoreHandle,
    quotas: &Arc<Ledger>,
    instance: String,
) -> io::Result<()> {
    let mut last_id = 0;
    if !quotas.is_empty() {
        let (rows, last) =
            store::replay(store, quotas, std::time::SystemTime::now()).map_err(io::Error::other)?;
        tracing::info!(rows, "stored spend charged to the quotas");
        last_id = last;
    }
    if store.is_shared() {
        if quotas.is_empty() {
            // Nothing replayed: polling starts with the rows committed from now on.
            last_id = store.max_id().map_err(io::Error::other)?;
        }
        store::poll_other_instances(store.clone(), quotas.clone(), instance, last_id)?;
    }
    Ok(())
}

/// Counters kept in a state file before there was a store go into the store once (the file is
/// renamed `<name>.imported`). A store in memory is not given them: they would be lost at exit
/// with the file already renamed. A file that cannot be imported is left as it is and reported.
fn import_state_file(target: &store::Target, state_file: Option<&std::path::Path>) {
    let Some(path) = state_file else { return };
    if matches!(target, store::Target::Memory(_)) {
        return;
    }
    match store::import_state_file(target, path) {
        Ok(Some(summary)) => tracing::info!(
            file = %path.display(),
            requests = summary.requests,
            renamed_to = %summary.renamed_to.display(),
            already_imported = summary.already_imported,
            "state file imported into the store"
        ),
        Ok(None) => {}
        Err(err) => tracing::error!("{err}"),
    }
}

/// Writes what the store still holds. A final write that failed fails the exit status.
fn close_store(store: Option<StoreHandle>, rate_limits: Option<&RateLimitLog>) -> io::Result<()> {
    if let Some(log) = rate_limits {
        log.close();
    }
    match store.map(|s| s.close()) {
        Some(Err(err)) => {
            tracing::error!("{err}");
            Err(io::Error::other(err))
        }
        _ => Ok(()),
    }
}

/// sluice's endpoints answer `GET` and `HEAD` (other methods are refused by
/// [`reserved::answer_reserved`]).
fn get_or_head() -> actix_web::Route {
    use actix_web::guard;
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// First SIGTERM/SIGINT: stop accepting and let in-flight requests finish (up to
/// `shutdown_grace_s`). A second one: stop at once.
fn install_signal_handlers(
    handle: ServerHandle,
    state: web::Data<AppState>,
    watcher: Addr<SettingsWatcher>,
    (store, rate_limits): (Option<StoreHandle>, Option<RateLimitLog>),
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
                let closed = close_store(store.clone(), rate_limits.as_ref());
                tracing::info!("stopped");
                std::process::exit(if closed.is_ok() { 0 } else { 1 });
            }
            stopping = true;
            state.draining.cancel();
            crate::metrics::tap::STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
            crate::service::stopping();
            tracing::info!("stop signal: no new connections, letting requests in flight finish");
            let handle = handle.clone();
            actix_rt::spawn(async move { handle.stop(true).await });
        }
    });
    Ok(())
}

/// Every request under a route: a Responses API WebSocket upgrade becomes a proxied socket
/// ([`crate::websocket`]), anything else a proxied HTTP exchange ([`proxy::forward`]).
async fn proxied(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    if crate::websocket::is_responses_upgrade(&req) {
        // Boxed, so that the far more common HTTP exchange's future is not as large as a
        // socket's.
        return Box::pin(crate::websocket::open(req, payload, state, clients)).await;
    }
    proxy::forward(req, payload, state, clients).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn taking four arguments returns.
    fn future_size<A, B, C, D, F>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A request's future is moved (copied whole) as actix hands it on; with the upstream
    /// exchange inline it was 16 KB, copied several times per request.
    #[test]
    fn a_requests_future_stays_small() {
        let size = future_size(proxied);
        assert!(size < 6 * 1024, "the request's future is {size} bytes");
    }
}
