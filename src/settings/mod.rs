//! Where settings come from: the TOML file (or the built-in defaults) and `SLUICE__` environment
//! overrides, validated into the runtime [`Settings`]. Settings name the env vars that hold
//! secrets; reading them is the CredentialResolver's job (`credentials`).

mod file;
pub mod overrides;
pub mod watcher;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::http::header::HeaderName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use url::Url;

pub use crate::protocol::Protocol;
pub use file::{default_pricing, CredentialPolicy, SettingsFile};

use crate::pricing::{Price, PricingDefaults};
pub use crate::secrets::EnvSource;
use crate::secrets::SecretSource;

/// The shipped `settings/sluice.toml`; sluice runs on exactly this when no file is found.
pub const DEFAULT_SETTINGS_TOML: &str = include_str!("../../settings/sluice.toml");
/// Where `sluice` looks for settings when none are named.
pub const DEFAULT_SETTINGS_PATH: &str = "settings/sluice.toml";
/// Paths sluice answers itself; no route may take them.
pub const ADMIN_PATHS: [&str; 5] = ["/healthz", "/stats", "/metrics", "/usage", "/dashboard"];

/// A setting that is wrong, with the key that is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("settings: {0}")]
    Parse(String),
    #[error("settings: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    /// More than one of the above, each on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<SettingsError>),
}

impl SettingsError {
    /// `Ok` when `errors` is empty, else the one error or all of them.
    pub fn all_or(mut errors: Vec<SettingsError>) -> Result<(), SettingsError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(SettingsError::Several(errors)),
        }
    }

    /// Each error on its own (a `Several` flattened).
    pub fn each(&self) -> Vec<&SettingsError> {
        match self {
            SettingsError::Several(all) => all.iter().flat_map(|e| e.each()).collect(),
            one => vec![one],
        }
    }

    /// A wrong value, with the key it is under.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> SettingsError {
    SettingsError::invalid(key, reason)
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    /// Base URL without a trailing slash; its path is kept in front of every forwarded path.
    pub upstream: Url,
    /// Where requests with a subscription login (`client_oauth`: a ChatGPT login from Codex)
    /// go instead of `upstream`, with the same path below the prefix.
    pub subscription_upstream: Option<Url>,
    pub protocol: Protocol,
    pub credential_policy: CredentialPolicy,
    /// The env var holding the server key (read by the CredentialResolver).
    pub server_key_env: String,
    /// Or the file holding it (wins over the env var).
    pub server_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Certificates from `ca_file`, read and checked at validation.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Offer HTTP/2 by ALPN to an `https://` upstream, whose concurrent requests then share a
    /// connection as streams.
    pub http2: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A caller's access key, by name and the env var that holds it.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub name: String,
    /// "" when the key comes from `key_file`.
    pub key_env: String,
    pub key_file: Option<PathBuf>,
}

impl AccessKey {
    pub fn source(&self) -> SecretSource {
        SecretSource {
            env: self.key_env.clone(),
            file: self.key_file.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Access {
    pub header: HeaderName,
    pub keys: Vec<AccessKey>,
    /// One file per caller (name = caller, content = key); relative to the secrets' base dir.
    pub keys_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Upstream connections per worker; 0 = no limit.
    pub max_connections: usize,
    pub idle_keepalive: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSettings {
    pub state_file: Option<PathBuf>,
    pub flush_interval: Duration,
}

/// Where the store keeps its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `path = ""`: no store.
    Memory,
    /// An SQLite file (relative: see [`crate::store::resolve_path`]).
    Sqlite(PathBuf),
    /// The env var holding a PostgreSQL URL.
    PostgresEnv(String),
    /// The file holding a PostgreSQL URL.
    PostgresFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub location: StoreLocation,
    pub retention_days: u32,
}

impl StoreSettings {
    /// Where the PostgreSQL URL is read from (a secret: it may hold a password), when the store
    /// is on PostgreSQL.
    pub fn url_source(&self) -> Option<SecretSource> {
        match &self.location {
            StoreLocation::PostgresEnv(env) => Some(SecretSource {
                env: env.clone(),
                file: None,
            }),
            StoreLocation::PostgresFile(file) => Some(SecretSource {
                env: String::new(),
                file: Some(file.clone()),
            }),
            StoreLocation::Memory | StoreLocation::Sqlite(_) => None,
        }
    }
}

/// `[otlp]`: where usage is pushed as OpenTelemetry metrics (and spans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Base URL without a trailing slash; `/v1/metrics` and `/v1/traces` go after it.
    pub endpoint: Url,
    /// The secret file of headers (read by the CredentialResolver).
    pub headers_file: Option<PathBuf>,
    pub interval: Duration,
    pub traces: bool,
}

impl OtlpSettings {
    /// The URL one signal (`metrics`, `traces`) is posted to.
    pub fn signal_url(&self, signal: &str) -> String {
        format!(
            "{}/v1/{signal}",
            self.endpoint.as_str().trim_end_matches('/')
        )
    }

    pub fn headers_source(&self) -> Option<SecretSource> {
        self.headers_file.as_ref().map(|file| SecretSource {
            env: String::new(),
            file: Some(file.clone()),
        })
    }
}

/// The longest metrics export period `[otlp] interval_s` takes: an hour.
pub const MAX_OTLP_INTERVAL_S: u64 = 3600;

/// Validated settings (secrets are named here, never held). Built only by [`Settings::load`] / [`Settings::from_toml`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file they came from, or "built-in defaults".
    pub origin: String,
    /// The file they came from, when there is one (watched for changes).
    pub source: Option<PathBuf>,
    pub listen: SocketAddr,
    pub workers: usize,
    pub shutdown_grace: Duration,
    pub routes: Vec<Route>,
    pub access: Access,
    /// The env var holding the admin token.
    pub admin_token_env: String,
    /// Or the file holding it (wins over the env var).
    pub admin_token_file: Option<PathBuf>,
    pub timeouts: Timeouts,
    pub max_request_body_bytes: u64,
    pub pool: Pool,
    pub stats: StatsSettings,
    pub store: StoreSettings,
    pub pricing: BTreeMap<String, Price>,
    pub quotas: Vec<crate::quotas::Quota>,
    /// The request header naming a request's project.
    pub project_header: HeaderName,
    /// HTTPS on `listen` with this certificate and key (read as secrets, relative to the same
    /// base directory); fixed at start, the files re-read at every reload.
    pub tls: Option<TlsFiles>,
    /// Push usage to an OpenTelemetry collector, when `[otlp]` is set.
    pub otlp: Option<OtlpSettings>,
    /// The names sluice answers browsers by, and the origins whose pages it serves.
    pub browsers: crate::browsers::BrowserPolicy,
}

impl Route {
    pub fn server_key_source(&self) -> SecretSource {
        SecretSource {
            env: self.server_key_env.clone(),
            file: self.server_key_file.clone(),
        }
    }
}

impl Settings {
    pub fn admin_token_source(&self) -> SecretSource {
        SecretSource {
            env: self.admin_token_env.clone(),
            file: self.admin_token_file.clone(),
        }
    }

