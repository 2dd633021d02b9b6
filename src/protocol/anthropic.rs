//! Anthropic's API as sluice needs to know it: how a credential is sent (`x-api-key`, or an
//! OAuth bearer token with its beta flag), the error shape, the `anthropic-ratelimit-*` headers,
//! and, for metering, which SSE events carry usage (`message_start`, `message_delta`), which mark
//! the end (`message_stop`) or an error, and the top-level `usage`, `model` and `error` of a JSON
//! answer. Usage numbers are cumulative, so a later `usage` object supersedes an earlier one
//! field by field.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::batch_results::{self, BatchReading, BatchResult};
pub use super::BearerKind;
use super::{Api, Reading};
use crate::readers::json::ValueHandler;
use crate::readers::sse::EventHandler;
use crate::usage::{Answer, Tokens, Usage};

mod usage_json;

/// Where generated text travels: `text` blocks and `text_delta`s, `thinking_delta`s, and tool
/// input as `input_json_delta`'s `partial_json`.
pub const TEXT_KEYS: &[&str] = &["text", "thinking", "partial_json"];

/// Where an API key goes.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
pub const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
/// The beta flag Anthropic requires alongside an OAuth bearer token.
const OAUTH_BETA: &str = "oauth-2025-04-20";
const OAUTH_TOKEN_PREFIX: &[u8] = b"sk-ant-oat";
const API_KEY_PREFIX: &[u8] = b"sk-ant-api";

/// Anthropic's answers to [`Api`].
pub struct Anthropic;

impl Api for Anthropic {
    fn api_key_header(&self) -> HeaderName {
        API_KEY_HEADER
    }

    fn bearer_kind(&self, authorization: &[u8]) -> BearerKind {
        BearerKind::of_authorization(authorization)
    }

    /// `x-api-key: <key>`, or for an OAuth token `authorization: Bearer <token>`.
    fn server_key_value(&self, secret: &str) -> Option<HeaderValue> {
        if is_oauth_token(secret.as_bytes()) {
            return super::bearer_value(secret);
        }
        let mut value = HeaderValue::from_str(secret).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// An OAuth token also needs its beta flag in `anthropic-beta`.
    fn insert_server_key(&self, value: &HeaderValue, out: &mut HeaderMap) {
        if super::bearer_token(value.as_bytes()).is_some() {
            out.insert(header::AUTHORIZATION, value.clone());
            add_oauth_beta(out);
        } else {
            out.insert(API_KEY_HEADER, value.clone());
        }
    }

    fn error_body(&self, status: u16, _kind: &str, message: &str) -> String {
        error_body(error_type(status), message)
    }

    fn is_rate_limit_header(&self, name: &str) -> bool {
        name.starts_with("anthropic-ratelimit-")
    }

    fn answer_reading(&self) -> Option<Reading> {
        Some(Reading::Anthropic(AnswerReading::default()))
    }

    fn model_in_request_body(&self) -> bool {
        true
    }
    fn text_keys(&self) -> &'static [&'static str] {
        TEXT_KEYS
    }

    fn batch_reading(&self, method: &str, path: &str) -> Option<&'static BatchReading> {
        is_batch_results_request(method, path).then_some(&BATCH_RESULTS)
    }
}

/// Whether a request fetches a Message Batch's results (a `GET` of
/// `…/messages/batches/{id}/results`), whose answer the API documents only as a `.jsonl`
/// download.
pub fn is_batch_results_request(method: &str, path: &str) -> bool {
    method.eq_ignore_ascii_case("GET")
        && super::path_ends_with(
            path,
            &["messages", "batches", super::ANY_SEGMENT, "results"],
        )
}

/// A Message Batch's results: one JSON object a line, `{"custom_id", "result": {"type",
/// "message": {…the answer…}}}`; a `succeeded` result's `message` carries `model` and `usage`,
/// the others (`errored`, `canceled`, `expired`) nothing to charge.
pub static BATCH_RESULTS: BatchReading = BatchReading {
    lines: true,
    results_at: &[&[]],
    values: &[
        &["result", "type"],
        &["result", "message", "model"],
        &["result", "message", "usage"],
    ],
    read: read_batch_result,
};

