//! OpenAI's API as sluice needs to know it: credentials (`authorization: Bearer`, or Azure's
//! `api-key`; an API key `sk-…`, a ChatGPT login token, or another bearer), the error shape
//! the official SDKs parse, the `x-ratelimit-*` headers, and the usage of its answers
//! (Responses, Chat Completions, Embeddings). OpenAI's `usage` objects are final, not
//! cumulative: the last one read is the answer's.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::batch_results::{self, BatchReading, BatchResult};
use super::{Api, BearerKind, Reading};
use crate::readers::json::ValueHandler;
use crate::readers::pruned::Kept;
use crate::readers::sse::EventHandler;
use crate::readers::MAX_NAME_BYTES;
use crate::usage::{Answer, AnswerFormat, Usage};

/// Azure OpenAI's API-key header.
pub const AZURE_API_KEY_HEADER: HeaderName = HeaderName::from_static("api-key");
const API_KEY_PREFIX: &[u8] = b"sk-";

/// OpenAI's answers to [`Api`].
pub struct OpenAi;

/// Codex's plan windows on a ChatGPT-login answer (`x-codex-primary-used-percent`, …).
pub fn is_codex_plan_header(name: &str) -> bool {
    name.starts_with("x-codex-primary-") || name.starts_with("x-codex-secondary-")
}

/// Where generated text stands in OpenAI's stream events: Responses' `delta` strings (text,
/// reasoning summaries, tool arguments) and Chat Completions' `delta.content`, `refusal` and
/// tool-call `arguments`.
pub const TEXT_KEYS: &[&str] = &["delta", "content", "refusal", "arguments"];

impl Api for OpenAi {
    fn api_key_header(&self) -> HeaderName {
        AZURE_API_KEY_HEADER
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
        Some(Reading::OpenAi(AnswerReading::default()))
    }

    fn model_in_request_body(&self) -> bool {
        true
    }
    fn text_keys(&self) -> &'static [&'static str] {
        TEXT_KEYS
    }

    fn batch_reading(&self, method: &str, path: &str) -> Option<&'static BatchReading> {
        is_file_content_request(method, path).then_some(&BATCH_OUTPUT)
    }

    /// A Batch object (`…/batches`, `…/batches/{id}`, `…/batches/{id}/cancel`) carries the
    /// `model` and summed `usage` of its requests, which its output file counts.
    fn answer_sums_batch_usage(&self, path: &str) -> bool {
        use super::{path_ends_with, ANY_SEGMENT};
        path_ends_with(path, &["batches"])
            || path_ends_with(path, &["batches", ANY_SEGMENT])
            || path_ends_with(path, &["batches", ANY_SEGMENT, "cancel"])
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
    ServiceTier,
}

/// Events of a Responses stream that carry content, never usage: their data is not buffered.
const CONTENT_EVENT_PREFIXES: [&[u8]; 12] = [
    b"response.output_text.",
    b"response.output_item.",
    b"response.content_part.",
    b"response.reasoning",
    b"response.function_call_arguments.",
    b"response.custom_tool_call_input.",
    b"response.refusal.",
    b"response.audio",
    b"response.file_search_call.",
    b"response.web_search_call.",
    b"response.code_interpreter_call",
    b"response.image_generation_call.",
];

/// What a stream event's handling reads of a Responses API `response` object. Its `output` (the
/// whole answer again, easily megabytes in a coding session) is never held.
const RESPONSE_KEPT: &[Kept] = &[
    Kept::value("model"),
    Kept::value("service_tier"),
    Kept::value("usage"),
    Kept::value("error"),
    Kept::value("status"),
];

/// What [`AnswerReading::on_event`] reads of an event's data, at any size: the Responses
/// events' `type`, `code` (of `error`) and `response`; a Chat Completions chunk's `object`,
/// `model`, `service_tier` and `usage` (never its `choices`); an `error` object.
const EVENT_KEPT: &[Kept] = &[
    Kept::value("type"),
    Kept::value("code"),
    Kept::value("error"),
    Kept::object("response", RESPONSE_KEPT),
    Kept::value("object"),
    Kept::value("model"),
    Kept::value("service_tier"),
    Kept::value("usage"),
];

