//! Connecting to PostgreSQL, over TLS as a libpq user expects from the connection string:
//! `sslmode` (`disable`, `allow`/`prefer`, `require`, `verify-ca`, `verify-full`; `prefer` when
//! absent) and `sslrootcert` (a PEM file of CA certificates to trust instead of the built-in
//! Mozilla roots; `system` = those roots).
//!
//! The `postgres` crate knows only `disable`, `prefer` and `require`, and no `sslrootcert`: both
//! are taken out of the string here and turned into a rustls configuration. As with libpq,
//! `prefer` and `require` encrypt without checking the server's certificate, except that
//! `require` with an `sslrootcert` checks it like `verify-ca`; `verify-ca` checks the chain,
//! `verify-full` the chain and the host name. A unix socket never uses TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// How much checking the server's certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS is not used.
    Disable,
    /// Encrypted when the server offers TLS, plain otherwise; the certificate is not checked.
    Prefer,
    /// Encrypted or no connection; the certificate is not checked.
    Require,
    /// Encrypted, and the certificate chains to a trusted CA (any host name).
    VerifyCa,
    /// Encrypted, the certificate chains to a trusted CA and names the host connected to.
    VerifyFull,
}

/// Which CA certificates are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The Mozilla roots built into sluice (no dependence on the host's CA files).
    BuiltIn,
    /// Only the certificates in this PEM file.
    File(PathBuf),
}

/// A connection string split into what the `postgres` crate reads and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    /// The connection string without `sslmode` and `sslrootcert`.
    pub rest: String,
    pub mode: TlsMode,
    pub roots: Roots,
}

/// The TLS parameters this module reads (and takes out of the string).
const OWN_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

impl TlsPlan {
    /// Reads `sslmode` and `sslrootcert` from a `postgres://` URL or a key=value string. Errors
    /// never repeat the string (it may hold a password).
    pub fn parse(conn: &str) -> Result<TlsPlan, String> {
        let (rest, own) = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
            split_url(conn)?
        } else {
            split_key_values(conn)?
        };
        let mut mode = None;
        let mut root = None;
        for (key, value) in own {
            match key.as_str() {
                "sslmode" => mode = Some(value),
                _ => root = Some(value),
            }
        }
        let roots = match root.as_deref() {
            None | Some("system") => Roots::BuiltIn,
            Some("") => return Err("sslrootcert is empty".into()),
            Some(path) => Roots::File(PathBuf::from(path)),
        };
        let verify = match mode.as_deref() {
            None | Some("prefer") | Some("allow") => TlsMode::Prefer,
            Some("disable") => TlsMode::Disable,
            // libpq: with a root certificate at hand, `require` checks the chain.
            Some("require") if matches!(roots, Roots::File(_)) => TlsMode::VerifyCa,
            Some("require") => TlsMode::Require,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            Some(other) => {
                return Err(format!(
                    "sslmode `{other}`: expected disable, allow, prefer, require, verify-ca or \
                     verify-full"
                ))
            }
        };
        Ok(TlsPlan {
            rest,
            mode: verify,
            roots,
        })
    }

    fn ssl_mode(&self) -> SslMode {
        match self.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }

    /// The rustls configuration for this plan (the CA file is read here).
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = match self.mode {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let roots = Arc::new(root_store(&self.roots)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| e.to_string())?;
                if self.mode == TlsMode::VerifyFull {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(config)
    }
}

/// Opens a connection as the connection string says. The error names no secret.
pub fn connect(conn: &str) -> Result<postgres::Client, String> {
    let (config, plan) = config(conn)?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(plan.client_config()?);
    config.connect(tls).map_err(pg_err)
}

/// The `postgres` crate's configuration and the TLS plan of a connection string.
fn config(conn: &str) -> Result<(postgres::Config, TlsPlan), String> {
    let plan = TlsPlan::parse(conn)?;
    let mut config: postgres::Config = plan.rest.parse().map_err(|e: postgres::Error| pg_err(e))?;
    let hosts = config.get_hosts();
    let local = !hosts.is_empty()
        && hosts
            .iter()
            .all(|h| matches!(h, postgres::config::Host::Unix(_)));
    // As with libpq, a unix socket is local: TLS is neither tried nor required there.
    config.ssl_mode(if local {
        SslMode::Disable
    } else {
        plan.ssl_mode()
    });
    config.connect_timeout(Duration::from_secs(5));
    config.keepalives_idle(Duration::from_secs(30));
    Ok((config, plan))
}