fn read_batch_result(values: &[Option<Value>]) -> BatchResult {
    let [kind, model, usage] = values else {
        return BatchResult::Unknown;
    };
    match kind.as_ref().and_then(Value::as_str) {
        Some("succeeded") => BatchResult::Succeeded {
            model: batch_results::name(model),
            usage: usage.as_ref().map(usage_from_json).unwrap_or_default(),
        },
        Some(_) => BatchResult::NotSucceeded,
        None => BatchResult::Unknown,
    }
}

/// A Claude subscription (OAuth) token rather than an API key.
pub fn is_oauth_token(token: &[u8]) -> bool {
    token.starts_with(OAUTH_TOKEN_PREFIX)
}

impl BearerKind {
    /// The kind of the token in an `authorization` value on Anthropic's API (`Bearer <token>`,
    /// any letter case, any run of spaces or tabs after the scheme): `sk-ant-api…` an API key,
    /// `sk-ant-oat…` a Claude subscription login; a value of another scheme is `Other`.
    pub fn of_authorization(value: &[u8]) -> Self {
        match super::bearer_token(value) {
            Some(token) if token.starts_with(API_KEY_PREFIX) => BearerKind::ApiKey,
            Some(token) if is_oauth_token(token) => BearerKind::Oauth,
            _ => BearerKind::Other,
        }
    }
}

/// Adds `oauth-2025-04-20` to `anthropic-beta` unless one of its values already lists it,
/// appending to the last value so that multi-valued headers stay as they were.
pub fn add_oauth_beta(headers: &mut HeaderMap) {
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

/// Anthropic's `error.type` for an HTTP status, so clients' error handling keeps working.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        408 | 504 => "timeout_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type":…,"message":…}}`, fields in Anthropic's order.
pub fn error_body(error_type: &str, message: &str) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        r#type: &'static str,
        error: Detail<'a>,
    }
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        r#type: &'a str,
        message: &'a str,
    }
    let body = Body {
        r#type: "error",
        error: Detail {
            r#type: error_type,
            message,
        },
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// Events that carry content, never usage: their data is not even buffered.
const CONTENT_EVENTS: [&[u8]; 4] = [
    b"content_block_start",
    b"content_block_delta",
    b"content_block_stop",
    b"ping",
];

/// The top-level keys of a JSON answer that metering reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantedKey {
    Usage,
    Model,
    Error,
}

/// Reads an Anthropic answer into an [`Answer`].
#[derive(Debug, Default)]
pub struct AnswerReading {
    pub answer: Answer,
}

impl EventHandler for AnswerReading {
    fn skips_data(&self, event_name: &[u8]) -> bool {
        CONTENT_EVENTS.contains(&event_name)
    }

    fn on_event(&mut self, event_name: &[u8], data: &[u8]) {
        if let Ok(data) = serde_json::from_slice::<Value>(data) {
            read_event(event_name, &data, &mut self.answer);
        }
    }
}

impl ValueHandler for AnswerReading {
    type Key = WantedKey;

    fn wants(&self, key: &[u8]) -> Option<WantedKey> {
        match key {
            b"usage" => Some(WantedKey::Usage),
            b"model" => Some(WantedKey::Model),
            b"error" => Some(WantedKey::Error),
            _ => None,
        }
    }

