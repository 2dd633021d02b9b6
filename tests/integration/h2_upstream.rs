//! HTTP/2 to an HTTPS upstream (`routes.http2`): concurrent requests of a worker share its
//! connection as streams, with the same bytes and usage as over HTTP/1.1; an upstream that
//! picks http/1.1 by ALPN is still served; connections the upstream ends do not fail later
//! requests; failures look to the client as they do over HTTP/1.1.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;

use crate::support::raw_h2::{FirstConnection, RawH2Upstream};
use crate::support::tls_upstream::{TlsUpstream, H2_AND_HTTP11, HTTP11_ONLY};
use crate::support::*;

const WORKERS: usize = 2;

/// sluice with one route per `(prefix, upstream)`, trusting each upstream's CA.
fn through(upstreams: &[(&str, &TlsUpstream)], http2: Option<bool>) -> Sluice {
    let mut builder = sluice().env("SLUICE__WORKERS", &WORKERS.to_string());
    for (i, (prefix, upstream)) in upstreams.iter().enumerate() {
        let ca = format!("upstream-ca-{i}.pem");
        let mut lines = vec![format!("ca_file = \"{ca}\"")];
        // Left out, the default applies.
        if let Some(http2) = http2 {
            lines.push(format!("http2 = {http2}"));
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        builder = builder
            .route(prefix, &upstream.url(), &lines)
            .file(&ca, &upstream.ca_pem);
    }
    builder.start()
}

/// sluice with one `/anthropic` route to `upstream` over HTTP/2, and `toml` added.
fn over_h2(upstream: &TlsUpstream, toml: &str) -> Sluice {
    sluice()
        .route(
            "/anthropic",
            &upstream.url(),
            &["ca_file = \"ca.pem\"", "http2 = true"],
        )
        .file("ca.pem", &upstream.ca_pem)
        .toml(toml)
        .start()
}

/// `n` streamed requests at once under `prefix`, each with a body of its own: every answer's
/// status and bytes, in request order.
async fn streams(sluice: &Sluice, prefix: &str, n: usize) -> Vec<(u16, Bytes)> {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .no_default_headers()
        .disable_timeout()
        .finish();
    join_all((0..n).map(|i| {
        let request = client
            .post(sluice.url(&format!("{prefix}/v1/messages")))
            .insert_header(("x-api-key", CLIENT_API_KEY))
            .insert_header(("content-type", "application/json"));
        async move {
            let mut response = request
                .send_body(request_body(i))
                .await
                .expect("sluice answers");
            let body = response.body().limit(1 << 20).await.unwrap_or_default();
            (response.status().as_u16(), body)
        }
    }))
    .await
}

fn request_body(i: usize) -> String {
    format!(r#"{{"model":"claude-haiku-4-5-20251001","stream":true,"max_tokens":64,"n":{i}}}"#)
}

fn assert_all_complete(answers: &[(u16, Bytes)], sluice: &Sluice) {
    let expected = fixture("stream-text.sse");
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}\n{}", sluice.logs());
        assert_eq!(body, expected.as_bytes(), "request {i}");
    }
}

fn versions(seen: &[crate::support::tls_upstream::Seen]) -> Vec<String> {
    let mut versions: Vec<String> = seen.iter().map(|s| s.version.clone()).collect();
    versions.dedup();
    versions
}

#[actix_rt::test]
async fn concurrent_streams_share_h2_connections_with_the_same_bytes_and_usage_as_http11() {
    let upstream = TlsUpstream::start(H2_AND_HTTP11, Duration::from_millis(30));
    let n = 200;

    let h2 = through(&[("/anthropic", &upstream)], Some(true));
    let over_h2 = streams(&h2, "/anthropic", n).await;
    assert_all_complete(&over_h2, &h2);
    let connections = upstream.accepted();
    assert!(
        connections <= 2 * WORKERS,
        "{n} streams took {connections} upstream connections with {WORKERS} workers"
    );
    assert!(
        upstream.most_in_flight() >= n / 2,
        "the streams did not overlap: at most {} at once",
        upstream.most_in_flight()
    );
    let seen = upstream.seen();
    assert_eq!(versions(&seen), ["HTTP/2.0"]);
    let mut bodies: Vec<Bytes> = seen.iter().map(|s| s.body.clone()).collect();
    bodies.sort();
    let mut sent: Vec<Bytes> = (0..n).map(|i| Bytes::from(request_body(i))).collect();
    sent.sort();
    assert_eq!(bodies, sent, "request bodies reach the upstream untouched");
    let h2_stats = stats_after(&h2, n as u64, None).await;
    drop(h2);

    // The same run over HTTP/1.1.
    let h1 = through(&[("/anthropic", &upstream)], Some(false));
    let over_h1 = streams(&h1, "/anthropic", n).await;
    assert_eq!(over_h1, over_h2, "the client gets the same bytes");
    assert_eq!(versions(&upstream.seen()[n..]), ["HTTP/1.1"]);
    let h1_stats = stats_after(&h1, n as u64, None).await;
    assert_eq!(h2_stats["totals"]["requests"], n as u64);
    for part in ["totals", "by_model"] {
        assert_eq!(h2_stats[part], h1_stats[part], "{part} differ");
    }
}

