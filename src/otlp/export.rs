//! The exporter: a thread of its own with a current-thread Tokio runtime and a hyper client, so
//! no HTTP of the export ever runs on an HTTP worker or the aggregator. It posts the cumulative
//! metrics every `interval_s` and the queued spans in batches; failures are retried with
//! backoff (honouring `retry-after`), then the request is dropped and counted. One log line
//! when the collector starts failing, one when it takes exports again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tokio::time::Instant;

use super::{spans, Export, ExportConfig, SPAN_BATCH};

/// Attempts per export request: the first and two retries.
pub const MAX_ATTEMPTS: u32 = 3;
/// The first retry waits this long, each further one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait a collector's `retry-after` gets.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Spans wait at most this long for a batch to fill.
const SPAN_LINGER: Duration = Duration::from_secs(1);
/// The collector's answer body is read (to reuse the connection) up to this size.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long one attempt may take, connection included: the export period, between 1 and 10 s.
pub fn attempt_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

pub(super) fn start(export: Arc<Export>) {
    let spawned = std::thread::Builder::new()
        .name("sluice-otlp".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!("OpenTelemetry export cannot start: {err}");
                    return;
                }
            };
            runtime.block_on(run(export));
        });
    if let Err(err) = spawned {
        tracing::error!("OpenTelemetry export cannot start: {err}");
    }
}

fn client() -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    let mut tls = (*crate::upstream::tls_config(&[])).clone();
    // The connector sets ALPN itself (HTTP/1.1 here).
    tls.alpn_protocols.clear();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(https)
}

/// What one signal's next request is.
enum Signal {
    Metrics,
    Traces(Bytes, usize),
}

async fn run(export: Arc<Export>) {
    let client = client();
    let mut next_metrics: Option<Instant> = None;
    let mut spans_since: Option<Instant> = None;
    loop {
        if export.closing.load(Ordering::SeqCst) {
            final_export(&export, &client).await;
            export.closed.store(true, Ordering::SeqCst);
            return;
        }
        let Some(config) = export.config.load_full() else {
            next_metrics = None;
            export.wake.notified().await;
            continue;
        };
        let now = Instant::now();
        let metrics_due = *next_metrics.get_or_insert(now + config.settings.interval);
        let waiting = export.queued_spans();
        let spans_due = match waiting {
            0 => {
                spans_since = None;
                None
            }
            n if n >= SPAN_BATCH => Some(now),
            _ => Some(*spans_since.get_or_insert(now) + SPAN_LINGER),
        };
        let wake = spans_due.map_or(metrics_due, |due| due.min(metrics_due));
        if wake > now {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = export.wake.notified() => {}
            }
            continue;
        }
        if metrics_due <= now {
            send(&export, &client, &config, Signal::Metrics, MAX_ATTEMPTS).await;
            next_metrics = Some(Instant::now() + config.settings.interval);
        }
        if spans_due.is_some_and(|due| due <= now) {
            if let Some((body, count)) = take_spans(&export) {
                send(
                    &export,
                    &client,
                    &config,
                    Signal::Traces(body, count),
                    MAX_ATTEMPTS,
                )
                .await;
            }
            spans_since = None;
        }
    }
}

/// Up to [`SPAN_BATCH`] waiting spans, encoded.
fn take_spans(export: &Export) -> Option<(Bytes, usize)> {
    let taken: Vec<_> = {
        let mut queue = export.spans.lock().ok()?;
        let n = queue.len().min(SPAN_BATCH);
        queue.drain(..n).collect()
    };
    if taken.is_empty() {
        return None;
    }
    let count = taken.len();
    let request = spans::request(&export.resource, taken);
    Some((Bytes::from(request.encode_to_vec()), count))
}

fn metrics_body(export: &Export) -> Option<Bytes> {
    let guard = export.metrics.lock().ok()?;
    let request = guard.as_ref()?.request(&export.resource, SystemTime::now());
    Some(Bytes::from(request.encode_to_vec()))
}

async fn final_export(export: &Export, client: &HttpClient) {
    let Some(config) = export.config.load_full() else {
        return;
    };
    send(export, client, &config, Signal::Metrics, 1).await;
    while let Some((body, count)) = take_spans(export) {
        send(export, client, &config, Signal::Traces(body, count), 1).await;
    }
}

