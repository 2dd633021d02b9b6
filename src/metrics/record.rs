//! One finished request, as the request path reports it to the MetricsAggregator.

use std::time::{Duration, SystemTime};

use crate::credentials::CredentialSource;
use crate::usage::Usage;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole answer reached the client.
    Completed,
    /// The client went away before the answer ended.
    ClientGone,
    /// The client stopped reading the answer for longer than `idle_ms`; sluice closed it.
    ClientStalled,
    /// The upstream broke the answer off.
    UpstreamCut,
    /// The upstream fell silent for longer than `idle_ms` inside the answer.
    IdleTimeout,
    /// A second stop signal ended the answer before it was complete.
    Shutdown,
    /// sluice answered itself with an error (`x-sluice-error` kind).
    Refused(&'static str),
    /// A streamed answer that began with a success status carried an `error` event.
    UpstreamErrorEvent,
}

impl Outcome {
    /// One outcome of every kind (a refusal with a made-up reason), for tests that go through
    /// them all. The match has no wildcard: a new kind fails to build here until it is listed.
    #[cfg(test)]
    pub(crate) fn every_kind() -> [Outcome; 8] {
        let listed = |outcome: Outcome| match outcome {
            Outcome::Completed
            | Outcome::ClientGone
            | Outcome::ClientStalled
            | Outcome::UpstreamCut
            | Outcome::IdleTimeout
            | Outcome::Shutdown
            | Outcome::Refused(_)
            | Outcome::UpstreamErrorEvent => outcome,
        };
        [
            Outcome::Completed,
            Outcome::ClientGone,
            Outcome::ClientStalled,
            Outcome::UpstreamCut,
            Outcome::IdleTimeout,
            Outcome::Shutdown,
            Outcome::Refused("rate_limited"),
            Outcome::UpstreamErrorEvent,
        ]
        .map(listed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientGone => "client_gone",
            Outcome::ClientStalled => "client_stalled",
            Outcome::UpstreamCut => "upstream_cut",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::Refused(kind) => kind,
            Outcome::UpstreamErrorEvent => "upstream_error_event",
        }
    }

    /// An error the status code does not show: counted as one beside statuses ≥ 400.
    pub fn is_error(self) -> bool {
        self == Outcome::UpstreamErrorEvent
    }

    /// A stream that ended early: its tokens so far still count.
    /// The client went away (or stopped reading) before the answer's end.
    pub fn client_left(self) -> bool {
        matches!(self, Outcome::ClientGone | Outcome::ClientStalled)
    }

    pub fn is_incomplete(self) -> bool {
        matches!(
            self,
            Outcome::ClientGone
                | Outcome::ClientStalled
                | Outcome::UpstreamCut
                | Outcome::IdleTimeout
                | Outcome::Shutdown
        )
    }
}

#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The id returned to the client as `x-request-id`.
    pub request_id: String,
    pub finished_at: SystemTime,
    /// The route's prefix; empty when no route matched.
    pub route: String,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub status: u16,
    pub model: Option<String>,
    pub source: Option<CredentialSource>,
    /// `<source>:<fingerprint>`; never the secret.
    pub credential: Option<String>,
    pub caller: Option<String>,
    pub session: Option<String>,
    /// The Claude Code agent that sent the request (`x-claude-code-agent-id`).
    pub agent: Option<String>,
    /// The agent that started it (`x-claude-code-parent-agent-id`), kept for the store.
    pub parent_agent: Option<String>,
    /// The project the request belongs to (the `[attribution] project_header` header).
    pub project: Option<String>,
    /// The route's protocol (`anthropic`, `openai`, `gemini`, `none`); `None` when no route
    /// matched.
    pub provider: Option<&'static str>,
    /// The agent or SDK that sent the request, one of [`crate::attribution::client::CLIENTS`];
    /// `None` when it did not say.
    pub client: Option<&'static str>,
    pub usage: Usage,
    /// A stream that ended without ever reporting its usage.
    pub usage_missing: bool,
    /// The cost the answer's reader worked out (a batch's results), which the
    /// aggregator takes instead of pricing `usage` by `model`.
    pub priced_usd: Option<f64>,
    /// The answer was an event stream.
    pub streamed: bool,
    /// The output tokens are an estimate from the answer's text: its client left before the
    /// answer's usage came, and it did not come in the grace read on after (`metrics::tap`).
    pub estimated: bool,
    pub outcome: Outcome,
    pub ttfb: Option<Duration>,
    pub total: Duration,
    pub overhead: Option<Duration>,
    /// Why no answer came from upstream (connect, TLS, timeout, broken head), when that is
    /// how the request ended.
    pub upstream_failure: Option<&'static str>,
    /// `anthropic-ratelimit-*` and `retry-after` response headers.
    pub rate_limits: Vec<(String, String)>,
    /// The model the request asked for, when its body named one (`model` may be the answer's).
    pub request_model: Option<String>,
    /// The client's W3C `traceparent`, when it sent a valid one (fixed size).
    pub trace_parent: Option<crate::otlp::traceparent::TraceParent>,
}

impl Default for RequestRecord {
    /// A request as known when it arrives: nothing decided and nothing answered yet.
    fn default() -> Self {
        Self {
            request_id: String::new(),
            finished_at: SystemTime::now(),
            route: String::new(),
            method: String::new(),
            path: String::new(),
            status: 0,
            model: None,
            source: None,
            credential: None,
            caller: None,
            session: None,
            agent: None,
            parent_agent: None,
            project: None,
            provider: None,
            client: None,
            usage: Usage::default(),
            usage_missing: false,
            priced_usd: None,
            streamed: false,
            estimated: false,
            outcome: Outcome::Completed,
            ttfb: None,
            total: Duration::ZERO,
            overhead: None,
            upstream_failure: None,
            rate_limits: Vec::new(),
            request_model: None,
            trace_parent: None,
        }
    }
}
