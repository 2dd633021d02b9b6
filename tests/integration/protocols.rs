//! SPEC "Protocols: OpenAI and Gemini beside Anthropic": each route speaks its protocol —
//! credentials, sluice's own errors, rate-limit headers — and a route whose answers are not
//! read yet is forwarded untouched and counted without tokens.

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

#[actix_rt::test]
async fn a_gemini_route_is_forwarded_and_counted_without_tokens() {
    let mock = MockUpstream::start();
    let answer =
        r#"{"candidates":[],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3}}"#;
    mock.always(Reply::json(200, answer));
    let sluice = sluice()
        .route("/gemini", &mock.url(), &["protocol = \"gemini\""])
        .server_key("gemini-test-server-key")
        .start();
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
    assert_eq!(totals["input_tokens"], 0, "{stats}");
}
