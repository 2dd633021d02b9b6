//! Quotas end to end: the real binary refuses before anything goes upstream, exactly at the
//! limit, with Anthropic's error shape, and shows what it counted in `/stats` and `/metrics`.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::*;

/// Prices that make the fixture answer (12 input and 10 output tokens) cost a round amount.
const PRICE_PER_MILLION: f64 = 1000.0;
const FIXTURE_TOKENS: u64 = 12 + 10;

fn priced() -> String {
    format!(
        "[pricing.\"claude-sonnet-4-5\"]\ninput = {PRICE_PER_MILLION}\noutput = {PRICE_PER_MILLION}\n\
         cache_write = 0\ncache_read = 0\n"
    )
}

async fn post(
    sluice: &Sluice,
    headers: &[(&str, &str)],
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
> {
    let mut request = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("content-type", "application/json"));
    for header in headers {
        request = request.insert_header(*header);
    }
    request
        .send_body(r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#)
        .await
        .unwrap()
}

const ALICE: (&str, &str) = ("x-sluice-key", ACCESS_KEY);

#[actix_rt::test]
async fn the_request_reaching_a_spend_limit_is_admitted_and_the_next_refused() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let limit = 0.10;
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .toml(&priced())
        .toml(&format!(
            "[[quotas]]\nname = \"daily\"\ncaller = \"*\"\nwindow = \"day\"\nmax_usd = {limit}\n"
        ))
        .start();
    let cost = FIXTURE_TOKENS as f64 * PRICE_PER_MILLION / 1e6;
    let mut admitted = 0;
    let refused = loop {
        let mut response = post(&sluice, &[ALICE]).await;
        let body = response.body().await.unwrap();
        if response.status() == 429 {
            break (response, body);
        }
        assert_eq!(response.status(), 200);
        admitted += 1;
        assert!(admitted < 100, "never refused");
    };
    // Every request under the limit went through, the one that reached it too, no more.
    assert_eq!(admitted, (limit / cost).ceil() as usize);
    assert_eq!(
        mock.received().len(),
        admitted,
        "the refused one never went upstream"
    );
    let (response, body) = refused;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(header("x-sluice-error"), "quota_exceeded");
    assert_eq!(header("x-sluice-quota"), "daily");
    let retry_after: u64 = header("retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().unwrap();
    let spent = admitted as f64 * cost;
    assert!(
        message.starts_with(&format!(
            "sluice: quota daily reached for alice: ${spent:.2} of ${limit:.2} this day; resets at "
        )),
        "{message}"
    );
    assert!(message.ends_with("T00:00:00Z"), "{message}");

    let stats = stats(&sluice, "", Some(ADMIN_TOKEN)).await;
    let quota = &stats["quotas"][0];
    assert_eq!(quota["name"], "daily");
    assert_eq!(quota["refused"], 1);
    let alice = &quota["subjects"][0];
    assert_eq!(alice["subject"], "alice");
    assert_eq!(alice["used"]["requests"], admitted as u64);
    assert_eq!(alice["used"]["tokens"], admitted as u64 * FIXTURE_TOKENS);
    assert_eq!(alice["used"]["in_flight"], 0);
    assert_eq!(alice["remaining"]["usd"], 0.0);

    let metrics = metrics_text(&sluice).await;
    assert!(
        metrics.contains("sluice_quota_refused_total{quota=\"daily\"} 1"),
        "{metrics}"
    );
    sluice.wait_for_log("quota daily reached for alice", Duration::from_secs(5));
}

#[actix_rt::test]
async fn max_concurrent_admits_exactly_two_of_ten_parallel_streams() {
    let mock = MockUpstream::start();
    let gate = Gate::new();
    let events: Vec<String> = fixture("stream-text.sse")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect();
    let gated = gate.clone();
    mock.reply(move |_| Reply::GatedEvents(events.clone(), gated.clone()));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[[quotas]]\nname = \"two-at-a-time\"\nmax_concurrent = 2\n")
        .start();
    let responses = futures_util::future::join_all((0..10).map(|_| post(&sluice, &[]))).await;
    let (open, refused): (Vec<_>, Vec<_>) = responses.into_iter().partition(|r| r.status() == 200);
    assert_eq!(open.len(), 2);
    assert_eq!(refused.len(), 8);
    for response in &refused {
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        assert!(response.headers().get("x-should-retry").is_none());
    }
    assert_eq!(mock.received().len(), 2);
    // While the two streams are open, a third is refused; once they end, it is admitted.
    assert_eq!(post(&sluice, &[]).await.status(), 429);
    for _ in 0..20 {
        gate.release();
    }
    for mut response in open {
        while let Some(chunk) = response.next().await {
            chunk.unwrap();
        }
    }
    let mut third = post(&sluice, &[]).await;
    assert_eq!(third.status(), 200);
    drop(third.body());
}

