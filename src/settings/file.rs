//! The settings file as written: plain serde structs, every section optional, unknown keys refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pricing::Price;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u64,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub access: Option<AccessFile>,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub pool: PoolFile,
    #[serde(default)]
    pub stats: StatsFile,
    /// Absent → the built-in price table; present → exactly what it lists.
    #[serde(default)]
    pub pricing: Option<BTreeMap<String, Price>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub prefix: String,
    pub upstream: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default = "default_credential_policy")]
    pub credential_policy: String,
    #[serde(default = "default_server_key_env")]
    pub server_key_env: String,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    #[serde(default = "default_access_header")]
    pub header: String,
    #[serde(default)]
    pub keys: Vec<AccessKeyFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyFile {
    pub name: String,
    pub key_env: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_token_env")]
    pub token_env: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            token_env: default_admin_token_env(),
        }
    }
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

impl Default for TimeoutsFile {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            first_byte_ms: default_first_byte_ms(),
            idle_ms: default_idle_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: u64,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            max_request_body_bytes: default_max_request_body_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    #[serde(default)]
    pub max_connections: usize,
    #[serde(default = "default_idle_keepalive_s")]
    pub idle_keepalive_s: u64,
}

impl Default for PoolFile {
    fn default() -> Self {
        Self {
            max_connections: 0,
            idle_keepalive_s: default_idle_keepalive_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatsFile {
    #[serde(default = "default_state_file")]
    pub state_file: String,
    #[serde(default = "default_flush_interval_s")]
    pub flush_interval_s: u64,
}

impl Default for StatsFile {
    fn default() -> Self {
        Self {
            state_file: default_state_file(),
            flush_interval_s: default_flush_interval_s(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:4080".into()
}
fn default_shutdown_grace_s() -> u64 {
    30
}
fn default_protocol() -> String {
    "anthropic".into()
}
fn default_credential_policy() -> String {
    "client_first".into()
}
fn default_server_key_env() -> String {
    "ANTHROPIC_API_KEY".into()
}
fn default_access_header() -> String {
    "x-sluice-key".into()
}
fn default_admin_token_env() -> String {
    "SLUICE_ADMIN_TOKEN".into()
}
fn default_connect_ms() -> u64 {
    10_000
}
fn default_first_byte_ms() -> u64 {
    600_000
}
fn default_idle_ms() -> u64 {
    300_000
}
fn default_max_request_body_bytes() -> u64 {
    32 * 1024 * 1024
}
fn default_idle_keepalive_s() -> u64 {
    15
}
fn default_state_file() -> String {
    "state/stats.json".into()
}
fn default_flush_interval_s() -> u64 {
    10
}
