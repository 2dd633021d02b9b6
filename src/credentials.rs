//! Which credential headers go upstream: the client's own first, the server key only as a
//! fallback, access keys and the admin token never.
//!
//! The CredentialResolver actor owns the secret material: it reads the server keys, access keys
//! and admin token from where the settings say they live, again at every reload, and publishes
//! the [`CredentialRules`] built from them. The per-request decision is the pure
//! [`CredentialRules::outbound`], run on the published rules: no message per request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;

use crate::access::{strip_bearer, AccessRules};
use crate::attribution;
use crate::error::Error;
use crate::headers;
use crate::protocol::{Api, BearerKind, CredentialHeader, Protocol};
use crate::secrets::{self, fingerprint, Secret, SecretSource};
use crate::settings::{CredentialPolicy, EnvSource, Settings, SettingsError};

/// Whose credential a request went upstream with; the `by_source` keys of `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialSource {
    ClientApiKey,
    ClientOauth,
    ClientBearer,
    ServerKey,
    None,
}

impl CredentialSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientApiKey => "client_api_key",
            Self::ClientOauth => "client_oauth",
            Self::ClientBearer => "client_bearer",
            Self::ServerKey => "server_key",
            Self::None => "none",
        }
    }
}

/// The credential headers a client sent (non-empty, not an access key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCredentials {
    pub api_key: bool,
    /// What the `authorization` header's token is, when one was sent.
    pub authorization: Option<BearerKind>,
}

/// What to do with credentials, decided from the policy alone (no header values involved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub source: CredentialSource,
    /// Forward the client's `x-api-key` / `authorization` as they are.
    pub forward_client: bool,
    /// Add the server key.
    pub add_server_key: bool,
}

/// The credential rules of docs/clients.md "Credentials", as a pure function.
pub fn decide(
    policy: CredentialPolicy,
    has_server_key: bool,
    client: ClientCredentials,
) -> Result<Decision, Error> {
    let client_source = if client.api_key {
        Some(CredentialSource::ClientApiKey)
    } else {
        // By what the token is, not only by its header: SDKs send API keys as bearer tokens.
        client.authorization.map(|kind| match kind {
            BearerKind::ApiKey => CredentialSource::ClientApiKey,
            BearerKind::Oauth => CredentialSource::ClientOauth,
            BearerKind::Other => CredentialSource::ClientBearer,
        })
    };
    let server = Decision {
        source: CredentialSource::ServerKey,
        forward_client: false,
        add_server_key: true,
    };
    let client_only = |source| Decision {
        source,
        forward_client: true,
        add_server_key: false,
    };
    match (policy, client_source) {
        (CredentialPolicy::ServerOnly, _) if has_server_key => Ok(server),
        (CredentialPolicy::ServerOnly, _) => Err(Error::NoServerKey),
        (_, Some(source)) => Ok(client_only(source)),
        (CredentialPolicy::ClientFirst, None) if has_server_key => Ok(server),
        (_, None) => Ok(client_only(CredentialSource::None)),
    }
}

/// The server key as the header value its route's protocol sends it in (Anthropic:
/// `x-api-key`, or an OAuth token as `authorization: Bearer …` plus the OAuth beta flag;
/// OpenAI: `authorization: Bearer …`; Gemini: `x-goog-api-key`).
#[derive(Debug, Clone)]
pub struct ServerCredential {
    protocol: Protocol,
    value: HeaderValue,
    fingerprint: String,
}

impl ServerCredential {
    /// Sets the server key's headers as the route's protocol sends them.
    fn insert_into(&self, out: &mut HeaderMap) {
        self.protocol.api().insert_server_key(&self.value, out);
    }