    fn on_value(&mut self, key: WantedKey, value: &[u8]) {
        if key == WantedKey::Usage {
            // Every JSON answer has one: read without building a `Value` of it first.
            if let Some(fields) = usage_json::UsageFields::read(value) {
                fields.overwrite(&mut self.answer.usage);
            }
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(value) else {
            return;
        };
        if key == WantedKey::Model {
            self.answer.set_model(Some(&value));
        } else {
            self.answer.set_error_type(Some(&value));
        }
    }

    fn on_end(&mut self, complete: bool) {
        self.answer.completed = complete;
    }
}

/// Applies one SSE event, named by its data's `type` or else by its `event:` line.
fn read_event(event_name: &[u8], data: &Value, answer: &mut Answer) {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .map_or(event_name, str::as_bytes);
    match kind {
        b"message_start" => {
            if let Some(message) = data.get("message") {
                answer.set_model(message.get("model"));
                if let Some(usage) = message.get("usage") {
                    overwrite_usage(&mut answer.usage, usage);
                }
            }
        }
        b"message_delta" => {
            if let Some(usage) = data.get("usage") {
                overwrite_usage(&mut answer.usage, usage);
            }
        }
        b"message_stop" => answer.completed = true,
        b"error" => answer.set_error_type(data.get("error")),
        _ => {}
    }
}

/// The usage an answer's (or a batch result's) `usage` object describes.
pub fn usage_from_json(usage: &Value) -> Usage {
    let mut read = Usage::default();
    overwrite_usage(&mut read, usage);
    read
}

/// Overwrites every field the `usage` object gives. Anthropic's numbers are cumulative,
/// so a later object supersedes an earlier one field by field; absent fields keep their value.
/// A compacting answer's `iterations` list every sampling; its top-level numbers leave the
/// compaction out, so the iterations' sums replace them.
fn overwrite_usage(fields: &mut Usage, usage: &Value) {
    let mut tokens = fields.tokens();
    overwrite_tokens(&mut tokens, usage);
    fields.set_tokens(tokens);
    if let Some(n) = usage
        .get("server_tool_use")
        .and_then(|tools| tools.get("web_search_requests"))
        .and_then(Value::as_u64)
    {
        fields.web_search_requests = n;
    }
    for (field, name) in [
        (&mut fields.inference_geo, "inference_geo"),
        (&mut fields.speed, "speed"),
    ] {
        if let Some(value) = usage
            .get(name)
            .and_then(Value::as_str)
            .and_then(Usage::tier_name)
        {
            *field = Some(value);
        }
    }
    if let Some(iterations) = usage.get("iterations").and_then(Value::as_array) {
        fields.set_iterations(
            iterations
                .iter()
                .filter(|i| i.is_object())
                .map(|iteration| {
                    let mut tokens = Tokens::default();
                    overwrite_tokens(&mut tokens, iteration);
                    tokens
                }),
        );
    }
}

/// Overwrites the token counts `usage` gives; absent or malformed ones keep their value.
fn overwrite_tokens(fields: &mut Tokens, usage: &Value) {
    let count = |value: &Value, name: &str| value.get(name).and_then(Value::as_u64);
    let overwrite = |field: &mut u64, name: &str| {
        if let Some(n) = count(usage, name) {
            *field = n;
        }
    };
    overwrite(&mut fields.input_tokens, "input_tokens");
    overwrite(&mut fields.output_tokens, "output_tokens");
    overwrite(
        &mut fields.cache_creation_input_tokens,
        "cache_creation_input_tokens",
    );
    overwrite(
        &mut fields.cache_read_input_tokens,
        "cache_read_input_tokens",
    );
    if let Some(split) = usage.get("cache_creation") {
        if let Some(n) = count(split, "ephemeral_5m_input_tokens") {
            fields.cache_creation_5m_input_tokens = Some(n);
        }
        if let Some(n) = count(split, "ephemeral_1h_input_tokens") {
            fields.cache_creation_1h_input_tokens = Some(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_told_apart_by_shape() {
        let cases: [(&[u8], BearerKind); 9] = [
            (b"Bearer sk-ant-api03-abc", BearerKind::ApiKey),
            (b"bearer  sk-ant-api03-abc", BearerKind::ApiKey),
            (b"BEARER\tsk-ant-oat01-abc", BearerKind::Oauth),
            (b"Bearer sk-ant-oat01-abc", BearerKind::Oauth),
            (b"Bearer team-gateway-token", BearerKind::Other),
            (b"Bearer ", BearerKind::Other),
            (b"Bearersk-ant-api03-abc", BearerKind::Other),
            (b"Basic sk-ant-api03-abc", BearerKind::Other),
            (b"sk-ant-api03-abc", BearerKind::Other),
        ];
        for (value, kind) in cases {
            assert_eq!(
                BearerKind::of_authorization(value),
                kind,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
