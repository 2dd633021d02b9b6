//! sluice: a metering pass-through proxy for LLM APIs. Client credentials first, bytes
//! untouched and unbuffered, usage counted on the side.
//!
//! A request's path: [`proxy`] (entry, as named phases: route → admit → credentials → quota →
//! upstream request → send → respond) using [`routing`], [`access`], [`credentials`] and
//! [`quotas`], out through [`upstream`], back through the usage tap ([`metrics::tap`]), which
//! hands one record per request to the MetricsAggregator ([`metrics`]) and its sinks. What an
//! API's answers mean is [`protocol`], over the protocol-free [`readers`]; [`usage`] is what
//! metering learns and [`pricing`] prices it.
//!
//! Four actors do the work beside the handlers, each owning its state: the CredentialResolver
//! ([`credentials`]: the secret material), the UpstreamPool ([`upstream`]: the upstream plan and
//! route health), the MetricsAggregator ([`metrics`]: counting and its sinks) and the
//! SettingsWatcher ([`settings::watcher`]: reloads). They publish what the request path reads
//! through [`state`]; [`server`] wires it all together; [`admin`] serves sluice's own endpoints
//! and [`report`] is `sluice report`.

pub mod access;
pub mod admin;
pub mod attribution;
pub mod browser_guard;
pub mod browsers;
pub mod check;
pub mod cli;
pub mod client_stall;
pub mod connection;
pub mod credentials;
pub mod dashboard;
pub mod error;
pub mod headers;
pub mod https;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod pricing;
pub mod printable;
pub mod protocol;
pub mod proxy;
pub mod quotas;
pub mod readers;
pub mod report;
pub mod reserved;
pub mod routing;
pub mod secret_forms;
pub mod secrets;
pub mod server;
pub mod service;
pub mod settings;
pub mod state;
pub mod store;
pub mod subscription;
pub mod tls;
pub mod upload;
pub mod upstream;
pub mod usage;
pub mod websocket;
