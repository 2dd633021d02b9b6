//! sluice's own endpoints: `/healthz` and the `/dashboard` page (always open), `/stats`,
//! `/metrics` and `/usage` (behind the admin token when one is set). Reserved paths: never
//! forwarded.

use std::time::{Duration, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::error::Error;
use crate::metrics::stats;
use crate::metrics::{Flush, GetReport, RenderMetrics, UsageReport};
use crate::state::{AppState, ReloadStatus};
use crate::store::{StatsWindow, StoreHandle, StoreStatus, UsageQuery};

/// The store (in memory for `[store] path = ""`); `None` only where none was opened.
pub struct StoreAccess(pub Option<StoreHandle>);

/// `/dashboard` and its files. The page holds no data (its data calls carry the admin token),
/// so it is open; `/dashboard/` sends the browser to `/dashboard`, where its relative links
/// resolve.
pub async fn dashboard(req: HttpRequest) -> HttpResponse {
    if req.path() == "/dashboard/" {
        return HttpResponse::PermanentRedirect()
            .insert_header((actix_web::http::header::LOCATION, "/dashboard"))
            .finish();
    }
    match crate::dashboard::asset(req.path()) {
        Some(asset) => {
            let mut response = HttpResponse::Ok();
            response.content_type(asset.content_type);
            for header in crate::dashboard::HEADERS {
                response.insert_header(header);
            }
            response.body(asset.body)
        }
        None => actix_web::ResponseError::error_response(&Error::NoRoute(req.path().to_string())),
    }
}

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

/// The `/stats` JSON as docs/usage.md documents it, in that field order: process and settings
/// facts, the counters from the store, then what the aggregator keeps in memory.
#[derive(Serialize)]
struct StatsBody {
    started_at: String,
    counting_since: String,
    settings: SettingsInfo,
    #[serde(flatten)]
    groups: StatsWindow,
    #[serde(flatten)]
    usage: UsageReport,
    /// Records the request path dropped because the aggregator was saturated.
    dropped_records: u64,
    /// Per route: upstream exchanges that failed (connect, TLS, timeout, broken answer), the
    /// last failure's kind and time. From the UpstreamPool.
    upstreams: std::collections::BTreeMap<String, crate::upstream::RouteHealth>,
    /// Per quota: limits, refusals, and the subjects nearest their limits with what they used.
    quotas: Vec<crate::quotas::QuotaReport>,
    /// The store's writer: rows written, pending, last commit, failures. `null` without one.
    store: Option<StoreStatus>,
}

/// How long `/stats` waits for the store to commit what was counted before it: the answer then
/// includes every request that finished before it was asked.
const STATS_SETTLE: Duration = Duration::from_millis(500);

/// The one `since` (or `until`) of a query string (other parameters are ignored). Given twice
/// it is ambiguous, and refused like any other bad value.
fn time_param(query: &str, wanted: &str) -> Result<Option<String>, Error> {
    let mut values = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == wanted)
        .map(|(_, value)| value.into_owned());
    let first = values.next();
    let rest: Vec<String> = values.collect();
    match first {
        Some(first) if !rest.is_empty() => Err(Error::BadSince(
            std::iter::once(first)
                .chain(rest)
                .collect::<Vec<_>>()
                .join(" and "),
        )),
        first => Ok(first),
    }
}

