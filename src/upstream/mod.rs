//! Where bytes go upstream. The UpstreamPool actor owns the upstream plan (base URLs, TLS trust,
//! timeouts, pool limits) and each route's health. The connections live in clients per worker
//! and route (awc's client is `!Send`; an `https://` route offering HTTP/2 also has a hyper
//! client, see `h2`), built from the plan and rebuilt only when the plan changes: a reload that
//! leaves the upstream side alone keeps every pooled connection. `send` is one exchange.

mod framing;
mod h2;
mod h2_body;
mod h2_connections;
mod send;

pub use framing::RequestBody;
pub use send::{Answer, AnswerBody, RouteClient, UpstreamRequest};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;

use crate::metrics::{Finished, Outcome, Sink};
use crate::settings::{Pool, Settings, Timeouts};

/// Everything a worker needs to build its upstream clients.
#[derive(Debug)]
pub struct UpstreamPlan {
    /// Changes only when the plan does (not at every settings generation).
    pub generation: u64,
    /// One lane per settings route (same index), then one per `subscription_upstream`.
    pub routes: Vec<UpstreamRoute>,
    /// Per settings route: the lane of its `subscription_upstream`, when it has one.
    pub subscription_lanes: Vec<Option<usize>>,
    pub timeouts: Timeouts,
    pub pool: Pool,
}

#[derive(Debug)]
pub struct UpstreamRoute {
    /// Base URL without a trailing slash, e.g. `https://api.anthropic.com`.
    pub base: String,
    /// Web PKI roots plus the route's `ca_file`; built once per plan, shared by workers.
    pub tls: Arc<ClientConfig>,
    /// The route's extra CA certificates, to tell whether a new plan differs.
    extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Offer HTTP/2 (an `https://` base only).
    pub http2: bool,
}

impl UpstreamPlan {
    pub fn from_settings(settings: &Settings, generation: u64) -> Self {
        let lane = |route: &crate::settings::Route, base: &url::Url| UpstreamRoute {
            base: base.as_str().trim_end_matches('/').to_string(),
            tls: tls_config(&route.extra_roots),
            extra_roots: route.extra_roots.clone(),
            http2: route.http2,
        };
        let mut routes: Vec<UpstreamRoute> = settings
            .routes
            .iter()
            .map(|route| lane(route, &route.upstream))
            .collect();
        let subscription_lanes = settings
            .routes
            .iter()
            .map(|route| {
                let base = route.subscription_upstream.as_ref()?;
                routes.push(lane(route, base));
                Some(routes.len() - 1)
            })
            .collect();
        Self {
            generation,
            routes,
            subscription_lanes,
            timeouts: settings.timeouts,
            pool: settings.pool,
        }
    }

    /// The lane a request of settings route `route` goes by: its `subscription_upstream` for a
    /// subscription login (`client_oauth`) when the route has one, else its `upstream`.
    pub fn lane(&self, route: usize, subscription_login: bool) -> usize {
        match self.subscription_lanes.get(route) {
            Some(Some(lane)) if subscription_login => *lane,
            _ => route,
        }
    }

    /// Whether workers would build the same clients from both plans.
    fn same_clients_as(&self, other: &UpstreamPlan) -> bool {
        self.timeouts == other.timeouts
            && self.pool == other.pool
            && self.routes.len() == other.routes.len()
            && self.routes.iter().zip(&other.routes).all(|(a, b)| {
                a.base == b.base && a.extra_roots == b.extra_roots && a.http2 == b.http2
            })
    }
}

