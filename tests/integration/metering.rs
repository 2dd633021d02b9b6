//! Issue "Metering": usage read from every answer lands in every `/stats` group.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::*;

/// The mock answers by the `x-mock` request header.
fn scripted_mock() -> (MockUpstream, Gate) {
    let mock = MockUpstream::start();
    let gate = Gate::new();
    let gated = gate.clone();
    let ratelimit = fixture("ratelimit-429.headers");
    mock.reply(move |req| match req.header("x-mock").as_deref() {
        Some("stream-text") => Reply::sse(&fixture("stream-text.sse")),
        Some("stream-tool-use") => Reply::sse(&fixture("stream-tool-use.sse")),
        Some("stream-error-midway") => Reply::sse(&fixture("stream-error-midway.sse")),
        Some("stream-web-search") => Reply::sse(&fixture("stream-web-search.sse")),
        Some("gated") => Reply::GatedEvents(
            fixture("stream-text.sse")
                .split_inclusive("\n\n")
                .map(str::to_string)
                .collect(),
            gated.clone(),
        ),
        Some("429") => {
            let (head, body) = ratelimit.split_once("\n\n").unwrap();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(": "))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            Reply::Full(429, headers, body.trim_end().to_string().into())
        }
        _ => Reply::json(200, &fixture("message.json")),
    });
    (mock, gate)
}

const OAUTH_HEADER: &str = "Bearer sk-ant-oat01-test-client-oauth-0123456789";
const S1: &str = "de638c79-7959-40b6-be6e-3b4a31afd82c";
const S2: &str = "0f9b5a4e-1111-4c2d-9e3f-aaaaaaaaaaaa";

