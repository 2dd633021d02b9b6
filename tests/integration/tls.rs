//! HTTPS upstreams: a private CA is trusted through a route's `ca_file`, and only then.

use crate::support::test_ca::TestCa;
use crate::support::*;

#[actix_rt::test]
async fn https_upstream_with_private_ca_works_through_ca_file() {
    let ca = TestCa::new();
    let ca_pem = ca.pem.clone();
    let mock = MockUpstream::start_tls(ca.server_config());
    let upstream = format!("https://127.0.0.1:{}", mock.addr.port());

    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("corp-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let trusted = sluice()
        .route(
            "/anthropic",
            &upstream,
            &[&format!("ca_file = \"{}\"", ca_path.display())],
        )
        .start();
    let mut response = client()
        .post(trusted.url("/anthropic/v1/messages"))
        .insert_header(("x-api-key", CLIENT_API_KEY))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", trusted.logs());
    assert_eq!(
        response.body().await.unwrap(),
        fixture("message.json").as_bytes()
    );
    assert_eq!(
        mock.last().header("x-api-key").as_deref(),
        Some(CLIENT_API_KEY)
    );

    // Without the CA the same upstream is not trusted.
    let untrusted = sluice().route("/anthropic", &upstream, &[]).start();
    let response = client()
        .post(untrusted.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers().get("x-sluice-error").unwrap(),
        "upstream_unreachable"
    );
}
