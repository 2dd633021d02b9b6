//! The settings file as written: plain serde structs, every section optional, unknown keys refused.
//!
//! Defaults live in one place, the built-in `settings/sluice.toml`: a key left out of a file takes
//! the value that file gives it (the `default_*` functions below read it), so the shipped file and
//! the structs cannot disagree.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::pricing::{Price, PricingDefaults};
use crate::protocol::Protocol;

/// The built-in settings, parsed once. Every key the structs default is spelled out there.
static BUILT_IN: LazyLock<SettingsFile> = LazyLock::new(|| {
    toml_document(super::DEFAULT_SETTINGS_TOML)
        .expect("the built-in settings/sluice.toml parses (checked by a unit test)")
});

fn toml_document(text: &str) -> Result<SettingsFile, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

/// Whose credentials a route sends upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialPolicy {
    /// The client's own credentials win; the server key fills in when the client sends none.
    ClientFirst,
    /// Client credentials are removed; the server key is always used.
    ServerOnly,
    /// The server key is never used.
    ClientOnly,
}

impl CredentialPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientFirst => "client_first",
            Self::ServerOnly => "server_only",
            Self::ClientOnly => "client_only",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u64,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub access: Option<AccessFile>,
    #[serde(default = "default_admin")]
    pub admin: AdminFile,
    #[serde(default = "default_browsers")]
    pub browsers: BrowsersFile,
    #[serde(default = "default_timeouts")]
    pub timeouts: TimeoutsFile,
    #[serde(default = "default_limits")]
    pub limits: LimitsFile,
    #[serde(default = "default_pool")]
    pub pool: PoolFile,
    #[serde(default = "default_stats")]
    pub stats: StatsFile,
    #[serde(default = "default_attribution")]
    pub attribution: AttributionFile,
    #[serde(default = "default_store")]
    pub store: StoreFile,
    /// Absent → the built-in price table; present → exactly what it lists.
    #[serde(default)]
    pub pricing: Option<BTreeMap<String, Price>>,
    #[serde(default)]
    pub quotas: Vec<crate::quotas::QuotaFile>,
    /// HTTPS on `listen`.
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// What every model's price leaves unset: per-search price, batch rate, multipliers.
    #[serde(default)]
    pub pricing_defaults: Option<PricingDefaults>,
    /// Push usage to an OpenTelemetry collector.
    #[serde(default)]
    pub otlp: Option<OtlpFile>,
}

/// `[otlp]`. Optional, so absent from the built-in file but as a commented example: its
/// defaults are the ones that example shows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpFile {
    #[serde(default = "default_otlp_endpoint")]
    pub endpoint: String,
    /// A secret file, one `name: value` a line, sent as headers with every export.
    #[serde(default)]
    pub headers_file: Option<String>,
    #[serde(default = "default_otlp_interval_s")]
    pub interval_s: u64,
    #[serde(default)]
    pub traces: bool,
}

fn default_otlp_endpoint() -> String {
    "http://127.0.0.1:4318".into()
}

