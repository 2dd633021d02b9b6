//! HTTPS upstreams: a private CA is trusted through a route's `ca_file`, and only then.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::*;

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn private_ca() -> (String, rustls::ServerConfig) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice test corporate CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    (ca.pem(), config)
}

#[actix_rt::test]
async fn https_upstream_with_private_ca_works_through_ca_file() {
    let (ca_pem, config) = private_ca();
    let mock = MockUpstream::start_tls(config);
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