/// Reads an OpenAI answer into an [`Answer`]: a Responses API answer (JSON, or SSE with its
/// usage in `response.completed` / `response.incomplete` / `response.failed`), a Chat
/// Completions answer (JSON, or SSE chunks, one of which carries `usage` when the request asked
/// for `stream_options.include_usage`), or an Embeddings answer (`usage.prompt_tokens`).
#[derive(Debug, Default)]
pub struct AnswerReading {
    pub answer: Answer,
    /// A Chat Completions chunk was seen: the stream owes its usage before `[DONE]`.
    chat_stream: bool,
    /// A `usage` object was read.
    usage_seen: bool,
}

impl AnswerReading {
    /// The body ended: a Chat Completions stream that never carried usage is `usage_missing`.
    pub fn on_body_end(&mut self, format: AnswerFormat) {
        if format == AnswerFormat::EventStream && self.chat_stream && !self.usage_seen {
            self.answer.usage_missing = true;
        }
    }

    /// Bytes held beside the answer: none.
    pub fn held_bytes(&self) -> usize {
        0
    }

    fn read_usage(&mut self, usage: &Value) {
        if let Some(read) = usage_from_json(usage) {
            let tier = self.answer.usage.service_tier.take();
            self.answer.usage = read;
            self.answer.usage.service_tier = tier;
            self.usage_seen = true;
        }
    }

    fn read_service_tier(&mut self, tier: Option<&Value>) {
        if let Some(tier) = tier.and_then(Value::as_str).and_then(Usage::tier_name) {
            self.answer.usage.service_tier = Some(tier);
        }
    }

    /// A whole Responses API `response` object (or a Chat Completions / Embeddings answer).
    fn read_response(&mut self, response: &Value) {
        self.answer.set_model(response.get("model"));
        self.read_service_tier(response.get("service_tier"));
        if let Some(usage) = response.get("usage") {
            self.read_usage(usage);
        }
    }

    fn set_error(&mut self, error: &Value) {
        let name = ["type", "code"]
            .iter()
            .find_map(|key| error.get(key).and_then(Value::as_str))
            .filter(|name| name.len() <= MAX_NAME_BYTES);
        if let Some(name) = name {
            self.answer.error_type = Some(name.to_owned());
        } else if error.is_object() {
            self.answer.error_type = Some("error".to_owned());
        }
    }
}

impl EventHandler for AnswerReading {
    fn skips_data(&self, event_name: &[u8]) -> bool {
        CONTENT_EVENT_PREFIXES
            .iter()
            .any(|prefix| event_name.starts_with(prefix))
    }

    fn kept_keys(&self, _event_name: &[u8]) -> Option<&'static [Kept]> {
        Some(EVENT_KEPT)
    }

    fn on_event(&mut self, event_name: &[u8], data: &[u8]) {
        if data.trim_ascii() == b"[DONE]" {
            // Chat Completions' own end of stream.
            self.answer.completed = true;
            return;
        }
        let Ok(data) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .map_or(event_name, str::as_bytes);
        match kind {
            b"response.created" | b"response.in_progress" | b"response.queued" => {
                if let Some(response) = data.get("response") {
                    self.answer.set_model(response.get("model"));
                }
            }
            b"response.completed" | b"response.incomplete" => {
                if let Some(response) = data.get("response") {
                    self.read_response(response);
                }
                self.answer.completed = true;
            }
            b"response.failed" => {
                if let Some(response) = data.get("response") {
                    self.read_response(response);
                    match response.get("error").filter(|error| error.is_object()) {
                        Some(error) => self.set_error(error),
                        None => self.answer.error_type = Some("response.failed".to_owned()),
                    }
                }
                self.answer.completed = true;
            }
            b"error" => match data.get("error").filter(|error| error.is_object()) {
                Some(error) => self.set_error(error),
                // The Responses API's `error` event: its code and message at its top level.
                None => {
                    let code = data.get("code").and_then(Value::as_str);
                    let name = code.filter(|code| code.len() <= MAX_NAME_BYTES);
                    self.answer.error_type = Some(name.unwrap_or("error").to_owned());
                }
            },
            _ if data.get("object").and_then(Value::as_str) == Some("chat.completion.chunk") => {
                self.chat_stream = true;
                self.answer.set_model(data.get("model"));
                self.read_service_tier(data.get("service_tier"));
                if let Some(usage) = data.get("usage").filter(|usage| usage.is_object()) {
                    self.read_usage(usage);
                }
            }
            // A Chat Completions stream that fails midway sends `{"error": {...}}`.
            _ => {
                if let Some(error) = data.get("error").filter(|error| error.is_object()) {
                    self.set_error(error);
                }
            }
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
            b"service_tier" => Some(WantedKey::ServiceTier),
            _ => None,
        }
    }

    fn on_value(&mut self, key: WantedKey, value: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(value) else {
            return;
        };
        match key {
            WantedKey::Usage => self.read_usage(&value),
            WantedKey::Model => self.answer.set_model(Some(&value)),
            // A Responses API object has `"error": null` unless it failed.
            WantedKey::Error if value.is_object() => self.set_error(&value),
            WantedKey::Error => {}
            WantedKey::ServiceTier => self.read_service_tier(Some(&value)),
        }
    }

    fn on_end(&mut self, complete: bool) {
        self.answer.completed = complete;
    }
}

