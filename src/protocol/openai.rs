//! OpenAI's API as sluice needs to know it: credentials (`authorization: Bearer`, or Azure's
//! `api-key`; an API key `sk-…`, a ChatGPT login token, or another bearer), the error shape
//! the official SDKs parse, the `x-ratelimit-*` headers, and the usage of its answers.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{Api, BearerKind, CredentialHeader, Reading};
use crate::readers::json::ValueHandler;
use crate::readers::sse::EventHandler;
use crate::usage::{Answer, AnswerFormat};

/// Azure OpenAI's API-key header.
pub const AZURE_API_KEY_HEADER: HeaderName = HeaderName::from_static("api-key");
const API_KEY_PREFIX: &[u8] = b"sk-";

/// OpenAI's answers to [`Api`].
pub struct OpenAi;

impl Api for OpenAi {
    fn credential_header(&self, name: &HeaderName) -> Option<CredentialHeader> {
        if *name == header::AUTHORIZATION {
            Some(CredentialHeader::Authorization)
        } else if *name == AZURE_API_KEY_HEADER {
            Some(CredentialHeader::ApiKey)
        } else {
            None
        }
    }

    /// `Bearer sk-…` is an API key, a JWT a ChatGPT login (Codex sends one with
    /// `chatgpt-account-id`), anything else another bearer.
    fn bearer_kind(&self, authorization: &[u8]) -> BearerKind {
        match super::bearer_token(authorization) {
            Some(token) if token.starts_with(API_KEY_PREFIX) => BearerKind::ApiKey,
            Some(token) if is_jwt(token) => BearerKind::Oauth,
            _ => BearerKind::Other,
        }
    }

    fn server_key_value(&self, secret: &str) -> Option<HeaderValue> {
        super::bearer_value(secret)
    }

    fn insert_server_key(&self, value: &HeaderValue, out: &mut HeaderMap) {
        out.insert(header::AUTHORIZATION, value.clone());
    }

    fn error_body(&self, status: u16, kind: &str, message: &str) -> String {
        error_body(error_type(status), kind, message)
    }

    fn is_rate_limit_header(&self, name: &str) -> bool {
        name.starts_with("x-ratelimit-")
    }

    fn answer_reading(&self) -> Option<Reading> {
        // Usage of OpenAI answers is read once its reader lands; until then they are
        // forwarded and counted without tokens.
        None
    }

    fn model_in_request_body(&self) -> bool {
        true
    }
}

/// A JSON Web Token: three base64url parts, the first a JSON header (`eyJ` is `{"`).
fn is_jwt(token: &[u8]) -> bool {
    let base64url = |part: &[u8]| {
        !part.is_empty()
            && part
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    };
    let parts: Vec<&[u8]> = token.split(|&b| b == b'.').collect();
    parts.len() == 3 && token.starts_with(b"eyJ") && parts.iter().all(|part| base64url(part))
}

/// OpenAI's `error.type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// `{"error":{"message":…,"type":…,"param":null,"code":…}}`, as OpenAI's API answers errors.
pub fn error_body(error_type: &str, code: &str, message: &str) -> String {
    serde_json::json!({
        "error": {
            "message": message,
            "type": error_type,
            "param": null,
            "code": code,
        }
    })
    .to_string()
}

/// The top-level keys of a JSON answer that metering reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantedKey {
    Usage,
    Model,
    Error,
}

/// Reads an OpenAI answer into an [`Answer`].
#[derive(Debug, Default)]
pub struct AnswerReading {
    pub answer: Answer,
}

impl AnswerReading {
    /// The body ended: what follows from what was not seen.
    pub fn on_body_end(&mut self, _format: AnswerFormat) {}

    /// Bytes held beside the answer.
    pub fn held_bytes(&self) -> usize {
        0
    }
}

impl EventHandler for AnswerReading {
    fn skips_data(&self, _event_name: &[u8]) -> bool {
        true
    }

    fn on_event(&mut self, _event_name: &[u8], _data: &[u8]) {}
}

impl ValueHandler for AnswerReading {
    type Key = WantedKey;

    fn wants(&self, _key: &[u8]) -> Option<WantedKey> {
        None
    }

    fn on_value(&mut self, _key: WantedKey, _value: &[u8]) {}

    fn on_end(&mut self, complete: bool) {
        self.answer.completed = complete;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_told_apart_by_shape() {
        let jwt = b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl";
        let cases: [(&[u8], BearerKind); 8] = [
            (b"Bearer sk-proj-abc123", BearerKind::ApiKey),
            (b"bearer  sk-abc", BearerKind::ApiKey),
            (jwt, BearerKind::Oauth),
            (
                b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0",
                BearerKind::Other,
            ),
            (b"Bearer eyJ.a b.c", BearerKind::Other),
            (b"Bearer team-gateway-token", BearerKind::Other),
            (b"Basic sk-abc", BearerKind::Other),
            (b"sk-abc", BearerKind::Other),
        ];
        for (value, kind) in cases {
            assert_eq!(
                OpenAi.bearer_kind(value),
                kind,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn server_key_goes_as_bearer() {
        let value = OpenAi.server_key_value("sk-server").unwrap();
        let mut out = HeaderMap::new();
        OpenAi.insert_server_key(&value, &mut out);
        assert_eq!(out.get(header::AUTHORIZATION).unwrap(), "Bearer sk-server");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn errors_have_openai_shape() {
        let body: serde_json::Value = serde_json::from_str(&OpenAi.error_body(
            413,
            "body_too_large",
            "sluice: request body is larger than 10 bytes",
        ))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "sluice: request body is larger than 10 bytes",
                "type": "invalid_request_error",
                "param": null,
                "code": "body_too_large",
            }})
        );
    }
}
