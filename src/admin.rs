//! sluice's own endpoints: `/healthz` (always open), `/stats` and `/metrics` (behind the admin
//! token when one is set). Reserved paths: never forwarded.

use std::collections::BTreeMap;
use std::time::SystemTime;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::error::Error;
use crate::metrics::stats::{self, Counters, RateLimitState};
use crate::metrics::{GetReport, LatencyReport, RenderMetrics};
use crate::server::{AppState, ReloadStatus};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

#[derive(Serialize)]
struct SettingsInfo {
    generation: u64,
    loaded_at: String,
    /// `null` until the first reload attempt.
    last_reload: Option<ReloadStatus>,
}

/// The `/stats` JSON of SPEC, in SPEC's field order.
#[derive(Serialize)]
struct StatsBody {
    started_at: String,
    counting_since: String,
    settings: SettingsInfo,
    totals: Counters,
    by_route: BTreeMap<String, Counters>,
    by_model: BTreeMap<String, Counters>,
    by_source: BTreeMap<String, Counters>,
    by_credential: BTreeMap<String, Counters>,
    by_caller: BTreeMap<String, Counters>,
    by_session: BTreeMap<String, Counters>,
    by_status: BTreeMap<String, u64>,
    latency_ms: LatencyReport,
    rate_limits: BTreeMap<String, RateLimitState>,
    /// Models seen without a price (their cost counts as 0), with how many requests.
    unpriced_models: BTreeMap<String, u64>,
    /// Records the request path dropped because the aggregator was saturated.
    dropped_records: u64,
}

#[derive(serde::Deserialize)]
pub struct StatsQuery {
    since: Option<String>,
}

pub async fn stats(
    req: HttpRequest,
    query: web::Query<StatsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Error> {
    let snapshot = state.snapshot();
    if !snapshot.credentials.access.admin_allows(req.headers()) {
        return Err(Error::AdminToken);
    }
    let since = match query.since.as_deref() {
        None => None,
        Some(text) => Some(
            stats::parse_since(text, SystemTime::now())
                .ok_or_else(|| Error::BadSince(text.to_string()))?,
        ),
    };
    let report = state
        .aggregator
        .send(GetReport { since })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let body = StatsBody {
        started_at: stats::rfc3339(state.started_at),
        counting_since: report.counting_since,
        settings: SettingsInfo {
            generation: snapshot.generation,
            loaded_at: stats::rfc3339(snapshot.loaded_at),
            last_reload: state.last_reload(),
        },
        totals: report.totals,
        by_route: report.by_route,
        by_model: report.by_model,
        by_source: report.by_source,
        by_credential: report.by_credential,
        by_caller: report.by_caller,
        by_session: report.by_session,
        by_status: report.by_status,
        latency_ms: report.latency_ms,
        rate_limits: report.rate_limits,
        unpriced_models: report.unpriced_models,
        dropped_records: state.recorder.dropped(),
    };
    Ok(HttpResponse::Ok().json(body))
}

pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    if !state
        .snapshot()
        .credentials
        .access
        .admin_allows(req.headers())
    {
        return Err(Error::AdminToken);
    }
    let text = state
        .aggregator
        .send(RenderMetrics)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let wants_openmetrics = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    Ok(if wants_openmetrics {
        HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text)
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(crate::metrics::exposition::to_classic_text(&text))
    })
}
