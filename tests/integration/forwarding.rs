//! README "Bytes pass untouched": bytes, query, and end-to-end headers pass untouched; hop-by-hop ones don't.

use std::time::Duration;

use crate::support::*;

#[actix_rt::test]
async fn body_query_and_end_to_end_headers_arrive_unchanged() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &format!("{}/base/path/", mock.url()), &[])
        .start();
    let body = "{ \"stream\":false,\n\t\"model\" :  \"claude-sonnet-4-5\",\"max_tokens\":1e3, \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo ✓\"}] , \"z\":null}  \r\n";
    let response = client()
        .post(sluice.url("/anthropic/v1/messages?beta=true&x=%2Fy"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("anthropic-version", "2023-06-01"))
        .insert_header((
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        ))
        .insert_header((
            "x-claude-code-session-id",
            "de638c79-7959-40b6-be6e-3b4a31afd82c",
        ))
        .insert_header(("user-agent", "claude-cli/2.0.30 (external, cli)"))
        .insert_header(("x-stainless-lang", "js"))
        .insert_header(("x-stainless-retry-count", "0"))
        .append_header(("x-multi", "one"))
        .append_header(("x-multi", "two"))
        .insert_header(("x-api-key", CLIENT_API_KEY))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/base/path/v1/messages?beta=true&x=%2Fy");
    assert_eq!(seen.body, body.as_bytes());
    for (name, value) in [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        ),
        (
            "x-claude-code-session-id",
            "de638c79-7959-40b6-be6e-3b4a31afd82c",
        ),
        ("user-agent", "claude-cli/2.0.30 (external, cli)"),
        ("x-stainless-lang", "js"),
        ("x-stainless-retry-count", "0"),
        ("content-length", &body.len().to_string()),
    ] {
        assert_eq!(seen.header(name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(seen.all("x-multi"), vec!["one", "two"]);
    assert_eq!(seen.header("host").unwrap(), mock.addr.to_string());
}

#[test]
fn hop_by_hop_and_connection_listed_headers_are_dropped() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let request = "POST /anthropic/v1/messages HTTP/1.1\r\nHost: example.test\r\n\
                   Connection: close, X-Hop-Private\r\nX-Hop-Private: 1\r\nKeep-Alive: timeout=5\r\n\
                   TE: trailers\r\nTrailer: X-Checksum\r\nUpgrade: h2c\r\nProxy-Authorization: Basic dTpw\r\n\
                   Proxy-Connection: keep-alive\r\nX-End-To-End: kept\r\nContent-Length: 2\r\n\r\n{}";
    let answer = raw_exchange(sluice.addr, request.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = mock.last();
    for dropped in [
        "connection",
        "x-hop-private",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert!(seen.header(dropped).is_none(), "{dropped} was forwarded");
    }
    assert_eq!(seen.header("x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(seen.header("host").unwrap(), mock.addr.to_string());
    assert_eq!(seen.body, "{}".as_bytes());
}

#[test]
fn chunked_request_body_streams_through() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let request = "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                   Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n";
    let answer = raw_exchange(sluice.addr, request.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(mock.last().body, "{\"a\": 1}".as_bytes());
}

#[actix_rt::test]
async fn upstream_errors_pass_through_unchanged() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let fixture = fixture("ratelimit-429.headers");
    let (head, body) = fixture.split_once("\n\n").unwrap();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let body = body.trim_end().to_string();
    mock.always(Reply::Full(429, headers.clone(), body.clone().into()));
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    for (name, value) in &headers {
        assert_eq!(
            response
                .headers()
                .get(name.as_str())
                .unwrap()
                .to_str()
                .unwrap(),
            value,
            "{name}"
        );
    }
    assert!(response.headers().get("x-sluice-error").is_none());
    assert_eq!(response.body().await.unwrap(), body.as_bytes());

    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    mock.always(Reply::json(529, overloaded));
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 529);
    assert_eq!(response.body().await.unwrap(), overloaded.as_bytes());
}

#[actix_rt::test]
async fn compressed_answers_are_not_decompressed() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let gzip_bytes: Vec<u8> = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 0xff, 0, 7];
    mock.always(Reply::Full(
        200,
        vec![
            ("content-type".into(), "application/json".into()),
            ("content-encoding".into(), "gzip".into()),
        ],
        gzip_bytes.clone().into(),
    ));
    let mut response = client()
        .get(sluice.url("/anthropic/v1/models"))
        .insert_header(("accept-encoding", "gzip"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("content-encoding").unwrap(), "gzip");
    assert_eq!(response.body().await.unwrap(), gzip_bytes);
    assert_eq!(
        mock.last().header("accept-encoding").as_deref(),
        Some("gzip")
    );
}

#[test]
fn every_method_is_forwarded_without_inventing_a_body() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    for method in ["GET", "DELETE", "PUT", "PATCH", "OPTIONS"] {
        let request = format!(
            "{method} /anthropic/v1/files/f1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let answer = raw_exchange(sluice.addr, request.as_bytes(), Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 200"), "{method}: {answer}");
        let seen = mock.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.target, "/v1/files/f1");
        assert!(
            seen.header("content-length").is_none(),
            "no body was invented for {method}"
        );
        assert!(
            seen.header("transfer-encoding").is_none(),
            "no body was invented for {method}"
        );
    }
}

#[test]
fn head_answer_keeps_its_content_length_and_has_no_body() {
    let mock = MockUpstream::start();
    mock.always(Reply::Full(
        200,
        vec![("content-type".into(), "text/plain".into())],
        "12345".into(),
    ));
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let answer = raw_exchange(
        sluice.addr,
        b"HEAD /anthropic/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_lowercase().contains("content-length: 5\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\n"),
        "no body after the head: {answer:?}"
    );
    assert_eq!(mock.last().method, "HEAD");
}

/// Upstream connections are pooled: answers read to their end hand the connection back, so
/// requests one after another reuse it instead of opening one each (and leaving the upstream
/// with a TIME-WAIT socket per request).
#[actix_rt::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    for _ in 0..10 {
        let mut response = client()
            .post(sluice.url("/anthropic/v1/messages"))
            .insert_header(("content-type", "application/json"))
            .send_body(r#"{"model":"claude-sonnet-4-5"}"#)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.body().await.unwrap();
    }
    let peers: std::collections::BTreeSet<_> =
        mock.received().iter().filter_map(|r| r.peer).collect();
    assert_eq!(mock.received().len(), 10);
    assert_eq!(
        peers.len(),
        1,
        "one pooled connection for 10 requests: {peers:?}"
    );
}