fn root_store(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::BuiltIn => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::File(path) => {
            let certs = read_pem(path)?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {}: no usable CA certificate",
                    path.display()
                ));
            }
        }
    }
    Ok(store)
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = crate::secrets::read_regular_file(path, 16 * 1024 * 1024)
        .map_err(|e| format!("sslrootcert {}: cannot read it: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {}: not PEM: {e}", path.display()))
}

/// `prefer`/`require` without a CA: the link is encrypted and the handshake's signatures are
/// checked, but any certificate is accepted (libpq's meaning of those modes).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full Web PKI check except the host name.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A URL without its `sslmode`/`sslrootcert` query parameters, and those (percent-decoded).
fn split_url(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some((head, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut own = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if OWN_KEYS.contains(&key) {
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("{key} is not UTF-8"))?;
            own.push((key.to_string(), value.into_owned()));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((rest, own))
}

/// A `key=value` connection string without its `sslmode`/`sslrootcert`, and those. Values may
/// be single-quoted with `\` escapes, as libpq reads them.
fn split_key_values(conn: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut own = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("connection string: `{key}` has no value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err("connection string: unterminated quoted value".into()),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if OWN_KEYS.contains(&key.as_str()) {
            own.push((key, value));
        } else {
            kept.push((key, value));
        }
    }
    let rest = kept
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ");
    Ok((rest, own))
}

/// A PostgreSQL error as one line that says what happened.
pub(super) fn pg_err(err: postgres::Error) -> String {
    // `Display` of a server error is only its severity; the details say what happened.
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                source = inner.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &str) -> TlsPlan {
        TlsPlan::parse(conn).unwrap()
    }

    #[test]
    fn sslmode_means_what_it_means_to_libpq() {
        let base = "postgresql://u:p@db.internal:5432/usage";
        assert_eq!(plan(base).mode, TlsMode::Prefer);
        assert_eq!(plan(base).rest, base);
        for (mode, verify) in [
            ("disable", TlsMode::Disable),
            ("allow", TlsMode::Prefer),
            ("prefer", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
            ("verify-full", TlsMode::VerifyFull),
        ] {
            let got = plan(&format!("{base}?sslmode={mode}&application_name=x"));
            assert_eq!(got.mode, verify, "{mode}");
            assert_eq!(got.rest, format!("{base}?application_name=x"));
            assert_eq!(got.roots, Roots::BuiltIn);
        }
        // With a CA file, `require` checks the chain (as libpq does).
        let with_ca = plan(&format!(
            "{base}?sslrootcert=%2Fetc%2Fca.pem&sslmode=require"
        ));
        assert_eq!(with_ca.mode, TlsMode::VerifyCa);
        assert_eq!(with_ca.roots, Roots::File(PathBuf::from("/etc/ca.pem")));
        assert_eq!(with_ca.rest, base);
        assert_eq!(
            plan(&format!("{base}?sslrootcert=system")).roots,
            Roots::BuiltIn
        );
        let bad = TlsPlan::parse(&format!("{base}?sslmode=verify_full")).unwrap_err();
        assert!(bad.contains("verify_full") && !bad.contains(":p@"), "{bad}");
    }

    #[test]
    fn key_value_strings_lose_only_the_tls_keys() {
        let got = plan(
            "host=db.internal password=its user = u sslmode= verify-full \
             sslrootcert='/etc/my ca.pem' dbname=usage",
        );
        assert_eq!(got.mode, TlsMode::VerifyFull);
        assert_eq!(got.roots, Roots::File(PathBuf::from("/etc/my ca.pem")));
        let config: postgres::Config = got.rest.parse().unwrap();
        assert_eq!(config.get_user(), Some("u"));
        assert_eq!(config.get_dbname(), Some("usage"));
        assert_eq!(config.get_password(), Some(&b"its"[..]));
        let quoted = plan(r"password='a\'b c' host=x");
        let config: postgres::Config = quoted.rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a'b c"[..]));
        assert!(TlsPlan::parse("host=x password='open").is_err());
    }

    #[test]
    fn a_unix_socket_never_asks_for_tls() {
        let (socket, _) =
            config("postgresql://postgres@/usage?host=/run/postgresql&sslmode=require").unwrap();
        assert_eq!(socket.get_ssl_mode(), SslMode::Disable);
        let (tcp, _) = config("postgresql://postgres@db.internal/usage?sslmode=verify-ca").unwrap();
        assert_eq!(tcp.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let got = plan("postgresql://db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let err = got.client_config().unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