#[actix_rt::test]
async fn an_upstream_that_picks_http11_by_alpn_is_served_beside_an_h2_one() {
    let h2_upstream = TlsUpstream::start(H2_AND_HTTP11, Duration::from_millis(5));
    let h1_upstream = TlsUpstream::start(HTTP11_ONLY, Duration::from_millis(5));
    // `http2` left to its default.
    let sluice = through(&[("/h2", &h2_upstream), ("/h1", &h1_upstream)], None);
    for _ in 0..2 {
        assert_all_complete(&streams(&sluice, "/h2", 20).await, &sluice);
        assert_all_complete(&streams(&sluice, "/h1", 20).await, &sluice);
    }
    assert_eq!(versions(&h2_upstream.seen()), ["HTTP/2.0"]);
    assert_eq!(versions(&h1_upstream.seen()), ["HTTP/1.1"]);
    assert!(h2_upstream.accepted() <= 2 * WORKERS);
}

#[actix_rt::test]
async fn connections_the_upstream_ends_do_not_fail_later_requests() {
    let upstream = TlsUpstream::start(H2_AND_HTTP11, Duration::from_millis(30));
    let sluice = through(&[("/anthropic", &upstream)], Some(true));
    assert_all_complete(&streams(&sluice, "/anthropic", 20).await, &sluice);
    let first = upstream.accepted();

    // GOAWAY while streams are open: they finish, and the next requests get a new connection.
    let (during, ()) = tokio::join!(streams(&sluice, "/anthropic", 20), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        upstream.go_away();
    });
    assert_all_complete(&during, &sluice);
    assert_all_complete(&streams(&sluice, "/anthropic", 20).await, &sluice);
    let after_go_away = upstream.accepted();
    assert!(after_go_away > first, "no new connection after GOAWAY");

    // Connections dropped at once cut the streams on them, but not the requests after.
    let _cut = tokio::join!(streams(&sluice, "/anthropic", 20), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        upstream.reset();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_all_complete(&streams(&sluice, "/anthropic", 20).await, &sluice);
    assert!(upstream.accepted() > after_go_away);
    assert_eq!(versions(&upstream.seen()), ["HTTP/2.0"]);
}

/// What a client is told, minus sluice's own wording of a failure.
#[derive(Debug, PartialEq)]
struct Told {
    status: u16,
    sluice_error: Option<String>,
    error_type: String,
    /// The upstream's own bytes; `None` for sluice's own errors, whose message names the cause.
    body: Option<Bytes>,
}

async fn told(sluice: &Sluice, path: &str) -> Told {
    let mut response = client()
        .post(sluice.url(path))
        .insert_header(("x-api-key", CLIENT_API_KEY))
        .send_body("{}")
        .await
        .unwrap();
    let body = response.body().await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sluice_error = response
        .headers()
        .get("x-sluice-error")
        .map(|v| v.to_str().unwrap().to_string());
    Told {
        status: response.status().as_u16(),
        error_type: json["error"]["type"].as_str().unwrap_or_default().into(),
        body: sluice_error.is_none().then_some(body),
        sluice_error,
    }
}

