//! Google's Gemini API as sluice needs to know it: credentials (`x-goog-api-key`, or a Google
//! OAuth bearer token) and the error shape. Its answers are not read yet: a `gemini` route is
//! forwarded and counted without tokens.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{Api, BearerKind, CredentialHeader, Reading};
use crate::readers::json::ValueHandler;
use crate::readers::sse::EventHandler;
use crate::usage::Answer;

/// Where an API key goes.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-goog-api-key");

/// Gemini's answers to [`Api`].
pub struct Gemini;

impl Api for Gemini {
    fn credential_header(&self, name: &HeaderName) -> Option<CredentialHeader> {
        if *name == API_KEY_HEADER {
            Some(CredentialHeader::ApiKey)
        } else if *name == header::AUTHORIZATION {
            Some(CredentialHeader::Authorization)
        } else {
            None
        }
    }

    /// A bearer token on Gemini's API is a Google OAuth login.
    fn bearer_kind(&self, authorization: &[u8]) -> BearerKind {
        match super::bearer_token(authorization) {
            Some(token) if !token.is_empty() => BearerKind::Oauth,
            _ => BearerKind::Other,
        }
    }

    fn server_key_value(&self, secret: &str) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(secret).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    fn insert_server_key(&self, value: &HeaderValue, out: &mut HeaderMap) {
        out.insert(API_KEY_HEADER, value.clone());
    }

    fn error_body(&self, status: u16, _kind: &str, message: &str) -> String {
        serde_json::json!({
            "error": {"code": status, "message": message, "status": error_status(status)}
        })
        .to_string()
    }

    fn is_rate_limit_header(&self, _name: &str) -> bool {
        false
    }

    fn answer_reading(&self) -> Option<Reading> {
        None
    }

    fn model_in_request_body(&self) -> bool {
        false
    }
}

/// Google's canonical error status for an HTTP status.
fn error_status(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// The top-level keys of a JSON answer that metering reads (none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantedKey {}

/// Reads a Gemini answer into an [`Answer`]: nothing yet.
#[derive(Debug, Default)]
pub struct AnswerReading {
    pub answer: Answer,
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

    fn on_value(&mut self, key: WantedKey, _value: &[u8]) {
        match key {}
    }

    fn on_end(&mut self, complete: bool) {
        self.answer.completed = complete;
    }
}