    /// Reads `path` (or, when `None`, `settings/sluice.toml` if it exists, else the built-in
    /// defaults), applies `SLUICE__` overrides and validates.
    pub fn load(path: Option<&Path>, env: &EnvSource) -> Result<Settings, SettingsError> {
        let source = match path {
            Some(path) => Some(path.to_path_buf()),
            None if Path::new(DEFAULT_SETTINGS_PATH).exists() => {
                Some(PathBuf::from(DEFAULT_SETTINGS_PATH))
            }
            None => None,
        };
        let (text, origin) = match &source {
            Some(path) => (read_file(path)?, path.display().to_string()),
            None => (
                DEFAULT_SETTINGS_TOML.to_string(),
                "built-in defaults".into(),
            ),
        };
        let mut settings = Self::from_toml(&text, &origin, env)?;
        settings.source = source;
        Ok(settings)
    }

    pub fn from_toml(text: &str, origin: &str, env: &EnvSource) -> Result<Settings, SettingsError> {
        let overrides = overrides::from_env(env.all())?;
        let raw = parse(text, &overrides)?;
        let mut settings =
            validate(raw, origin).map_err(|e| overrides::name_variable(e, &overrides))?;
        // Under systemd, `StateDirectory=` is where state belongs (the working directory is `/`).
        let state_dir = env.var("STATE_DIRECTORY");
        let first = state_dir.as_deref().and_then(|dirs| dirs.split(':').next());
        if let (Some(dir), Some(file)) = (first, settings.stats.state_file.as_mut()) {
            if file.is_relative() {
                *file = Path::new(dir).join(&*file);
            }
        }
        Ok(settings)
    }

    /// A few lines for `sluice check` and the startup log: what the file says (the secrets'
    /// lines come from the CredentialResolver's material).
    pub fn summary(&self) -> String {
        let workers = match self.workers {
            0 => "one worker per CPU core".to_string(),
            1 => "1 worker".to_string(),
            n => format!("{n} workers"),
        };
        let mut out = format!(
            "settings from {}: listen {}, {workers}\n",
            self.origin, self.listen
        );
        if self.routes.iter().any(|route| route.prefix == "/") {
            out.push_str(&format!(
                "paths {} (any letter case, and everything below them) are answered by sluice, \
                 never forwarded\n",
                ADMIN_PATHS.join(", ")
            ));
        }
        for route in &self.routes {
            let http = if route.http2 && route.upstream.scheme() == "https" {
                "HTTP/2 or HTTP/1.1 by ALPN"
            } else {
                "HTTP/1.1"
            };
            out.push_str(&format!(
                "route {} -> {} [{}, {}, {http}]\n",
                route.prefix,
                route.upstream,
                route.credential_policy.as_str(),
                route.protocol.as_str(),
            ));
        }
        if let Some(otlp) = &self.otlp {
            out.push_str(&format!(
                "otlp -> {} [metrics every {} s, traces {}{}]\n",
                otlp.endpoint,
                otlp.interval.as_secs(),
                if otlp.traces { "on" } else { "off" },
                if otlp.headers_file.is_some() {
                    ", headers from a secret file"
                } else {
                    ""
                },
            ));
        }
        out.push_str(&format!("{} priced model prefixes", self.pricing.len()));
        out
    }

    /// The route whose prefix covers `path` (prefixes never overlap, so at most one does).
    pub fn route_for(&self, path: &str) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, route)| crate::routing::prefix_covers(&route.prefix, path))
    }
}