/// rustls with the Mozilla root store (webpki-roots: no dependence on the host's CA files)
/// plus any extra CA certificates. HTTP/1.1 only for awc: it gives each request in flight a
/// connection of its own even over h2, so HTTP/2 goes through `h2` instead.
pub(crate) fn tls_config(
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
) -> Arc<ClientConfig> {
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

fn build_client(route: &UpstreamRoute, timeouts: Timeouts, pool: Pool) -> RouteClient {
    RouteClient {
        awc: build_awc(route, timeouts, pool),
        h2: h2::H2Route::build(&route.base, route.http2, &route.tls, timeouts.connect, pool),
        connect: timeouts.connect,
    }
}

fn build_awc(route: &UpstreamRoute, timeouts: Timeouts, pool: Pool) -> awc::Client {
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
    built: RefCell<Option<(u64, Vec<RouteClient>)>>,
}

impl WorkerClients {
    pub fn client(&self, plan: &UpstreamPlan, route: usize) -> RouteClient {
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

/// How one route's upstream exchanges went in one batch of finished requests.
#[derive(Debug, Default, Clone)]
pub struct RouteResults {
    /// Exchanges the upstream answered (a response head arrived), whatever its status.
    pub answered: u64,
    /// Exchanges that failed: no answer (connect, TLS, timeout, broken head) or an answer cut
    /// off by the upstream. The last one's kind and time.
    pub failed: u64,
    pub last_failure: Option<(&'static str, std::time::SystemTime)>,
    /// Failures after the batch's last answered exchange.
    pub trailing_failures: u64,
}

/// A batch's results per route, from the MetricsAggregator's health sink.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpstreamResults(pub BTreeMap<String, RouteResults>);

#[derive(Debug, Default, Clone, Serialize)]
pub struct RouteHealth {
    pub answered: u64,
    pub failed: u64,
    /// Failures since the last answered exchange.
    pub consecutive_failures: u64,
    pub last_failure: Option<&'static str>,
    pub last_failure_at: Option<String>,
}

/// Owns the upstream plan and per-route health.
#[derive(Default)]
pub struct UpstreamPool {
    plan: Option<Arc<UpstreamPlan>>,
    health: BTreeMap<String, RouteHealth>,
}

impl Actor for UpstreamPool {
    type Context = Context<Self>;
}

/// New settings: the plan to publish. The running plan is kept (and with it every worker's
/// clients and pooled connections) when the new settings would build the same clients.
#[derive(Message)]
#[rtype(result = "Arc<UpstreamPlan>")]
pub struct ApplyUpstream {
    pub settings: Arc<Settings>,
}

impl Handler<ApplyUpstream> for UpstreamPool {
    type Result = MessageResult<ApplyUpstream>;

    fn handle(&mut self, msg: ApplyUpstream, _: &mut Self::Context) -> Self::Result {
        let generation = self.plan.as_ref().map_or(1, |p| p.generation + 1);
        let next = UpstreamPlan::from_settings(&msg.settings, generation);
        let plan = match &self.plan {
            Some(current) if current.same_clients_as(&next) => current.clone(),
            _ => Arc::new(next),
        };
        // Health of routes that are gone is dropped with them.
        let prefixes: Vec<&str> = msg
            .settings
            .routes
            .iter()
            .map(|r| r.prefix.as_str())
            .collect();
        self.health
            .retain(|route, _| prefixes.contains(&route.as_str()));
        self.plan = Some(plan.clone());
        MessageResult(plan)
    }
}

impl Handler<UpstreamResults> for UpstreamPool {
    type Result = ();

    fn handle(&mut self, msg: UpstreamResults, _: &mut Self::Context) {
        for (route, results) in msg.0 {
            let health = self.health.entry(route).or_default();
            health.answered = health.answered.saturating_add(results.answered);
            health.failed = health.failed.saturating_add(results.failed);
            if let Some((kind, at)) = results.last_failure {
                health.last_failure = Some(kind);
                health.last_failure_at = Some(crate::metrics::stats::rfc3339(at));
            }
            health.consecutive_failures = if results.answered > 0 {
                results.trailing_failures
            } else {
                health
                    .consecutive_failures
                    .saturating_add(results.trailing_failures)
            };
        }
    }
}

/// The MetricsAggregator's sink for upstream health: each batch's exchanges per route, sent
/// to the UpstreamPool in one message. What counts is what the request path saw of the
/// upstream itself (an answer's head, a failure to get one, an answer cut off), never the
/// status the upstream chose to answer with.
pub struct HealthSink {
    pool: Recipient<UpstreamResults>,
}

impl HealthSink {
    pub fn new(pool: Recipient<UpstreamResults>) -> Self {
        Self { pool }
    }
}

impl Sink for HealthSink {
    fn accept(&mut self, batch: &[Finished]) {
        let mut results: BTreeMap<String, RouteResults> = BTreeMap::new();
        for Finished { record, .. } in batch {
            if record.route.is_empty() {
                continue;
            }
            let failure = record.upstream_failure.or(match record.outcome {
                Outcome::UpstreamCut | Outcome::IdleTimeout => Some(record.outcome.as_str()),
                _ => None,
            });
            let route = results.entry(record.route.clone()).or_default();
            if record.ttfb.is_some() && failure.is_none() {
                route.answered += 1;
                route.trailing_failures = 0;
            }
            if let Some(kind) = failure {
                route.failed += 1;
                route.trailing_failures += 1;
                route.last_failure = Some((kind, record.finished_at));
            }
        }
        if !results.is_empty() {
            self.pool.do_send(UpstreamResults(results));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(upstream: &str, http2: bool) -> UpstreamPlan {
        let text =
            format!("[[routes]]\nprefix = \"/a\"\nupstream = \"{upstream}\"\nhttp2 = {http2}\n");
        let env = crate::secrets::EnvSource::Fixed(Default::default());
        let settings = Settings::from_toml(&text, "test.toml", &env).unwrap();
        UpstreamPlan::from_settings(&settings, 1)
    }

    #[test]
    fn turning_http2_on_or_off_builds_new_clients() {
        let on = plan("https://example.com", true);
        assert!(on.same_clients_as(&plan("https://example.com", true)));
        assert!(!on.same_clients_as(&plan("https://example.com", false)));
    }

    #[test]
    fn only_https_routes_that_offer_http2_get_an_h2_client() {
        let build = |upstream: &str, http2: bool| {
            let plan = plan(upstream, http2);
            build_client(&plan.routes[0], plan.timeouts, plan.pool)
                .h2
                .is_some()
        };
        assert!(build("https://example.com", true));
        assert!(!build("https://example.com", false));
        assert!(!build("http://example.com", true));
    }
}