async fn send(
    sluice: &Sluice,
    mock: &str,
    credential: Option<(&str, &str)>,
    session: Option<&str>,
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
> {
    let mut request = client()
        .post(sluice.url("/anthropic/v1/messages?beta=true"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("x-mock", mock));
    if let Some(header) = credential {
        request = request.insert_header(header);
    }
    if let Some(session) = session {
        request = request.insert_header(("x-claude-code-session-id", session));
    }
    request
        .send_body(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[]}"#)
        .await
        .unwrap()
}

fn assert_counters(group: &serde_json::Value, expected: [u64; 8], cost: f64) {
    let names = [
        "requests",
        "errors",
        "streamed",
        "incomplete",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ];
    for (name, want) in names.iter().zip(expected) {
        assert_eq!(group[name].as_u64(), Some(want), "{name} in {group}");
    }
    let got = group["cost_usd"].as_f64().unwrap();
    assert!(
        (got - cost).abs() < 1e-9,
        "cost_usd {got} != {cost} in {group}"
    );
}

// Costs per request, USD (prices per million tokens from settings/sluice.toml).
const COST_R1: f64 = (12.0 * 3.0 + 10.0 * 15.0) / 1e6; // sonnet, message.json
const COST_R2: f64 = (849.0 * 1.0 + 47.0 * 5.0 + 120.0 * 1.25 + 3000.0 * 0.1) / 1e6; // haiku stream
const COST_R4: f64 = (2210.0 * 3.0 + 95.0 * 15.0 + 18000.0 * 0.3) / 1e6; // sonnet tool use
const COST_R5: f64 = (849.0 * 1.0 + 10.0 * 5.0 + 120.0 * 1.25 + 3000.0 * 0.1) / 1e6; // cut-off stream

#[actix_rt::test]
async fn mixed_run_gives_exact_numbers_in_every_group() {
    let (mock, gate) = scripted_mock();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .server_key(SERVER_KEY)
        .start();

    // R1: non-streamed, OAuth, session 1.
    let mut r = send(
        &sluice,
        "message",
        Some(("authorization", OAUTH_HEADER)),
        Some(S1),
    )
    .await;
    r.body().await.unwrap();
    // R2: streamed text, API key, session 1.
    let mut r = send(
        &sluice,
        "stream-text",
        Some(("x-api-key", CLIENT_API_KEY)),
        Some(S1),
    )
    .await;
    r.body().await.unwrap();
    // R3: 429, OAuth, session 2.
    let mut r = send(
        &sluice,
        "429",
        Some(("authorization", OAUTH_HEADER)),
        Some(S2),
    )
    .await;
    assert_eq!(r.status(), 429);
    r.body().await.unwrap();
    // R4: streamed tool use on the server key, no session.
    let mut r = send(&sluice, "stream-tool-use", None, None).await;
    r.body().await.unwrap();
    // R5: a client that leaves after the first event, API key, session 2.
    let mut r = send(
        &sluice,
        "gated",
        Some(("x-api-key", CLIENT_API_KEY)),
        Some(S2),
    )
    .await;
    let first = r.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .contains("message_start"));
    drop(r);
    // No more events are released: sluice must notice the client leaving by itself.
    let _ = &gate;

    let stats = stats_after(&sluice, 5, None).await;
    let oauth = format!(
        "client_oauth:{}",
        fingerprint("sk-ant-oat01-test-client-oauth-0123456789")
    );
    let api_key = format!("client_api_key:{}", fingerprint(CLIENT_API_KEY));
    let server = format!("server_key:{}", fingerprint(SERVER_KEY));

    assert_counters(
        &stats["totals"],
        [
            5,
            1,
            3,
            1,
            12 + 849 + 2210 + 849,
            10 + 47 + 95 + 10,
            240,
            24_000,
        ],
        COST_R1 + COST_R2 + COST_R4 + COST_R5,
    );
    assert_counters(
        &stats["by_route"]["/anthropic"],
        [5, 1, 3, 1, 3920, 162, 240, 24_000],
        COST_R1 + COST_R2 + COST_R4 + COST_R5,
    );
    assert_counters(
        &stats["by_source"]["client_oauth"],
        [2, 1, 0, 0, 12, 10, 0, 0],
        COST_R1,
    );
    assert_counters(
        &stats["by_source"]["client_api_key"],
        [2, 0, 2, 1, 1698, 57, 240, 6000],
        COST_R2 + COST_R5,
    );
    assert_counters(
        &stats["by_source"]["server_key"],
        [1, 0, 1, 0, 2210, 95, 0, 18_000],
        COST_R4,
    );
    assert_eq!(stats["by_source"].as_object().unwrap().len(), 3);
    assert_counters(
        &stats["by_credential"][&oauth],
        [2, 1, 0, 0, 12, 10, 0, 0],
        COST_R1,
    );
    assert_counters(
        &stats["by_credential"][&api_key],
        [2, 0, 2, 1, 1698, 57, 240, 6000],
        COST_R2 + COST_R5,
    );
    assert_counters(
        &stats["by_credential"][&server],
        [1, 0, 1, 0, 2210, 95, 0, 18_000],
        COST_R4,
    );
    assert_counters(
        &stats["by_session"][S1],
        [2, 0, 1, 0, 861, 57, 120, 3000],
        COST_R1 + COST_R2,
    );
    assert_counters(
        &stats["by_session"][S2],
        [2, 1, 1, 1, 849, 10, 120, 3000],
        COST_R5,
    );
    assert_eq!(stats["by_session"].as_object().unwrap().len(), 2);
    assert_counters(
        &stats["by_model"]["claude-sonnet-4-5-20250929"],
        [2, 0, 1, 0, 2222, 105, 0, 18_000],
        COST_R1 + COST_R4,
    );
    assert_counters(
        &stats["by_model"]["claude-haiku-4-5-20251001"],
        [2, 0, 2, 1, 1698, 57, 240, 6000],
        COST_R2 + COST_R5,
    );
    // The 429 carries no model: the request's model is counted.
    assert_counters(
        &stats["by_model"]["claude-sonnet-4-5"],
        [1, 1, 0, 0, 0, 0, 0, 0],
        0.0,
    );
    assert_eq!(stats["by_status"]["200"], 4);
    assert_eq!(stats["by_status"]["429"], 1);
    assert_eq!(stats["by_caller"], serde_json::json!({}));
    let limits = &stats["rate_limits"][&oauth];
    assert_eq!(
        limits["headers"]["anthropic-ratelimit-unified-5h-utilization"],
        "1.01"
    );
    assert_eq!(limits["headers"]["retry-after"], "7835");
    assert_eq!(limits["status"], "rejected");
    assert_eq!(
        limits["windows"]["5h"],
        serde_json::json!({"utilization": 1.01, "resets_at": "2026-11-27T06:13:20Z", "status": "rejected"})
    );
    assert_eq!(limits["windows"]["7d"]["utilization"], 0.63);
    assert!(limits["seen_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(stats["latency_ms"]["total"]["count"], 5);
    assert_eq!(stats["latency_ms"]["ttfb"]["count"], 5);
    assert!(stats["latency_ms"]["overhead"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["settings"]["generation"], 1);
    assert_eq!(stats["dropped_records"], 0);
    sluice.wait_for_log("outcome=client_gone", Duration::from_secs(2));
}

#[actix_rt::test]
async fn callers_are_counted_by_access_key_name() {
    let (mock, _) = scripted_mock();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[access]")
        .access_key("alice", ACCESS_KEY)
        .access_key("bob", "sluice-test-access-key-bob-0000")
        .server_key(SERVER_KEY)
        .start();
    send(&sluice, "message", Some(("x-sluice-key", ACCESS_KEY)), None)
        .await
        .body()
        .await
        .unwrap();
    send(
        &sluice,
        "message",
        Some(("authorization", "Bearer sluice-test-access-key-bob-0000")),
        None,
    )
    .await
    .body()
    .await
    .unwrap();
    send(&sluice, "message", Some(("x-sluice-key", "nobody")), None)
        .await
        .body()
        .await
        .unwrap();
    let stats = stats_after(&sluice, 3, None).await;
    assert_eq!(stats["by_caller"]["alice"]["requests"], 1);
    assert_eq!(stats["by_caller"]["bob"]["requests"], 1);
    assert_eq!(stats["by_status"]["401"], 1);
    assert_eq!(stats["totals"]["errors"], 1);
}

#[actix_rt::test]
async fn since_windows_count_only_later_requests() {
    let (mock, _) = scripted_mock();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    for _ in 0..3 {
        send(&sluice, "message", None, None)
            .await
            .body()
            .await
            .unwrap();
    }
    stats_after(&sluice, 3, None).await;
    let before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let after = time::OffsetDateTime::now_utc() + time::Duration::minutes(2);
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(
        stats(&sluice, "?since=30m", None).await["totals"]["requests"],
        3
    );
    assert_eq!(
        stats(&sluice, &format!("?since={}", rfc(before)), None).await["totals"]["requests"],
        3
    );
    let later = stats(&sluice, &format!("?since={}", rfc(after)), None).await;
    assert_eq!(later["totals"]["requests"], 0);
    assert_eq!(later["by_model"], serde_json::json!({}));
    let response = client()
        .get(sluice.url("/stats?since=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers().get("x-sluice-error").unwrap(),
        "bad_since"
    );
}

#[actix_rt::test]
async fn admin_token_protects_stats_and_metrics_and_secrets_never_show() {
    let (mock, _) = scripted_mock();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .start();
    send(&sluice, "429", Some(("x-sluice-key", ACCESS_KEY)), Some(S1))
        .await
        .body()
        .await
        .unwrap();
    send(
        &sluice,
        "stream-text",
        Some(("x-sluice-key", ACCESS_KEY)),
        None,
    )
    .await
    .body()
    .await
    .unwrap();
    let mut r = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("x-sluice-key", ACCESS_KEY))
        .insert_header(("authorization", OAUTH_HEADER))
        .send_body("{}")
        .await
        .unwrap();
    r.body().await.unwrap();

    for path in ["/stats", "/metrics"] {
        let response = client().get(sluice.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(
            response.headers().get("x-sluice-error").unwrap(),
            "admin_token"
        );
        let response = client()
            .get(sluice.url(path))
            .insert_header(("authorization", "Bearer wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        // An access key is not an admin token.
        let response = client()
            .get(sluice.url(path))
            .insert_header(("authorization", format!("Bearer {ACCESS_KEY}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let stats = stats_after(&sluice, 3, Some(ADMIN_TOKEN)).await;
    assert_eq!(stats["totals"]["requests"], 3);
    let mut metrics = client()
        .get(sluice.url("/metrics"))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = String::from_utf8(metrics.body().await.unwrap().to_vec()).unwrap();
    assert!(metrics.contains("sluice_requests_total{"), "{metrics}");
    assert!(metrics.contains("sluice_output_tokens_total{"), "{metrics}");
    assert!(metrics.contains("sluice_ttfb_seconds_bucket{"), "{metrics}");
    // The one per-credential series is the subscription utilisation (a fingerprint, at most
    // 100 series); nothing else is labelled by session or key.
    assert!(
        metrics
            .lines()
            .filter(|line| !line.starts_with("sluice_subscription_utilization")
                && !line.starts_with('#'))
            .all(|line| !line.contains("session") && !line.contains("credential")),
        "no per-session or per-key labels"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let everything = format!("{stats}\n{metrics}\n{}", sluice.logs());
    for secret in [
        SERVER_KEY,
        ACCESS_KEY,
        ADMIN_TOKEN,
        "sk-ant-oat01-test-client-oauth-0123456789",
    ] {
        assert!(!everything.contains(secret), "secret {secret} leaked");
    }
    assert!(
        stats["by_credential"].as_object().unwrap().keys().all(|k| {
            let (source, fp) = k.split_once(':').unwrap();
            ["client_oauth", "server_key"].contains(&source)
                && fp.len() == 12
                && fp.chars().all(|c| c.is_ascii_hexdigit())
        }),
        "{}",
        stats["by_credential"]
    );
    let usage_line = sluice
        .logs()
        .lines()
        .find(|l| l.contains("sluice::usage") && l.contains("status=429"))
        .unwrap()
        .to_string();
    for field in [
        "route=/anthropic",
        "model=claude-sonnet-4-5",
        "source=server_key",
        "caller=alice",
        &format!("session={S1}"),
        "outcome=completed",
    ] {
        assert!(
            usage_line.contains(field),
            "{field} missing from {usage_line}"
        );
    }
}

#[actix_rt::test]
async fn counters_survive_sigterm_and_restart() {
    let (mock, _) = scripted_mock();
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state/sluice.db");
    let builder = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(&format!("[store]\npath = \"{}\"", db.display()));
    let mut first = builder.clone().start();
    for _ in 0..3 {
        send(
            &first,
            "stream-text",
            Some(("x-api-key", CLIENT_API_KEY)),
            Some(S1),
        )
        .await
        .body()
        .await
        .unwrap();
    }
    let before = stats_after(&first, 3, None).await;
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(db.exists());

    let second = builder.start();
    let after = stats(&second, "", None).await;
    for group in [
        "totals",
        "by_model",
        "by_source",
        "by_credential",
        "by_session",
        "by_status",
    ] {
        assert_eq!(after[group], before[group], "{group} after restart");
    }
    assert_eq!(after["counting_since"], before["counting_since"]);
    assert_ne!(after["started_at"], serde_json::Value::Null);
    // Windows keep working across the restart.
    assert_eq!(
        stats(&second, "?since=1h", None).await["totals"]["requests"],
        3
    );
}

#[actix_rt::test]
async fn rate_limit_state_survives_a_restart_and_the_rest_is_marked_since_start() {
    let (mock, _) = scripted_mock();
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("sluice.db");
    let builder = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(&format!("[store]\npath = \"{}\"", db.display()));
    let oauth = format!("client_oauth:{}", fingerprint(CLIENT_OAUTH));
    let bearer = format!("Bearer {CLIENT_OAUTH}");
    let mut first = builder.clone().start();
    send(&first, "429", Some(("authorization", &bearer)), None)
        .await
        .body()
        .await
        .unwrap();
    let before = stats_after(&first, 1, None).await;
    assert_eq!(
        before["rate_limits"][&oauth]["status"], "rejected",
        "{before}"
    );
    assert_eq!(before["latency_ms"]["total"]["count"], 1);
    let since_start = serde_json::json!(["latency_ms", "unpriced_models"]);
    assert_eq!(before["since_start"], since_start);
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0));

    let second = builder.start();
    let after = stats(&second, "", None).await;
    assert_eq!(after["rate_limits"], before["rate_limits"], "{after}");
    assert_eq!(after["totals"], before["totals"]);
    // Latency is this process's own: it starts afresh, and says so.
    assert_eq!(after["latency_ms"]["total"]["count"], 0);
    assert_eq!(after["since_start"], since_start);
}

#[actix_rt::test]
async fn a_state_file_is_imported_into_the_store_once_and_renamed() {
    let (mock, _) = scripted_mock();
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("stats.json");
    let db = state.path().join("sluice.db");
    // Two requests an hour ago, as the state file of an earlier version kept them.
    let minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60)
        - 60;
    let counters = serde_json::json!({"requests": 2, "input_tokens": 30, "cost_usd": 0.5});
    let groups = serde_json::json!({
        "totals": counters,
        "by_model": {"claude-sonnet-4-5": counters},
        "by_status": {"200": 2},
    });
    let file = serde_json::json!({
        "version": 1,
        "book": {"counting_since": "2026-01-01T00:00:00Z", "lifetime": groups,
                 "minutes": {minute.to_string(): groups}},
    });
    std::fs::write(&state_file, file.to_string()).unwrap();
    let builder = sluice()
        .route("/anthropic", &mock.url(), &[])
        .state_file(&state_file)
        .toml(&format!("[store]\npath = \"{}\"", db.display()));
    let first = builder.clone().start();
    let stats_now = stats(&first, "", None).await;
    assert_eq!(stats_now["totals"]["requests"], 2, "{stats_now}");
    assert_eq!(stats_now["totals"]["input_tokens"], 30);
    assert_eq!(stats_now["by_model"]["claude-sonnet-4-5"]["requests"], 2);
    assert!(!state_file.exists());
    assert!(state.path().join("stats.json.imported").exists());
    drop(first);
    // Started again, nothing more is imported and the file is never written again.
    let second = builder.start();
    assert_eq!(stats(&second, "", None).await["totals"]["requests"], 2);
    assert!(!state_file.exists());
}

#[actix_rt::test]
async fn an_unreadable_state_file_is_left_as_it_is_and_sluice_starts() {
    let (mock, _) = scripted_mock();
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("stats.json");
    std::fs::write(&state_file, b"{\"version\":1,\"book\":{\"lifetime\":tru").unwrap();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .state_file(&state_file)
        .start();
    sluice.wait_for_log("left as it is", Duration::from_secs(2));
    assert_eq!(
        std::fs::read(&state_file).unwrap(),
        b"{\"version\":1,\"book\":{\"lifetime\":tru"
    );
    assert_eq!(stats(&sluice, "", None).await["totals"]["requests"], 0);
    send(&sluice, "message", None, None)
        .await
        .body()
        .await
        .unwrap();
    stats_after(&sluice, 1, None).await;
}

#[actix_rt::test]
async fn slow_aggregator_never_delays_requests_and_drops_are_counted() {
    let (mock, _) = scripted_mock();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .env("SLUICE_TEST_AGGREGATOR_DELAY_MS", "300")
        .env("SLUICE_TEST_RECORD_QUEUE_CAPACITY", "2")
        .start();
    let n = 12;
    let start = std::time::Instant::now();
    for _ in 0..n {
        send(&sluice, "message", None, None)
            .await
            .body()
            .await
            .unwrap();
    }
    let elapsed = start.elapsed();
    // Aggregating these takes 12 × 300 ms = 3.6 s; the requests themselves must not wait for it.
    assert!(
        elapsed < Duration::from_millis(1800),
        "{n} requests took {elapsed:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body = stats(&sluice, "", None).await;
        let counted = body["totals"]["requests"].as_u64().unwrap();
        let dropped = body["dropped_records"].as_u64().unwrap();
        if counted + dropped == n {
            assert!(
                dropped > 0,
                "a queue of 2 with a 300 ms aggregator must have dropped some"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counted {counted} + dropped {dropped} != {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn answers_without_a_body_count_as_complete() {
    let mock = MockUpstream::start();
    mock.always(Reply::Full(
        200,
        vec![("content-type".into(), "application/json".into())],
        bytes::Bytes::new(),
    ));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .server_key(SERVER_KEY)
        .start();
    // Claude Code's start-up probe: HEAD with no credential.
    let probe = client()
        .head(sluice.url("/anthropic"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    assert!(
        mock.last().header("x-api-key").is_none(),
        "a probe never carries the server key"
    );
    let mut empty = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(empty.body().await.unwrap().len(), 0);
    let stats = stats_after(&sluice, 2, None).await;
    assert_eq!(stats["totals"]["incomplete"], 0, "{stats}");
    assert_eq!(stats["by_source"]["none"]["requests"], 1);
    assert_eq!(stats["by_source"]["server_key"]["requests"], 1);
}

#[actix_rt::test]
async fn stream_carrying_an_error_event_counts_as_an_error_with_the_tokens_before_it() {
    let (mock, _) = scripted_mock();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let mut response = send(&sluice, "stream-error-midway", None, None).await;
    assert_eq!(response.status(), 200);
    response.body().await.unwrap();
    let stats = stats_after(&sluice, 1, None).await;
    let totals = &stats["totals"];
    assert_eq!(totals["errors"], 1);
    assert_eq!(totals["incomplete"], 0);
    assert_eq!(totals["input_tokens"], 500);
    assert_eq!(totals["output_tokens"], 1);
    assert_eq!(stats["by_status"]["200"], 1);
    sluice.wait_for_log("upstream_error_event", Duration::from_secs(5));
}

#[actix_rt::test]
async fn web_searches_are_counted_and_priced() {
    let (mock, _) = scripted_mock();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    send(&sluice, "stream-web-search", None, None)
        .await
        .body()
        .await
        .unwrap();
    let stats = stats_after(&sluice, 1, None).await;
    let sonnet = &stats["by_model"]["claude-sonnet-4-6"];
    assert_eq!(sonnet["web_search_requests"], 2);
    assert_eq!(stats["totals"]["web_search_requests"], 2);
    // Sonnet 4.6: 10,682 × 3 / 1M + 510 × 15 / 1M + 2 searches × $10 / 1,000
    let cost = sonnet["cost_usd"].as_f64().unwrap();
    assert!((cost - (0.032046 + 0.00765 + 0.02)).abs() < 1e-9, "{cost}");
    let metrics = client()
        .get(sluice.url("/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("sluice_web_search_requests_total{")
                && line.contains("model=\"claude-sonnet-4-6\"")
                && line.ends_with(" 2")),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn subscription_utilization_is_a_metric_per_credential_fingerprint_and_window() {
    let (mock, _) = scripted_mock();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    send(&sluice, "429", Some(("authorization", OAUTH_HEADER)), None)
        .await
        .body()
        .await
        .unwrap();
    stats_after(&sluice, 1, None).await;
    let metrics = client()
        .get(sluice.url("/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    let fingerprint = fingerprint(OAUTH_HEADER.trim_start_matches("Bearer "));
    for (window, value) in [("5h", "1.01"), ("7d", "0.63")] {
        let series = format!(
            "sluice_subscription_utilization{{credential=\"{fingerprint}\",window=\"{window}\"}} {value}"
        );
        assert!(
            metrics.lines().any(|line| line == series),
            "{series} in\n{metrics}"
        );
    }
    assert!(!metrics.contains("sk-ant-oat"));
}

async fn send_attributed(sluice: &Sluice, headers: &[(&str, &str)]) {
    let mut request = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("content-type", "application/json"));
    for header in headers {
        request = request.insert_header(*header);
    }
    request
        .send_body(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[]}"#)
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
}

#[actix_rt::test]
async fn subagents_and_projects_are_counted_and_sluice_headers_stay_here() {
    let (mock, _) = scripted_mock();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    send_attributed(
        &sluice,
        &[
            ("x-claude-code-agent-id", "agent-explore-1"),
            ("x-claude-code-parent-agent-id", "agent-main"),
            ("x-sluice-project", "billing-api"),
        ],
    )
    .await;
    send_attributed(&sluice, &[("x-sluice-project", "billing-api")]).await;
    send_attributed(&sluice, &[]).await;
    let stats = stats_after(&sluice, 3, None).await;
    assert_eq!(stats["by_agent"]["agent-explore-1"]["requests"], 1);
    assert_eq!(stats["by_agent"].as_object().unwrap().len(), 1);
    assert_eq!(stats["by_project"]["billing-api"]["requests"], 2);
    assert_eq!(stats["by_project"]["billing-api"]["input_tokens"], 24);
    for received in mock.received() {
        assert_eq!(received.header("x-sluice-project"), None);
    }
    assert_eq!(
        mock.received()[0]
            .header("x-claude-code-agent-id")
            .as_deref(),
        Some("agent-explore-1")
    );
}

#[actix_rt::test]
async fn project_header_is_a_setting() {
    let (mock, _) = scripted_mock();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[attribution]\nproject_header = \"x-team-project\"")
        .start();
    send_attributed(
        &sluice,
        &[
            ("x-team-project", "search"),
            ("x-sluice-project", "ignored"),
        ],
    )
    .await;
    let stats = stats_after(&sluice, 1, None).await;
    assert_eq!(stats["by_project"]["search"]["requests"], 1);
    assert_eq!(stats["by_project"].as_object().unwrap().len(), 1);
    // Not in sluice's namespace, so it goes upstream like any other header.
    assert_eq!(
        mock.last().header("x-team-project").as_deref(),
        Some("search")
    );
}

#[actix_rt::test]
async fn batch_results_fetched_through_sluice_are_counted_at_batch_prices() {
    let mock = MockUpstream::start();
    let results = fixture("batch-results.jsonl");
    mock.reply(move |req| {
        if req.target.ends_with("/msgbatch_gone/results") {
            return Reply::json(
                404,
                r#"{"type":"error","error":{"type":"not_found_error","message":"no such batch"}}"#,
            );
        }
        // Sent in uneven chunks, as a download arrives.
        let chunks = results
            .as_bytes()
            .chunks(97)
            .map(|chunk| (Duration::ZERO, bytes::Bytes::copy_from_slice(chunk)))
            .collect();
        let binary = vec![("content-type".to_string(), "application/binary".to_string())];
        Reply::Chunks(200, binary, chunks)
    });
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    for batch in ["msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "msgbatch_gone"] {
        let mut response = client()
            .get(sluice.url(&format!("/anthropic/v1/messages/batches/{batch}/results")))
            .insert_header(("x-api-key", "sk-ant-api03-test-batch-client"))
            .send()
            .await
            .unwrap();
        let body = response.body().limit(1 << 20).await.unwrap();
        if batch == "msgbatch_gone" {
            assert_eq!(response.status(), 404);
        } else {
            assert_eq!(body, fixture("batch-results.jsonl").as_bytes());
        }
    }
    let stats = stats_after(&sluice, 2, None).await;
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], 2);
    assert_eq!(totals["errors"], 1);
    assert_eq!(totals["input_tokens"], 11 + 10 + 250_000 + 100);
    assert_eq!(totals["output_tokens"], 36 + 34 + 2_000 + 20);
    // Each succeeded line priced on its own, at half price (worked out in the reader's tests):
    // (573 + 540 + 1,545,000 + 200) µ$ / 2.
    let cost = totals["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.7731565).abs() < 1e-9, "{cost}");
    assert_eq!(
        stats["by_model"]["claude-sonnet-4-5-20250929"]["requests"],
        1
    );
}

/// A finished OpenAI Batch object (openai-python `types/batch.py`): its `usage` sums the
/// requests its output file holds.
const OPENAI_BATCH: &str = r#"{"id":"batch_abc123","object":"batch","endpoint":"/v1/responses","model":"gpt-5-2025-08-07","errors":null,"input_file_id":"file-in123","completion_window":"24h","status":"completed","output_file_id":"file-xyz123","error_file_id":"file-err123","created_at":1765051000,"in_progress_at":1765051010,"expires_at":1765137400,"finalizing_at":1765051190,"completed_at":1765051200,"request_counts":{"total":5,"completed":3,"failed":2},"usage":{"input_tokens":1713,"input_tokens_details":{"cached_tokens":1024},"output_tokens":1300,"output_tokens_details":{"reasoning_tokens":832},"total_tokens":3013},"metadata":null}"#;

#[actix_rt::test]
async fn gemini_and_openai_batch_outputs_fetched_through_sluice_are_counted_at_batch_prices() {
    let mock = MockUpstream::start();
    mock.reply(move |req| {
        let (dir, name) = if req.target.contains("/files/batch-1:download") {
            ("gemini", "batch-responses.jsonl")
        } else if req.target.ends_with("/batches/inlined-1") {
            ("gemini", "batch-inlined-responses.json")
        } else if req.target.ends_with("/files/file-xyz123/content") {
            ("openai", "batch-output.jsonl")
        } else if req.target.ends_with("/batches/batch_abc123") {
            // The Batch object sums its requests' usage, which the output file counts.
            return Reply::json(200, OPENAI_BATCH);
        } else {
            return Reply::json(404, r#"{"error":{"code":404,"status":"NOT_FOUND"}}"#);
        };
        // Sent in uneven chunks, as a download arrives.
        let chunks = protocol_fixture(dir, name)
            .as_bytes()
            .chunks(97)
            .map(|chunk| (Duration::ZERO, bytes::Bytes::copy_from_slice(chunk)))
            .collect();
        let binary = vec![(
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        )];
        Reply::Chunks(200, binary, chunks)
    });
    let sluice = sluice()
        .route("/gemini", &mock.url(), &["protocol = \"gemini\""])
        .route("/openai/v1", &mock.url(), &["protocol = \"openai\""])
        .start();
    let fetches = [
        (
            "/gemini/download/v1beta/files/batch-1:download?alt=media",
            "gemini",
            "batch-responses.jsonl",
        ),
        (
            "/gemini/v1beta/batches/inlined-1",
            "gemini",
            "batch-inlined-responses.json",
        ),
        (
            "/openai/v1/files/file-xyz123/content",
            "openai",
            "batch-output.jsonl",
        ),
    ];
    for (path, dir, name) in fetches {
        let mut response = client()
            .get(sluice.url(path))
            .insert_header(("x-goog-api-key", "AIza-test-batch-client"))
            .insert_header(("authorization", "Bearer sk-test-batch-client"))
            .send()
            .await
            .unwrap();
        let body = response.body().limit(1 << 20).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(body, protocol_fixture(dir, name).as_bytes(), "{path}");
    }
    // Polling the batch gets its summed usage again: not counted.
    let mut polled = client()
        .get(sluice.url("/openai/v1/batches/batch_abc123"))
        .insert_header(("authorization", "Bearer sk-test-batch-client"))
        .send()
        .await
        .unwrap();
    assert_eq!(polled.body().await.unwrap(), OPENAI_BATCH.as_bytes());
    let stats = stats_after(&sluice, 4, None).await;
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], 4);
    assert_eq!(totals["errors"], 0);
    // The reader's tests work each file out by hand: Gemini's responses file 4,020 in (8,000
    // cached) / 2,987 out, its inlined responses 2,000 / 800, OpenAI's output 689 (1,024
    // cached) / 1,300.
    assert_eq!(totals["input_tokens"], 4_020 + 2_000 + 689);
    assert_eq!(totals["cache_read_input_tokens"], 8_000 + 1_024);
    assert_eq!(totals["output_tokens"], 2_987 + 800 + 1_300);
    // Each line at half its model's price: 0.01123675 + 0.00026 + 0.00564743 USD.
    let cost = totals["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.01714418).abs() < 1e-9, "{cost}");
    assert_eq!(stats["by_provider"]["gemini"]["requests"], 2, "{stats}");
    assert_eq!(
        stats["by_model"]["gemini-2.5-flash"]["requests"], 1,
        "{stats}"
    );
    assert_eq!(
        stats["by_model"]["gemini-2.5-flash-lite"]["requests"], 1,
        "{stats}"
    );
    assert_eq!(
        stats["by_model"]["gpt-5-mini-2025-08-07"]["requests"], 1,
        "{stats}"
    );
}

/// A `model` holding a line break, ESC or NUL — from the client's request or from the upstream's
/// answer — stays inside its own log line, escaped.
#[actix_rt::test]
async fn control_characters_in_logged_values_cannot_forge_log_lines() {
    let forged = r#"x\nINFO sluice::usage: FORGED\u001b[2J\u0000\r\u2028"#;
    let mock = MockUpstream::start();
    let answer_forged = format!(
        r#"{{"id":"m","type":"message","role":"assistant","model":"{forged}","content":[],"usage":{{"input_tokens":1,"output_tokens":1}}}}"#
    );
    mock.reply(move |req| match req.header("x-mock").as_deref() {
        // No model in the answer: the client's one is logged.
        Some("no-model") => Reply::json(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"no"}}"#,
        ),
        _ => Reply::json(200, &answer_forged),
    });
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    for mock_kind in ["no-model", "forged-answer"] {
        client()
            .post(sluice.url("/anthropic/v1/messages"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("x-mock", mock_kind))
            .send_body(format!(
                r#"{{"model":"{forged}","max_tokens":1,"messages":[]}}"#
            ))
            .await
            .unwrap();
    }
    stats_after(&sluice, 2, None).await;
    sluice.wait_for_log("status=200", Duration::from_secs(5));
    let logs = sluice.logs();
    let usage_lines: Vec<&str> = logs.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(usage_lines.len(), 2, "{logs}");
    for line in usage_lines {
        assert!(
            line.contains("sluice::usage") && line.contains("request finished"),
            "a forged line: {line:?}\n{logs}"
        );
    }
    assert!(
        !logs.contains(['\u{1b}', '\0', '\r', '\u{2028}']),
        "raw control characters in the log: {logs:?}"
    );
}

/// Times in the usage log are whole microseconds (at most 3 decimals of ms) and costs at most
/// 9 decimals of a dollar: no binary floating-point noise like `2.6130060000000004`.
#[actix_rt::test]
async fn usage_log_figures_carry_no_float_noise() {
    let (mock, _) = scripted_mock();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    for _ in 0..5 {
        send(&sluice, "json", None, None)
            .await
            .body()
            .await
            .unwrap();
    }
    stats_after(&sluice, 5, None).await;
    sluice.wait_for_log("request finished", Duration::from_secs(5));
    let logs = sluice.logs();
    let mut checked = 0;
    for line in logs.lines().filter(|l| l.contains("request finished")) {
        for (field, decimals) in [
            ("ttfb_ms=", 3),
            ("total_ms=", 3),
            ("overhead_ms=", 3),
            ("cost_usd=", 9),
        ] {
            let value = line
                .split(field)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("{field} missing: {line}"));
            let fraction = value.split_once('.').map_or("", |(_, f)| f);
            assert!(
                fraction.len() <= decimals,
                "{field}{value} has float noise: {line}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 20, "{logs}");
}

/// An event stream whose events are released one by one, with the text in `deltas` and the
/// final usage (`output_tokens`) in its `message_delta`.
fn gated_text_stream(gate: &Gate, deltas: &[&str], output_tokens: u64) -> Reply {
    let mut events = vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":15,\"output_tokens\":1}}}\n\n".to_string(),
    ];
    for text in deltas {
        events.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
        ));
    }
    events.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into(),
    );
    events.push(format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{output_tokens}}}}}\n\n"
    ));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    Reply::GatedEvents(events, gate.clone())
}

/// Reads an answer until `needle` has arrived, then hangs up.
async fn read_until_then_leave(
    sluice: &Sluice,
    gate: &Gate,
    needle: &str,
    headers: &[(&str, &str)],
) {
    let mut request = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("content-type", "application/json"));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request
        .send_body(r#"{"model":"claude-sonnet-4-5","max_tokens":600,"stream":true}"#)
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains(needle) {
        gate.release();
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.next())
            .await
            .expect("the stream stalled")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(response);
}

const TEXT_BYTES_PER_TOKEN: u64 = 4;

#[actix_rt::test]
async fn client_leaving_before_message_delta_is_charged_the_full_output() {
    let mock = MockUpstream::start();
    let gate = Gate::new();
    let gated = gate.clone();
    mock.reply(move |_| gated_text_stream(&gated, &["Hello", " there", " friend"], 500));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .toml("[[quotas]]\nname = \"tokens\"\ncaller = \"*\"\nwindow = \"day\"\nmax_tokens = 100000\n")
        .start();
    read_until_then_leave(&sluice, &gate, " friend", &[("x-sluice-key", ACCESS_KEY)]).await;
    // The client has gone; the upstream sends the rest of the answer right after.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        gate.release();
    }
    let stats = stats_after(&sluice, 1, Some(ADMIN_TOKEN)).await;
    assert_eq!(stats["totals"]["output_tokens"], 500, "{}", stats["totals"]);
    assert_eq!(stats["totals"]["input_tokens"], 15);
    assert_eq!(
        stats["totals"]["incomplete"], 1,
        "the client still left early"
    );
    let alice = &stats["quotas"][0]["subjects"][0];
    assert_eq!(alice["used"]["tokens"], 515, "{alice}");
    sluice.wait_for_log("outcome=client_gone", Duration::from_secs(2));
    sluice.wait_for_log("estimated=false", Duration::from_secs(2));
}

#[actix_rt::test]
async fn client_leaving_when_the_usage_never_comes_is_charged_an_estimate_of_the_text() {
    let mock = MockUpstream::start();
    let gate = Gate::new();
    let gated = gate.clone();
    let text: &'static str = "x".repeat(400).leak();
    mock.reply(move |_| gated_text_stream(&gated, &[text, text], 999));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .toml("[[quotas]]\nname = \"tokens\"\ncaller = \"*\"\nwindow = \"day\"\nmax_tokens = 100000\n")
        .start();
    // The upstream never sends more: the usage does not come within the grace.
    read_until_then_leave(
        &sluice,
        &gate,
        "\"text\":\"xxxx",
        &[("x-sluice-key", ACCESS_KEY)],
    )
    .await;
    let stats = stats_after(&sluice, 1, Some(ADMIN_TOKEN)).await;
    let sent = gate.sent() as u64;
    // message_start, then each delta released carries 400 bytes of text.
    let text_bytes = (sent - 1) * 400;
    assert!(text_bytes >= 400);
    let estimate = text_bytes / TEXT_BYTES_PER_TOKEN;
    assert_eq!(
        stats["totals"]["output_tokens"], estimate,
        "{}",
        stats["totals"]
    );
    assert_eq!(
        stats["quotas"][0]["subjects"][0]["used"]["tokens"],
        15 + estimate
    );
    sluice.wait_for_log("estimated=true", Duration::from_secs(2));
}
