//! docs/clients.md "Credentials": exactly the expected credential headers reach the upstream.

use crate::support::*;

/// Sends a POST with `headers` through a fresh sluice and returns what the mock saw.
async fn through(
    policy: &str,
    server_key: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Option<Received>) {
    let mock = MockUpstream::start();
    let mut builder = sluice().route(
        "/anthropic",
        &mock.url(),
        &[&format!("credential_policy = \"{policy}\"")],
    );
    if let Some(key) = server_key {
        builder = builder.server_key(key);
    }
    let sluice = builder.start();
    let mut request = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .no_decompress();
    for (name, value) in headers {
        request = request.append_header((*name, *value));
    }
    let response = request.send_body("{}").await.unwrap();
    (response.status().as_u16(), mock.received().pop())
}

/// The credential-related headers the mock saw, sorted, as (name, value).
fn credential_headers(received: &Received) -> Vec<(String, String)> {
    let mut found: Vec<_> = received
        .headers
        .iter()
        .filter(|(n, _)| ["x-api-key", "authorization", "anthropic-beta"].contains(&n.as_str()))
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    found.sort();
    found
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut list: Vec<_> = list
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    list.sort();
    list
}

/// Every header the mock saw apart from the ones the transport sets itself: `host` and
/// `content-length` (framing), and `date`, which actix-http's HTTP/1.1 encoder always writes on
/// a request that has none (a valid request header; awc offers no way to leave it out).
fn other_headers(received: &Received) -> Vec<(String, String)> {
    let mut found: Vec<_> = received
        .headers
        .iter()
        .filter(|(n, _)| {
            ![
                "x-api-key",
                "authorization",
                "anthropic-beta",
                "host",
                "content-length",
                "date",
            ]
            .contains(&n.as_str())
        })
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    found.sort();
    found
}

const BEARER_OAUTH: &str = "Bearer sk-ant-oat01-test-client-oauth-0123456789";

#[actix_rt::test]
async fn client_first_api_key_is_forwarded_and_server_key_not_added() {
    let (status, seen) = through(
        "client_first",
        Some(SERVER_KEY),
        &[
            ("x-api-key", CLIENT_API_KEY),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    assert_eq!(
        credential_headers(&seen),
        pairs(&[("x-api-key", CLIENT_API_KEY)])
    );
    assert_eq!(
        other_headers(&seen),
        pairs(&[("anthropic-version", "2023-06-01")])
    );
}

#[actix_rt::test]
async fn client_oauth_token_is_forwarded_untouched() {
    let (_, seen) = through(
        "client_first",
        Some(SERVER_KEY),
        &[
            ("Authorization", BEARER_OAUTH),
            ("anthropic-beta", "oauth-2025-04-20,claude-code-20250219"),
        ],
    )
    .await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[
            ("authorization", BEARER_OAUTH),
            ("anthropic-beta", "oauth-2025-04-20,claude-code-20250219")
        ])
    );
}

#[actix_rt::test]
async fn client_bearer_and_both_credentials_pass_as_sent() {
    let (_, seen) = through(
        "client_first",
        Some(SERVER_KEY),
        &[("authorization", "Bearer some-gateway-token")],
    )
    .await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[("authorization", "Bearer some-gateway-token")])
    );
    let (_, seen) = through(
        "client_first",
        Some(SERVER_KEY),
        &[
            ("X-API-KEY", CLIENT_API_KEY),
            ("AUTHORIZATION", BEARER_OAUTH),
        ],
    )
    .await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[
            ("x-api-key", CLIENT_API_KEY),
            ("authorization", BEARER_OAUTH)
        ])
    );
}

#[actix_rt::test]
async fn server_key_fills_in_when_client_sends_none_or_empty() {
    let (_, seen) = through("client_first", Some(SERVER_KEY), &[]).await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[("x-api-key", SERVER_KEY)])
    );
    let (_, seen) = through(
        "client_first",
        Some(SERVER_KEY),
        &[("x-api-key", ""), ("Authorization", "")],
    )
    .await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[("x-api-key", SERVER_KEY)])
    );
}

#[actix_rt::test]
async fn no_credential_anywhere_sends_no_credential_header() {
    let (status, seen) = through("client_first", None, &[("x-api-key", "")]).await;
    assert_eq!(status, 200, "the upstream answers, not sluice");
    let seen = seen.unwrap();
    assert!(credential_headers(&seen).is_empty(), "{:?}", seen.headers);
    assert!(!seen.headers.iter().any(|(_, v)| v == b"None"));
}

#[actix_rt::test]
async fn oauth_server_token_goes_as_bearer_with_oauth_beta() {
    let server_oauth = "sk-ant-oat01-test-server-oauth-000";
    let (_, seen) = through(
        "client_first",
        Some(server_oauth),
        &[("anthropic-beta", "prompt-caching-2024-07-31")],
    )
    .await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[
            ("authorization", &format!("Bearer {server_oauth}")),
            (
                "anthropic-beta",
                "prompt-caching-2024-07-31,oauth-2025-04-20"
            )
        ])
    );
}

#[actix_rt::test]
async fn server_only_replaces_client_credentials_or_refuses() {
    let (_, seen) = through(
        "server_only",
        Some(SERVER_KEY),
        &[
            ("x-api-key", CLIENT_API_KEY),
            ("authorization", BEARER_OAUTH),
        ],
    )
    .await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[("x-api-key", SERVER_KEY)])
    );
    let (status, seen) = through("server_only", None, &[("x-api-key", CLIENT_API_KEY)]).await;
    assert_eq!(status, 401);
    assert!(seen.is_none(), "upstream must not be contacted");
}