#[actix_rt::test]
async fn failures_look_the_same_to_the_client_over_h2_and_http11() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut answers = Vec::new();
    for http2 in [true, false] {
        let upstream = TlsUpstream::start(H2_AND_HTTP11, Duration::ZERO);
        let sluice = sluice()
            .route(
                "/anthropic",
                &upstream.url(),
                &["ca_file = \"ca.pem\"", &format!("http2 = {http2}")],
            )
            .route(
                "/down",
                &format!("https://127.0.0.1:{closed_port}"),
                &["ca_file = \"ca.pem\"", &format!("http2 = {http2}")],
            )
            .file("ca.pem", &upstream.ca_pem)
            .toml("[timeouts]\nfirst_byte_ms = 500\n[limits]\nmax_request_body_bytes = 1000")
            .start();
        let mut told_here = Vec::new();
        for path in [
            "/anthropic/v1/status/429",
            "/anthropic/v1/status/503",
            "/anthropic/v1/slow",
            "/down/v1/messages",
        ] {
            told_here.push(told(&sluice, path).await);
        }
        // A chunked body is cut where it passes the limit, on its way upstream.
        let answer = post_1200_bytes_chunked(sluice.addr);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("x-sluice-error: body_too_large"),
            "{answer}"
        );
        assert!(upstream.seen().iter().all(|seen| seen.body.len() <= 1000));
        let version = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(versions(&upstream.seen()), [version]);
        // The upstream goes away after it has answered: the next request cannot connect.
        drop(upstream);
        tokio::time::sleep(Duration::from_millis(200)).await;
        told_here.push(told(&sluice, "/anthropic/v1/status/400").await);
        answers.push(told_here);
    }
    assert_eq!(answers[0], answers[1]);
    let kinds: Vec<(u16, Option<&str>)> = answers[0]
        .iter()
        .map(|t| (t.status, t.sluice_error.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            (429, None),
            (503, None),
            (504, Some("upstream_timeout")),
            (502, Some("upstream_unreachable")),
            (502, Some("upstream_unreachable")),
        ]
    );
}

#[actix_rt::test]
async fn a_request_body_that_arrives_slowly_streams_upstream_over_h2() {
    let upstream = TlsUpstream::start(H2_AND_HTTP11, Duration::ZERO);
    // The idle timer wakes the request while its body streams.
    let sluice = over_h2(&upstream, "[timeouts]\nidle_ms = 400");
    // The protocol is known before the slow body comes.
    assert_all_complete(&streams(&sluice, "/anthropic", 1).await, &sluice);
    let parts: Vec<String> = (0..5).map(|i| format!("{{\"part\":{i}}}\n")).collect();
    let chunks = futures_util::stream::iter(parts.clone()).then(|part| async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok::<_, std::io::Error>(Bytes::from(part))
    });
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("x-api-key", CLIENT_API_KEY))
        .send_stream(Box::pin(chunks))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", sluice.logs());
    response.body().await.unwrap();
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.body, parts.concat().as_bytes());
}

#[actix_rt::test]
async fn silence_inside_an_h2_stream_closes_it_after_idle_timeout() {
    let upstream = TlsUpstream::start(H2_AND_HTTP11, Duration::from_secs(3));
    let sluice = over_h2(&upstream, "[timeouts]\nidle_ms = 400");
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("x-api-key", CLIENT_API_KEY))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let end = tokio::time::timeout(Duration::from_secs(2), response.next())
        .await
        .expect("stream closed by sluice before the upstream's first event");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    sluice.wait_for_log("outcome=idle_timeout", Duration::from_secs(2));
    assert_eq!(versions(&upstream.seen()), ["HTTP/2.0"]);
}

/// sluice with `workers` workers and one `/anthropic` route over HTTP/2 to `url`.
fn h2_route(url: &str, ca_pem: &str, workers: usize, toml: &str) -> Sluice {
    sluice()
        .env("SLUICE__WORKERS", &workers.to_string())
        .route("/anthropic", url, &["ca_file = \"ca.pem\"", "http2 = true"])
        .file("ca.pem", ca_pem)
        .toml(toml)
        .start()
}

/// Every request answered once, counted once: 200s only, none an error.
fn assert_counted_once(stats: &serde_json::Value, n: u64) {
    assert_eq!(stats["totals"]["requests"], n, "{}", stats["totals"]);
    assert_eq!(stats["totals"]["errors"], 0, "{}", stats["totals"]);
    assert_eq!(stats["by_status"], serde_json::json!({"200": n}));
}

