//! sluice: a metering pass-through proxy for LLM APIs. Client credentials first, bytes
//! untouched and unbuffered, usage counted on the side.
//!
//! The request path, in order: [`proxy`] (entry) → [`routing`] → [`credentials`] →
//! [`upstream`] → [`metrics::tap`] → [`metrics`] (aggregation). Settings come from
//! [`settings`]; [`server`] wires it all together.

pub mod access;
pub mod admin;
pub mod cli;
pub mod credentials;
pub mod dashboard;
pub mod error;
pub mod headers;
pub mod logging;
pub mod metrics;
pub mod pricing;
pub mod protocol;
pub mod proxy;
pub mod readers;
pub mod report;
pub mod routing;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod state;
pub mod upstream;
pub mod usage;