/// Whether a request fetches a file's content (`GET …/files/{file_id}/content`): a batch's
/// output file is fetched so. Any other file has no batch output lines and counts nothing.
fn is_file_content_request(method: &str, path: &str) -> bool {
    method.eq_ignore_ascii_case("GET")
        && super::path_ends_with(path, &["files", super::ANY_SEGMENT, "content"])
}

/// A batch's output (or error) file: one JSON object a line, `{"id", "custom_id", "response":
/// {"status_code", "request_id", "body": {…the answer…}}, "error"}`. The body is a Responses,
/// Chat Completions or Embeddings answer with its `model` and `usage`.
pub static BATCH_OUTPUT: BatchReading = BatchReading {
    lines: true,
    results_at: &[&[]],
    values: &[
        &["response", "status_code"],
        &["response", "body", "model"],
        &["response", "body", "usage"],
        &["error"],
    ],
    read: read_batch_output,
};

/// One output line: a 200 answer counts its body's usage; an `error`, or any other status,
/// nothing. The body's `service_tier` is not read: the batch rate is the line's price.
fn read_batch_output(values: &[Option<Value>]) -> BatchResult {
    let [status, model, usage, error] = values else {
        return BatchResult::Unknown;
    };
    if error.as_ref().is_some_and(Value::is_object) {
        return BatchResult::NotSucceeded;
    }
    match status.as_ref().and_then(Value::as_u64) {
        Some(200) => BatchResult::Succeeded {
            model: batch_results::name(model),
            usage: usage.as_ref().and_then(usage_from_json).unwrap_or_default(),
        },
        Some(_) => BatchResult::NotSucceeded,
        None => BatchResult::Unknown,
    }
}