#[actix_rt::test]
async fn a_client_that_leaves_mid_stream_frees_its_slot() {
    let mock = MockUpstream::start();
    let gate = Gate::new();
    let events: Vec<String> = fixture("stream-text.sse")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect();
    let gated = gate.clone();
    mock.reply(move |_| Reply::GatedEvents(events.clone(), gated.clone()));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[[quotas]]\nname = \"one\"\nmax_concurrent = 1\n")
        .start();
    let first = post(&sluice, &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(post(&sluice, &[]).await.status(), 429);
    drop(first);
    // The slot frees when sluice notices the client is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = post(&sluice, &[]).await;
        if response.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn shadow_mode_forwards_everything_and_counts_what_it_would_refuse() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(
            "[[quotas]]\nname = \"trial\"\nwindow = \"day\"\nmax_requests = 2\nmode = \"shadow\"\n",
        )
        .start();
    for _ in 0..5 {
        let mut response = post(&sluice, &[]).await;
        assert_eq!(response.status(), 200);
        response.body().await.unwrap();
    }
    assert_eq!(mock.received().len(), 5);
    let stats = stats(&sluice, "", None).await;
    let quota = &stats["quotas"][0];
    assert_eq!(quota["refused"], 0);
    assert_eq!(quota["would_refuse"], 3);
    assert_eq!(quota["subjects"][0]["subject"], "everyone");
    sluice.wait_for_log("quota trial reached for everyone", Duration::from_secs(5));
}

#[actix_rt::test]
async fn each_caller_and_each_project_has_an_allowance_of_its_own() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let bob_key = "sluice-test-access-key-bob-91c2";
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .access_key("bob", bob_key)
        .toml(
            "[[quotas]]\nname = \"per-person\"\ncaller = \"*\"\nwindow = \"day\"\nmax_requests = 2\n\
             [[quotas]]\nname = \"atlas\"\nproject = \"atlas\"\nwindow = \"day\"\nmax_requests = 1\n",
        )
        .start();
    let bob = ("x-sluice-key", bob_key);
    let atlas = ("x-sluice-project", "atlas");
    let statuses = [
        post(&sluice, &[ALICE, atlas]).await.status().as_u16(),
        post(&sluice, &[ALICE, atlas]).await.status().as_u16(),
        post(&sluice, &[ALICE]).await.status().as_u16(),
        post(&sluice, &[ALICE]).await.status().as_u16(),
        post(&sluice, &[bob]).await.status().as_u16(),
        post(&sluice, &[bob]).await.status().as_u16(),
        post(&sluice, &[bob]).await.status().as_u16(),
    ];
    // alice: atlas's one request, then refused by atlas; one more of her own, then refused by
    // her own allowance; bob has two of his own.
    assert_eq!(statuses, [200, 429, 200, 429, 200, 200, 429]);
}

#[actix_rt::test]
async fn reload_changes_limits_and_keeps_spend() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let quota = |max: u32| {
        format!("[[quotas]]\nname = \"daily\"\nwindow = \"day\"\nmax_requests = {max}\n")
    };
    let builder = sluice().route("/anthropic", &mock.url(), &[]);
    let sluice = builder.clone().toml(&quota(2)).start();
    for expected in [200, 200, 429] {
        let mut response = post(&sluice, &[]).await;
        assert_eq!(response.status(), expected);
        response.body().await.unwrap();
    }
    let path = sluice.dir.path().join("sluice.toml");
    std::fs::write(&path, builder.toml(&quota(3)).settings_text()).unwrap();
    sluice.signal("HUP");
    // The two requests so far still count: one more is allowed under the new limit.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while post(&sluice, &[]).await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new limit never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&sluice, &[]).await.status(), 429);
    assert_eq!(mock.received().len(), 3);
}

async fn metrics_text(sluice: &Sluice) -> String {
    let mut response = client()
        .get(sluice.url("/metrics"))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    String::from_utf8(response.body().limit(16 << 20).await.unwrap().to_vec()).unwrap()
}