fn read_file(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn parse(text: &str, overrides: &[overrides::Override]) -> Result<SettingsFile, SettingsError> {
    let file = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(|e| SettingsError::Parse(e.to_string()))?;
    let builder = config::Config::builder().add_source(file.clone());
    let merged = overrides::apply(builder, overrides, &file)?
        .build()
        .map_err(|e| SettingsError::Parse(e.to_string()))?;
    // Deserializing through the path tracker names the key of a wrong value
    // (`routes[0].credential_policy`), not only what was wrong with it.
    serde_path_to_error::deserialize::<_, SettingsFile>(merged.clone())
        .map_err(|first| every_type_error(&merged, first))
        .map_err(|e| overrides::name_variable(e, overrides))
}

/// The most wrong values reported from one file.
const MAX_TYPE_ERRORS: usize = 50;

/// Every value of a wrong type or unknown key, not only the first serde stops at: the wrong
/// value is taken out and the rest deserialized again, until the rest is right. A value taken
/// out that was required ends the search (its absence is no error of the file's).
fn every_type_error(
    merged: &config::Config,
    first: serde_path_to_error::Error<config::ConfigError>,
) -> SettingsError {
    let (mut path, mut found) = type_error(first);
    let mut errors = vec![found.clone()];
    let Ok(mut tree) = merged.clone().try_deserialize::<serde_json::Value>() else {
        return found;
    };
    let mut taken: Vec<Vec<String>> = Vec::new();
    while errors.len() < MAX_TYPE_ERRORS {
        match take_out(&mut tree, &path, &found) {
            Some(key) => taken.push(key),
            None => break,
        }
        let Ok(rest) = config::Config::try_from(&tree) else {
            break;
        };
        let Err(next) = serde_path_to_error::deserialize::<_, SettingsFile>(rest) else {
            break;
        };
        (path, found) = type_error(next);
        let missing = found.to_string();
        // "missing field `upstream`" (serde) or "missing configuration field
        // \"routes[0]upstream\"" (config), under the parent of a key taken out.
        let ours = taken.iter().any(|key| {
            key[..key.len() - 1] == path[..]
                && missing.contains("missing")
                && missing.contains(key[key.len() - 1].as_str())
        });
        if ours || errors.iter().any(|e| e.to_string() == missing) {
            break;
        }
        errors.push(found.clone());
    }
    SettingsError::all_or(errors).expect_err("at least the first error")
}

/// A deserialization error as the settings report it, with the path of keys it is under
/// (array indices as their number).
fn type_error(
    err: serde_path_to_error::Error<config::ConfigError>,
) -> (Vec<String>, SettingsError) {
    use serde_path_to_error::Segment;
    let key = err.path().to_string();
    let path = (err.path().iter())
        .filter_map(|segment| match segment {
            Segment::Map { key } => Some(key.clone()),
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect();
    let reason = err.into_inner().to_string();
    let error = if key.is_empty() || key == "?" || reason.contains("unknown field") {
        SettingsError::Parse(reason)
    } else {
        invalid(key, reason)
    };
    (path, error)
}

/// Removes the value `error` is about from `tree` (an unknown key, or the wrong value at
/// `path`); the removed key's path, or `None` when there is nothing that can be taken out.
fn take_out(
    tree: &mut serde_json::Value,
    path: &[String],
    error: &SettingsError,
) -> Option<Vec<String>> {
    let mut key = path.to_vec();
    let text = error.to_string();
    if let Some(unknown) = text
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
    {
        if key.last().map(String::as_str) != Some(unknown) {
            key.push(unknown.to_string());
        }
    }
    let (last, parents) = key.split_last()?;
    let mut node = tree;
    for step in parents {
        node = match node {
            serde_json::Value::Object(map) => map.get_mut(step)?,
            serde_json::Value::Array(items) => items.get_mut(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    node.as_object_mut()?.remove(last)?;
    Some(key)
}

/// Checks every value and reports every wrong one at once.
fn validate(raw: SettingsFile, origin: &str) -> Result<Settings, SettingsError> {
    let mut errors = Vec::new();
    // Each check records its error and gives a stand-in, so the checks after it still run; the
    // stand-ins never leave this function (any error returns before the settings are built).
    let mut check = |result: Result<(), SettingsError>| {
        if let Err(err) = result {
            errors.push(err);
        }
    };
    let listen: SocketAddr = raw.listen.parse().unwrap_or_else(|_| {
        check(Err(invalid(
            "listen",
            format!("{:?} is not an address like 127.0.0.1:4080", raw.listen),
        )));
        SocketAddr::from(([127, 0, 0, 1], 0))
    });

    if raw.routes.is_empty() {
        check(Err(invalid(
            "routes",
            "at least one [[routes]] entry is required",
        )));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, route) in raw.routes.iter().enumerate() {
        match validate_route(i, route) {
            Ok(route) => routes.push(route),
            Err(err) => check(Err(err)),
        }
    }
    for (i, a) in routes.iter().enumerate() {
        for (j, b) in routes.iter().enumerate().skip(i + 1) {
            if crate::routing::prefix_covers(&a.prefix, &b.prefix)
                || crate::routing::prefix_covers(&b.prefix, &a.prefix)
            {
                check(Err(invalid(
                    format!("routes[{j}].prefix"),
                    format!("{:?} overlaps routes[{i}].prefix {:?}", b.prefix, a.prefix),
                )));
            }
        }
    }

    let access = validate_access(raw.access.unwrap_or_else(file::default_access))
        .map_err(|err| check(Err(err)))
        .ok();

    let mut ms = |key: &str, value: u64| {
        positive_ms(key, value).unwrap_or_else(|err| {
            check(Err(err));
            Duration::ZERO
        })
    };
    let timeouts = Timeouts {
        connect: ms("timeouts.connect_ms", raw.timeouts.connect_ms),
        first_byte: ms("timeouts.first_byte_ms", raw.timeouts.first_byte_ms),
        idle: ms("timeouts.idle_ms", raw.timeouts.idle_ms),
    };
    if raw.limits.max_request_body_bytes == 0 {
        check(Err(invalid(
            "limits.max_request_body_bytes",
            "must be greater than 0",
        )));
    }
    if raw.stats.flush_interval_s == 0 {
        check(Err(invalid(
            "stats.flush_interval_s",
            "must be greater than 0",
        )));
    }

    let store = StoreSettings {
        location: match (&raw.store.url_env, &raw.store.url_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "store.url_env",
                    "give url_env or url_file, not both",
                ))
            }
            (Some(env), None) if !env.is_empty() => StoreLocation::PostgresEnv(env.clone()),
            (None, Some(file)) if !file.is_empty() => {
                StoreLocation::PostgresFile(PathBuf::from(file))
            }
            _ if raw.store.path.is_empty() => StoreLocation::Memory,
            _ => StoreLocation::Sqlite(PathBuf::from(&raw.store.path)),
        },
        retention_days: raw.store.retention_days,
    };
    if store.retention_days == 0 {
        return Err(invalid("store.retention_days", "must be greater than 0"));
    }

    let pricing = validate_pricing(raw.pricing, raw.pricing_defaults)
        .map_err(|err| check(Err(err)))
        .ok();
    let project_header = HeaderName::from_bytes(raw.attribution.project_header.as_bytes())
        .map_err(|_| {
            check(Err(invalid(
                "attribution.project_header",
                format!("{:?} is not a header name", raw.attribution.project_header),
            )))
        })
        .ok();

    let browsers = crate::browsers::BrowserPolicy {
        allowed_hosts: raw
            .browsers
            .allowed_hosts
            .iter()
            .enumerate()
            .filter_map(|(i, host)| {
                validate_host_name(host)
                    .map_err(|reason| {
                        check(Err(invalid(format!("browsers.allowed_hosts[{i}]"), reason)))
                    })
                    .ok()
            })
            .collect(),
        allowed_origins: raw
            .browsers
            .allowed_origins
            .iter()
            .enumerate()
            .filter_map(|(i, origin)| {
                validate_origin(origin)
                    .map_err(|reason| {
                        check(Err(invalid(
                            format!("browsers.allowed_origins[{i}]"),
                            reason,
                        )))
                    })
                    .ok()
            })
            .collect(),
    };

    let prefixes: Vec<&str> = routes.iter().map(|r| r.prefix.as_str()).collect();
    let quotas = crate::quotas::validate(&raw.quotas, &prefixes)
        .map_err(|e| check(Err(invalid(e.key, e.reason))))
        .ok();
    let otlp = raw
        .otlp
        .map(validate_otlp)
        .transpose()
        .map_err(|err| check(Err(err)))
        .ok()
        .flatten();
    SettingsError::all_or(errors)?;
    let (Some(access), Some(pricing), Some(project_header), Some(quotas)) =
        (access, pricing, project_header, quotas)
    else {
        unreachable!("their errors were returned above");
    };

    let settings = Settings {
        origin: origin.to_string(),
        source: None,
        listen,
        workers: raw.workers,
        shutdown_grace: Duration::from_secs(raw.shutdown_grace_s),
        routes,
        access,
        admin_token_env: raw.admin.token_env,
        admin_token_file: raw.admin.token_file.map(PathBuf::from),
        timeouts,
        max_request_body_bytes: raw.limits.max_request_body_bytes,
        pool: Pool {
            max_connections: raw.pool.max_connections,
            idle_keepalive: Duration::from_secs(raw.pool.idle_keepalive_s.max(1)),
        },
        stats: StatsSettings {
            state_file: (!raw.stats.state_file.is_empty())
                .then(|| PathBuf::from(&raw.stats.state_file)),
            flush_interval: Duration::from_secs(raw.stats.flush_interval_s),
        },
        store,
        pricing,
        quotas,
        project_header,
        tls: raw.tls.map(|t| TlsFiles {
            cert_file: PathBuf::from(t.cert_file),
            key_file: PathBuf::from(t.key_file),
        }),
        otlp,
        browsers,
    };
    Ok(settings)
}

/// A host name as `Host` carries it, without scheme, port or path: lowercase, trailing dot
/// dropped.
fn validate_host_name(host: &str) -> Result<String, String> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a host name like \"sluice.example.com\" (no scheme, port or path)"
        ));
    }
    Ok(name)
}