/// The usage an OpenAI `usage` object describes, in sluice's meaning of the counters: input is
/// the prompt less what it read from or wrote to the cache (each token counted once), output
/// includes reasoning. Responses API objects name `input_tokens` / `output_tokens`; Chat
/// Completions and Embeddings `prompt_tokens` / `completion_tokens`. `None` when it is neither.
pub fn usage_from_json(usage: &Value) -> Option<Usage> {
    let count = |value: Option<&Value>, name: &str| {
        value
            .and_then(|value| value.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let (prompt, output, input_details, output_details) =
        if let Some(input) = usage.get("input_tokens").and_then(Value::as_u64) {
            (
                input,
                count(Some(usage), "output_tokens"),
                usage.get("input_tokens_details"),
                usage.get("output_tokens_details"),
            )
        } else if let Some(prompt) = usage.get("prompt_tokens").and_then(Value::as_u64) {
            (
                prompt,
                count(Some(usage), "completion_tokens"),
                usage.get("prompt_tokens_details"),
                usage.get("completion_tokens_details"),
            )
        } else {
            return None;
        };
    let cache_read = count(input_details, "cached_tokens");
    let cache_write = count(input_details, "cache_write_tokens");
    Some(Usage {
        input_tokens: prompt.saturating_sub(cache_read.saturating_add(cache_write)),
        output_tokens: output,
        cache_creation_input_tokens: cache_write,
        cache_read_input_tokens: cache_read,
        reasoning_output_tokens: count(output_details, "reasoning_tokens"),
        ..Usage::default()
    })
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

    use crate::protocol::{fixture_reads, Protocol, UsageParser, MAX_BUFFERED_BYTES};

    fn fixture(name: &str) -> Vec<u8> {
        fixture_reads::fixture("openai", name)
    }

    fn read_chunks<'a>(format: AnswerFormat, chunks: impl IntoIterator<Item = &'a [u8]>) -> Answer {
        fixture_reads::read_chunks(Protocol::OpenAi, format, chunks)
    }

    /// Tokens in sluice's meaning: (input, cache write, cache read, output, reasoning).
    fn usage(tokens: (u64, u64, u64, u64, u64), tier: &str) -> Usage {
        Usage {
            input_tokens: tokens.0,
            cache_creation_input_tokens: tokens.1,
            cache_read_input_tokens: tokens.2,
            output_tokens: tokens.3,
            reasoning_output_tokens: tokens.4,
            service_tier: Some(tier.into()),
            ..Usage::default()
        }
    }

    fn answer(usage: Usage, model: &str) -> Answer {
        Answer {
            usage,
            model: Some(model.into()),
            completed: true,
            ..Answer::default()
        }
    }

    /// Every answer kind among the fixtures, with what it says, worked out by hand from the
    /// file (input = the prompt less its cache reads and writes).
    fn fixture_answers() -> Vec<(&'static str, AnswerFormat, Answer)> {
        use AnswerFormat::{EventStream, Json};
        vec![
            (
                // 5230 - 4096 cached = 1134 uncached; 768 of the 843 output are reasoning.
                "responses.json",
                Json,
                answer(
                    usage((1134, 0, 4096, 843, 768), "default"),
                    "gpt-5.5-2026-04-23",
                ),
            ),
            (
                // 48210 - 45056 read - 2048 written = 1106; the answer says it ran as priority.
                "responses-stream.sse",
                EventStream,
                answer(
                    usage((1106, 2048, 45056, 1280, 1024), "priority"),
                    "gpt-5.3-codex",
                ),
            ),
            (
                "responses-incomplete.sse",
                EventStream,
                answer(usage((22, 0, 0, 64, 40), "flex"), "gpt-5.4-mini-2026-03-17"),
            ),
            (
                "responses-failed.sse",
                EventStream,
                Answer {
                    error_type: Some("server_error".into()),
                    ..answer(usage((1200, 0, 0, 15, 15), "default"), "gpt-5.5")
                },
            ),
            (
                "responses-error-event.sse",
                EventStream,
                Answer {
                    usage: Usage::default(),
                    completed: false,
                    error_type: Some("rate_limit_exceeded".into()),
                    ..answer(Usage::default(), "gpt-5.5")
                },
            ),
            (
                // 1850 - 1536 cached = 314.
                "chat-stream-usage.sse",
                EventStream,
                answer(
                    usage((314, 0, 1536, 312, 256), "default"),
                    "gpt-5.4-2026-03-05",
                ),
            ),
            (
                "chat-stream-no-usage.sse",
                EventStream,
                Answer {
                    usage: Usage {
                        service_tier: Some("default".into()),
                        ..Usage::default()
                    },
                    usage_missing: true,
                    ..answer(Usage::default(), "gpt-5.4-2026-03-05")
                },
            ),
            (
                "chat-stream-tool-calls.sse",
                EventStream,
                answer(
                    usage((96, 0, 0, 18, 0), "default"),
                    "gpt-5.4-mini-2026-03-17",
                ),
            ),
            (
                // 2410 - 2048 read - 256 written = 106.
                "chat.json",
                Json,
                answer(
                    usage((106, 256, 2048, 150, 128), "default"),
                    "gpt-5.4-nano-2026-03-17",
                ),
            ),
            (
                "embeddings.json",
                Json,
                answer(
                    Usage {
                        input_tokens: 17,
                        ..Usage::default()
                    },
                    "text-embedding-3-small",
                ),
            ),
            (
                "error-401.json",
                Json,
                Answer {
                    error_type: Some("invalid_request_error".into()),
                    completed: true,
                    ..Answer::default()
                },
            ),
        ]
    }

    #[test]
    fn every_fixture_read_whole_split_anywhere_or_byte_by_byte_gives_its_expected_answer() {
        for (name, format, expected) in fixture_answers() {
            let body = fixture(name);
            fixture_reads::assert_read_alike_however_cut(
                Protocol::OpenAi,
                format,
                name,
                &body,
                &expected,
            );
        }
    }

    #[test]
    fn a_stream_cut_before_its_usage_is_usage_missing_and_incomplete() {
        let body = fixture("chat-stream-usage.sse");
        let cut = body.windows(9).position(|w| w == b"\"usage\":{").unwrap();
        let lines = &body[..body[..cut].iter().rposition(|&b| b == b'\n').unwrap() + 1];
        let answer = read_chunks(AnswerFormat::EventStream, [lines]);
        assert!(answer.usage_missing);
        assert!(!answer.completed);
    }

    /// `body` with `items` put first in the `output` array of its last Responses object.
    fn with_output_items(body: &str, items: &str) -> String {
        let at = body
            .rfind(r#""output":["#)
            .or_else(|| body.rfind(r#""output": ["#));
        let open = at.unwrap() + body[at.unwrap()..].find('[').unwrap() + 1;
        let comma = if body[open..].trim_start().starts_with(']') {
            ""
        } else {
            ","
        };
        format!("{}{items}{comma}{}", &body[..open], &body[open..])
    }

    /// What the fixture `name` reads as.
    fn expected(name: &str) -> Answer {
        let (.., answer) = fixture_answers()
            .into_iter()
            .find(|(fixture, ..)| *fixture == name)
            .unwrap();
        answer
    }

    /// Output items past a megabyte, as a long coding turn's `response.completed` repeats them
    /// beside its usage: a reasoning summary and a function call's arguments, both full of
    /// JSON look-alikes (quotes, braces, `usage` keys).
    fn huge_output_items() -> String {
        let summary = r#"thinking about \"usage\": {\"input_tokens\": 1} {[ "#.repeat(14_000);
        let code = r#"fn main() { let usage = \"{\\\"input_tokens\\\": 1}\"; } // ]}\n"#;
        format!(
            r#"{{"id":"rs_1","type":"reasoning","summary":[{{"type":"summary_text","text":"{summary}"}}]}},{{"id":"fc_1","type":"function_call","call_id":"call_1","name":"apply_patch","arguments":"{}"}}"#,
            code.repeat(10_000)
        )
    }

    #[test]
    fn usage_of_a_completed_event_past_a_megabyte_is_read_within_the_cap() {
        let body = String::from_utf8(fixture("responses-stream.sse")).unwrap();
        let body = with_output_items(&body, &huge_output_items()).into_bytes();
        let start = body
            .windows(25)
            .position(|w| w == b"event: response.completed")
            .unwrap();
        assert!(body.len() - start > 1_000_000);
        let expected = expected("responses-stream.sse");
        assert_eq!(
            read_chunks(AnswerFormat::EventStream, [&body[..]]),
            expected
        );
        assert_eq!(
            read_chunks(AnswerFormat::EventStream, body.chunks(1)),
            expected
        );
        // Cuts at a stride through the huge event, and at every offset around its usage (the
        // one-byte chunks above cut everywhere else).
        let usage_at = start
            + body[start..]
                .windows(7)
                .position(|w| w == b"\"usage\"")
                .unwrap();
        let cuts = (start..body.len())
            .step_by(body.len() / 50)
            .chain(usage_at - 64..usage_at + 192);
        for cut in cuts {
            let (first, second) = body.split_at(cut);
            assert_eq!(
                read_chunks(AnswerFormat::EventStream, [first, second]),
                expected,
                "cut at {cut}"
            );
        }
        let mut parser = UsageParser::new_for(Protocol::OpenAi, AnswerFormat::EventStream).unwrap();
        let mut most_held = 0;
        for chunk in body.chunks(1400) {
            parser.feed(chunk);
            most_held = most_held.max(parser.buffered_bytes());
        }
        assert_eq!(parser.finish(), expected);
        assert!(most_held <= 4096, "held {most_held} bytes");
    }

    #[test]
    fn a_failed_event_past_a_megabyte_keeps_its_error_and_usage() {
        let body = String::from_utf8(fixture("responses-failed.sse")).unwrap();
        let body = with_output_items(&body, &huge_output_items());
        assert_eq!(
            read_chunks(AnswerFormat::EventStream, body.as_bytes().chunks(777)),
            expected("responses-failed.sse")
        );
    }

    #[test]
    fn chat_chunks_with_huge_content_still_give_model_and_usage() {
        let content = r#"}{\"usage\":[ "#.repeat(40_000);
        let chunk = |tail: &str| {
            format!(
                r#"data: {{"id":"c","object":"chat.completion.chunk","model":"gpt-5.4-mini","service_tier":"flex","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":{tail}}}"#
            ) + "\n\n"
        };
        // Every chunk past the cap, and the usage on the last content chunk (as some servers
        // send it) rather than on a chunk of its own.
        let body = [
            chunk("null}]"),
            chunk(
                r#""stop"}],"usage":{"prompt_tokens":40,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":8}}"#,
            ),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        assert!(body.len() > 2 * MAX_BUFFERED_BYTES);
        assert_eq!(
            read_chunks(AnswerFormat::EventStream, body.as_bytes().chunks(1000)),
            answer(usage((32, 0, 8, 9, 0), "flex"), "gpt-5.4-mini")
        );
    }

    #[test]
    fn a_json_answer_past_a_megabyte_is_read_within_the_cap() {
        let body = String::from_utf8(fixture("responses.json")).unwrap();
        let body = with_output_items(&body, &huge_output_items());
        assert!(body.len() > 1_000_000);
        let mut parser = UsageParser::new_for(Protocol::OpenAi, AnswerFormat::Json).unwrap();
        let mut most_held = 0;
        for chunk in body.as_bytes().chunks(3001) {
            parser.feed(chunk);
            most_held = most_held.max(parser.buffered_bytes());
        }
        assert_eq!(parser.finish(), expected("responses.json"));
        assert!(most_held <= MAX_BUFFERED_BYTES, "held {most_held} bytes");
    }

    #[test]
    fn costs_of_the_fixtures_priced_by_hand() {
        let prices = crate::settings::default_pricing();
        let table = crate::pricing::PriceTable::new(prices);
        let cost = |name: &str, format| {
            let answer = read_chunks(format, [&fixture(name)[..]]);
            table
                .cost_usd(answer.model.as_deref(), &answer.usage)
                .unwrap()
        };
        let close = |got: f64, want: f64, name: &str| {
            assert!((got - want).abs() < 1e-9, "{name}: {got} != {want}");
        };
        // gpt-5.5 standard: $5 in, $0.50 cached, $30 out per million.
        close(
            cost("responses.json", AnswerFormat::Json),
            (1134.0 * 5.0 + 4096.0 * 0.5 + 843.0 * 30.0) / 1e6,
            "responses.json",
        );
        // text-embedding-3-small: $0.02 per million.
        close(
            cost("embeddings.json", AnswerFormat::Json),
            17.0 * 0.02 / 1e6,
            "embeddings.json",
        );
        // gpt-5.4-mini at flex, half of $0.75 in / $4.50 out.
        close(
            cost("responses-incomplete.sse", AnswerFormat::EventStream),
            (22.0 * 0.375 + 64.0 * 2.25) / 1e6,
            "responses-incomplete.sse",
        );
        // gpt-5.4 standard: $2.50 in, $0.25 cached, $15 out.
        close(
            cost("chat-stream-usage.sse", AnswerFormat::EventStream),
            (314.0 * 2.5 + 1536.0 * 0.25 + 312.0 * 15.0) / 1e6,
            "chat-stream-usage.sse",
        );
    }

    /// Bytes likely to reach the pruner's corners: SSE fields and the kept keys among JSON syntax.
    fn tricky_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        let tokens: Vec<&'static [u8]> = vec![
            b"event: response.completed\n",
            b"\"type\"",
            b"\"response\"",
            b"\"usage\"",
            b"\"model\"",
            b"\"error\"",
            b"\"input_tokens\":",
            b"[DONE]",
            b"\"response.completed\"",
        ];
        fixture_reads::tricky_bytes(tokens)
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_read_the_same_however_cut(
            bytes in tricky_bytes(),
            cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..12),
        ) {
            fixture_reads::read_alike_at_cuts(Protocol::OpenAi, &bytes, &cuts)?;
        }
    }
}
