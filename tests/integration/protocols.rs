//! SPEC "Protocols: OpenAI and Gemini beside Anthropic": each route speaks its protocol —
//! credentials, sluice's own errors, rate-limit headers — and a route whose answers are not
//! read is forwarded untouched and metered.

use crate::support::*;

#[actix_rt::test]
async fn sluice_errors_on_an_openai_route_take_openais_shape() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, "{}"));
    let sluice = sluice()
        .route("/openai/v1", &mock.url(), &["protocol = \"openai\""])
        .toml("[limits]\nmax_request_body_bytes = 10")
        .start();
    let mut response = client()
        .post(sluice.url("/openai/v1/responses"))
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"model":"gpt-5.5","input":"a body over ten bytes"}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers().get("x-sluice-error").unwrap(),
        "body_too_large"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["param"].is_null(), "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("sluice: "));
    assert!(body.get("type").is_none(), "not Anthropic's shape: {body}");
}

#[actix_rt::test]
async fn openai_server_key_goes_as_a_bearer_token() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, "{}"));
    let sluice = sluice()
        .route("/openai/v1", &mock.url(), &["protocol = \"openai\""])
        .server_key("sk-proj-test-server-key")
        .start();
    let response = client()
        .post(sluice.url("/openai/v1/responses"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = mock.last();
    assert_eq!(
        sent.header("authorization").as_deref(),
        Some("Bearer sk-proj-test-server-key")
    );
    assert_eq!(sent.header("x-api-key"), None);
}

/// sluice with one Gemini route, to `mock`, and a server key for it.
fn gemini_sluice(mock: &MockUpstream) -> Sluice {
    sluice()
        .route("/gemini", &mock.url(), &["protocol = \"gemini\""])
        .server_key("gemini-test-server-key")
        .start()
}

#[actix_rt::test]
async fn a_gemini_answer_is_metered_with_the_model_of_its_path_and_the_server_key() {
    let mock = MockUpstream::start();
    // No `modelVersion`: the model comes from the request path.
    let answer = r#"{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":7,"cachedContentTokenCount":2,"candidatesTokenCount":3,"thoughtsTokenCount":4}}"#;
    mock.always(Reply::json(200, answer));
    let sluice = gemini_sluice(&mock);
    let mut response = client()
        .post(sluice.url("/gemini/v1beta/models/gemini-2.5-flash:generateContent"))
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"contents":[]}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().await.unwrap(), answer.as_bytes());
    assert_eq!(
        mock.last().header("x-goog-api-key").as_deref(),
        Some("gemini-test-server-key")
    );
    let stats = stats_after(&sluice, 1, None).await;
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], 1, "{stats}");
    assert_eq!(totals["errors"], 0, "{stats}");
    assert_eq!(totals["input_tokens"], 5, "{stats}");
    assert_eq!(totals["cache_read_input_tokens"], 2, "{stats}");
    assert_eq!(totals["output_tokens"], 7, "{stats}");
    assert_eq!(totals["reasoning_output_tokens"], 4, "{stats}");
    assert_eq!(
        stats["by_model"]["gemini-2.5-flash"]["requests"], 1,
        "{stats}"
    );
    assert_eq!(stats["by_provider"]["gemini"]["requests"], 1, "{stats}");
}