pub async fn stats(
    req: HttpRequest,
    state: web::Data<AppState>,
    store: web::Data<StoreAccess>,
) -> Result<HttpResponse, Error> {
    let snapshot = state.snapshot();
    snapshot.credentials.access.require_admin(&req)?;
    let now = SystemTime::now();
    // Unix milliseconds, from `30m`-style durations before now or RFC 3339 times.
    let time = |name: &str| -> Result<Option<i64>, Error> {
        match time_param(req.query_string(), name)? {
            None => Ok(None),
            Some(text) => stats::parse_since(&text, now)
                .map(|seconds| Some(seconds.saturating_mul(1000)))
                .ok_or(Error::BadSince(text)),
        }
    };
    let (since, until) = (time("since")?, time("until")?);
    // Counting first hands every finished request to the store.
    state
        .aggregator
        .send(Flush)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let Some(handle) = store.0.clone() else {
        return Err(Error::StoreUnavailable("no store is open".into()));
    };
    let prices = snapshot.prices.clone();
    // Enough models that the priced ones are among them, then at most the bound of others.
    let model_limit = stats::MAX_OTHER_MODELS + prices.len();
    // The database is read on a blocking thread, never on the HTTP workers.
    let mut groups = web::block(move || {
        if !handle.status().failing {
            handle.settle(STATS_SETTLE);
        }
        handle.window(since, until, stats::MAX_RECENT_KEYS, model_limit)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::StoreUnavailable(e.to_string()))?;
    // The views after the store: whatever the store counted, they have seen too.
    let report = state
        .aggregator
        .send(GetReport)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let folded = stats::fold_models(
        &mut groups.by_model,
        |model| prices.lookup(model).is_some(),
        stats::MAX_OTHER_MODELS,
    );
    *groups.folded.entry("by_model".into()).or_default() += folded;
    groups.folded.extend(report.folded.clone());
    // Counting began with the oldest request the store holds (or now, when it holds none).
    let oldest = groups
        .oldest_ms
        .unwrap_or_else(|| crate::store::unix_ms(now));
    let counting_since = crate::store::rfc3339_ms(since.map_or(oldest, |s| s.max(oldest)));
    let body = StatsBody {
        started_at: stats::rfc3339(state.started_at),
        counting_since,
        settings: SettingsInfo {
            generation: snapshot.generation,
            loaded_at: stats::rfc3339(snapshot.loaded_at),
            last_reload: state.last_reload(),
        },
        groups,
        usage: report,
        dropped_records: state.recorder.dropped(),
        upstreams: state
            .pool
            .send(crate::upstream::GetHealth)
            .await
            .map_err(|e| Error::Internal(e.to_string()))?,
        quotas: state
            .quotas
            .report(jiff::Timestamp::now(), crate::quotas::REPORT_SUBJECTS),
        store: store.0.as_ref().map(StoreHandle::status),
    };
    Ok(HttpResponse::Ok().json(body))
}

/// `/usage`: history from the store, grouped and filtered, as JSON or CSV.
pub async fn usage(
    req: HttpRequest,
    state: web::Data<AppState>,
    store: web::Data<StoreAccess>,
) -> Result<HttpResponse, Error> {
    state.snapshot().credentials.access.require_admin(&req)?;
    let Some(store) = store.0.clone() else {
        return Err(Error::StoreUnavailable(
            "no store is configured ([store] path is empty)".into(),
        ));
    };
    let query = UsageQuery::parse(req.query_string()).map_err(Error::BadUsageQuery)?;
    let now = SystemTime::now();
    query.range(now).map_err(Error::BadUsageQuery)?;
    let format = query.format;
    // A few queries at a time, each read and rendered on a blocking thread: heavy queries wait
    // their turn without holding a thread, and never run on the workers that serve the proxy.
    let _turn = usage_turn().await;
    let (content_type, body) =
        web::block(move || store.usage(&query, now).map(|report| report.render(format)))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::StoreUnavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}

/// `/usage` queries answered at once. Each may hold its rows and its rendered answer (tens of
/// MB at the row limit); the store reads one at a time anyway.
pub const USAGE_QUERIES_AT_ONCE: usize = 2;
static USAGE_QUERIES: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(USAGE_QUERIES_AT_ONCE);

/// Waits (asynchronously) until fewer than [`USAGE_QUERIES_AT_ONCE`] `/usage` queries run.
pub async fn usage_turn() -> tokio::sync::SemaphorePermit<'static> {
    USAGE_QUERIES
        .acquire()
        .await
        .expect("the /usage semaphore is never closed")
}

pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
    store: web::Data<StoreAccess>,
) -> Result<HttpResponse, Error> {
    state.snapshot().credentials.access.require_admin(&req)?;
    let mut text = state
        .aggregator
        .send(RenderMetrics)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(store) = &store.0 {
        let families = store.status().openmetrics();
        let at = text.rfind("# EOF").unwrap_or(text.len());
        text.insert_str(at, &families);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn usage_queries_beyond_the_bound_wait_for_a_turn() {
        let mut held = Vec::new();
        for _ in 0..USAGE_QUERIES_AT_ONCE {
            held.push(usage_turn().await);
        }
        let another = tokio::time::timeout(Duration::from_millis(50), usage_turn()).await;
        assert!(another.is_err(), "a query past the bound must wait");
        drop(held);
        let turn = tokio::time::timeout(Duration::from_secs(5), usage_turn()).await;
        assert!(turn.is_ok(), "its turn comes once one ends");
    }
}
