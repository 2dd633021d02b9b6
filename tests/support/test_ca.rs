//! A certificate authority made for one test, and certificates for localhost it signs.
#![allow(dead_code)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA's certificate, for whoever is to trust it.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        Self { cert, key, pem }
    }

    /// A certificate for localhost and 127.0.0.1 whose organisation is `org`, and its key.
    fn signed(&self, org: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }

    /// `signed`, as PEM: (certificate, key).
    pub fn leaf(&self, org: &str) -> (String, String) {
        let (cert, key) = self.signed(org);
        (cert.pem(), key.serialize_pem())
    }

    /// A server's TLS settings with a certificate this CA signed (no ALPN set).
    pub fn server_config(&self) -> rustls::ServerConfig {
        let (cert, key) = self.signed("sluice tests");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap()
    }
}