/// A browser origin, `http(s)://host[:port]` with nothing after: lowercase.
fn validate_origin(origin: &str) -> Result<String, String> {
    let lower = origin.to_ascii_lowercase();
    let authority = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let (host, port) = match authority.map(|a| a.rsplit_once(':').unwrap_or((a, ""))) {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, port),
        _ => ("", ""),
    };
    let host_ok = !host.is_empty()
        && (validate_host_name(host).is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok()));
    if !host_ok || (port.is_empty() && authority.is_some_and(|a| a.ends_with(':'))) {
        return Err(format!(
            "{origin:?} is not an origin like \"https://app.example.com\" (scheme, host, optional port, no path)"
        ));
    }
    Ok(lower)
}

fn positive_ms(key: &str, ms: u64) -> Result<Duration, SettingsError> {
    if ms == 0 {
        return Err(invalid(key, "must be greater than 0"));
    }
    Ok(Duration::from_millis(ms))
}

fn validate_route(i: usize, raw: &file::RouteFile) -> Result<Route, SettingsError> {
    let key = |field: &str| format!("routes[{i}].{field}");
    let prefix = raw.prefix.clone();
    if !prefix.starts_with('/') {
        return Err(invalid(
            key("prefix"),
            format!("{prefix:?} must start with '/'"),
        ));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(invalid(
            key("prefix"),
            format!("{prefix:?} must not end with '/'"),
        ));
    }
    if prefix.contains(['?', '#', '%', '\\'])
        || prefix.contains("//")
        || prefix.split('/').any(|s| s == "." || s == "..")
    {
        return Err(invalid(
            key("prefix"),
            format!("{prefix:?} must be a plain path like \"/anthropic\""),
        ));
    }
    // In any letter case: such a route could never be reached (those paths are answered by
    // sluice, see `reserved`), so it is a mistake.
    if let Some(admin) = crate::routing::first_segment_among(&prefix, &ADMIN_PATHS) {
        return Err(invalid(
            key("prefix"),
            format!("{prefix:?} clashes with the admin path {admin}"),
        ));
    }

    let upstream = base_url(&key("upstream"), &raw.upstream)?;
    let subscription_upstream = raw
        .subscription_upstream
        .as_deref()
        .map(|url| base_url(&key("subscription_upstream"), url))
        .transpose()?;

    let (ca_file, extra_roots) = match &raw.ca_file {
        None => (None, Vec::new()),
        Some(path) => {
            let https = |url: &Url| url.scheme() == "https";
            if !https(&upstream) && !subscription_upstream.as_ref().is_some_and(https) {
                return Err(invalid(
                    key("ca_file"),
                    "is only meaningful for an https:// upstream",
                ));
            }
            let certs =
                read_ca_file(Path::new(path)).map_err(|reason| invalid(key("ca_file"), reason))?;
            (Some(PathBuf::from(path)), certs)
        }
    };

    Ok(Route {
        prefix,
        upstream,
        subscription_upstream,
        protocol: raw.protocol,
        credential_policy: raw.credential_policy,
        server_key_env: raw.server_key_env.clone(),
        server_key_file: raw.server_key_file.as_ref().map(PathBuf::from),
        ca_file,
        extra_roots,
        http2: raw.http2,
    })
}

