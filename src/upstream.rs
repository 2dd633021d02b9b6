//! Where bytes go upstream. The UpstreamPool actor owns pool settings, timeouts, TLS trust and
//! per-route health; the connections live in one awc `Client` per worker and route (awc's
//! client is `!Send`), rebuilt when a new settings generation arrives.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;

use crate::settings::{Pool, Settings, Timeouts};

/// Everything a worker needs to build its upstream clients for one settings generation.
#[derive(Debug)]
pub struct UpstreamPlan {
    pub generation: u64,
    pub routes: Vec<UpstreamRoute>,
    pub timeouts: Timeouts,
    pub pool: Pool,
}

#[derive(Debug)]
pub struct UpstreamRoute {
    /// Base URL without a trailing slash, e.g. `https://api.anthropic.com`.
    pub base: String,
    /// Web PKI roots plus the route's `ca_file`; built once per generation, shared by workers.
    pub tls: Arc<ClientConfig>,
}

impl UpstreamPlan {
    pub fn from_settings(settings: &Settings, generation: u64) -> Self {
        let routes = settings
            .routes
            .iter()
            .map(|route| UpstreamRoute {
                base: route.upstream.as_str().trim_end_matches('/').to_string(),
                tls: tls_config(&route.extra_roots),
            })
            .collect();
        Self {
            generation,
            routes,
            timeouts: settings.timeouts,
            pool: settings.pool,
        }
    }
}

/// rustls with the Mozilla root store (webpki-roots: no dependence on the host's CA files)
/// plus any extra CA certificates. HTTP/1.1 only: the same framing rules on both sides.
fn tls_config(extra_roots: &[rustls_pki_types::CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Certificates were parsed at validation; one the store rejects is simply not trusted.
    let _ = roots.add_parsable_certificates(extra_roots.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn build_client(route: &UpstreamRoute, timeouts: Timeouts, pool: Pool) -> awc::Client {
    let connector = awc::Connector::new()
        .rustls_0_23(route.tls.clone())
        .timeout(timeouts.connect)
        .handshake_timeout(timeouts.connect)
        .limit(pool.max_connections)
        .conn_keep_alive(pool.idle_keepalive)
        // Lifetime is only checked when a connection is reused, never during a stream.
        .conn_lifetime(Duration::from_secs(300));
    awc::Client::builder()
        .connector(connector)
        // Our own first-byte and idle timers apply instead: awc's single deadline would also
        // cut long streamed answers.
        .disable_timeout()
        // A proxy passes 3xx answers to the client; it does not follow them.
        .disable_redirects()
        // No `user-agent`/`date` of our own: the client's headers go as they are.
        .no_default_headers()
        // (No `max_http_version`: it would replace the TLS config above with awc's default.
        // HTTP/1.1 is chosen through ALPN in `tls_config` instead.)
        .finish()
}

/// This worker's clients, one per route, for the generation they were built for.
#[derive(Default)]
pub struct WorkerClients {
    built: RefCell<Option<(u64, Vec<awc::Client>)>>,
}

impl WorkerClients {
    pub fn client(&self, plan: &UpstreamPlan, route: usize) -> awc::Client {
        let mut built = self.built.borrow_mut();
        match &*built {
            Some((generation, clients)) if *generation == plan.generation => clients[route].clone(),
            _ => {
                let clients: Vec<_> = plan
                    .routes
                    .iter()
                    .map(|r| build_client(r, plan.timeouts, plan.pool))
                    .collect();
                let client = clients[route].clone();
                *built = Some((plan.generation, clients));
                client
            }
        }
    }
}

/// An upstream exchange that failed (connect, TLS, timeout, broken answer), sent
/// fire-and-forget; successful answers are counted by the MetricsAggregator.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpstreamOutcome {
    pub route: String,
    pub failure: &'static str,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RouteHealth {
    pub failed: u64,
    pub last_failure: Option<&'static str>,
    pub last_failure_at: Option<String>,
}

/// Owns pool settings, the per-generation plan and upstream health.
#[derive(Default)]
pub struct UpstreamPool {
    plan: Option<Arc<UpstreamPlan>>,
    health: BTreeMap<String, RouteHealth>,
}

impl Actor for UpstreamPool {
    type Context = Context<Self>;
}

/// New settings: build the plan (TLS configs included) and return it for publication.
#[derive(Message)]
#[rtype(result = "Arc<UpstreamPlan>")]
pub struct ApplyUpstream {
    pub settings: Arc<Settings>,
    pub generation: u64,
}

impl Handler<ApplyUpstream> for UpstreamPool {
    type Result = MessageResult<ApplyUpstream>;

    fn handle(&mut self, msg: ApplyUpstream, _: &mut Self::Context) -> Self::Result {
        let plan = Arc::new(UpstreamPlan::from_settings(&msg.settings, msg.generation));
        self.plan = Some(plan.clone());
        MessageResult(plan)
    }
}

impl Handler<UpstreamOutcome> for UpstreamPool {
    type Result = ();

    fn handle(&mut self, msg: UpstreamOutcome, _: &mut Self::Context) {
        let health = self.health.entry(msg.route).or_default();
        health.failed += 1;
        health.last_failure = Some(msg.failure);
        health.last_failure_at = Some(crate::metrics::stats::rfc3339(std::time::SystemTime::now()));
    }
}

/// Per-route upstream health, for `/stats`.
#[derive(Message)]
#[rtype(result = "BTreeMap<String, RouteHealth>")]
pub struct GetHealth;

impl Handler<GetHealth> for UpstreamPool {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.health.clone())
    }
}
