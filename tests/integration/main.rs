//! Integration tests: the real sluice binary between a test client and a mock upstream.

#[path = "../support/mod.rs"]
mod support;

mod bounds;
mod browsers;
mod check;
mod credentials;
mod errors;
mod forwarding;
mod h2_upstream;
mod https;
mod metering;
mod otlp;
mod protocols;
mod quotas;
mod reload;
mod report;
mod secret_files;
mod service;
mod settings;
mod store;
mod streaming;
mod tls;
mod websocket;
