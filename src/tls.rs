//! The HTTPS listener: rustls with HTTP/2 and HTTP/1.1 offered by ALPN. The certificate and key
//! are part of the secret material (read by the CredentialResolver at start and at every reload,
//! and whenever their files change); each handshake takes the pair of the settings snapshot
//! published at that moment, so a replaced certificate serves new connections at once while
//! open ones carry on with the one they started with.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain with its private key, checked to belong together.
#[derive(Clone)]
pub struct TlsIdentity(pub Arc<CertifiedKey>);

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsIdentity({} certificates)", self.0.cert.len())
    }
}

impl PartialEq for TlsIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.0.cert == other.0.cert
    }
}

/// A certificate chain is a few kilobytes; a bound all the same.
const MAX_CERT_BYTES: u64 = 1024 * 1024;

/// Reads a PEM certificate chain (leaf first) and its PEM private key.
pub fn load_identity(cert_file: &Path, key_file: &Path) -> Result<TlsIdentity, (bool, String)> {
    // Read without waiting on a FIFO and with a cap, as every secret file is.
    let cert_pem = crate::secrets::read_regular_file(cert_file, MAX_CERT_BYTES)
        .map_err(|e| (true, format!("{}: {e}", cert_file.display())))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (true, format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err((
            true,
            format!("{} holds no PEM certificate", cert_file.display()),
        ));
    }
    let key_pem = crate::secrets::read_regular_file(key_file, crate::secrets::MAX_SECRET_BYTES)
        .map_err(|e| (false, format!("{}: {e}", key_file.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| (false, format!("{}: {e}", key_file.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| (false, format!("{}: {e}", key_file.display())))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|_| {
        (
            false,
            format!(
                "{} is not the key of the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
        )
    })?;
    Ok(TlsIdentity(Arc::new(certified)))
}

/// Hands every handshake the identity its source gives now (the current settings snapshot's).
struct CurrentCert<F>(F);

impl<F> fmt::Debug for CurrentCert<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl<F> ResolvesServerCert for CurrentCert<F>
where
    F: Fn() -> Option<Arc<CertifiedKey>> + Send + Sync,
{
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        (self.0)()
    }
}

/// The listener's TLS settings: each handshake takes the identity `current` gives at that
/// moment (so a reloaded certificate serves new handshakes at once), h2 preferred over HTTP/1.1.
pub fn server_config<F>(current: F) -> rustls::ServerConfig
where
    F: Fn() -> Option<Arc<CertifiedKey>> + Send + Sync + 'static,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCert(current)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_certificate_loads_only_with_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair(dir.path(), "a");
        let (_, key_b) = pair(dir.path(), "b");
        assert!(load_identity(&cert_a, &key_a).is_ok());
        let (on_cert, err) = load_identity(&cert_a, &key_b).unwrap_err();
        assert!(!on_cert && err.contains("is not the key"), "{err}");
        let (on_cert, _) = load_identity(&key_a, &key_a).unwrap_err();
        assert!(on_cert);
        assert!(load_identity(&dir.path().join("none.crt"), &key_a).is_err());
    }

    #[test]
    fn a_fifo_at_the_key_file_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        std::fs::remove_file(&key).unwrap();
        let c_path = std::ffi::CString::new(key.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(load_identity(&cert, &key).map(|_| ())).unwrap());
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO must not wait for a writer");
        let (on_cert, err) = result.unwrap_err();
        assert!(!on_cert && err.contains("not a regular file"), "{err}");
    }
}