fn default_otlp_interval_s() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub prefix: String,
    pub upstream: String,
    /// Where `client_oauth` requests go instead of `upstream` (ChatGPT-login traffic).
    #[serde(default)]
    pub subscription_upstream: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    #[serde(default = "default_credential_policy")]
    pub credential_policy: CredentialPolicy,
    #[serde(default = "default_server_key_env")]
    pub server_key_env: String,
    /// A file holding the server key; read instead of `server_key_env` when set.
    #[serde(default)]
    pub server_key_file: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Offer HTTP/2 to an `https://` upstream (by ALPN); HTTP/1.1 when it declines.
    #[serde(default = "default_http2")]
    pub http2: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    #[serde(default = "default_access_header")]
    pub header: String,
    #[serde(default)]
    pub keys: Vec<AccessKeyFile>,
    /// A directory of callers: file name = caller, content = key.
    #[serde(default)]
    pub keys_dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyFile {
    pub name: String,
    #[serde(default)]
    pub key_env: String,
    #[serde(default)]
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrowsersFile {
    /// Host names sluice is known by besides `localhost` and addresses (see `browsers`).
    #[serde(default = "default_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
    /// Browser origins whose pages may call the proxied routes.
    #[serde(default = "default_allowed_origins")]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_token_env")]
    pub token_env: String,
    /// A file holding the admin token; read instead of `token_env` when set.
    #[serde(default)]
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    #[serde(default = "default_first_byte_ms")]
    pub first_byte_ms: u64,
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_idle_keepalive_s")]
    pub idle_keepalive_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatsFile {
    #[serde(default = "default_state_file")]
    pub state_file: String,
    #[serde(default = "default_flush_interval_s")]
    pub flush_interval_s: u64,
}

/// Who a request counts for, beyond its credential.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionFile {
    /// The request header naming the project a request belongs to (`by_project`).
    #[serde(default = "default_project_header")]
    pub project_header: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    #[serde(default = "default_store_path")]
    pub path: String,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<String>,
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

/// `fn name() -> T { BUILT_IN.path.clone() }`: each default read from the built-in file.
macro_rules! built_in_defaults {
    ($($name:ident: $ty:ty = $($field:ident).+;)*) => {
        $(fn $name() -> $ty { BUILT_IN.$($field).+.clone() })*
    };
}

built_in_defaults! {
    default_listen: String = listen;
    default_workers: usize = workers;
    default_shutdown_grace_s: u64 = shutdown_grace_s;
    default_browsers: BrowsersFile = browsers;
    default_allowed_hosts: Vec<String> = browsers.allowed_hosts;
    default_allowed_origins: Vec<String> = browsers.allowed_origins;
    default_admin: AdminFile = admin;
    default_admin_token_env: String = admin.token_env;
    default_timeouts: TimeoutsFile = timeouts;
    default_connect_ms: u64 = timeouts.connect_ms;
    default_first_byte_ms: u64 = timeouts.first_byte_ms;
    default_idle_ms: u64 = timeouts.idle_ms;
    default_limits: LimitsFile = limits;
    default_max_request_body_bytes: u64 = limits.max_request_body_bytes;
    default_pool: PoolFile = pool;
    default_max_connections: usize = pool.max_connections;
    default_idle_keepalive_s: u64 = pool.idle_keepalive_s;
    default_stats: StatsFile = stats;
    default_state_file: String = stats.state_file;
    default_flush_interval_s: u64 = stats.flush_interval_s;
    default_attribution: AttributionFile = attribution;
    default_project_header: String = attribution.project_header;
    default_store: StoreFile = store;
    default_store_path: String = store.path;
    default_retention_days: u32 = store.retention_days;
}

/// The built-in route: where a route's own defaults come from.
fn built_in_route() -> &'static RouteFile {
    BUILT_IN
        .routes
        .first()
        .expect("the built-in settings have a route")
}

fn default_protocol() -> Protocol {
    built_in_route().protocol
}

fn default_credential_policy() -> CredentialPolicy {
    built_in_route().credential_policy
}

fn default_http2() -> bool {
    built_in_route().http2
}

fn default_server_key_env() -> String {
    built_in_route().server_key_env.clone()
}

fn default_access_header() -> String {
    BUILT_IN
        .access
        .as_ref()
        .map(|a| a.header.clone())
        .expect("the built-in settings name the access-key header")
}

/// The built-in access section: the header, no keys.
pub fn default_access() -> AccessFile {
    AccessFile {
        header: default_access_header(),
        keys: Vec::new(),
        keys_dir: None,
    }
}

/// The built-in price table, each price completed from the built-in `[pricing_defaults]`.
pub fn default_pricing() -> BTreeMap<String, Price> {
    let (prices, defaults) = built_in_pricing();
    prices
        .into_iter()
        .map(|(model, price)| (model, price.with_defaults(&defaults)))
        .collect()
}

/// The built-in price table and `[pricing_defaults]`, as written.
pub fn built_in_pricing() -> (BTreeMap<String, Price>, PricingDefaults) {
    (
        BUILT_IN.pricing.clone().unwrap_or_default(),
        BUILT_IN.pricing_defaults.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn an_empty_file_takes_every_default_from_the_built_in_one() {
        // Forcing BUILT_IN would panic (re-entrant initialisation) if the built-in file left out
        // a key whose default reads it.
        let empty = toml_document("").unwrap();
        assert_eq!(empty.listen, BUILT_IN.listen);
        assert_eq!(json(&empty.admin), json(&BUILT_IN.admin));
        assert_eq!(json(&empty.timeouts), json(&BUILT_IN.timeouts));
        assert_eq!(json(&empty.limits), json(&BUILT_IN.limits));
        assert_eq!(json(&empty.pool), json(&BUILT_IN.pool));
        assert_eq!(json(&empty.stats), json(&BUILT_IN.stats));
        let route: RouteFile =
            serde_json::from_str(r#"{"prefix": "/a", "upstream": "http://x"}"#).unwrap();
        assert_eq!(
            route.credential_policy,
            BUILT_IN.routes[0].credential_policy
        );
        assert_eq!(route.protocol, BUILT_IN.routes[0].protocol);
        assert_eq!(default_access().header, "x-sluice-key");
    }
}
