//! Where a report's numbers come from: a running sluice over HTTP, or the store file itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ReportError, UsageFormat, UsageQuery};

/// Anything that answers a `/usage` query with `/usage`'s own body (JSON or CSV).
pub trait UsageSource {
    fn fetch(&self, query: &UsageQuery, format: UsageFormat) -> Result<String, ReportError>;
    /// Where the answers come from, for error messages.
    fn describe(&self) -> String;
}

/// Large enough for a year of sessions; a bound all the same, so a wrong URL cannot fill memory.
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A running sluice's `/usage`.
pub struct HttpSource {
    base: String,
    token: Option<String>,
}

/// `http://` and the listen address, with an any-address listener reached on loopback.
pub fn default_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

impl HttpSource {
    pub fn new(base: &str, token: Option<String>) -> Self {
        HttpSource {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    async fn get(&self, url: &str) -> Result<String, ReportError> {
        let client = awc::Client::builder().timeout(ANSWER_TIMEOUT).finish();
        let mut request = client.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut answer = request.send().await.map_err(|err| self.send_error(err))?;
        let status = answer.status().as_u16();
        let body = answer.body().limit(MAX_ANSWER_BYTES).await.map_err(|err| {
            ReportError::Unreachable {
                url: self.base.clone(),
                detail: format!("reading the answer: {err}"),
            }
        })?;
        let body = String::from_utf8_lossy(&body).into_owned();
        match status {
            200..=299 => Ok(body),
            401 if self.token.is_some() => Err(ReportError::TokenRefused {
                url: self.base.clone(),
            }),
            401 => Err(ReportError::TokenMissing {
                url: self.base.clone(),
            }),
            404 => Err(ReportError::NoUsageEndpoint {
                url: self.base.clone(),
            }),
            status => Err(ReportError::Status {
                url: self.base.clone(),
                status,
                message: error_message(&body),
            }),
        }
    }

    fn send_error(&self, err: awc::error::SendRequestError) -> ReportError {
        use awc::error::{ConnectError, SendRequestError};
        let url = self.base.clone();
        match &err {
            SendRequestError::Connect(ConnectError::Io(io))
                if io.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                ReportError::NotRunning { url }
            }
            _ => ReportError::Unreachable {
                url,
                detail: err.to_string(),
            },
        }
    }
}

/// The `message` of sluice's (Anthropic-shaped) error body, else the body's first line.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            body.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect()
        })
}

impl UsageSource for HttpSource {
    fn fetch(&self, query: &UsageQuery, format: UsageFormat) -> Result<String, ReportError> {
        let url = format!("{}/usage?{}", self.base, query.to_query_string(format));
        actix_rt::System::new().block_on(self.get(&url))
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// The store's SQLite file, read directly, for when no sluice is running.
pub struct StoreSource {
    path: PathBuf,
}

impl StoreSource {
    /// Refuses a path that is not an existing file, so a typo never creates an empty database.
    pub fn open(path: &Path) -> Result<Self, ReportError> {
        if !path.is_file() {
            return Err(ReportError::NoDatabase(path.to_path_buf()));
        }
        Ok(StoreSource {
            path: path.to_path_buf(),
        })
    }
}

impl UsageSource for StoreSource {
    fn fetch(&self, query: &UsageQuery, format: UsageFormat) -> Result<String, ReportError> {
        let failed = |detail: String| ReportError::StoreQuery {
            path: self.path.clone(),
            detail,
        };
        // The same query `/usage` would answer, answered from the file by the same code.
        let query =
            crate::store::UsageQuery::parse(&query.to_query_string(format)).map_err(failed)?;
        let report =
            crate::store::usage_from_file(&self.path, &query, std::time::SystemTime::now())
                .map_err(|e| failed(e.to_string()))?;
        Ok(report.render(query.format).1)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_reaches_an_any_address_listener_on_loopback() {
        assert_eq!(
            default_url("0.0.0.0:4080".parse().unwrap()),
            "http://127.0.0.1:4080"
        );
        assert_eq!(
            default_url("[::]:4080".parse().unwrap()),
            "http://[::1]:4080"
        );
        assert_eq!(
            default_url("127.0.0.1:9000".parse().unwrap()),
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn a_missing_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        let err = StoreSource::open(&path).err().unwrap();
        assert!(matches!(err, ReportError::NoDatabase(ref p) if *p == path));
        assert!(err.to_string().contains("sluice.db"));
    }

    #[test]
    fn sluice_error_bodies_give_their_message() {
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"sluice: bad group_by"}}"#
            ),
            "sluice: bad group_by"
        );
        assert_eq!(error_message("plain text\nmore"), "plain text");
    }
}