#[actix_rt::test]
async fn a_quota_on_a_model_refuses_as_the_body_shows_the_model() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(
            "[[quotas]]\nname = \"all\"\nwindow = \"day\"\nmax_requests = 100\n\
             [[quotas]]\nname = \"opus\"\nmodel = \"claude-opus\"\nwindow = \"day\"\nmax_requests = 1\n",
        )
        .start();
    let send = |model: &'static str| {
        let sluice = &sluice;
        async move {
            // The model last, after a long conversation, as the Python SDK orders its fields.
            let body = format!(
                r#"{{"max_tokens":10,"messages":[{{"role":"user","content":"{}"}}],"model":"{model}"}}"#,
                "x".repeat(200_000)
            );
            let mut response = client()
                .post(sluice.url("/anthropic/v1/messages"))
                .insert_header(("content-type", "application/json"))
                .send_body(body)
                .await
                .unwrap();
            let body = response.body().await.unwrap();
            (response.status().as_u16(), body)
        }
    };
    assert_eq!(send("claude-opus-4-5").await.0, 200);
    let (status, body) = send("claude-opus-4-5").await;
    assert_eq!(status, 429);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sluice: quota opus reached for claude-opus: 1 of 1 requests this day"),
        "{body}"
    );
    assert_eq!(send("claude-sonnet-4-5").await.0, 200);
    // The refused request never reached the upstream whole (the mock keeps what it got of
    // it), and does not count under "all".
    let received = mock.received();
    assert_eq!(received.len(), 3);
    let whole = received[0].body.len();
    assert!(
        received[1].body.len() < whole,
        "{} of {whole} bytes",
        received[1].body.len()
    );
    assert_eq!(
        received[2].body.len(),
        whole - "opus-4-5".len() + "sonnet-4-5".len()
    );
    let stats = stats(&sluice, "", None).await;
    assert_eq!(stats["quotas"][0]["subjects"][0]["used"]["requests"], 2);
    assert_eq!(stats["quotas"][1]["refused"], 1);
}

#[actix_rt::test]
async fn a_quota_on_a_model_holds_whatever_type_or_encoding_the_body_declares() {
    use std::io::Write;
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[[quotas]]\nname = \"opus\"\nmodel = \"claude-opus\"\nwindow = \"day\"\nmax_requests = 1\n")
        .start();
    let json = r#"{"max_tokens":10,"messages":[{"role":"user","content":"hi"}],"model":"claude-opus-4-5"}"#;
    let send = |headers: &'static [(&'static str, &'static str)], body: Vec<u8>| {
        let sluice = &sluice;
        async move {
            let mut request = client().post(sluice.url("/anthropic/v1/messages"));
            for header in headers {
                request = request.insert_header(*header);
            }
            let mut response = request.send_body(body).await.unwrap();
            response.body().await.unwrap();
            response.status().as_u16()
        }
    };
    let ct_json: &[(&str, &str)] = &[("content-type", "application/json")];
    assert_eq!(send(ct_json, json.into()).await, 200);
    let with_bom = [b"\xef\xbb\xbf".as_slice(), json.as_bytes()].concat();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(json.as_bytes()).unwrap();
    let gzip = gzip.finish().unwrap();
    for (what, headers, body) in [
        (
            "text/plain",
            &[("content-type", "text/plain")][..],
            json.as_bytes().to_vec(),
        ),
        ("no content type", &[][..], json.as_bytes().to_vec()),
        ("a byte-order mark", ct_json, with_bom),
        (
            "gzip",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ][..],
            gzip,
        ),
    ] {
        assert_eq!(
            send(headers, body).await,
            429,
            "{what} passed the model quota"
        );
    }
}

#[actix_rt::test]
async fn spend_before_a_restart_still_counts() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let state = tempfile::tempdir().unwrap();
    let builder = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(&format!(
            "[[quotas]]\nname = \"daily\"\nwindow = \"day\"\nmax_requests = 3\n\
             [store]\npath = \"{}\"\n",
            state.path().join("sluice.db").display()
        ));
    let mut first = builder.clone().start();
    for _ in 0..2 {
        let mut response = post(&first, &[]).await;
        assert_eq!(response.status(), 200);
        response.body().await.unwrap();
    }
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0));
    let second = builder.start();
    for expected in [200, 429] {
        let mut response = post(&second, &[]).await;
        assert_eq!(response.status(), expected);
        response.body().await.unwrap();
    }
    assert_eq!(mock.received().len(), 3);
}