#[actix_rt::test]
async fn a_gemini_key_in_the_query_is_forwarded_as_sent_and_never_shown() {
    let mock = MockUpstream::start();
    let stream = protocol_fixture("gemini", "stream-generate-content.sse");
    mock.always(Reply::sse(&stream));
    let sluice = gemini_sluice(&mock);
    let key = "AIzaSy-test-key-in-the-query-9c1d";
    let path =
        format!("/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key={key}");
    let mut response = client()
        .post(sluice.url(&path))
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"contents":[]}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.body().await.unwrap();
    let sent = mock.last();
    assert_eq!(
        sent.target,
        format!("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key={key}")
    );
    assert_eq!(
        sent.header("x-goog-api-key"),
        None,
        "the client's key is used"
    );
    let stats = stats_after(&sluice, 1, None).await;
    // The last chunk: 12282 prompt − 11883 cached; 101 candidates + 44 thoughts.
    let totals = &stats["totals"];
    assert_eq!(totals["input_tokens"], 399, "{stats}");
    assert_eq!(totals["cache_read_input_tokens"], 11_883, "{stats}");
    assert_eq!(totals["output_tokens"], 145, "{stats}");
    let credential = format!("client_api_key:{}", fingerprint(key));
    assert_eq!(
        stats["by_credential"][&credential]["requests"], 1,
        "{stats}"
    );
    let metrics = admin_text(&sluice, "/metrics").await;
    let usage = admin_text(&sluice, "/usage").await;
    for (what, text) in [
        ("stats", stats.to_string()),
        ("metrics", metrics),
        ("usage", usage),
        ("log", sluice.logs()),
    ] {
        assert!(!text.contains(key), "the key shows in {what}");
    }
}

async fn admin_text(sluice: &Sluice, path: &str) -> String {
    let mut response = client().get(sluice.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let body = response.body().limit(16 << 20).await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[actix_rt::test]
async fn sluice_errors_on_a_gemini_route_take_googles_shape() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, "{}"));
    let sluice = sluice()
        .route("/gemini", &mock.url(), &["protocol = \"gemini\""])
        .toml("[limits]\nmax_request_body_bytes = 10")
        .start();
    let mut response = client()
        .post(sluice.url("/gemini/v1beta/models/gemini-2.5-pro:generateContent"))
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"contents":[{"parts":[{"text":"over ten bytes"}]}]}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], 413, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("sluice: "));
}

/// A ChatGPT login token as Codex sends it: a JWT bearer.
const CHATGPT_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLXRlc3QifQ.c2lnbmF0dXJlLXRlc3Q";

