//! docs/clients.md "Errors" (errors that sluice itself produces): status, Anthropic shape, `x-sluice-error`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::support::*;

async fn assert_sluice_error(
    mut response: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
    status: u16,
    kind: &str,
    error_type: &str,
) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers().get("x-sluice-error").unwrap(), kind);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], error_type);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sluice: "),
        "{body}"
    );
}

#[actix_rt::test]
async fn unreachable_upstream_is_502() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sluice = sluice()
        .route("/anthropic", &format!("http://127.0.0.1:{port}"), &[])
        .start();
    let response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert_sluice_error(response, 502, "upstream_unreachable", "api_error").await;
    // The UpstreamPool's health shows in /stats.
    let health = &stats(&sluice, "", None).await["upstreams"]["/anthropic"];
    assert_eq!(health["failed"], 1, "{health}");
    assert_eq!(health["last_failure"], "upstream_unreachable");
}

#[actix_rt::test]
async fn no_answer_within_first_byte_timeout_is_504() {
    let mock = MockUpstream::start();
    mock.always(Reply::Delay(Duration::from_secs(5)));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[timeouts]\nfirst_byte_ms = 300")
        .start();
    let start = Instant::now();
    let response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_sluice_error(response, 504, "upstream_timeout", "timeout_error").await;
}

#[actix_rt::test]
async fn silence_inside_a_stream_closes_it_after_idle_timeout() {
    let mock = MockUpstream::start();
    mock.always(Reply::HeadersThenSilence);
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[timeouts]\nidle_ms = 400")
        .start();
    let start = Instant::now();
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let end = tokio::time::timeout(Duration::from_secs(5), response.next())
        .await
        .expect("stream closed by sluice");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no data was sent, the stream must end: {end:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(400));
    sluice.wait_for_log("outcome=idle_timeout", Duration::from_secs(2));
}

#[actix_rt::test]
async fn longer_answers_are_not_cut_by_any_fixed_client_timeout() {
    // awc's default 5 s timeout must not apply: a stream that takes 6 s still completes.
    let mock = MockUpstream::start();
    let chunks: Vec<_> = (0..6)
        .map(|i| {
            (
                Duration::from_secs(1),
                bytes::Bytes::from(format!("data: {i}\n\n")),
            )
        })
        .collect();
    mock.always(Reply::Chunks(
        200,
        vec![("content-type".into(), "text/event-stream".into())],
        chunks,
    ));
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    let body = response.body().limit(1 << 20).await.unwrap();
    assert!(body.ends_with(b"data: 5\n\n"));
}

#[actix_rt::test]
async fn declared_body_over_limit_is_413_without_contacting_upstream() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[limits]\nmax_request_body_bytes = 1000")
        .start();
    let response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body(vec![b'x'; 1001])
        .await
        .unwrap();
    assert_sluice_error(response, 413, "body_too_large", "request_too_large").await;
    assert!(mock.received().is_empty());
    // At the limit is fine.
    let response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body(vec![b'x'; 1000])
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn chunked_body_over_limit_is_413() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[limits]\nmax_request_body_bytes = 1000")
        .start();
    let answer = post_1200_bytes_chunked(sluice.addr);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("x-sluice-error: body_too_large"),
        "{answer}"
    );
    assert!(
        mock.received().iter().all(|r| r.body.len() <= 1000),
        "upstream never got the whole body"
    );
}

#[actix_rt::test]
async fn unknown_route_is_404_and_escaping_path_is_400() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let response = client()
        .get(sluice.url("/openai/v1/models"))
        .send()
        .await
        .unwrap();
    assert_sluice_error(response, 404, "no_route", "not_found_error").await;
    for path in [
        "/anthropic/../stats",
        "/anthropic/v1/%2e%2e/%2E%2E/etc",
        "/anthropic/v1/..%2f..%2fx",
    ] {
        let response = client().get(sluice.url(path)).send().await.unwrap();
        assert_sluice_error(response, 400, "bad_path", "invalid_request_error").await;
    }
    assert!(mock.received().is_empty());
}

#[test]
fn dot_dot_in_a_raw_request_line_is_refused() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let answer = raw_exchange(
        sluice.addr,
        b"GET /anthropic/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(mock.received().is_empty());
}

#[actix_rt::test]
async fn a_repeated_or_malformed_stats_query_is_a_sluice_error() {
    let sluice = sluice()
        .route("/anthropic", "http://127.0.0.1:9", &[])
        .start();
    for query in ["?since=5h&since=7d", "?since=5x", "?since=%ff"] {
        let response = client()
            .get(sluice.url(&format!("/stats{query}")))
            .send()
            .await
            .unwrap();
        assert_sluice_error(response, 400, "bad_since", "invalid_request_error").await;
    }
}

#[test]
fn check_into_a_closed_pipe_exits_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    // `sluice check | head -0`: the reader is gone before sluice writes.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("sleep 0.3; exec \"$0\" check --settings \"$1\"")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg(&path)
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.code().is_some(),
        "killed by a signal: {:?}",
        output.status
    );
}