#[actix_rt::test]
async fn client_only_never_uses_the_server_key() {
    let (_, seen) = through("client_only", Some(SERVER_KEY), &[]).await;
    assert!(credential_headers(&seen.unwrap()).is_empty());
    let (_, seen) = through(
        "client_only",
        Some(SERVER_KEY),
        &[("x-api-key", CLIENT_API_KEY)],
    )
    .await;
    assert_eq!(
        credential_headers(&seen.unwrap()),
        pairs(&[("x-api-key", CLIENT_API_KEY)])
    );
}

#[actix_rt::test]
async fn access_keys_gate_the_proxy_and_are_never_forwarded() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[access]\nheader = \"x-sluice-key\"")
        .access_key("alice", ACCESS_KEY)
        .server_key(SERVER_KEY)
        .start();
    let url = sluice.url("/anthropic/v1/messages");

    let response = client().post(&url).send_body("{}").await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("x-sluice-error").unwrap(),
        "access_key_missing"
    );
    let response = client()
        .post(&url)
        .insert_header(("x-sluice-key", "wrong"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(mock.received().is_empty());

    // Access key in its header + the client's own OAuth token: the token goes, the key doesn't.
    let response = client()
        .post(&url)
        .insert_header(("X-Sluice-Key", ACCESS_KEY))
        .insert_header(("authorization", BEARER_OAUTH))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = mock.last();
    assert_eq!(
        credential_headers(&seen),
        pairs(&[("authorization", BEARER_OAUTH)])
    );
    assert!(seen.header("x-sluice-key").is_none());

    // ANTHROPIC_AUTH_TOKEN=<access key>: the server key is used instead.
    let bearer = format!("Bearer {ACCESS_KEY}");
    client()
        .post(&url)
        .insert_header(("authorization", bearer.as_str()))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(
        credential_headers(&mock.last()),
        pairs(&[("x-api-key", SERVER_KEY)])
    );

    // As x-api-key, and echoed in an unrelated header: never forwarded.
    client()
        .post(&url)
        .insert_header(("x-api-key", ACCESS_KEY))
        .insert_header(("x-note", ACCESS_KEY))
        .send_body("{}")
        .await
        .unwrap();
    let seen = mock.last();
    assert_eq!(
        credential_headers(&seen),
        pairs(&[("x-api-key", SERVER_KEY)])
    );
    assert!(!seen
        .headers
        .iter()
        .any(|(_, v)| String::from_utf8_lossy(v).contains(ACCESS_KEY)));

    // /healthz needs no key.
    let response = client().get(sluice.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_rt::test]
async fn secrets_never_appear_in_logs() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .start();
    let url = sluice.url("/anthropic/v1/messages?beta=true&key=querysecret");
    for headers in [
        vec![("x-sluice-key", ACCESS_KEY), ("x-api-key", CLIENT_API_KEY)],
        vec![
            ("x-sluice-key", ACCESS_KEY),
            ("authorization", BEARER_OAUTH),
        ],
        vec![(
            "authorization",
            format!("Bearer {ACCESS_KEY}").leak() as &str,
        )],
        vec![("x-sluice-key", "sk-ant-api03-test-wrong-key")],
        vec![
            ("x-sluice-key", ACCESS_KEY),
            (
                "authorization",
                format!("Bearer {ADMIN_TOKEN}").leak() as &str,
            ),
        ],
    ] {
        let mut request = client().post(&url);
        for (name, value) in headers {
            request = request.append_header((name, value));
        }
        request
            .send_body("{\"model\":\"claude-sonnet-4-5\"}")
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let logs = sluice.logs();
    assert!(logs.contains("request finished"), "{logs}");
    for secret in [
        SERVER_KEY,
        CLIENT_API_KEY,
        CLIENT_OAUTH,
        ACCESS_KEY,
        ADMIN_TOKEN,
        "querysecret",
        "sk-ant-api03-test-wrong-key",
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret} leaked into logs:\n{logs}"
        );
    }
}

/// An access key or the admin token, in any form a client might send one by mistake, next to a
/// valid access key: the upstream sees neither, in any header.
#[actix_rt::test]
async fn proxy_secrets_in_every_recognised_form_never_reach_the_upstream() {
    use base64::Engine;
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .start();
    let url = sluice.url("/anthropic/v1/messages");
    let basic = |secret: &str| {
        let pair = format!("user:{secret}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    for secret in [ACCESS_KEY, ADMIN_TOKEN] {
        for (name, value) in [
            ("authorization", format!("Bearer  {secret}")),
            ("authorization", format!("Bearer\t{secret}")),
            ("authorization", format!("bEaReR \t {secret}")),
            ("authorization", format!("Token {secret}")),
            ("authorization", basic(secret)),
            ("x-api-key", format!("Bearer  {secret}")),
            ("x-api-key", format!("\"{secret}\"")),
            ("x-foo", format!("{secret}, {secret}")),
            ("x-foo", format!("a,{secret};b")),
            ("cookie", format!("theme=dark; sluice={secret}")),
            ("cookie", format!("sluice=\"{secret}\"")),
            ("x-auth", format!("token=\"{secret}\", realm=x")),
        ] {
            let response = client()
                .post(&url)
                .insert_header(("x-sluice-key", ACCESS_KEY))
                .insert_header((name, value.as_str()))
                .send_body("{}")
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{name}: {value}");
            let seen = mock.last();
            for (seen_name, seen_value) in &seen.headers {
                let seen_value = String::from_utf8_lossy(seen_value);
                assert!(
                    !seen_value.contains(secret) && !seen_value.contains(&basic(secret)[6..]),
                    "{name}: {value:?} reached the upstream as {seen_name}: {seen_value}"
                );
            }
        }
    }
}