#[actix_rt::test]
async fn chatgpt_login_goes_to_the_subscription_upstream_untouched_and_never_gets_the_server_key() {
    let api = MockUpstream::start();
    api.always(Reply::json(200, r#"{"from":"api"}"#));
    let chatgpt = MockUpstream::start();
    chatgpt.always(Reply::json(200, r#"{"from":"chatgpt"}"#));
    let subscription = format!(
        "subscription_upstream = \"{}/backend-api/codex\"",
        chatgpt.url()
    );
    let sluice = sluice()
        .route(
            "/openai/v1",
            &format!("{}/v1", api.url()),
            &["protocol = \"openai\"", &subscription],
        )
        .server_key("sk-proj-test-server-key")
        .start();
    let send = |authorization: Option<String>| {
        let mut request = client()
            .post(sluice.url("/openai/v1/responses?x=1"))
            .insert_header(("chatgpt-account-id", "acct-test"));
        if let Some(value) = authorization {
            request = request.insert_header(("authorization", value));
        }
        async move { request.send_body("{}").await.unwrap().status() }
    };
    assert_eq!(send(Some(format!("Bearer {CHATGPT_TOKEN}"))).await, 200);
    let sent = chatgpt.last();
    assert_eq!(sent.target, "/backend-api/codex/responses?x=1");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {CHATGPT_TOKEN}"))
    );
    assert_eq!(
        sent.header("chatgpt-account-id").as_deref(),
        Some("acct-test")
    );
    assert!(api.received().is_empty());
    // An API key goes to the API; no credential gets the server key there.
    assert_eq!(send(Some("Bearer sk-proj-client-key".into())).await, 200);
    assert_eq!(
        api.last().header("authorization").as_deref(),
        Some("Bearer sk-proj-client-key")
    );
    assert_eq!(send(None).await, 200);
    assert_eq!(
        api.last().header("authorization").as_deref(),
        Some("Bearer sk-proj-test-server-key")
    );
    assert_eq!(api.last().target, "/v1/responses?x=1");
    assert_eq!(chatgpt.received().len(), 1);
    let stats = stats_after(&sluice, 3, None).await;
    let sources = &stats["by_source"];
    for source in ["client_oauth", "client_api_key", "server_key"] {
        assert_eq!(sources[source]["requests"], 1, "{source}: {stats}");
    }
}

/// One row of the openai credential table: what the client sends, and what must reach which
/// upstream.
struct CredentialRow {
    what: &'static str,
    sent: Vec<(&'static str, String)>,
    /// The request goes to the ChatGPT backend (`subscription_upstream`), not the API.
    to_subscription: bool,
    authorization: Option<String>,
    api_key: Option<&'static str>,
    source: &'static str,
}

/// Sends each row's request through one sluice and checks where it went, with which
/// credential headers, counted under which source.
async fn check_credential_rows(
    sluice: &Sluice,
    api: &MockUpstream,
    chatgpt: Option<&MockUpstream>,
    rows: &[CredentialRow],
) {
    let mut per_source = std::collections::HashMap::new();
    for (done, row) in rows.iter().enumerate() {
        let before = (
            api.received().len(),
            chatgpt.map_or(0, |m| m.received().len()),
        );
        let mut request = client().post(sluice.url("/openai/v1/responses"));
        for (name, value) in &row.sent {
            request = request.insert_header((*name, value.as_str()));
        }
        let status = request.send_body("{}").await.unwrap().status();
        assert_eq!(status, 200, "{}", row.what);
        let after = (
            api.received().len(),
            chatgpt.map_or(0, |m| m.received().len()),
        );
        let (went, other) = if row.to_subscription {
            (chatgpt.unwrap(), after.0 - before.0)
        } else {
            (api, after.1 - before.1)
        };
        assert_eq!(other, 0, "{}: reached the other upstream too", row.what);
        let sent = went.last();
        assert_eq!(
            sent.header("authorization"),
            row.authorization,
            "{}",
            row.what
        );
        assert_eq!(
            sent.header("api-key").as_deref(),
            row.api_key,
            "{}",
            row.what
        );
        assert_eq!(sent.header("x-api-key"), None, "{}", row.what);
        let counted = per_source.entry(row.source).or_insert(0u64);
        *counted += 1;
        let stats = stats_after(sluice, done as u64 + 1, None).await;
        assert_eq!(
            stats["by_source"][row.source]["requests"], *counted,
            "{}: {}",
            row.what, stats["by_source"]
        );
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[actix_rt::test]
async fn openai_credential_table_with_a_server_key_and_a_subscription_upstream() {
    let api = MockUpstream::start();
    api.always(Reply::json(200, "{}"));
    let chatgpt = MockUpstream::start();
    chatgpt.always(Reply::json(200, "{}"));
    let subscription = format!(
        "subscription_upstream = \"{}/backend-api/codex\"",
        chatgpt.url()
    );
    let sluice = sluice()
        .route(
            "/openai/v1",
            &format!("{}/v1", api.url()),
            &["protocol = \"openai\"", &subscription],
        )
        .server_key("sk-proj-test-server-key")
        .start();
    let server = Some(bearer("sk-proj-test-server-key"));
    let rows = [
        CredentialRow {
            what: "the client's API key is kept though a server key is set",
            sent: vec![("authorization", bearer("sk-proj-client-key"))],
            to_subscription: false,
            authorization: Some(bearer("sk-proj-client-key")),
            api_key: None,
            source: "client_api_key",
        },
        CredentialRow {
            what: "Azure's api-key is a client key: kept, no server key beside it",
            sent: vec![("api-key", "azure-client-key".into())],
            to_subscription: false,
            authorization: None,
            api_key: Some("azure-client-key"),
            source: "client_api_key",
        },
        CredentialRow {
            what: "another bearer (a team gateway's token) is kept as it is",
            sent: vec![("authorization", bearer("team-gateway-token"))],
            to_subscription: false,
            authorization: Some(bearer("team-gateway-token")),
            api_key: None,
            source: "client_bearer",
        },
        CredentialRow {
            what: "a ChatGPT login goes to the subscription upstream untouched, no server key",
            sent: vec![
                ("authorization", bearer(CHATGPT_TOKEN)),
                ("chatgpt-account-id", "acct-test".into()),
            ],
            to_subscription: true,
            authorization: Some(bearer(CHATGPT_TOKEN)),
            api_key: None,
            source: "client_oauth",
        },
        CredentialRow {
            what: "no client credential: the server key is the fallback",
            sent: vec![],
            to_subscription: false,
            authorization: server.clone(),
            api_key: None,
            source: "server_key",
        },
        CredentialRow {
            what: "an empty authorization is no credential: the server key replaces it",
            sent: vec![("authorization", String::new())],
            to_subscription: false,
            authorization: server,
            api_key: None,
            source: "server_key",
        },
    ];
    check_credential_rows(&sluice, &api, Some(&chatgpt), &rows).await;
    let stats = stats(&sluice, "", None).await;
    let credentials: Vec<&String> = stats["by_credential"].as_object().unwrap().keys().collect();
    for (source, count) in [
        ("client_api_key", 2),
        ("client_bearer", 1),
        ("client_oauth", 1),
        ("server_key", 1),
    ] {
        let keys = credentials
            .iter()
            .filter(|key| key.starts_with(&format!("{source}:")))
            .count();
        assert_eq!(keys, count, "{source}: {credentials:?}");
    }
    let text = stats.to_string();
    for secret in [
        "sk-proj-client-key",
        "azure-client-key",
        "team-gateway-token",
        CHATGPT_TOKEN,
        "sk-proj-test-server-key",
    ] {
        assert!(!text.contains(secret), "{secret} in /stats");
    }
}

#[actix_rt::test]
async fn openai_credential_table_without_a_server_key_or_subscription_upstream() {
    let api = MockUpstream::start();
    api.always(Reply::json(200, "{}"));
    let sluice = sluice()
        .route(
            "/openai/v1",
            &format!("{}/v1", api.url()),
            &["protocol = \"openai\""],
        )
        .start();
    let rows = [
        CredentialRow {
            what: "no credential and no server key: no authorization header at all",
            sent: vec![],
            to_subscription: false,
            authorization: None,
            api_key: None,
            source: "none",
        },
        CredentialRow {
            what: "a ChatGPT login with no subscription upstream goes to the API untouched",
            sent: vec![("authorization", bearer(CHATGPT_TOKEN))],
            to_subscription: false,
            authorization: Some(bearer(CHATGPT_TOKEN)),
            api_key: None,
            source: "client_oauth",
        },
        CredentialRow {
            what: "the client's API key is forwarded",
            sent: vec![("authorization", bearer("sk-proj-client-key"))],
            to_subscription: false,
            authorization: Some(bearer("sk-proj-client-key")),
            api_key: None,
            source: "client_api_key",
        },
    ];
    check_credential_rows(&sluice, &api, None, &rows).await;
    let none = &api.received()[0];
    assert!(
        none.headers
            .iter()
            .all(|(_, value)| value.as_slice() != b"None"),
        "{:?}",
        none.headers
    );
}

#[actix_rt::test]
async fn a_code_assist_answer_is_read_through_its_wrapper_with_the_session_its_body_names() {
    let mock = MockUpstream::start();
    let chunk = r#"{"response":{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9120,"cachedContentTokenCount":8190,"candidatesTokenCount":11,"thoughtsTokenCount":38},"modelVersion":"gemini-2.5-pro"},"traceId":"t-1"}"#;
    mock.always(Reply::sse(&format!("data: {chunk}\r\n\r\n")));
    let sluice = sluice()
        .route(
            "/code-assist",
            &mock.url(),
            &[
                "protocol = \"gemini\"",
                "credential_policy = \"client_only\"",
            ],
        )
        .start();
    let session = "03e3b229-8e68-426d-ade1-fd587a893781";
    let body = format!(
        r#"{{"model":"gemini-2.5-pro","project":"p-1","request":{{"contents":[{{"role":"user","parts":[{{"text":"hi"}}]}}],"session_id":"{session}"}}}}"#
    );
    let mut response = client()
        .post(sluice.url("/code-assist/v1internal:streamGenerateContent?alt=sse"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("authorization", "Bearer ya29.test-google-login"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.body().await.unwrap();
    assert_eq!(
        mock.last().header("authorization").as_deref(),
        Some("Bearer ya29.test-google-login")
    );
    let stats = stats_after(&sluice, 1, None).await;
    let totals = &stats["totals"];
    assert_eq!(totals["input_tokens"], 930, "{stats}");
    assert_eq!(totals["cache_read_input_tokens"], 8190, "{stats}");
    assert_eq!(totals["output_tokens"], 49, "{stats}");
    assert_eq!(stats["by_session"][session]["requests"], 1, "{stats}");
    assert_eq!(
        stats["by_model"]["gemini-2.5-pro"]["requests"], 1,
        "{stats}"
    );
    assert_eq!(stats["by_source"]["client_oauth"]["requests"], 1, "{stats}");
}

#[actix_rt::test]
async fn a_gemini_stream_without_alt_sse_is_read_as_its_json_array_of_chunks() {
    use bytes::Bytes;
    use std::time::Duration;
    let mock = MockUpstream::start();
    let array = protocol_fixture("gemini", "stream-generate-content.json").into_bytes();
    // As a stream comes: in small pieces, cut anywhere.
    let pieces = array
        .chunks(97)
        .map(|piece| (Duration::ZERO, Bytes::copy_from_slice(piece)))
        .collect();
    let json = vec![(
        "content-type".into(),
        "application/json; charset=UTF-8".into(),
    )];
    mock.always(Reply::Chunks(200, json, pieces));
    let sluice = gemini_sluice(&mock);
    let mut response = client()
        .post(sluice.url("/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"))
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"contents":[]}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().await.unwrap(), array);
    let stats = stats_after(&sluice, 1, None).await;
    // The last chunk: 2048 prompt − 1024 cached; 18 candidates + 230 thoughts.
    let totals = &stats["totals"];
    assert_eq!(totals["input_tokens"], 1024, "{stats}");
    assert_eq!(totals["cache_read_input_tokens"], 1024, "{stats}");
    assert_eq!(totals["output_tokens"], 248, "{stats}");
    assert_eq!(totals["reasoning_output_tokens"], 230, "{stats}");
    assert_eq!(
        stats["by_model"]["gemini-2.5-flash"]["requests"], 1,
        "{stats}"
    );
}

#[actix_rt::test]
async fn a_code_assist_count_tokens_call_counts_under_the_model_its_body_nests() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, r#"{"totalTokens":1342}"#));
    let sluice = sluice()
        .route(
            "/code-assist",
            &mock.url(),
            &[
                "protocol = \"gemini\"",
                "credential_policy = \"client_only\"",
            ],
        )
        .start();
    // What Gemini CLI sends (code_assist/converter.ts, `toCountTokenRequest`).
    let body = r#"{"request":{"model":"models/gemini-2.5-flash","contents":[{"role":"user","parts":[{"text":"hi"}]}]}}"#;
    let mut response = client()
        .post(sluice.url("/code-assist/v1internal:countTokens"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("authorization", "Bearer ya29.test-google-login"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.body().await.unwrap();
    let stats = stats_after(&sluice, 1, None).await;
    assert_eq!(
        stats["by_model"]["gemini-2.5-flash"]["requests"], 1,
        "{stats}"
    );
    assert_eq!(stats["totals"]["input_tokens"], 0, "{stats}");
}