#[actix_rt::test]
async fn a_quota_selects_requests_by_client_and_by_provider() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(
            "[[quotas]]\nname = \"scripts\"\nclient = \"curl\"\nwindow = \"day\"\nmax_requests = 1\n\
             [[quotas]]\nname = \"anthropic\"\nprovider = \"anthropic\"\nmodel = \"claude-sonnet\"\n\
             window = \"day\"\nmax_requests = 2\n",
        )
        .start();
    let curl = ("user-agent", "curl/8.5.0");
    let claude_code = ("user-agent", "claude-cli/2.1.22 (external, cli)");
    let mut first = post(&sluice, &[curl]).await;
    assert_eq!(first.status(), 200);
    first.body().await.unwrap();
    let refused = post(&sluice, &[curl]).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers().get("x-sluice-quota").unwrap(), "scripts");
    // Another client is outside the curl quota; the provider quota (judged with the model)
    // counts every client on the route.
    for expected in [200, 429] {
        let mut response = post(&sluice, &[claude_code]).await;
        assert_eq!(response.status(), expected);
        response.body().await.unwrap();
    }
    let stats = stats(&sluice, "", None).await;
    assert_eq!(stats["quotas"][0]["subjects"][0]["subject"], "curl");
    assert_eq!(
        stats["quotas"][1]["subjects"][0]["subject"],
        "claude-sonnet / anthropic"
    );
}

#[actix_rt::test]
async fn codex_is_told_a_long_quota_refusal_as_400_so_it_stops_and_shows_the_message() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, r#"{"id":"resp_1","model":"gpt-5.5"}"#));
    let sluice = sluice()
        .route(
            "/openai/v1",
            &format!("{}/v1", mock.url()),
            &["protocol = \"openai\""],
        )
        .toml("[[quotas]]\nname = \"one-a-day\"\nwindow = \"day\"\nmax_requests = 1\n")
        .start();
    let send = |originator: Option<&'static str>| {
        let mut request = client()
            .post(sluice.url("/openai/v1/responses"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("authorization", "Bearer sk-proj-test-client-key"));
        if let Some(originator) = originator {
            request = request.insert_header(("originator", originator));
        }
        async move {
            let mut response = request.send_body(r#"{"model":"gpt-5.5"}"#).await.unwrap();
            let body: serde_json::Value =
                serde_json::from_slice(&response.body().await.unwrap()).unwrap();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            (
                response.status().as_u16(),
                header("retry-after"),
                header("x-sluice-error"),
                body,
            )
        }
    };
    assert_eq!(send(Some("codex_exec")).await.0, 200);
    // Codex waits out a 429's retry-after (hours here) and hides the message; a 400 stops it
    // at once with the message shown.
    let (status, retry_after, kind, body) = send(Some("codex_exec")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(kind.as_deref(), Some("quota_exceeded"));
    assert!(retry_after.unwrap().parse::<u64>().unwrap() > 60);
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("sluice: quota one-a-day reached"),
        "{message}"
    );
    // Every other client gets the 429.
    let (status, _, kind, _) = send(None).await;
    assert_eq!(status, 429);
    assert_eq!(kind.as_deref(), Some("quota_exceeded"));
    assert_eq!(mock.received().len(), 1, "nothing refused went upstream");
    let stats = stats_after(&sluice, 3, None).await;
    assert_eq!(
        stats["by_status"]["429"], 2,
        "recorded as the refusals they are"
    );
    assert_eq!(stats["by_client"]["codex"]["requests"], 2);
}

#[actix_rt::test]
async fn a_quota_on_a_model_holds_for_the_model_a_gemini_path_names() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(
        200,
        r#"{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3}}"#,
    ));
    let sluice = sluice()
        .route("/gemini", &mock.url(), &["protocol = \"gemini\""])
        .toml("[[quotas]]\nname = \"pro\"\nmodel = \"gemini-2.5-pro\"\nwindow = \"day\"\nmax_requests = 1\n")
        .start();
    let send = |model: &'static str| {
        let sluice = &sluice;
        async move {
            let path = format!("/gemini/v1beta/models/{model}:generateContent");
            let mut response = client()
                .post(sluice.url(&path))
                .insert_header(("content-type", "application/json"))
                .send_body(r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#)
                .await
                .unwrap();
            let body = response.body().await.unwrap();
            (response.status().as_u16(), body)
        }
    };
    assert_eq!(send("gemini-2.5-pro").await.0, 200);
    let (status, body) = send("gemini-2.5-pro").await;
    assert_eq!(status, 429);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sluice: quota pro reached"),
        "{body}"
    );
    assert_eq!(send("gemini-2.5-flash").await.0, 200);
    assert_eq!(
        mock.received().len(),
        2,
        "the refused request never went upstream"
    );
}