    fn new(protocol: Protocol, secret: &Secret) -> Option<Self> {
        Some(Self {
            protocol,
            value: protocol.api().server_key_value(secret.expose())?,
            fingerprint: secret.fingerprint(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct RouteCredentials {
    pub policy: CredentialPolicy,
    /// Which headers are client credentials, and how the server key is sent.
    pub protocol: Protocol,
    pub server: Option<ServerCredential>,
}

/// The credential rules of one settings generation.
#[derive(Debug, Clone)]
pub struct CredentialRules {
    pub access: AccessRules,
    pub routes: Vec<RouteCredentials>,
    /// The HTTPS listener's certificate and key, when `[tls]` is set.
    pub tls: Option<crate::tls::TlsIdentity>,
    /// The store URL differs from the one the store opened at start (a restart applies it).
    pub store_url_changed: bool,
    /// The headers every OpenTelemetry export carries.
    pub otlp_headers: crate::otlp::headers::OtlpHeaders,
}

/// The request headers to send upstream, and who the request is on behalf of.
#[derive(Debug)]
pub struct Outbound {
    pub headers: HeaderMap,
    pub source: CredentialSource,
    /// `<source>:<first 12 hex of sha256(secret)>`, absent for source `none`.
    pub credential: Option<String>,
    pub caller: Option<String>,
    /// A client credential in the query string that must not go upstream (the policy removes
    /// client credentials): the upstream URL leaves out the query pairs carrying it.
    pub query_credential_removed: Option<String>,
}

/// The secret values the settings name, as read from their env vars and files.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretMaterial {
    /// Per route, in the settings' order.
    pub server_keys: Vec<Option<Secret>>,
    pub access_keys: Vec<(String, Secret)>,
    pub admin_token: Option<Secret>,
    /// The listener's certificate and key, when `[tls]` is set.
    pub tls: Option<crate::tls::TlsIdentity>,
    /// The store's PostgreSQL URL, when `[store] url_env`/`url_file` names one. The store opens
    /// it at start only; it is read here so that a broken or exposed file is reported with the
    /// other secrets, and a changed one is noticed.
    pub store_url: Option<Secret>,
    /// The headers every OpenTelemetry export carries, from `[otlp] headers_file`.
    pub otlp_headers: crate::otlp::headers::OtlpHeaders,
    /// What does not stop a start but should be fixed: secret files others can read, skipped
    /// files in the keys directory.
    pub warnings: Vec<String>,
}

/// The files and directories secrets are read from: a change to any of them is a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretPaths {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

impl SecretPaths {
    pub fn of(settings: &Settings, env: &EnvSource) -> Self {
        let base = secrets::base_dir(settings.source.as_deref(), env);
        let sources = settings
            .routes
            .iter()
            .map(|r| r.server_key_source())
            .chain(settings.access.keys.iter().map(|k| k.source()))
            .chain(std::iter::once(settings.admin_token_source()))
            .chain(settings.store.url_source())
            .chain(settings.otlp.as_ref().and_then(|o| o.headers_source()));
        let tls = settings
            .tls
            .iter()
            .flat_map(|t| [&t.cert_file, &t.key_file]);
        Self {
            files: (sources.filter_map(|s| s.path(&base)))
                .chain(tls.map(|f| secrets::resolve(&base, f)))
                .collect(),
            dirs: settings
                .access
                .keys_dir
                .iter()
                .map(|d| secrets::resolve(&base, d))
                .collect(),
        }
    }
}

/// Reads one secret, noting an unreadable file as an error under `key` and an exposed one as a
/// warning.
fn read_one(
    source: &SecretSource,
    key: String,
    (env, base): (&EnvSource, &Path),
    errors: &mut Vec<SettingsError>,
    warnings: &mut Vec<String>,
) -> Option<Secret> {
    if let Some(warning) = source
        .path(base)
        .and_then(|p| secrets::exposure_warning(&p))
    {
        warnings.push(warning);
    }
    let secret = source
        .read(env, base)
        .map_err(|reason| errors.push(SettingsError::invalid(key, reason)))
        .ok()
        .flatten();
    if let Some(secret) = &secret {
        warnings.extend(secrets::whitespace_warning(&source.describe(base), secret));
    }
    secret
}

impl SecretMaterial {
    /// Reads every secret the settings name, from env vars, files and the keys directory, and
    /// reports every problem at once. An access key must be set, and set once: a missing one
    /// would silently lock its caller out, a shared one would blur who spent what.
    pub fn read(settings: &Settings, env: &EnvSource) -> Result<Self, SettingsError> {
        let base = secrets::base_dir(settings.source.as_deref(), env);
        let from = (env, base.as_path());
        let mut errors = Vec::new();
        let mut warnings = Vec::new();

        let server_keys = (settings.routes.iter().enumerate())
            .map(|(i, r)| {
                let key = format!("routes[{i}].server_key_file");
                read_one(
                    &r.server_key_source(),
                    key,
                    from,
                    &mut errors,
                    &mut warnings,
                )
            })
            .collect();

        let mut access_keys: Vec<(String, Secret)> = Vec::new();
        let mut values = std::collections::HashSet::new();
        let mut add = |name: String, secret: Secret| -> Result<(), String> {
            if access_keys.iter().any(|(n, _)| *n == name) {
                Err(format!("caller {name:?} is also named in [[access.keys]]"))
            } else if !values.insert(secret.expose().to_string()) {
                Err(format!("{name}'s key is the same as another access key"))
            } else {
                access_keys.push((name, secret));
                Ok(())
            }
        };
        for (i, key) in settings.access.keys.iter().enumerate() {
            let source = key.source();
            let field = if source.file.is_some() {
                "key_file"
            } else {
                "key_env"
            };
            let key_name = format!("access.keys[{i}].{field}");
            match read_one(&source, key_name.clone(), from, &mut errors, &mut warnings) {
                Some(secret) => {
                    if let Err(reason) = add(key.name.clone(), secret) {
                        errors.push(SettingsError::invalid(key_name, reason));
                    }
                }
                None if source.file.is_some() => {
                    if source.path(&base).is_some_and(|p| p.exists()) {
                        errors.push(SettingsError::invalid(
                            key_name,
                            format!("{} is empty", source.describe(&base)),
                        ));
                    }
                }
                None => errors.push(SettingsError::invalid(
                    key_name,
                    format!("environment variable {} is unset or empty", key.key_env),
                )),
            }
        }
        if let Some(dir) = &settings.access.keys_dir {
            match secrets::read_keys_dir(&secrets::resolve(&base, dir)) {
                Ok((keys, skipped)) => {
                    warnings.extend(skipped);
                    // A file the directory cannot take is skipped, never the whole directory:
                    // the other files' changes (a revocation among them) still apply.
                    for (name, path, secret) in keys {
                        warnings.extend(secrets::exposure_warning(&path));
                        if let Err(reason) = add(name, secret) {
                            warnings.push(format!("{} skipped: {reason}", path.display()));
                        }
                    }
                }
                Err(reason) => errors.push(SettingsError::invalid("access.keys_dir", reason)),
            }
        }

        let admin_token = read_one(
            &settings.admin_token_source(),
            "admin.token_file".into(),
            from,
            &mut errors,
            &mut warnings,
        );
        let tls = settings.tls.as_ref().and_then(|t| {
            let (cert, key) = (
                secrets::resolve(&base, &t.cert_file),
                secrets::resolve(&base, &t.key_file),
            );
            warnings.extend(secrets::exposure_warning(&key));
            crate::tls::load_identity(&cert, &key)
                .map_err(|(on_cert, reason)| {
                    let field = if on_cert {
                        "tls.cert_file"
                    } else {
                        "tls.key_file"
                    };
                    errors.push(SettingsError::invalid(field, reason))
                })
                .ok()
        });
        let store_url = settings.store.url_source().and_then(|source| {
            let key = if source.file.is_some() {
                "store.url_file"
            } else {
                "store.url_env"
            };
            let reported = errors.len();
            let url = read_one(&source, key.into(), from, &mut errors, &mut warnings);
            if url.is_none() && errors.len() == reported {
                // The store cannot open without it: a start would refuse.
                let missing = if source.file.is_some() {
                    "is empty"
                } else {
                    "is unset or empty"
                };
                errors.push(SettingsError::invalid(
                    key,
                    format!("{} {missing}", source.describe(&base)),
                ));
            }
            url
        });
        let otlp_headers = settings
            .otlp
            .as_ref()
            .and_then(|otlp| otlp.headers_source())
            .and_then(|source| {
                let key = "otlp.headers_file";
                let file = read_one(&source, key.into(), from, &mut errors, &mut warnings)?;
                crate::otlp::headers::OtlpHeaders::parse(file.expose())
                    .map_err(|reason| {
                        let path = source.describe(&base);
                        errors.push(SettingsError::invalid(key, format!("{path}: {reason}")))
                    })
                    .ok()
            })
            .unwrap_or_default();
        SettingsError::all_or(errors)?;
        Ok(Self {
            server_keys,
            access_keys,
            admin_token,
            tls,
            store_url,
            otlp_headers,
            warnings,
        })
    }

    /// Refuses material that would let anyone who reaches a non-loopback `listen` spend a
    /// server key. Checked at start and at every reload, against the running `listen`.
    pub fn refuse_open_relay(&self, settings: &Settings) -> Result<(), SettingsError> {
        if !settings.listen.ip().is_loopback()
            && self.relays_server_key(settings)
            && self.access_keys.is_empty()
        {
            return Err(SettingsError::invalid(
                "listen",
                format!(
                    "refusing to listen on {} (not loopback) with a server key and no [access] \
                     keys: anyone reaching the port could spend the server key. Add \
                     [[access.keys]], listen on 127.0.0.1, or unset the server key",
                    settings.listen.ip()
                ),
            ));
        }
        Ok(())
    }

    /// Some route may send its server key upstream.
    fn relays_server_key(&self, settings: &Settings) -> bool {
        settings
            .routes
            .iter()
            .zip(&self.server_keys)
            .any(|(r, key)| key.is_some() && r.credential_policy != CredentialPolicy::ClientOnly)
    }

    /// Refuses a reload that removes every access key while a route still sends the server
    /// key: it would hand the key to anyone who reaches the port, and it is what a settings
    /// file caught half-written (before its `[access]` section) looks like. A restart applies
    /// such settings on purpose.
    pub fn refuse_dropping_every_access_key(
        &self,
        before: &SecretMaterial,
        settings: &Settings,
    ) -> Result<(), SettingsError> {
        if !before.access_keys.is_empty()
            && self.access_keys.is_empty()
            && self.relays_server_key(settings)
        {
            return Err(SettingsError::invalid(
                "access.keys",
                "the new settings remove every access key while a route still sends the server \
                 key (anyone who can reach the port could spend it). Not applied: if the file was \
                 being written, write it whole (to a temporary file, then rename it over); if you \
                 mean it, restart sluice",
            ));
        }
        Ok(())
    }

    /// Lines for `sluice check` and the startup log: where each secret comes from and its
    /// fingerprint, never its value.
    pub fn summary(&self, settings: &Settings) -> String {
        let mut out = String::new();
        let base = secrets::base_dir(settings.source.as_deref(), &EnvSource::Process);
        for (route, key) in settings.routes.iter().zip(&self.server_keys) {
            let from = route.server_key_source().describe(&base);
            out.push_str(&match key {
                Some(key) => format!(
                    "route {}: server key from {from} ({})\n",
                    route.prefix,
                    key.fingerprint()
                ),
                None => format!("route {}: no server key ({from} unset)\n", route.prefix),
            });
        }
        let callers = if self.access_keys.is_empty() {
            "none (anyone who can reach the port may use it)".to_string()
        } else {
            let names: Vec<&str> = self.access_keys.iter().map(|(n, _)| n.as_str()).collect();
            names.join(", ")
        };
        let admin = if self.admin_token.is_some() {
            "set"
        } else {
            "not set"
        };
        out.push_str(&format!("access keys: {callers}; admin token: {admin}"));
        if let Some(source) = settings.otlp.as_ref().and_then(|o| o.headers_source()) {
            let names: Vec<&str> = self.otlp_headers.names().collect();
            out.push_str(&format!(
                "\notlp headers from {}: {}",
                source.describe(&base),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        out
    }

    /// What changed from `before`, by name and fingerprint (for the reload log).
    fn changes_since(&self, before: &SecretMaterial, settings: &Settings) -> Vec<String> {
        let mut changes = Vec::new();
        for (i, route) in settings.routes.iter().enumerate() {
            let old = before.server_keys.get(i).cloned().flatten();
            let new = self.server_keys[i].as_ref();
            if old.as_ref() != new {
                let print = |k: Option<&Secret>| k.map_or("none".into(), Secret::fingerprint);
                changes.push(format!(
                    "server key of {}: {} -> {}",
                    route.prefix,
                    print(old.as_ref()),
                    print(new)
                ));
            }
        }
        let names = |m: &SecretMaterial| -> Vec<(String, String)> {
            let keys = m.access_keys.iter();
            keys.map(|(n, k)| (n.clone(), k.fingerprint())).collect()
        };
        let (old, new) = (names(before), names(self));
        for (name, print) in &new {
            match old.iter().find(|(n, _)| n == name) {
                None => changes.push(format!("access key {name} added")),
                Some((_, was)) if was != print => {
                    changes.push(format!("access key {name} rotated"))
                }
                _ => {}
            }
        }
        for (name, _) in old.iter().filter(|(n, _)| !new.iter().any(|(m, _)| m == n)) {
            changes.push(format!("access key {name} removed"));
        }
        if before.admin_token != self.admin_token {
            changes.push("admin token changed".into());
        }
        if before.tls != self.tls {
            changes.push("TLS certificate replaced (new connections use it)".into());
        }
        if before.store_url != self.store_url {
            changes.push(format!("store URL changed ({STORE_URL_RESTART})"));
        }
        if before.otlp_headers != self.otlp_headers {
            changes.push("OpenTelemetry export headers changed".into());
        }
        changes
    }
}

impl CredentialRules {
    pub fn new(settings: &Settings, material: &SecretMaterial) -> Self {
        Self {
            access: AccessRules::new(
                settings.access.header.clone(),
                material.access_keys.clone(),
                material.admin_token.clone(),
            ),
            routes: settings
                .routes
                .iter()
                .zip(&material.server_keys)
                .map(|(route, key)| RouteCredentials {
                    policy: route.credential_policy,
                    protocol: route.protocol,
                    server: key
                        .as_ref()
                        .and_then(|key| ServerCredential::new(route.protocol, key)),
                })
                .collect(),
            tls: material.tls.clone(),
            store_url_changed: false,
            otlp_headers: material.otlp_headers.clone(),
        }
    }

    /// Both credential phases of a request at once: [`admit`](Self::admit) the caller, then
    /// [`rewrite`](Self::rewrite) its headers for route `route`.
    pub fn outbound(
        &self,
        route: usize,
        method: &Method,
        incoming: &HeaderMap,
    ) -> Result<Outbound, Error> {
        let caller = self.admit(incoming)?;
        Ok(Outbound {
            caller,
            ..self.rewrite(route, method, incoming, None)?
        })
    }

    /// The admit phase's part: the caller's access-key name (`None` when no keys are set), or
    /// the refusal of a request without a valid key.
    pub fn admit(&self, incoming: &HeaderMap) -> Result<Option<String>, Error> {
        self.access.identify(incoming)
    }

    /// The credentials phase's part: copies the end-to-end headers of `incoming` and sets the
    /// credential headers for route `route` per its policy. Never forwards an access key, the
    /// admin token, an empty credential, a hop-by-hop header, or `host` (awc sets the
    /// upstream's). The caller is left to [`admit`](Self::admit).
    ///
    /// Under `client_first`, `HEAD` and `OPTIONS` never get the server key: they are probes
    /// (Claude Code sends `HEAD /` without credentials at every start) that need no credential
    /// and bill nothing, so the fallback key has no reason to travel with them.
    ///
    /// A credential in the `query` string (Gemini's `?key=`) is a client credential too: the
    /// URL carries it upstream as sent, unless the policy removes client credentials
    /// ([`Outbound::query_credential_removed`]); only its fingerprint is kept.
    pub fn rewrite(
        &self,
        route: usize,
        method: &Method,
        incoming: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Outbound, Error> {
        let rules = &self.routes[route];
        let api = rules.protocol.api();
        let Copied {
            mut out,
            mut client,
            mut client_secret,
            client_credentials,
        } = self.copy_end_to_end(api, incoming);
        let query_credential = query.and_then(|query| api.query_credential(query));
        if let Some(key) = query_credential.filter(|_| !client.api_key) {
            client.api_key = true;
            client_secret = Some(key.as_bytes());
        }
        let is_probe = *method == Method::HEAD || *method == Method::OPTIONS;
        let server_key_usable =
            rules.server.is_some() && !(is_probe && rules.policy == CredentialPolicy::ClientFirst);
        let decision = decide(rules.policy, server_key_usable, client)?;
        let credential = if decision.add_server_key {
            let server = rules.server.as_ref().ok_or(Error::NoServerKey)?;
            server.insert_into(&mut out);
            Some(format!(
                "{}:{}",
                decision.source.as_str(),
                server.fingerprint
            ))
        } else if decision.forward_client {
            for (name, value) in client_credentials {
                out.append(name.clone(), value.clone());
            }
            client_secret.map(|secret| client_credential_label(decision.source, secret))
        } else {
            None
        };
        Ok(Outbound {
            headers: out,
            source: decision.source,
            credential,
            caller: None,
            query_credential_removed: query_credential
                .filter(|_| !decision.forward_client)
                .map(str::to_owned),
        })
    }

    /// The end-to-end headers of `incoming` that may go upstream, with the client's credential
    /// headers (as the route's protocol `api` names them) set apart: the decision says whether
    /// they go. Never kept: hop-by-hop headers, `host`, `expect`, the access-key header,
    /// sluice's own `x-sluice-*` headers, and any header that carries one of our secrets.
    fn copy_end_to_end<'h>(&self, api: &dyn Api, incoming: &'h HeaderMap) -> Copied<'h> {
        let listed = headers::connection_listed(incoming);
        let mut copied = Copied {
            out: HeaderMap::with_capacity(incoming.len() + 2),
            client: ClientCredentials::default(),
            client_secret: None,
            client_credentials: Vec::new(),
        };
        for (name, value) in incoming.iter() {
            if !headers::is_end_to_end(name, &listed)
                || *name == header::HOST
                || *name == header::EXPECT
                || *name == self.access.header
                || attribution::is_sluice_header(name.as_str())
                || self.access.has_secrets() && self.access.is_proxy_secret(value.as_bytes())
            {
                continue;
            }
            let Some(kind) = api.credential_header(name) else {
                copied.out.append(name.clone(), value.clone());
                continue;
            };
            let is_api_key = kind == CredentialHeader::ApiKey;
            if value.is_empty() {
                continue;
            }
            let client = &mut copied.client;
            if is_api_key && !client.api_key {
                client.api_key = true;
                copied.client_secret = Some(value.as_bytes());
            } else if !is_api_key && client.authorization.is_none() {
                client.authorization = Some(api.bearer_kind(value.as_bytes()));
                if !client.api_key {
                    let token = strip_bearer(value.as_bytes());
                    copied.client_secret = Some(token.unwrap_or(value.as_bytes()));
                }
            }
            copied.client_credentials.push((name, value));
        }
        copied
    }
}

/// `<source>:<fingerprint>` of a client's credential, as the record names it.
///
/// A worker sees the same few client credentials request after request, and SHA-256 plus the
/// formatting was most of the credential phase's cost: each worker thread remembers the labels
/// it made last, keyed by a 128-bit hash of the secret under keys drawn at random per thread,
/// so that no secret is kept, and at most [`REMEMBERED_LABELS`] of them.
fn client_credential_label(source: CredentialSource, secret: &[u8]) -> String {
    use std::cell::RefCell;
    use std::hash::BuildHasher;

    struct Remembered {
        keys: [std::collections::hash_map::RandomState; 2],
        labels: Vec<(CredentialSource, u128, String)>,
    }
    thread_local! {
        static REMEMBERED: RefCell<Remembered> = RefCell::new(Remembered {
            keys: [Default::default(), Default::default()],
            labels: Vec::new(),
        });
    }
    REMEMBERED.with_borrow_mut(|remembered| {
        let [high, low] = &remembered.keys;
        let hash = (u128::from(high.hash_one(secret)) << 64) | u128::from(low.hash_one(secret));
        let known = remembered
            .labels
            .iter()
            .find(|(known, known_hash, _)| *known == source && *known_hash == hash);
        if let Some((_, _, label)) = known {
            return label.clone();
        }
        let label = format!("{}:{}", source.as_str(), fingerprint(secret));
        if remembered.labels.len() == REMEMBERED_LABELS {
            remembered.labels.remove(0);
        }
        remembered.labels.push((source, hash, label.clone()));
        label
    })
}

/// How many client credential labels each worker thread remembers.
const REMEMBERED_LABELS: usize = 16;

/// What [`CredentialRules::copy_end_to_end`] kept of a request's headers.
struct Copied<'h> {
    out: HeaderMap,
    client: ClientCredentials,
    /// The client's credential (the API key's value, else the bearer token), for the fingerprint.
    client_secret: Option<&'h [u8]>,
    client_credentials: Vec<(&'h HeaderName, &'h HeaderValue)>,
}

/// What a changed store URL does to a running sluice.
pub const STORE_URL_RESTART: &str =
    "the store stays on the database it opened at start; restart sluice to use the new URL";

/// Owns the secret material: reads it for every settings generation, notices what changed,
/// and publishes the rules built from it.
pub struct CredentialResolver {
    env: EnvSource,
    material: Option<SecretMaterial>,
    /// The store URL of the first generation: the one the store opened.
    started_with_store_url: Option<Option<Secret>>,
}

impl CredentialResolver {
    pub fn new(env: EnvSource) -> Self {
        Self {
            env,
            material: None,
            started_with_store_url: None,
        }
    }
}

impl Actor for CredentialResolver {
    type Context = Context<Self>;
}

/// New settings: read the secrets they name, refuse an open relay, and return the rules for
/// publication. On an error nothing changes.
#[derive(Message)]
#[rtype(result = "Result<Arc<CredentialRules>, SettingsError>")]
pub struct ApplyCredentials(pub Arc<Settings>);

impl Handler<ApplyCredentials> for CredentialResolver {
    type Result = Result<Arc<CredentialRules>, SettingsError>;

    fn handle(&mut self, msg: ApplyCredentials, _: &mut Self::Context) -> Self::Result {
        let settings = &msg.0;
        let material = SecretMaterial::read(settings, &self.env)?;
        material.refuse_open_relay(settings)?;
        let known = self.material.as_ref().map(|m| m.warnings.as_slice());
        for warning in &material.warnings {
            if !known.unwrap_or_default().contains(warning) {
                tracing::warn!("credentials: {warning}");
            }
        }
        if let Some(before) = &self.material {
            material.refuse_dropping_every_access_key(before, settings)?;
            for change in material.changes_since(before, settings) {
                tracing::info!("credentials: {change}");
            }
        }
        let started_with = self
            .started_with_store_url
            .get_or_insert_with(|| material.store_url.clone());
        let mut rules = CredentialRules::new(settings, &material);
        rules.store_url_changed = *started_with != material.store_url;
        let rules = Arc::new(rules);
        self.material = Some(material);
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::anthropic::{self, ANTHROPIC_BETA};
    use crate::settings::{EnvSource, Settings};
    use std::collections::HashMap;

    #[test]
    fn remembered_credential_labels_match_the_fingerprint_of_each_secret() {
        // More secrets than a worker remembers, each asked for twice, under two sources.
        for round in 0..2 {
            for n in 0..(REMEMBERED_LABELS * 2) {
                let secret = format!("sk-ant-api03-secret-{n}");
                for source in [
                    CredentialSource::ClientApiKey,
                    CredentialSource::ClientBearer,
                ] {
                    assert_eq!(
                        client_credential_label(source, secret.as_bytes()),
                        format!("{}:{}", source.as_str(), fingerprint(secret.as_bytes())),
                        "secret {n}, round {round}"
                    );
                }
            }
        }
    }

    const OAUTH: &str = "Bearer sk-ant-oat01-test-client-oauth";
    const API_KEY: &str = "sk-ant-api03-test-client-key";
    const SERVER_KEY: &str = "sk-ant-api03-test-server-key";
    const SERVER_OAUTH: &str = "sk-ant-oat01-test-server-oauth";
    const ACCESS_KEY: &str = "sluice-test-alice-access-key";

    fn rules(policy: &str, server_key: Option<&str>, access: bool) -> CredentialRules {
        let mut env = HashMap::new();
        if let Some(key) = server_key {
            env.insert("ANTHROPIC_API_KEY".to_string(), key.to_string());
        }
        env.insert("K_ALICE".to_string(), ACCESS_KEY.to_string());
        env.insert("ADMIN".to_string(), "sluice-test-admin-token".to_string());
        let access = if access {
            "[access]\n[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n"
        } else {
            ""
        };
        let text = format!(
            "[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\ncredential_policy = \"{policy}\"\n\
             [admin]\ntoken_env = \"ADMIN\"\n{access}"
        );
        let env = EnvSource::Fixed(env);
        let settings = Settings::from_toml(&text, "test", &env).unwrap();
        CredentialRules::new(&settings, &SecretMaterial::read(&settings, &env).unwrap())
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn credential_headers(out: &Outbound) -> Vec<(String, String)> {
        let mut found: Vec<_> = out
            .headers
            .iter()
            .filter(|(n, _)| {
                *n == anthropic::API_KEY_HEADER
                    || *n == header::AUTHORIZATION
                    || *n == ANTHROPIC_BETA
            })
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        found.sort();
        found
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    #[test]
    fn decision_table_matches_spec() {
        use CredentialPolicy::*;
        use CredentialSource as S;
        let none = ClientCredentials::default();
        let key = ClientCredentials {
            api_key: true,
            authorization: None,
        };
        let oauth = ClientCredentials {
            api_key: false,
            authorization: Some(BearerKind::Oauth),
        };
        let bearer = ClientCredentials {
            api_key: false,
            authorization: Some(BearerKind::Other),
        };
        let bearer_api_key = ClientCredentials {
            api_key: false,
            authorization: Some(BearerKind::ApiKey),
        };
        let both = ClientCredentials {
            api_key: true,
            authorization: Some(BearerKind::Oauth),
        };
        let src = |p, s, c| decide(p, s, c).map(|d| d.source).ok();
        for server in [false, true] {
            assert_eq!(src(ClientFirst, server, key), Some(S::ClientApiKey));
            assert_eq!(src(ClientFirst, server, oauth), Some(S::ClientOauth));
            assert_eq!(src(ClientFirst, server, bearer), Some(S::ClientBearer));
            assert_eq!(
                src(ClientFirst, server, bearer_api_key),
                Some(S::ClientApiKey)
            );
            assert_eq!(src(ClientFirst, server, both), Some(S::ClientApiKey));
            assert_eq!(src(ClientOnly, server, key), Some(S::ClientApiKey));
            assert_eq!(src(ClientOnly, server, none), Some(S::None));
        }
        assert_eq!(src(ClientFirst, true, none), Some(S::ServerKey));
        assert_eq!(src(ClientFirst, false, none), Some(S::None));
        assert_eq!(src(ServerOnly, true, oauth), Some(S::ServerKey));
        assert_eq!(src(ServerOnly, true, none), Some(S::ServerKey));
        assert!(matches!(
            decide(ServerOnly, false, key),
            Err(Error::NoServerKey)
        ));
    }

    #[test]
    fn api_key_sent_as_bearer_token_counts_as_client_api_key_and_is_forwarded_as_is() {
        let bearer_key = "Bearer sk-ant-api03-test-sdk-bearer-key";
        let out = rules("client_first", Some(SERVER_KEY), false)
            .outbound(0, &Method::POST, &request(&[("authorization", bearer_key)]))
            .unwrap();
        assert_eq!(out.source, CredentialSource::ClientApiKey);
        assert_eq!(
            credential_headers(&out),
            vec![pair("authorization", bearer_key)]
        );
        let expected = fingerprint(b"sk-ant-api03-test-sdk-bearer-key");
        assert_eq!(
            out.credential.as_deref(),
            Some(format!("client_api_key:{expected}").as_str())
        );
    }

    #[test]
    fn sluice_headers_are_never_forwarded() {
        let out = rules("client_first", Some(SERVER_KEY), false)
            .outbound(
                0,
                &Method::POST,
                &request(&[
                    ("x-sluice-project", "billing-api"),
                    ("X-Sluice-Anything", "1"),
                    ("x-claude-code-agent-id", "agent-7"),
                ]),
            )
            .unwrap();
        let names: Vec<&str> = out.headers.keys().map(|name| name.as_str()).collect();
        assert!(
            !names.iter().any(|name| name.starts_with("x-sluice-")),
            "{names:?}"
        );
        assert!(names.contains(&"x-claude-code-agent-id"));
    }

    #[test]
    fn client_oauth_token_is_forwarded_untouched_and_server_key_not_added() {
        let out = rules("client_first", Some(SERVER_KEY), false)
            .outbound(
                0,
                &Method::POST,
                &request(&[
                    ("Authorization", OAUTH),
                    ("anthropic-beta", "oauth-2025-04-20"),
                ]),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::ClientOauth);
        assert_eq!(
            credential_headers(&out),
            vec![
                pair("anthropic-beta", "oauth-2025-04-20"),
                pair("authorization", OAUTH)
            ]
        );
        let expected = fingerprint(b"sk-ant-oat01-test-client-oauth");
        assert_eq!(
            out.credential.as_deref(),
            Some(format!("client_oauth:{expected}").as_str())
        );
    }

    #[test]
    fn client_api_key_wins_over_server_key() {
        let out = rules("client_first", Some(SERVER_KEY), false)
            .outbound(0, &Method::POST, &request(&[("X-Api-Key", API_KEY)]))
            .unwrap();
        assert_eq!(out.source, CredentialSource::ClientApiKey);
        assert_eq!(credential_headers(&out), vec![pair("x-api-key", API_KEY)]);
    }

    #[test]
    fn server_key_fills_in_only_without_client_credential() {
        let out = rules("client_first", Some(SERVER_KEY), false)
            .outbound(
                0,
                &Method::POST,
                &request(&[("x-api-key", ""), ("authorization", "")]),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
        assert_eq!(
            credential_headers(&out),
            vec![pair("x-api-key", SERVER_KEY)]
        );
        assert_eq!(
            out.credential.unwrap(),
            format!("server_key:{}", fingerprint(SERVER_KEY.as_bytes()))
        );
    }

    #[test]
    fn no_credential_at_all_sends_none() {
        let out = rules("client_first", None, false)
            .outbound(
                0,
                &Method::POST,
                &request(&[("x-api-key", ""), ("content-type", "application/json")]),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::None);
        assert!(credential_headers(&out).is_empty());
        assert!(out.credential.is_none());
    }

    #[test]
    fn oauth_server_token_goes_as_bearer_with_beta_flag() {
        let rules = rules("client_first", Some(SERVER_OAUTH), false);
        let out = rules.outbound(0, &Method::POST, &request(&[])).unwrap();
        assert_eq!(
            credential_headers(&out),
            vec![
                pair("anthropic-beta", "oauth-2025-04-20"),
                pair("authorization", &format!("Bearer {SERVER_OAUTH}"))
            ]
        );
        let out = rules
            .outbound(
                0,
                &Method::POST,
                &request(&[("anthropic-beta", "a-1"), ("anthropic-beta", "b-2")]),
            )
            .unwrap();
        let betas: Vec<_> = out
            .headers
            .get_all(ANTHROPIC_BETA)
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(betas, vec!["a-1", "b-2,oauth-2025-04-20"]);
    }

    #[test]
    fn server_only_replaces_client_credentials() {
        let out = rules("server_only", Some(SERVER_KEY), false)
            .outbound(
                0,
                &Method::POST,
                &request(&[("authorization", OAUTH), ("x-api-key", API_KEY)]),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
        assert_eq!(
            credential_headers(&out),
            vec![pair("x-api-key", SERVER_KEY)]
        );
        let err = rules("server_only", None, false)
            .outbound(0, &Method::POST, &request(&[]))
            .unwrap_err();
        assert!(matches!(err, Error::NoServerKey));
    }

    #[test]
    fn probes_without_credentials_get_no_server_key_under_client_first() {
        let rules = rules("client_first", Some(SERVER_KEY), false);
        for method in [Method::HEAD, Method::OPTIONS] {
            let out = rules.outbound(0, &method, &request(&[])).unwrap();
            assert_eq!(out.source, CredentialSource::None);
            assert!(credential_headers(&out).is_empty());
        }
        let out = rules.outbound(0, &Method::GET, &request(&[])).unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
        // server_only means always.
        let rules = super::tests::rules("server_only", Some(SERVER_KEY), false);
        let out = rules.outbound(0, &Method::HEAD, &request(&[])).unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
    }

    #[test]
    fn client_only_never_uses_server_key() {
        let out = rules("client_only", Some(SERVER_KEY), false)
            .outbound(0, &Method::POST, &request(&[]))
            .unwrap();
        assert_eq!(out.source, CredentialSource::None);
        assert!(credential_headers(&out).is_empty());
    }

    #[test]
    fn access_key_is_required_and_never_forwarded() {
        let rules = rules("client_first", Some(SERVER_KEY), true);
        assert!(matches!(
            rules.outbound(0, &Method::POST, &request(&[])),
            Err(Error::AccessKeyMissing(_))
        ));
        assert!(matches!(
            rules.outbound(0, &Method::POST, &request(&[("x-sluice-key", "wrong")])),
            Err(Error::AccessKeyUnknown)
        ));
        // In its own header, alongside the client's API key.
        let out = rules
            .outbound(
                0,
                &Method::POST,
                &request(&[("X-Sluice-Key", ACCESS_KEY), ("x-api-key", API_KEY)]),
            )
            .unwrap();
        assert_eq!(out.caller.as_deref(), Some("alice"));
        assert_eq!(out.source, CredentialSource::ClientApiKey);
        assert!(out.headers.get("x-sluice-key").is_none());
        // As a bearer token (ANTHROPIC_AUTH_TOKEN=<access key>): the server key is used.
        let out = rules
            .outbound(
                0,
                &Method::POST,
                &request(&[("authorization", &format!("Bearer {ACCESS_KEY}"))]),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
        assert_eq!(
            credential_headers(&out),
            vec![pair("x-api-key", SERVER_KEY)]
        );
        // As x-api-key, and copied into some other header: never forwarded.
        let out = rules
            .outbound(
                0,
                &Method::POST,
                &request(&[("x-api-key", ACCESS_KEY), ("x-other", ACCESS_KEY)]),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
        assert!(out.headers.get("x-other").is_none());
    }

    #[test]
    fn admin_token_is_never_forwarded() {
        let out = rules("client_first", None, false)
            .outbound(
                0,
                &Method::POST,
                &request(&[
                    ("x-debug", "sluice-test-admin-token"),
                    ("x-api-key", API_KEY),
                ]),
            )
            .unwrap();
        assert!(out.headers.get("x-debug").is_none());
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let out = rules("client_first", None, false)
            .outbound(
                0,
                &Method::POST,
                &request(&[
                    ("connection", "keep-alive, x-hop"),
                    ("x-hop", "1"),
                    ("keep-alive", "timeout=5"),
                    ("te", "trailers"),
                    ("proxy-authorization", "Basic abc"),
                    ("host", "localhost:4080"),
                    ("x-stainless-lang", "js"),
                    ("x-stainless-lang", "ts"),
                ]),
            )
            .unwrap();
        let names: Vec<_> = out
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            vec![("x-stainless-lang", "js"), ("x-stainless-lang", "ts")]
        );
    }

    fn material(text: &str, pairs: &[(&str, &str)]) -> Result<SecretMaterial, SettingsError> {
        let env = EnvSource::Fixed(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let settings = Settings::from_toml(text, "test.toml", &env).unwrap();
        let material = SecretMaterial::read(&settings, &env)?;
        material.refuse_open_relay(&settings)?;
        Ok(material)
    }

    fn error_key(result: Result<SecretMaterial, SettingsError>) -> String {
        match result.expect_err("settings should be refused") {
            SettingsError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    const ONE_ROUTE: &str =
        "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"https://api.anthropic.com\"\n";
    const ALICE: &str = "[access]\n[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n";

    #[test]
    fn open_relay_is_refused() {
        let text = format!("listen = \"0.0.0.0:4080\"\n{ONE_ROUTE}");
        let key = ("ANTHROPIC_API_KEY", "sk-ant-api03-test-server");
        assert_eq!(error_key(material(&text, &[key])), "listen");
        // Without a server key, or with access keys, listening widely is fine.
        assert!(material(&text, &[]).is_ok());
        let with_access = format!("{text}\n{ALICE}");
        assert!(material(&with_access, &[key, ("K_ALICE", "sluice-alice-key")]).is_ok());
    }

    #[test]
    fn access_keys_need_their_env_var_set_once() {
        let text = format!("{ONE_ROUTE}\n{ALICE}");
        assert_eq!(error_key(material(&text, &[])), "access.keys[0].key_env");
        let read = material(&text, &[("K_ALICE", "sluice-alice-key")]).unwrap();
        assert_eq!(read.access_keys[0].0, "alice");
        let twice = format!("{text}[[access.keys]]\nname = \"bob\"\nkey_env = \"K_BOB\"\n");
        let same = [("K_ALICE", "same-key"), ("K_BOB", "same-key")];
        assert_eq!(error_key(material(&twice, &same)), "access.keys[1].key_env");
    }

    #[test]
    fn a_bad_file_in_keys_dir_does_not_hold_back_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(keys.join("alice"), "key-alice\n").unwrap();
        std::fs::write(keys.join("bob"), "key-bob\n").unwrap();
        let text = format!(
            "{ONE_ROUTE}\n[access]\nkeys_dir = {:?}\n",
            keys.display().to_string()
        );
        let callers = |m: &SecretMaterial| -> Vec<String> {
            m.access_keys.iter().map(|(name, _)| name.clone()).collect()
        };
        assert_eq!(callers(&material(&text, &[]).unwrap()), ["alice", "bob"]);
        // A binary file appears, a copy of alice's key under another name, then bob is revoked.
        std::fs::write(keys.join("blob"), [0x00, 0xff, 0xfe, 0x9b]).unwrap();
        std::fs::write(keys.join("mallory"), "key-alice").unwrap();
        std::fs::remove_file(keys.join("bob")).unwrap();
        let read = material(&text, &[]).expect("the keys directory still applies");
        assert_eq!(callers(&read), ["alice"]);
        let skipped = |name: &str| {
            read.warnings
                .iter()
                .any(|w| w.contains(&format!("/{name} skipped")))
        };
        assert!(skipped("blob") && skipped("mallory"), "{:?}", read.warnings);
    }

    #[test]
    fn secrets_are_read_from_env_and_never_debug_printed() {
        let env = [("ANTHROPIC_API_KEY", "sk-ant-api03-test-secret")];
        let read = material(ONE_ROUTE, &env).unwrap();
        let key = read.server_keys[0].as_ref().unwrap();
        assert_eq!(key.expose(), "sk-ant-api03-test-secret");
        let settings =
            Settings::from_toml(ONE_ROUTE, "t", &EnvSource::Fixed(HashMap::new())).unwrap();
        let debug = format!("{read:?}{}", read.summary(&settings));
        assert!(!debug.contains("sk-ant-api03-test-secret"));
        assert!(debug.contains(&key.fingerprint()));
    }

    #[test]
    fn changes_are_named_by_fingerprint_and_caller() {
        let text = format!("{ONE_ROUTE}\n{ALICE}");
        let settings = Settings::from_toml(&text, "t", &EnvSource::Fixed(HashMap::new())).unwrap();
        let before = material(&text, &[("K_ALICE", "key-1")]).unwrap();
        let after = material(
            &text,
            &[("K_ALICE", "key-2"), ("ANTHROPIC_API_KEY", "sk-x")],
        )
        .unwrap();
        let changes = after.changes_since(&before, &settings);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0].starts_with("server key of /anthropic: none -> "));
        assert_eq!(changes[1], "access key alice rotated");
        assert!(!changes.concat().contains("sk-x"));
    }

    /// Rules for one `protocol = "openai"` route.
    fn openai_rules(policy: &str, server_key: Option<&str>) -> CredentialRules {
        let mut env = HashMap::new();
        if let Some(key) = server_key {
            env.insert("OPENAI_API_KEY".to_string(), key.to_string());
        }
        env.insert("K_ALICE".to_string(), ACCESS_KEY.to_string());
        let text = format!(
            "[[routes]]\nprefix = \"/openai/v1\"\nupstream = \"http://127.0.0.1:1/v1\"\n\
             protocol = \"openai\"\nserver_key_env = \"OPENAI_API_KEY\"\n\
             credential_policy = \"{policy}\"\n{ALICE}"
        );
        let env = EnvSource::Fixed(env);
        let settings = Settings::from_toml(&text, "test", &env).unwrap();
        CredentialRules::new(&settings, &SecretMaterial::read(&settings, &env).unwrap())
    }

    const CHATGPT_TOKEN: &str =
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLXRlc3QifQ.c2lnbmF0dXJlLXRlc3Q";

    /// SPEC "Credentials" for openai routes, row by row: what the client sent, the server key,
    /// the source, and the credential headers that go upstream.
    #[test]
    fn openai_credential_table_matches_spec() {
        let server = "sk-proj-test-server-key";
        let chatgpt = format!("Bearer {CHATGPT_TOKEN}");
        let access = format!("Bearer {ACCESS_KEY}");
        let server_bearer = format!("Bearer {server}");
        type Row<'a> = (
            Vec<(&'a str, &'a str)>,
            Option<&'a str>,
            CredentialSource,
            Vec<(String, String)>,
        );
        let rows: Vec<Row> = vec![
            // The client's API key is kept, with a server key set or not.
            (
                vec![("authorization", "Bearer sk-proj-client")],
                Some(server),
                CredentialSource::ClientApiKey,
                vec![pair("authorization", "Bearer sk-proj-client")],
            ),
            // Azure's api-key header is an API key too.
            (
                vec![("api-key", "azure-client-key")],
                Some(server),
                CredentialSource::ClientApiKey,
                vec![pair("api-key", "azure-client-key")],
            ),
            // A ChatGPT login (Codex): untouched, never the server key.
            (
                vec![
                    ("authorization", &chatgpt),
                    ("chatgpt-account-id", "acct-1"),
                ],
                Some(server),
                CredentialSource::ClientOauth,
                vec![pair("authorization", &chatgpt)],
            ),
            (
                vec![("authorization", "Bearer team-gateway-token")],
                Some(server),
                CredentialSource::ClientBearer,
                vec![pair("authorization", "Bearer team-gateway-token")],
            ),
            // No client credential: the server key as a bearer token.
            (
                vec![],
                Some(server),
                CredentialSource::ServerKey,
                vec![pair("authorization", &server_bearer)],
            ),
            // The access key as the bearer counts as no credential and is never forwarded.
            (
                vec![("authorization", &access)],
                Some(server),
                CredentialSource::ServerKey,
                vec![pair("authorization", &server_bearer)],
            ),
            // No credential at all: no header, never an empty or "None" one.
            (
                vec![("authorization", "")],
                None,
                CredentialSource::None,
                vec![],
            ),
        ];
        for (sent, server_key, source, upstream) in rows {
            let mut headers = request(&sent);
            headers.insert(
                HeaderName::from_static("x-sluice-key"),
                HeaderValue::from_static(ACCESS_KEY),
            );
            let out = openai_rules("client_first", server_key)
                .outbound(0, &Method::POST, &headers)
                .unwrap();
            assert_eq!(out.source, source, "{sent:?}");
            let mut found: Vec<_> = out
                .headers
                .iter()
                .filter(|(n, _)| *n == header::AUTHORIZATION || n.as_str() == "api-key")
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            found.sort();
            assert_eq!(found, upstream, "{sent:?}");
            assert!(out.headers.get("x-sluice-key").is_none());
            assert!(out
                .headers
                .iter()
                .all(|(_, v)| v != "None" && !v.is_empty()));
        }
    }

    #[test]
    fn openai_server_only_replaces_even_a_chatgpt_login() {
        let out = openai_rules("server_only", Some("sk-proj-server"))
            .outbound(
                0,
                &Method::POST,
                &request(&[
                    ("authorization", &format!("Bearer {CHATGPT_TOKEN}")),
                    ("x-sluice-key", ACCESS_KEY),
                ]),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
        assert_eq!(
            out.headers.get(header::AUTHORIZATION).unwrap(),
            "Bearer sk-proj-server"
        );
    }

    /// Rules for one `protocol = "gemini"` route.
    fn gemini_rules(policy: &str, server_key: Option<&str>) -> CredentialRules {
        let mut env = HashMap::new();
        if let Some(key) = server_key {
            env.insert("GEMINI_API_KEY".to_string(), key.to_string());
        }
        let text = format!(
            "[[routes]]\nprefix = \"/gemini\"\nupstream = \"http://127.0.0.1:1\"\n\
             protocol = \"gemini\"\nserver_key_env = \"GEMINI_API_KEY\"\n\
             credential_policy = \"{policy}\"\n"
        );
        let env = EnvSource::Fixed(env);
        let settings = Settings::from_toml(&text, "test", &env).unwrap();
        CredentialRules::new(&settings, &SecretMaterial::read(&settings, &env).unwrap())
    }

    fn gemini_headers(out: &Outbound) -> Vec<(String, String)> {
        let mut found: Vec<_> = out
            .headers
            .iter()
            .filter(|(n, _)| n.as_str() == "x-goog-api-key" || *n == header::AUTHORIZATION)
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        found.sort();
        found
    }

    /// SPEC "Credentials" for gemini routes: `x-goog-api-key`, `?key=` or a Google OAuth
    /// bearer are the client's and go untouched; else the server key as `x-goog-api-key`.
    #[test]
    fn gemini_credential_table_matches_spec() {
        let server = "AIza-test-server-key";
        let rules = gemini_rules("client_first", Some(server));
        let rewrite = |headers: &[(&str, &str)], query: Option<&str>| {
            rules
                .rewrite(0, &Method::POST, &request(headers), query)
                .unwrap()
        };
        let out = rewrite(&[("x-goog-api-key", "AIza-client")], Some("alt=sse"));
        assert_eq!(out.source, CredentialSource::ClientApiKey);
        assert_eq!(
            gemini_headers(&out),
            [pair("x-goog-api-key", "AIza-client")]
        );
        assert_eq!(
            out.credential,
            Some(format!("client_api_key:{}", fingerprint(b"AIza-client")))
        );

        let out = rewrite(&[], Some("alt=sse&key=AIza-in-query"));
        assert_eq!(out.source, CredentialSource::ClientApiKey);
        assert!(gemini_headers(&out).is_empty(), "no server key beside it");
        assert_eq!(
            out.credential,
            Some(format!("client_api_key:{}", fingerprint(b"AIza-in-query")))
        );
        assert_eq!(out.query_credential_removed, None);

        let out = rewrite(&[("authorization", "Bearer ya29.google-login")], None);
        assert_eq!(out.source, CredentialSource::ClientOauth);
        assert_eq!(
            gemini_headers(&out),
            [pair("authorization", "Bearer ya29.google-login")]
        );

        let out = rewrite(&[], Some("alt=sse"));
        assert_eq!(out.source, CredentialSource::ServerKey);
        assert_eq!(gemini_headers(&out), [pair("x-goog-api-key", server)]);
    }

    #[test]
    fn gemini_query_key_is_kept_from_upstream_when_the_policy_removes_client_credentials() {
        let rules = gemini_rules("server_only", Some("AIza-server"));
        let out = rules
            .rewrite(
                0,
                &Method::POST,
                &request(&[]),
                Some("key=AIza-client&alt=sse"),
            )
            .unwrap();
        assert_eq!(out.source, CredentialSource::ServerKey);
        assert_eq!(out.query_credential_removed.as_deref(), Some("AIza-client"));
        let query = crate::routing::upstream_query(
            Some("key=AIza-client&alt=sse"),
            out.query_credential_removed.as_deref(),
        );
        assert_eq!(query.as_deref(), Some("alt=sse"));
    }
}
