//! Which credential headers go upstream: the client's own first, the server key only as a
//! fallback, access keys and the admin token never. The CredentialResolver actor owns the rules
//! of the current settings; the decision itself is the pure [`CredentialRules::outbound`].

use std::sync::Arc;

use actix::prelude::*;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::headers;
use crate::settings::{fingerprint, Secret, Settings};

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
/// The beta flag Anthropic requires alongside an OAuth bearer token.
const OAUTH_BETA: &str = "oauth-2025-04-20";
const OAUTH_TOKEN_PREFIX: &str = "sk-ant-oat";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPolicy {
    /// The client's own credentials win; the server key fills in when the client sends none.
    ClientFirst,
    /// Client credentials are removed; the server key is always used.
    ServerOnly,
    /// The server key is never used.
    ClientOnly,
}

impl CredentialPolicy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "client_first" => Some(Self::ClientFirst),
            "server_only" => Some(Self::ServerOnly),
            "client_only" => Some(Self::ClientOnly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientFirst => "client_first",
            Self::ServerOnly => "server_only",
            Self::ClientOnly => "client_only",
        }
    }
}

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
    /// `Some(true)` when it is `Bearer sk-ant-oat…` (a Claude subscription login).
    pub authorization: Option<bool>,
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

/// The credential rules of SPEC "Credentials", as a pure function.
pub fn decide(
    policy: CredentialPolicy,
    has_server_key: bool,
    client: ClientCredentials,
) -> Result<Decision, Error> {
    let client_source = if client.api_key {
        Some(CredentialSource::ClientApiKey)
    } else {
        match client.authorization {
            Some(true) => Some(CredentialSource::ClientOauth),
            Some(false) => Some(CredentialSource::ClientBearer),
            None => None,
        }
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

/// The server key as the headers it becomes: `x-api-key`, or for an OAuth token
/// `authorization: Bearer …` plus the OAuth beta flag.
#[derive(Debug, Clone)]
pub struct ServerCredential {
    value: HeaderValue,
    oauth: bool,
    fingerprint: String,
}

impl ServerCredential {
    fn new(secret: &Secret) -> Option<Self> {
        let oauth = secret.expose().starts_with(OAUTH_TOKEN_PREFIX);
        let text = if oauth {
            format!("Bearer {}", secret.expose())
        } else {
            secret.expose().to_string()
        };
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(Self {
            value,
            oauth,
            fingerprint: secret.fingerprint(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct RouteCredentials {
    pub policy: CredentialPolicy,
    pub server: Option<ServerCredential>,
}

/// Caller identification: access keys and the admin token, compared in constant time.
#[derive(Debug, Clone)]
pub struct AccessRules {
    pub header: HeaderName,
    keys: Vec<(String, Secret)>,
    admin_token: Option<Secret>,
}

impl AccessRules {
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The name of the access key equal to `presented`, checking every key without an early
    /// exit so timing says nothing about which (or whether one) matched.
    fn key_name(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.expose().as_bytes().ct_eq(presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// True when the value is an access key or the admin token, bare or as `Bearer <secret>`.
    fn is_proxy_secret(&self, value: &[u8]) -> bool {
        let bare = strip_bearer(value).unwrap_or(value);
        let mut hit = self.key_name(bare).is_some();
        if let Some(token) = &self.admin_token {
            hit |= bool::from(token.expose().as_bytes().ct_eq(bare));
        }
        hit
    }

    /// Checks `Authorization: Bearer <admin token>` for the admin endpoints.
    pub fn admin_allows(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.admin_token else {
            return true;
        };
        headers
            .get_all(header::AUTHORIZATION)
            .filter_map(|v| strip_bearer(v.as_bytes()))
            .fold(false, |ok, presented| {
                ok | bool::from(token.expose().as_bytes().ct_eq(presented))
            })
    }

    /// The caller's access-key name, or `None` when no keys are configured.
    fn identify(&self, incoming: &HeaderMap) -> Result<Option<String>, Error> {
        if !self.required() {
            return Ok(None);
        }
        let candidates = incoming
            .get_all(&self.header)
            .map(|v| v.as_bytes())
            .chain(
                incoming
                    .get_all(header::AUTHORIZATION)
                    .filter_map(|v| strip_bearer(v.as_bytes())),
            )
            .chain(incoming.get_all(X_API_KEY).map(|v| v.as_bytes()));
        let mut caller = None;
        for presented in candidates {
            if let Some(name) = self.key_name(presented) {
                caller.get_or_insert_with(|| name.to_string());
            }
        }
        match caller {
            Some(name) => Ok(Some(name)),
            None if incoming.contains_key(&self.header) => Err(Error::AccessKeyUnknown),
            None => Err(Error::AccessKeyMissing(self.header.to_string())),
        }
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = (value.get(..7)?, &value[7..]);
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

/// The credential rules of one settings generation.
#[derive(Debug, Clone)]
pub struct CredentialRules {
    pub access: AccessRules,
    pub routes: Vec<RouteCredentials>,
}

/// The request headers to send upstream, and who the request is on behalf of.
#[derive(Debug)]
pub struct Outbound {
    pub headers: HeaderMap,
    pub source: CredentialSource,
    /// `<source>:<first 12 hex of sha256(secret)>`, absent for source `none`.
    pub credential: Option<String>,
    pub caller: Option<String>,
}

impl CredentialRules {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            access: AccessRules {
                header: settings.access.header.clone(),
                keys: settings
                    .access
                    .keys
                    .iter()
                    .map(|k| (k.name.clone(), k.key.clone()))
                    .collect(),
                admin_token: settings.admin_token.clone(),
            },
            routes: settings
                .routes
                .iter()
                .map(|route| RouteCredentials {
                    policy: route.credential_policy,
                    server: route.server_key.as_ref().and_then(ServerCredential::new),
                })
                .collect(),
        }
    }

    /// Copies the end-to-end headers of `incoming` and sets the credential headers for route
    /// `route` per its policy. Never forwards an access key, the admin token, an empty
    /// credential, a hop-by-hop header, or `host` (awc sets the upstream's).
    ///
    /// Under `client_first`, `HEAD` and `OPTIONS` never get the server key: they are probes
    /// (Claude Code sends `HEAD /` without credentials at every start) that need no credential
    /// and bill nothing, so the fallback key has no reason to travel with them.
    pub fn outbound(
        &self,
        route: usize,
        method: &Method,
        incoming: &HeaderMap,
    ) -> Result<Outbound, Error> {
        let caller = self.access.identify(incoming)?;
        let rules = &self.routes[route];
        let listed = headers::connection_listed(incoming);

        let mut out = HeaderMap::with_capacity(incoming.len() + 2);
        let mut client = ClientCredentials::default();
        let mut client_secret: Option<&[u8]> = None;
        let mut client_credentials: Vec<(&HeaderName, &HeaderValue)> = Vec::new();
        for (name, value) in incoming.iter() {
            if !headers::is_end_to_end(name, &listed)
                || *name == header::HOST
                || *name == header::EXPECT
                || *name == self.access.header
                || (self.access.required() || self.access.admin_token.is_some())
                    && self.access.is_proxy_secret(value.as_bytes())
            {
                continue;
            }
            let is_api_key = *name == X_API_KEY;
            if is_api_key || *name == header::AUTHORIZATION {
                if value.is_empty() {
                    continue;
                }
                if is_api_key && !client.api_key {
                    client.api_key = true;
                    client_secret = Some(value.as_bytes());
                } else if !is_api_key && client.authorization.is_none() {
                    let token = strip_bearer(value.as_bytes());
                    client.authorization =
                        Some(token.is_some_and(|t| t.starts_with(OAUTH_TOKEN_PREFIX.as_bytes())));
                    if !client.api_key {
                        client_secret = Some(token.unwrap_or(value.as_bytes()));
                    }
                }
                client_credentials.push((name, value));
                continue;
            }
            out.append(name.clone(), value.clone());
        }

        let is_probe = *method == Method::HEAD || *method == Method::OPTIONS;
        let server_key_usable =
            rules.server.is_some() && !(is_probe && rules.policy == CredentialPolicy::ClientFirst);
        let decision = decide(rules.policy, server_key_usable, client)?;
        let mut credential = None;
        if decision.forward_client {
            for (name, value) in client_credentials {
                out.append(name.clone(), value.clone());
            }
            credential = client_secret
                .map(|secret| format!("{}:{}", decision.source.as_str(), fingerprint(secret)));
        }
        if decision.add_server_key {
            let server = rules.server.as_ref().ok_or(Error::NoServerKey)?;
            if server.oauth {
                out.insert(header::AUTHORIZATION, server.value.clone());
                add_oauth_beta(&mut out);
            } else {
                out.insert(X_API_KEY, server.value.clone());
            }
            credential = Some(format!(
                "{}:{}",
                decision.source.as_str(),
                server.fingerprint
            ));
        }
        Ok(Outbound {
            headers: out,
            source: decision.source,
            credential,
            caller,
        })
    }
}

/// Adds `oauth-2025-04-20` to `anthropic-beta` unless one of its values already lists it,
/// appending to the last value so that multi-valued headers stay as they were.
fn add_oauth_beta(headers: &mut HeaderMap) {
    let values: Vec<HeaderValue> = headers.get_all(ANTHROPIC_BETA).cloned().collect();
    let listed = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|flag| flag.trim() == OAUTH_BETA);
    if listed {
        return;
    }
    match values.split_last() {
        None => {
            headers.insert(ANTHROPIC_BETA, HeaderValue::from_static(OAUTH_BETA));
        }
        Some((last, rest)) => {
            let joined = format!("{},{OAUTH_BETA}", last.to_str().unwrap_or_default());
            headers.remove(ANTHROPIC_BETA);
            for value in rest {
                headers.append(ANTHROPIC_BETA, value.clone());
            }
            match HeaderValue::from_str(&joined) {
                Ok(value) => headers.append(ANTHROPIC_BETA, value),
                Err(_) => headers.append(ANTHROPIC_BETA, HeaderValue::from_static(OAUTH_BETA)),
            }
        }
    }
}

/// Owns the credential rules of the current settings and hands each settings generation's
/// rules, built once, to the request path.
#[derive(Default)]
pub struct CredentialResolver {
    rules: Option<Arc<CredentialRules>>,
}

impl Actor for CredentialResolver {
    type Context = Context<Self>;
}

/// New settings: build the rules for them and return them for publication.
#[derive(Message)]
#[rtype(result = "Arc<CredentialRules>")]
pub struct ApplyCredentials(pub Arc<Settings>);

impl Handler<ApplyCredentials> for CredentialResolver {
    type Result = MessageResult<ApplyCredentials>;

    fn handle(&mut self, msg: ApplyCredentials, _: &mut Self::Context) -> Self::Result {
        let rules = Arc::new(CredentialRules::from_settings(&msg.0));
        self.rules = Some(rules.clone());
        MessageResult(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{EnvSource, Settings};
    use std::collections::HashMap;

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
        let settings = Settings::from_toml(&text, "test", &EnvSource::Fixed(env)).unwrap();
        CredentialRules::from_settings(&settings)
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
            .filter(|(n, _)| *n == X_API_KEY || *n == header::AUTHORIZATION || *n == ANTHROPIC_BETA)
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
            authorization: Some(true),
        };
        let bearer = ClientCredentials {
            api_key: false,
            authorization: Some(false),
        };
        let both = ClientCredentials {
            api_key: true,
            authorization: Some(true),
        };
        let src = |p, s, c| decide(p, s, c).map(|d| d.source).ok();
        for server in [false, true] {
            assert_eq!(src(ClientFirst, server, key), Some(S::ClientApiKey));
            assert_eq!(src(ClientFirst, server, oauth), Some(S::ClientOauth));
            assert_eq!(src(ClientFirst, server, bearer), Some(S::ClientBearer));
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
}
