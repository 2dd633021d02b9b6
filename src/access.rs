//! Who may use sluice: callers by their access keys, admins by the admin token. Every secret is
//! compared in constant time; none is ever forwarded.

use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::protocol::anthropic;
use crate::secret_forms;
use crate::secrets::Secret;

/// Caller identification: access keys and the admin token, compared in constant time.
#[derive(Debug, Clone)]
pub struct AccessRules {
    pub header: HeaderName,
    keys: Vec<(String, Secret)>,
    index: KeyIndex,
    admin_token: Option<Secret>,
}

/// The access keys by the SHA-256 of their value: a presented value is hashed once and looked
/// up, so admitting a request costs the same with 100,000 keys as with one (comparing it with
/// every key cost 25 ms a request). The lookup says only whether some key has the same digest;
/// the key found is then compared in constant time.
#[derive(Clone, Default)]
struct KeyIndex(std::collections::HashMap<[u8; 32], usize>);

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyIndex({} keys)", self.0.len())
    }
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

impl AccessRules {
    pub fn new(
        header: HeaderName,
        keys: Vec<(String, Secret)>,
        admin_token: Option<Secret>,
    ) -> Self {
        let index = KeyIndex(
            (keys.iter().enumerate())
                .map(|(at, (_, key))| (digest(key.expose().as_bytes()), at))
                .collect(),
        );
        Self {
            header,
            keys,
            index,
            admin_token,
        }
    }

    /// True when a header value must be checked for being one of our secrets.
    pub fn has_secrets(&self) -> bool {
        self.required() || self.admin_token.is_some()
    }

    /// The one gate of every admin endpoint: passes when no admin token is set, or the request
    /// carries `Authorization: Bearer <admin token>`.
    pub fn require_admin(&self, req: &HttpRequest) -> Result<(), Error> {
        if self.admin_allows(req.headers()) {
            Ok(())
        } else {
            Err(Error::AdminToken)
        }
    }

    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The name of the access key equal to `presented`: found by its digest, confirmed by a
    /// constant-time comparison. How long it takes depends on the presented value alone.
    pub fn key_name(&self, presented: &[u8]) -> Option<&str> {
        let &at = self.index.0.get(&digest(presented))?;
        let (name, key) = &self.keys[at];
        bool::from(key.expose().as_bytes().ct_eq(presented)).then_some(name.as_str())
    }

    /// True when the value holds an access key or the admin token in any of the forms
    /// [`secret_forms::holds_secret`] recognises.
    pub fn is_proxy_secret(&self, value: &[u8]) -> bool {
        secret_forms::holds_secret(value, |part| {
            let mut hit = self.key_name(part).is_some();
            if let Some(token) = &self.admin_token {
                hit |= bool::from(token.expose().as_bytes().ct_eq(part));
            }
            hit
        })
    }

    /// Checks `Authorization: Bearer <admin token>` for the admin endpoints.
    fn admin_allows(&self, headers: &HeaderMap) -> bool {
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
    pub fn identify(&self, incoming: &HeaderMap) -> Result<Option<String>, Error> {
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
            .chain(
                incoming
                    .get_all(anthropic::API_KEY_HEADER)
                    .map(|v| v.as_bytes()),
            );
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

/// The token of `Bearer <token>` (RFC 9110 credentials: any letter case, spaces or tabs).
pub fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    secret_forms::bearer_token(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(count: usize) -> AccessRules {
        let keys = (0..count)
            .map(|i| {
                (
                    format!("caller-{i}"),
                    Secret::new(format!("sluice-key-{i:06}")),
                )
            })
            .collect();
        AccessRules::new(HeaderName::from_static("x-sluice-key"), keys, None)
    }

    #[test]
    fn each_key_admits_its_caller_and_nothing_else_does() {
        let rules = rules(3);
        assert_eq!(rules.key_name(b"sluice-key-000001"), Some("caller-1"));
        assert_eq!(rules.key_name(b"sluice-key-000003"), None);
        assert_eq!(rules.key_name(b"sluice-key-00000"), None);
        assert_eq!(rules.key_name(b""), None);
        assert!(rules.is_proxy_secret(b"Bearer sluice-key-000002"));
        assert!(!format!("{rules:?}").contains("sluice-key-0"));
    }

    #[test]
    fn admitting_among_twenty_thousand_keys_does_not_compare_every_key() {
        let rules = rules(20_000);
        // 10,000 lookups: comparing each with every key is 200 million comparisons (many
        // seconds, even in a release build); by digest it is 10,000 hashes.
        let started = std::time::Instant::now();
        let mut found = 0;
        for i in 0..10_000 {
            let presented = format!("sluice-key-{:06}", i * 2);
            found += usize::from(rules.key_name(presented.as_bytes()).is_some());
        }
        assert_eq!(found, 10_000);
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(3),
            "10,000 admissions among 20,000 keys took {took:?}"
        );
    }
}
