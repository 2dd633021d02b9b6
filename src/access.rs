//! Who may use sluice: callers by their access keys, admins by the admin token. Every secret is
//! compared in constant time; none is ever forwarded.

use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::HttpRequest;
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
    admin_token: Option<Secret>,
}

impl AccessRules {
    pub fn new(
        header: HeaderName,
        keys: Vec<(String, Secret)>,
        admin_token: Option<Secret>,
    ) -> Self {
        Self {
            header,
            keys,
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

    /// The name of the access key equal to `presented`, checking every key without an early
    /// exit so timing says nothing about which (or whether one) matched.
    pub fn key_name(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.expose().as_bytes().ct_eq(presented)) {
                found = Some(name.as_str());
            }
        }
        found
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