fn validate_otlp(raw: file::OtlpFile) -> Result<OtlpSettings, SettingsError> {
    // Credentials belong in `headers_file`, where they are a watched secret and never logged:
    // the endpoint is a base URL like an upstream's, with no user info.
    let endpoint = base_url("otlp.endpoint", &raw.endpoint)?;
    if raw.interval_s == 0 || raw.interval_s > MAX_OTLP_INTERVAL_S {
        return Err(invalid(
            "otlp.interval_s",
            format!("must be between 1 and {MAX_OTLP_INTERVAL_S}"),
        ));
    }
    if raw.headers_file.as_deref() == Some("") {
        return Err(invalid("otlp.headers_file", "must name a file"));
    }
    Ok(OtlpSettings {
        endpoint,
        headers_file: raw.headers_file.map(PathBuf::from),
        interval: Duration::from_secs(raw.interval_s),
        traces: raw.traces,
    })
}

/// A bundle of every public root is about 250 KB.
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// An upstream base URL: http(s), with a host, no query, fragment or user info; its path is
/// kept without a trailing slash.
fn base_url(key: &str, raw: &str) -> Result<Url, SettingsError> {
    let mut url =
        Url::parse(raw).map_err(|e| invalid(key, format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!("{raw:?} must be an http:// or https:// URL with a host"),
        ));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(invalid(
            key,
            "must not carry a query, fragment or user info (credentials go in secret files)",
        ));
    }
    let base_path = url.path().trim_end_matches('/').to_string();
    url.set_path(&base_path);
    Ok(url)
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = crate::secrets::read_regular_file(path, MAX_CA_FILE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn validate_access(raw: file::AccessFile) -> Result<Access, SettingsError> {
    let header = HeaderName::from_bytes(raw.header.as_bytes()).map_err(|_| {
        invalid(
            "access.header",
            format!("{:?} is not a header name", raw.header),
        )
    })?;
    if crate::headers::is_hop_by_hop(&header) || header == actix_web::http::header::HOST {
        return Err(invalid(
            "access.header",
            format!("{:?} is a connection-level header", raw.header),
        ));
    }
    let mut names = HashSet::new();
    for (i, key) in raw.keys.iter().enumerate() {
        if key.name.is_empty() || !names.insert(key.name.clone()) {
            return Err(invalid(
                format!("access.keys[{i}].name"),
                format!("{:?} is empty or used twice", key.name),
            ));
        }
    }
    for (i, key) in raw.keys.iter().enumerate() {
        if key.key_env.is_empty() && key.key_file.is_none() {
            return Err(invalid(
                format!("access.keys[{i}]"),
                format!("{:?} needs key_env or key_file", key.name),
            ));
        }
    }
    let keys = raw
        .keys
        .into_iter()
        .map(|k| AccessKey {
            name: k.name,
            key_env: k.key_env,
            key_file: k.key_file.map(PathBuf::from),
        })
        .collect();
    Ok(Access {
        header,
        keys,
        keys_dir: raw.keys_dir.map(PathBuf::from),
    })
}

/// Each model's price, checked, with what it leaves unset taken from `[pricing_defaults]`.
/// A file without `[pricing]` gets the built-in table; without `[pricing_defaults]`, the
/// built-in defaults.
fn validate_pricing(
    pricing: Option<BTreeMap<String, Price>>,
    defaults: Option<PricingDefaults>,
) -> Result<BTreeMap<String, Price>, SettingsError> {
    let (built_in, built_in_defaults) = file::built_in_pricing();
    let defaults = defaults.unwrap_or(built_in_defaults);
    defaults
        .validate()
        .map_err(|error| invalid(format!("pricing_defaults.{}", error.field), error.reason))?;
    pricing
        .unwrap_or(built_in)
        .into_iter()
        .map(|(model, price)| {
            price.validate().map_err(|error| {
                invalid(format!("pricing.\"{model}\".{}", error.field), error.reason)
            })?;
            Ok((model, price.with_defaults(&defaults)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvSource {
        EnvSource::Fixed(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_toml(text, "test.toml", &env(pairs))
    }

    fn error_key(result: Result<Settings, SettingsError>) -> String {
        match result.expect_err("settings should be refused") {
            SettingsError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    const ONE_ROUTE: &str = r#"
        [[routes]]
        prefix = "/anthropic"
        upstream = "https://api.anthropic.com"
    "#;

    #[test]
    fn built_in_defaults_are_the_shipped_file() {
        let settings = load(DEFAULT_SETTINGS_TOML, &[]).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:4080".parse().unwrap());
        let routes: Vec<(&str, &str, Protocol, &str)> = settings
            .routes
            .iter()
            .map(|r| {
                (
                    r.prefix.as_str(),
                    r.upstream.as_str(),
                    r.protocol,
                    r.server_key_env.as_str(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                (
                    "/anthropic",
                    "https://api.anthropic.com/",
                    Protocol::Anthropic,
                    "ANTHROPIC_API_KEY"
                ),
                (
                    "/openai/v1",
                    "https://api.openai.com/v1",
                    Protocol::OpenAi,
                    "OPENAI_API_KEY"
                ),
                (
                    "/gemini",
                    "https://generativelanguage.googleapis.com/",
                    Protocol::Gemini,
                    "GEMINI_API_KEY"
                ),
            ]
        );
        assert_eq!(
            settings.routes[1]
                .subscription_upstream
                .as_ref()
                .map(Url::as_str),
            Some("https://chatgpt.com/backend-api/codex")
        );
        assert!(settings.routes[0].subscription_upstream.is_none());
        assert_eq!(
            settings.routes[0].upstream.as_str(),
            "https://api.anthropic.com/"
        );
        assert_eq!(
            settings.routes[0].credential_policy,
            CredentialPolicy::ClientFirst
        );
        assert_eq!(settings.timeouts.first_byte, Duration::from_secs(600));
        assert!(settings.pricing.contains_key("claude-sonnet-4"));
        assert_eq!(settings.pricing, default_pricing());
    }

    /// The container image's settings differ from the built-in defaults in where it listens
    /// and where callers' key files are, nothing else: prices, the store and every other
    /// setting are the built-in ones, so they cannot go stale in the image.
    #[test]
    fn container_settings_are_the_built_in_defaults_but_listen_and_keys_dir() {
        let container = load(include_str!("../../packaging/container.toml"), &[]).unwrap();
        let mut expected = load(DEFAULT_SETTINGS_TOML, &[]).unwrap();
        assert_eq!(container.listen, "0.0.0.0:4080".parse().unwrap());
        assert_eq!(
            container.access.keys_dir,
            Some(PathBuf::from("/etc/sluice/keys"))
        );
        expected.listen = container.listen;
        expected.access.keys_dir = container.access.keys_dir.clone();
        assert_eq!(format!("{container:#?}"), format!("{expected:#?}"));
    }

    #[test]
    fn omitted_sections_take_defaults_and_pricing_defaults_to_built_in() {
        let settings = load(ONE_ROUTE, &[]).unwrap();
        assert_eq!(settings.listen.port(), 4080);
        assert_eq!(settings.max_request_body_bytes, 33_554_432);
        assert_eq!(settings.pricing, default_pricing());
        assert_eq!(
            settings.stats.state_file,
            Some(PathBuf::from("state/stats.json"))
        );
    }

    #[test]
    fn prices_take_what_they_leave_unset_from_pricing_defaults() {
        let text = format!(
            r#"{ONE_ROUTE}
            [pricing_defaults]
            web_search_per_1k = 12.5
            inference_geo = {{ us = 1.2 }}
            [pricing."claude-x"]
            input = 3.0
            output = 15.0
            cache_write = 3.75
            cache_read = 0.3
            speed = {{ fast = 2.0 }}
            long_context = {{ threshold = 200000, input = 6.0, output = 22.5, cache_write = 7.5, cache_read = 0.6 }}
            [pricing."claude-y"]
            input = 1.0
            output = 5.0
            cache_write = 1.25
            cache_read = 0.1
            batch = 0.25
            "#
        );
        let settings = load(&text, &[]).unwrap();
        let x = &settings.pricing["claude-x"];
        assert_eq!(x.web_search_per_1k, Some(12.5));
        assert_eq!(x.batch, Some(0.5));
        assert_eq!(x.inference_geo["us"], 1.2);
        assert_eq!(x.speed["fast"], 2.0);
        assert_eq!(x.long_context.as_ref().unwrap().threshold, 200_000);
        assert_eq!(settings.pricing["claude-y"].batch, Some(0.25));
    }

    #[test]
    fn routes_offer_http2_unless_told_not_to() {
        assert!(load(ONE_ROUTE, &[]).unwrap().routes[0].http2);
        let text = format!("{ONE_ROUTE}http2 = false\n");
        assert!(!load(&text, &[]).unwrap().routes[0].http2);
        let text = format!("{ONE_ROUTE}http2 = \"maybe\"\n");
        assert_eq!(error_key(load(&text, &[])), "routes[0].http2");
    }

    #[test]
    fn project_header_defaults_to_x_sluice_project_and_must_be_a_header_name() {
        let settings = load(ONE_ROUTE, &[]).unwrap();
        assert_eq!(settings.project_header.as_str(), "x-sluice-project");
        let text = format!("{ONE_ROUTE}\n[attribution]\nproject_header = \"X-Team\"\n");
        assert_eq!(load(&text, &[]).unwrap().project_header.as_str(), "x-team");
        let text = format!("{ONE_ROUTE}\n[attribution]\nproject_header = \"bad header\"\n");
        assert_eq!(error_key(load(&text, &[])), "attribution.project_header");
    }

    #[test]
    fn bad_prices_are_refused_naming_model_and_field() {
        let priced = |extra: &str| {
            format!(
                "{ONE_ROUTE}\n[pricing.\"claude-x\"]\ninput = 3.0\noutput = 15.0\ncache_write = 3.75\ncache_read = 0.3\n{extra}\n"
            )
        };
        assert_eq!(
            error_key(load(
                &priced("output = -1.0").replace("output = 15.0\n", ""),
                &[]
            )),
            "pricing.\"claude-x\".output"
        );
        assert_eq!(
            error_key(load(
                &priced("long_context = { threshold = 0, input = 6.0, output = 22.5, cache_write = 7.5, cache_read = 0.6 }"),
                &[]
            )),
            "pricing.\"claude-x\".long_context.threshold"
        );
        assert_eq!(
            error_key(load(&priced("speed = { fast = -2.0 }"), &[])),
            "pricing.\"claude-x\".speed.fast"
        );
        assert_eq!(
            error_key(load(
                &format!("{ONE_ROUTE}\n[pricing_defaults]\nbatch = -0.5\n"),
                &[]
            )),
            "pricing_defaults.batch"
        );
        let err = load(
            &format!("{ONE_ROUTE}\n[pricing_defaults]\nbatchh = 0.5\n"),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("batchh"), "{err}");
    }

    #[test]
    fn env_override_replaces_listen() {
        let settings = load(ONE_ROUTE, &[("SLUICE__LISTEN", "127.0.0.1:9000")]).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:9000".parse().unwrap());
        let settings = load(ONE_ROUTE, &[("SLUICE__TIMEOUTS__IDLE_MS", "1234")]).unwrap();
        assert_eq!(settings.timeouts.idle, Duration::from_millis(1234));
    }

    #[test]
    fn every_wrong_value_is_reported_at_once() {
        let text = "listen = \"x\"\n[[routes]]\nprefix = \"a\"\nupstream = \"http://x\"\n\
                    [limits]\nmax_request_body_bytes = 0\n";
        let err = load(text, &[]).unwrap_err();
        let keys: Vec<String> = err
            .each()
            .iter()
            .map(|e| match e {
                SettingsError::Invalid { key, .. } => key.clone(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                "listen",
                "routes[0].prefix",
                "limits.max_request_body_bytes"
            ]
        );
    }

    #[test]
    fn relative_state_file_goes_under_state_directory() {
        let state = [("STATE_DIRECTORY", "/var/lib/sluice")];
        let settings = load(ONE_ROUTE, &state).unwrap();
        assert_eq!(
            settings.stats.state_file,
            Some(PathBuf::from("/var/lib/sluice/state/stats.json"))
        );
        let text = format!("{ONE_ROUTE}\n[stats]\nstate_file = \"/srv/s.json\"\n");
        let settings = load(&text, &state).unwrap();
        assert_eq!(
            settings.stats.state_file,
            Some(PathBuf::from("/srv/s.json"))
        );
    }

    #[test]
    fn route_keys_can_be_overridden_by_index() {
        let env = [("SLUICE__ROUTES__0__UPSTREAM", "http://127.0.0.1:7")];
        let settings = load(ONE_ROUTE, &env).unwrap();
        assert_eq!(settings.routes[0].upstream.as_str(), "http://127.0.0.1:7/");
        assert_eq!(settings.routes[0].prefix, "/anthropic");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load(&format!("lisen = \"x\"\n{ONE_ROUTE}"), &[]).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = load(&format!("{ONE_ROUTE}\npolicy = \"x\""), &[]).unwrap_err();
        assert!(err.to_string().contains("policy"), "{err}");
    }

    #[test]
    fn route_values_are_checked_by_key() {
        let bad = |field: &str, value: &str| {
            let text = format!(
                "[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n{field} = {value}\n"
            );
            error_key(load(&text, &[]))
        };
        assert_eq!(
            bad("credential_policy", "\"always\""),
            "routes[0].credential_policy"
        );
        assert_eq!(bad("protocol", "\"grpc\""), "routes[0].protocol");
        for protocol in ["anthropic", "openai", "gemini", "none"] {
            let text = format!(
                "[[routes]]\nprefix = \"/a\"\nupstream = \"http://x\"\nprotocol = \"{protocol}\"\n"
            );
            assert_eq!(
                load(&text, &[]).unwrap().routes[0].protocol.as_str(),
                protocol
            );
        }
        assert_eq!(
            bad("subscription_upstream", "\"chatgpt.com\""),
            "routes[0].subscription_upstream"
        );
        assert_eq!(bad("ca_file", "\"/nonexistent.pem\""), "routes[0].ca_file");
        let text = "[[routes]]\nprefix = \"/a\"\nupstream = \"ftp://x\"\n";
        assert_eq!(error_key(load(text, &[])), "routes[0].upstream");
        let text = "[[routes]]\nprefix = \"a\"\nupstream = \"http://x\"\n";
        assert_eq!(error_key(load(text, &[])), "routes[0].prefix");
        let text = "[[routes]]\nprefix = \"/stats\"\nupstream = \"http://x\"\n";
        assert_eq!(error_key(load(text, &[])), "routes[0].prefix");
    }

    #[test]
    fn every_wrong_type_and_unknown_key_is_reported_at_once() {
        let text = "lisen = \"x\"\n[[routes]]\nprefix = \"/a\"\nupstream = \"http://x\"\n\
                    credential_policy = \"always\"\n[timeouts]\nconnect_ms = \"soon\"\n\
                    [store]\nretention_days = -3\n";
        let err = load(text, &[]).unwrap_err();
        let text = err.to_string();
        for key in [
            "lisen",
            "routes[0].credential_policy",
            "timeouts.connect_ms",
            "store.retention_days",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(err.each().len(), 4, "{text}");
        // A required value of the wrong type is reported once, not again as missing.
        let text = "[[routes]]\nprefix = \"/a\"\nupstream = [\"x\"]\n";
        let err = load(text, &[]).unwrap_err();
        assert_eq!(error_key(Err(err)), "routes[0].upstream");
    }

    #[test]
    fn empty_and_overlapping_routes_are_refused() {
        assert_eq!(error_key(load("listen = \"127.0.0.1:1\"", &[])), "routes");
        let text = "[[routes]]\nprefix = \"/a\"\nupstream = \"http://x\"\n\
                    [[routes]]\nprefix = \"/a/b\"\nupstream = \"http://y\"\n";
        assert_eq!(error_key(load(text, &[])), "routes[1].prefix");
        let text = "[[routes]]\nprefix = \"/a\"\nupstream = \"http://x\"\n\
                    [[routes]]\nprefix = \"/a\"\nupstream = \"http://y\"\n";
        assert_eq!(error_key(load(text, &[])), "routes[1].prefix");
        let text = "[[routes]]\nprefix = \"/a\"\nupstream = \"http://x\"\n\
                    [[routes]]\nprefix = \"/ab\"\nupstream = \"http://y\"\n";
        assert!(load(text, &[]).is_ok());
    }

    #[test]
    fn access_keys_are_named_by_their_env_var_and_header_defaults() {
        let text = format!(
            "{ONE_ROUTE}\n[access]\n[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n"
        );
        let settings = load(&text, &[]).unwrap();
        assert_eq!(settings.access.keys[0].name, "alice");
        assert_eq!(settings.access.keys[0].key_env, "K_ALICE");
        assert_eq!(settings.access.header.as_str(), "x-sluice-key");
    }

    #[test]
    fn quotas_are_read_and_checked_by_key() {
        let text = format!(
            "{ONE_ROUTE}\n[[quotas]]\nname = \"daily\"\ncaller = \"*\"\nwindow = \"day\"\n\
             max_usd = 20\n[[quotas]]\nname = \"opus\"\nroute = \"/anthropic\"\n\
             max_concurrent = 2\n"
        );
        let settings = load(&text, &[]).unwrap();
        assert_eq!(settings.quotas.len(), 2);
        assert_eq!(settings.quotas[1].limits.concurrent, Some(2));
        let wrong = text.replace("\"day\"", "\"fortnight\"");
        assert_eq!(error_key(load(&wrong, &[])), "quotas[0].window");
        let wrong = text.replace("\"/anthropic\"\nmax", "\"/openai\"\nmax");
        assert_eq!(error_key(load(&wrong, &[])), "quotas[1].route");
        assert!(load(ONE_ROUTE, &[]).unwrap().quotas.is_empty());
    }

    #[test]
    fn otlp_is_off_unless_set_and_checked_by_key() {
        assert!(load(ONE_ROUTE, &[]).unwrap().otlp.is_none());
        assert!(load(DEFAULT_SETTINGS_TOML, &[]).unwrap().otlp.is_none());
        let text = format!("{ONE_ROUTE}\n[otlp]\n");
        let otlp = load(&text, &[]).unwrap().otlp.unwrap();
        assert_eq!(
            otlp.signal_url("metrics"),
            "http://127.0.0.1:4318/v1/metrics"
        );
        assert_eq!(otlp.interval, Duration::from_secs(10));
        assert!(!otlp.traces && otlp.headers_file.is_none());
        let text = format!(
            "{ONE_ROUTE}\n[otlp]\nendpoint = \"https://otel.example:4318/base/\"\n\
             headers_file = \"h\"\ninterval_s = 5\ntraces = true\n"
        );
        let otlp = load(&text, &[]).unwrap().otlp.unwrap();
        assert_eq!(
            otlp.signal_url("traces"),
            "https://otel.example:4318/base/v1/traces"
        );
        assert_eq!(otlp.headers_file, Some(PathBuf::from("h")));
        let bad = |line: &str| error_key(load(&format!("{ONE_ROUTE}\n[otlp]\n{line}\n"), &[]));
        assert_eq!(bad("endpoint = \"ftp://x\""), "otlp.endpoint");
        assert_eq!(bad("endpoint = \"http://u:p@x\""), "otlp.endpoint");
        assert_eq!(bad("interval_s = 0"), "otlp.interval_s");
        assert_eq!(bad("interval_s = 86400"), "otlp.interval_s");
        let err = load(&format!("{ONE_ROUTE}\n[otlp]\nintervall_s = 5\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("intervall_s"), "{err}");
        let summary = load(&text, &[]).unwrap().summary();
        assert!(
            summary
                .contains("otlp -> https://otel.example:4318/base [metrics every 5 s, traces on"),
            "{summary}"
        );
    }

    #[test]
    fn upstream_base_path_is_kept_without_trailing_slash() {
        let text =
            "[[routes]]\nprefix = \"/a\"\nupstream = \"http://gw.local:8080/llm/anthropic/\"\n";
        let settings = load(text, &[]).unwrap();
        assert_eq!(settings.routes[0].upstream.path(), "/llm/anthropic");
    }
}