#[actix_rt::test]
async fn a_stream_limit_of_one_opens_more_connections_instead_of_queueing_requests() {
    // Each answer takes ~240 ms (8 events, 30 ms apart): queued one after another on a
    // connection per worker, the last would wait ~6 s, past the first-byte timeout.
    let upstream =
        TlsUpstream::start_with_stream_limit(H2_AND_HTTP11, Duration::from_millis(30), Some(1));
    let sluice = h2_route(
        &upstream.url(),
        &upstream.ca_pem,
        WORKERS,
        "[timeouts]\nfirst_byte_ms = 3000",
    );
    let n = 50;
    assert_all_complete(&streams(&sluice, "/anthropic", n).await, &sluice);
    assert!(
        upstream.accepted() > 2 * WORKERS,
        "{n} requests took {} connections",
        upstream.accepted()
    );
    assert!(
        upstream.most_in_flight() > WORKERS,
        "the answers did not overlap: at most {} at once",
        upstream.most_in_flight()
    );
    assert_eq!(versions(&upstream.seen()), ["HTTP/2.0"]);
    assert_counted_once(&stats_after(&sluice, n as u64, None).await, n as u64);
}

#[actix_rt::test]
async fn streams_above_a_goaway_last_stream_id_are_sent_again_and_counted_once() {
    let n = 50;
    // All 50 on one connection (one worker, 100 streams allowed); the upstream processes
    // the first 5 and says GOAWAY for the rest.
    let upstream = RawH2Upstream::start(
        FirstConnection::GoAway {
            streams: n,
            processed: 5,
        },
        100,
    );
    let sluice = h2_route(&upstream.url(), &upstream.ca_pem, 1, "");
    assert_all_complete(&streams(&sluice, "/anthropic", n).await, &sluice);
    assert_eq!(
        upstream.answered(),
        n,
        "each request processed exactly once"
    );
    assert!(upstream.connections_with_requests() >= 2);
    assert_counted_once(&stats_after(&sluice, n as u64, None).await, n as u64);
}

#[actix_rt::test]
async fn streams_refused_unprocessed_are_sent_again_on_another_connection() {
    let n = 50;
    let upstream = RawH2Upstream::start(FirstConnection::Refuse { processed: 5 }, 100);
    let sluice = h2_route(&upstream.url(), &upstream.ca_pem, 1, "");
    assert_all_complete(&streams(&sluice, "/anthropic", n).await, &sluice);
    assert_eq!(
        upstream.answered(),
        n,
        "each request processed exactly once"
    );
    assert!(upstream.connections_with_requests() >= 2);
    assert_counted_once(&stats_after(&sluice, n as u64, None).await, n as u64);
}

#[actix_rt::test]
async fn at_pool_max_connections_h2_requests_wait_for_a_stream_instead_of_opening_more() {
    let upstream =
        TlsUpstream::start_with_stream_limit(H2_AND_HTTP11, Duration::from_millis(5), Some(1));
    let sluice = h2_route(
        &upstream.url(),
        &upstream.ca_pem,
        1,
        "[pool]\nmax_connections = 2\n[timeouts]\nfirst_byte_ms = 20000",
    );
    let n = 12;
    assert_all_complete(&streams(&sluice, "/anthropic", n).await, &sluice);
    // The handshake that asks which protocol the upstream picks, then two connections.
    assert!(
        upstream.accepted() <= 3,
        "{} connections with max_connections = 2",
        upstream.accepted()
    );
    assert!(
        upstream.most_in_flight() <= 2,
        "{}",
        upstream.most_in_flight()
    );
    assert_counted_once(&stats_after(&sluice, n as u64, None).await, n as u64);
}

#[actix_rt::test]
async fn at_pool_max_connections_a_refused_stream_is_sent_again_on_the_same_connection() {
    // One connection allowed, and it refuses every stream after the fifth: the second attempt
    // goes back to it at once (and is refused again) rather than wait for another connection
    // that may not be opened.
    let upstream = RawH2Upstream::start(FirstConnection::Refuse { processed: 5 }, 100);
    let sluice = h2_route(
        &upstream.url(),
        &upstream.ca_pem,
        1,
        "[pool]\nmax_connections = 1\n[timeouts]\nfirst_byte_ms = 20000",
    );
    let started = std::time::Instant::now();
    let answers = streams(&sluice, "/anthropic", 10).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 502, 502, 502, 502, 502]);
    assert_eq!(upstream.connections_with_requests(), 1);
    assert_eq!(upstream.answered(), 5);
}