/// Why an attempt failed, and whether to try again.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// Worth another attempt (connection trouble, timeouts, 429, 502, 503, 504), after the
    /// collector's `retry-after` when it gave one.
    Retry(String, Option<Duration>),
    /// Refused for good (any other status): the request is dropped.
    Refused(String),
}

/// Posts one signal with up to `attempts` attempts, counting the outcome. Metrics are encoded
/// anew for every attempt: being cumulative, the newest totals replace what failed.
async fn send(
    export: &Export,
    client: &HttpClient,
    config: &ExportConfig,
    signal: Signal,
    attempts: u32,
) {
    let (path, spans) = match &signal {
        Signal::Metrics => ("metrics", 0),
        Signal::Traces(_, count) => ("traces", *count),
    };
    let url = config.settings.signal_url(path);
    let timeout = attempt_timeout(config.settings.interval);
    let counts = &export.counts;
    for attempt in 1..=attempts {
        let body = match &signal {
            Signal::Metrics => match metrics_body(export) {
                Some(body) => body,
                None => return,
            },
            Signal::Traces(body, _) => body.clone(),
        };
        let failure = match post(client, &url, config, body, timeout).await {
            Ok(()) => {
                counts.exported.fetch_add(1, Ordering::Relaxed);
                counts
                    .exported_spans
                    .fetch_add(spans as u64, Ordering::Relaxed);
                if export.failing.swap(false, Ordering::SeqCst) {
                    tracing::info!(
                        endpoint = %config.settings.endpoint,
                        "OpenTelemetry export recovered: the collector takes exports again"
                    );
                }
                return;
            }
            Err(failure) => failure,
        };
        counts.failed.fetch_add(1, Ordering::Relaxed);
        let (reason, wait) = match &failure {
            Failure::Retry(reason, after) => (reason.clone(), *after),
            Failure::Refused(reason) => (reason.clone(), None),
        };
        if let Ok(mut last) = export.last_error.lock() {
            *last = Some(format!("{path}: {reason}"));
        }
        if !export.failing.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                endpoint = %config.settings.endpoint,
                "OpenTelemetry export failing ({path}: {reason}); retrying with backoff and \
                 dropping what does not fit its queue, counted in /stats otlp (logged again \
                 when it recovers)"
            );
        }
        let last = attempt == attempts || matches!(failure, Failure::Refused(_));
        if last || export.closing.load(Ordering::SeqCst) {
            break;
        }
        let backoff = FIRST_BACKOFF * 2u32.pow(attempt - 1);
        let wait = wait.map_or(backoff, |after| after.min(MAX_RETRY_AFTER));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wait_for_close(export) => break,
        }
    }
    counts.dropped.fetch_add(1, Ordering::Relaxed);
    counts
        .dropped_spans
        .fetch_add(spans as u64, Ordering::Relaxed);
}

async fn wait_for_close(export: &Export) {
    while !export.closing.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(
    client: &HttpClient,
    url: &str,
    config: &ExportConfig,
    body: Bytes,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| Failure::Refused(format!("cannot build the request: {e}")))?;
    for (name, value) in config.headers.iter() {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let exchange = async {
        let answer = client.request(request).await.map_err(|err| {
            Failure::Retry(format!("cannot reach the collector: {}", chain(&err)), None)
        })?;
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read (bounded) so that the connection can serve the next export.
        let _ = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        classify(status.as_u16(), retry_after)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Retry(
            format!("no answer within {} s", timeout.as_secs()),
            None,
        )),
    }
}

/// What an answer's status means for the request, as the OTLP/HTTP specification says.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Result<(), Failure> {
    match status {
        200..=299 => Ok(()),
        429 | 502 | 503 | 504 => Err(Failure::Retry(format!("HTTP {status}"), retry_after)),
        _ => Err(Failure::Refused(format!("HTTP {status}"))),
    }
}

/// An error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_retried_or_refused_as_otlp_says() {
        assert_eq!(classify(200, None), Ok(()));
        assert_eq!(
            classify(429, Some(Duration::from_secs(3))),
            Err(Failure::Retry(
                "HTTP 429".into(),
                Some(Duration::from_secs(3))
            ))
        );
        for status in [502, 503, 504] {
            assert!(matches!(classify(status, None), Err(Failure::Retry(..))));
        }
        for status in [400, 401, 404, 500] {
            assert!(matches!(classify(status, None), Err(Failure::Refused(_))));
        }
    }

    #[test]
    fn an_attempt_never_outlasts_ten_seconds() {
        assert_eq!(
            attempt_timeout(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
