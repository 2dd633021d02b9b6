//! Google's Gemini API as sluice needs to know it: credentials (`x-goog-api-key`, a `key` query
//! parameter, or a Google OAuth bearer), the error shape (`{"error": {"code", "message",
//! "status"}}`), the model a request names in its path (`models/{model}:generateContent`), and
//! the `usageMetadata` and `modelVersion` of its answers. Gemini CLI logged in with Google talks
//! to Code Assist, which wraps the same answer as `{"response": {…}, "traceId": …}`: both shapes
//! read alike.
//!
//! `usageMetadata` is cumulative within a stream and leaves out fields that are zero, so the
//! last one seen replaces the earlier ones whole (as the SDKs report it), never field by field.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::batch_results::{self, BatchReading, BatchResult, ANY_ELEMENT};
use super::request::NamesInBody;
use super::{Api, BearerKind, Reading, SessionInBody};
use crate::readers::documents::DocumentHandler;
use crate::readers::pruned::Kept;
use crate::readers::sse::EventHandler;
use crate::readers::MAX_NAME_BYTES;
use crate::usage::{Answer, Usage};

/// Where an API key goes.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-goog-api-key");
/// The query parameter that may carry an API key instead of the header.
pub const API_KEY_QUERY_PARAMETER: &str = "key";
/// The keys whose string values are generated text (`candidates[].content.parts[].text`,
/// thoughts included), for estimating an answer whose usage never came.
pub const TEXT_KEYS: &[&str] = &["text"];
/// How every Google API key starts.
const API_KEY_PREFIX: &[u8] = b"AIza";

/// Gemini's answers to [`Api`].
pub struct Gemini;

impl Api for Gemini {
    fn api_key_header(&self) -> HeaderName {
        API_KEY_HEADER
    }

    /// A bearer token on Gemini's API is a Google OAuth login (Gemini CLI's Google login,
    /// gcloud), unless it is an API key (`AIza…`: Gemini CLI sends its key that way with
    /// `GEMINI_API_KEY_AUTH_MECHANISM=bearer`).
    fn bearer_kind(&self, authorization: &[u8]) -> BearerKind {
        match super::bearer_token(authorization) {
            Some(token) if token.starts_with(API_KEY_PREFIX) => BearerKind::ApiKey,
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
        Some(Reading::Gemini(AnswerReading::default()))
    }

    /// Code Assist (`v1internal:generateContent`) names the model in the body; the Gemini
    /// API's bodies do not, and [`model_in_path`](Api::model_in_path) reads it there.
    fn model_in_request_body(&self) -> bool {
        true
    }

    /// Gemini CLI logged in with Google sends its session id only inside Code Assist's body,
    /// and names the model of a `countTokens` call only there too.
    fn session_in_request_body(&self) -> Option<SessionInBody> {
        Some(SessionInBody {
            kept: CODE_ASSIST_REQUEST_KEPT,
            names: code_assist_names,
        })
    }

    fn model_in_path(&self, rest: &str) -> Option<String> {
        model_from_path(rest).map(str::to_owned)
    }

    fn query_credential<'q>(&self, query: &'q str) -> Option<&'q str> {
        query_key(query)
    }

    fn text_keys(&self) -> &'static [&'static str] {
        TEXT_KEYS
    }

    fn batch_reading(&self, method: &str, path: &str) -> Option<&'static BatchReading> {
        batch_reading_for(method, path)
    }
}

/// A batch's results as Gemini gives them: the responses file a batch made from an input file
/// wrote (`GET …/files/{id}:download?alt=media`, under `/download/v1beta/` as the REST docs
/// fetch it, or under the SDK's API version: google-genai 3.6.1 sends `/v1/`), or the batch
/// itself (`GET …/batches/{id}`), which holds its inlined responses once done.
fn batch_reading_for(method: &str, path: &str) -> Option<&'static BatchReading> {
    if !method.eq_ignore_ascii_case("GET") {
        return None;
    }
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let last = segments.next()?;
    let parent = segments.next()?;
    match (parent, last.split_once(':')) {
        ("files", Some((id, "download"))) if !id.is_empty() => Some(&BATCH_RESPONSES_FILE),
        ("batches", None) if !last.is_empty() => Some(&BATCH_INLINED_RESPONSES),
        _ => None,
    }
}

/// The responses file of a batch: one JSON object a line, `{"key", "response": {…a
/// GenerateContentResponse…}}` or `{"key", "error": {…a status…}}`.
pub static BATCH_RESPONSES_FILE: BatchReading = BatchReading {
    lines: true,
    results_at: &[&[]],
    values: BATCH_RESULT_VALUES,
    read: read_batch_result,
};

/// A batch (`batches.get`: a long-running operation) whose inlined responses are in its
/// `response` (`GenerateContentBatchOutput`) and mirrored in `metadata.output`, each list under
/// `inlinedResponses.inlinedResponses[]` as `{"response": {…}, "metadata": {…}}` or
/// `{"error": {…}}`. The `response` copy counts; the mirror only when it is the one sent.
pub static BATCH_INLINED_RESPONSES: BatchReading = BatchReading {
    lines: false,
    results_at: &[
        &[
            "response",
            "inlinedResponses",
            "inlinedResponses",
            ANY_ELEMENT,
        ],
        &[
            "metadata",
            "output",
            "inlinedResponses",
            "inlinedResponses",
            ANY_ELEMENT,
        ],
    ],
    values: BATCH_RESULT_VALUES,
    read: read_batch_result,
};

const BATCH_RESULT_VALUES: &[&[&str]] = &[
    &["response", "usageMetadata"],
    &["response", "modelVersion"],
    &["error"],
];

/// One batch result: an `error` counts nothing; a `response` counts its `usageMetadata`, priced
/// at its `modelVersion`.
fn read_batch_result(values: &[Option<Value>]) -> BatchResult {
    let [metadata, model, error] = values else {
        return BatchResult::Unknown;
    };
    if error.as_ref().is_some_and(Value::is_object) {
        return BatchResult::NotSucceeded;
    }
    match metadata.as_ref().and_then(usage_from_json) {
        Some(usage) => BatchResult::Succeeded {
            model: batch_results::name(model),
            usage,
        },
        None => BatchResult::Unknown,
    }
}

/// The API key a query string carries in its `key` parameter (as sent, not decoded), when one
/// is there and not empty. It is forwarded untouched; only its fingerprint is ever kept.
pub fn query_key(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == API_KEY_QUERY_PARAMETER)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// What a Code Assist request body names inside its `request`, whatever its size.
const CODE_ASSIST_REQUEST_KEPT: &[Kept] = &[Kept::object("request", CODE_ASSIST_INNER_KEPT)];
const CODE_ASSIST_INNER_KEPT: &[Kept] = &[Kept::value("session_id"), Kept::value("model")];

/// The session and model a Code Assist body names inside `request`: Gemini CLI puts its
/// session id there (`generateContent`, `streamGenerateContent`), and the model of a
/// `v1internal:countTokens` call as the Gemini API's path would (`models/{model}`), where
/// the top level names none.
fn code_assist_names(body: &Value) -> NamesInBody {
    let name = |key: &str| {
        body.get("request")?
            .get(key)?
            .as_str()
            .filter(|name| !name.is_empty() && name.len() <= MAX_NAME_BYTES)
    };
    NamesInBody {
        session: name("session_id").map(str::to_owned),
        model: name("model")
            .and_then(|model| model.rsplit('/').next())
            .filter(|model| !model.is_empty())
            .map(str::to_owned),
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
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// The model a request path names: `…/models/{model}:{method}` (the Gemini API and the SDKs),
/// `tunedModels/{model}:{method}` alike. Code Assist (`/v1internal:{method}`) names it in the
/// body's `model` instead.
pub fn model_from_path(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let (before, _method) = path.rsplit_once(':')?;
    let (parent, model) = before.rsplit_once('/')?;
    let parent = parent.rsplit('/').next().unwrap_or_default();
    let named = matches!(parent, "models" | "tunedModels");
    (named && !model.is_empty() && model.len() <= MAX_NAME_BYTES).then_some(model)
}

/// The usage one `usageMetadata` object describes, in COUNTERS' terms: input is every prompt
/// token (tool results fed back included) not read from the cache; output is every generated
/// token, thoughts included, of which the thoughts are the reasoning part. Absent counts are 0
/// (Google leaves zeros out). `None` when it is not an object.
pub fn usage_from_json(metadata: &Value) -> Option<Usage> {
    let count = |name: &str| metadata.get(name).and_then(Value::as_u64).unwrap_or(0);
    if !metadata.is_object() {
        return None;
    }
    let prompt = count("promptTokenCount").saturating_add(count("toolUsePromptTokenCount"));
    let cached = count("cachedContentTokenCount");
    let thoughts = count("thoughtsTokenCount");
    Some(Usage {
        input_tokens: prompt.saturating_sub(cached),
        cache_read_input_tokens: cached,
        output_tokens: count("candidatesTokenCount").saturating_add(thoughts),
        reasoning_output_tokens: thoughts,
        ..Usage::default()
    })
}

/// What [`AnswerReading`] reads of one answer (a JSON answer, an SSE chunk, an element of a
/// streamed JSON array), at any size: `usageMetadata`, `modelVersion`, whether a candidate
/// finished (`candidates[].finishReason`) or the prompt was blocked, never the candidates'
/// content (long text, inline images, function calls).
const ANSWER_KEPT: &[Kept] = &[
    Kept::value("usageMetadata"),
    Kept::value("modelVersion"),
    Kept::array("candidates", CANDIDATE_KEPT),
    Kept::object("promptFeedback", PROMPT_FEEDBACK_KEPT),
];
const CANDIDATE_KEPT: &[Kept] = &[Kept::value("finishReason")];
const PROMPT_FEEDBACK_KEPT: &[Kept] = &[Kept::value("blockReason")];

/// [`ANSWER_KEPT`] at the top, or inside Code Assist's `response` wrapper, and an `error`.
const CHUNK_KEPT: &[Kept] = &[
    Kept::value("error"),
    Kept::object("response", ANSWER_KEPT),
    Kept::value("usageMetadata"),
    Kept::value("modelVersion"),
    Kept::array("candidates", CANDIDATE_KEPT),
    Kept::object("promptFeedback", PROMPT_FEEDBACK_KEPT),
];

/// The keys of a JSON answer's documents that [`AnswerReading`] reads.
pub fn json_kept_keys() -> &'static [Kept] {
    CHUNK_KEPT
}

/// Reads a Gemini (or Code Assist) answer into an [`Answer`]: a JSON answer
/// (`generateContent`, `embedContent`, `countTokens`, an error), or a stream of answer chunks
/// (`streamGenerateContent?alt=sse` as SSE, `streamGenerateContent` alone as a JSON array),
/// the last `usageMetadata` winning. Each chunk is read cut down to [`CHUNK_KEPT`], whatever
/// its size.
#[derive(Debug, Default)]
pub struct AnswerReading {
    pub answer: Answer,
}

impl AnswerReading {
    fn set_usage(&mut self, metadata: &Value) {
        if let Some(usage) = usage_from_json(metadata) {
            self.answer.usage = usage;
        }
    }

    fn set_error(&mut self, error: &Value) {
        // Google names the kind in `status`; `code` alone when a body lacks it.
        let kind = match error.get("status").and_then(Value::as_str) {
            Some(status) => Some(status.to_owned()),
            None => error
                .get("code")
                .and_then(Value::as_u64)
                .map(|c| c.to_string()),
        };
        match kind.filter(|kind| kind.len() <= MAX_NAME_BYTES) {
            Some(kind) => self.answer.error_type = Some(kind),
            None if error.is_object() => self.answer.error_type = Some("error".to_owned()),
            None => {}
        }
    }

    /// One answer or streamed chunk, wrapped by Code Assist or not; `whole` unless the body
    /// was cut inside it (a chunk cut short never completes the answer).
    fn read_chunk(&mut self, chunk: &Value, whole: bool) {
        if let Some(error) = chunk.get("error").filter(|error| error.is_object()) {
            self.set_error(error);
        }
        let chunk = chunk
            .get("response")
            .filter(|inner| inner.is_object())
            .unwrap_or(chunk);
        if let Some(metadata) = chunk.get("usageMetadata") {
            self.set_usage(metadata);
        }
        self.answer.set_model(chunk.get("modelVersion"));
        let finished = chunk
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|candidates| {
                candidates
                    .iter()
                    .any(|candidate| candidate.get("finishReason").is_some())
            });
        let blocked = chunk
            .get("promptFeedback")
            .and_then(|feedback| feedback.get("blockReason"))
            .is_some();
        if whole && (finished || blocked) {
            self.answer.completed = true;
        }
    }
}

impl EventHandler for AnswerReading {
    fn skips_data(&self, _event_name: &[u8]) -> bool {
        false // Gemini's events have no names: every chunk may carry usage
    }

    fn kept_keys(&self, _event_name: &[u8]) -> Option<&'static [Kept]> {
        Some(CHUNK_KEPT)
    }

    fn on_event(&mut self, _event_name: &[u8], data: &[u8]) {
        if let Ok(chunk) = serde_json::from_slice::<Value>(data) {
            self.read_chunk(&chunk, true);
        }
    }
}

impl DocumentHandler for AnswerReading {
    fn on_document(&mut self, document: &[u8], whole: bool) {
        if let Ok(chunk) = serde_json::from_slice::<Value>(document) {
            self.read_chunk(&chunk, whole);
        }
    }

    fn on_end(&mut self, complete: bool) {
        self.answer.completed = complete;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{fixture_reads, Protocol, UsageParser, MAX_BUFFERED_BYTES};
    use crate::usage::AnswerFormat;

    fn fixture(name: &str) -> Vec<u8> {
        fixture_reads::fixture("gemini", name)
    }

    fn read_chunks<'a>(format: AnswerFormat, chunks: impl IntoIterator<Item = &'a [u8]>) -> Answer {
        fixture_reads::read_chunks(Protocol::Gemini, format, chunks)
    }

    /// Tokens in sluice's meaning: (input, cache read, output, reasoning), read to the end.
    fn answer(tokens: (u64, u64, u64, u64), model: Option<&str>) -> Answer {
        Answer {
            usage: Usage {
                input_tokens: tokens.0,
                cache_read_input_tokens: tokens.1,
                output_tokens: tokens.2,
                reasoning_output_tokens: tokens.3,
                ..Usage::default()
            },
            model: model.map(str::to_owned),
            completed: true,
            ..Answer::default()
        }
    }

    /// Every answer kind among the fixtures, with what it says, worked out by hand from the
    /// file (input = prompt + tool-use prompt − cached; output = candidates + thoughts).
    fn fixture_answers() -> Vec<(&'static str, AnswerFormat, Answer)> {
        use AnswerFormat::{EventStream, Json};
        vec![
            // 1173 prompt; 59 candidates + 112 thoughts.
            (
                "generate-content.json",
                Json,
                answer((1173, 0, 171, 112), Some("gemini-2.5-flash")),
            ),
            // 8186 prompt + 8207 tool-use prompt − 5360 cached; 65 + 10 thoughts.
            (
                "generate-content-tool-use.json",
                Json,
                answer((11_033, 5360, 75, 10), Some("gemini-2.5-pro")),
            ),
            // The last chunk: 12282 prompt − 11883 cached; 101 + 44 thoughts.
            (
                "stream-generate-content.sse",
                EventStream,
                answer((399, 11_883, 145, 44), Some("gemini-2.5-pro")),
            ),
            // Code Assist's last chunk: 9120 − 8190 cached; 11 + 38 thoughts.
            (
                "code-assist-stream.sse",
                EventStream,
                answer((930, 8190, 49, 38), Some("gemini-2.5-pro")),
            ),
            (
                "code-assist-generate.json",
                Json,
                answer((1507, 0, 17, 0), Some("gemini-2.5-flash-lite")),
            ),
            // Streamed without `alt=sse`, a JSON array of chunks; the last: 2048 prompt − 1024
            // cached; 18 + 230 thoughts.
            (
                "stream-generate-content.json",
                Json,
                answer((1024, 1024, 248, 230), Some("gemini-2.5-flash")),
            ),
            // Counting tokens uses none: nothing to charge.
            ("count-tokens.json", Json, answer((0, 0, 0, 0), None)),
            ("embed-content.json", Json, answer((0, 0, 0, 0), None)),
            ("embed-content-usage.json", Json, answer((8, 0, 0, 0), None)),
            (
                "error-429.json",
                Json,
                Answer {
                    error_type: Some("RESOURCE_EXHAUSTED".into()),
                    ..answer((0, 0, 0, 0), None)
                },
            ),
        ]
    }

    #[test]
    fn every_fixture_read_whole_split_anywhere_or_byte_by_byte_gives_its_expected_answer() {
        for (name, format, expected) in fixture_answers() {
            let body = fixture(name);
            fixture_reads::assert_read_alike_however_cut(
                Protocol::Gemini,
                format,
                name,
                &body,
                &expected,
            );
        }
    }

    #[test]
    fn stream_fixtures_read_alike_with_lf_line_ends() {
        for (name, format, expected) in fixture_answers() {
            if format != AnswerFormat::EventStream {
                continue;
            }
            let body = String::from_utf8(fixture(name))
                .unwrap()
                .replace("\r\n", "\n");
            assert_eq!(read_chunks(format, body.as_bytes().chunks(1)), expected);
        }
    }

    #[test]
    fn costs_of_the_fixtures_priced_by_hand() {
        let table = crate::pricing::PriceTable::new(crate::settings::default_pricing());
        let cost = |name: &str, format| {
            let answer = read_chunks(format, [&fixture(name)[..]]);
            let cost = table.cost_usd(answer.model.as_deref(), &answer.usage);
            cost.unwrap_or_else(|| panic!("{name} unpriced"))
        };
        let close = |got: f64, want: f64, name: &str| {
            assert!((got - want).abs() < 1e-12, "{name}: {got} != {want}");
        };
        // gemini-2.5-flash: $0.30 in, $2.50 out (thinking included) per million.
        close(
            cost("generate-content.json", AnswerFormat::Json),
            (1173.0 * 0.30 + 171.0 * 2.50) / 1e6,
            "generate-content.json",
        );
        // gemini-2.5-pro under 200k: $1.25 in, $0.125 cached, $10 out.
        close(
            cost("stream-generate-content.sse", AnswerFormat::EventStream),
            (399.0 * 1.25 + 11_883.0 * 0.125 + 145.0 * 10.0) / 1e6,
            "stream-generate-content.sse",
        );
        close(
            cost("code-assist-stream.sse", AnswerFormat::EventStream),
            (930.0 * 1.25 + 8190.0 * 0.125 + 49.0 * 10.0) / 1e6,
            "code-assist-stream.sse",
        );
        // gemini-2.5-flash: $0.30 in, $0.03 cached, $2.50 out.
        close(
            cost("stream-generate-content.json", AnswerFormat::Json),
            (1024.0 * 0.30 + 1024.0 * 0.03 + 248.0 * 2.50) / 1e6,
            "stream-generate-content.json",
        );
        // gemini-2.5-flash-lite: $0.10 in, $0.40 out.
        close(
            cost("code-assist-generate.json", AnswerFormat::Json),
            (1507.0 * 0.10 + 17.0 * 0.40) / 1e6,
            "code-assist-generate.json",
        );
    }

    #[test]
    fn the_last_usage_metadata_replaces_earlier_ones_whole() {
        // Gemini leaves zero counts out: a later chunk without `thoughtsTokenCount` has none.
        let stream = "data: {\"usageMetadata\":{\"promptTokenCount\":12282,\"thoughtsTokenCount\":70}}\n\n\
                      data: {\"candidates\":[{\"finishReason\":\"MALFORMED_FUNCTION_CALL\",\"index\":0}],\
                      \"usageMetadata\":{\"promptTokenCount\":12282,\"totalTokenCount\":12282}}\n\n";
        let read = read_chunks(AnswerFormat::EventStream, [stream.as_bytes()]);
        assert_eq!(read.usage.input_tokens, 12_282);
        assert_eq!(read.usage.output_tokens, 0);
        assert_eq!(read.usage.reasoning_output_tokens, 0);
        assert!(read.completed);
    }

    #[test]
    fn a_stream_without_a_finish_reason_is_not_complete() {
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}]}}],\
                      \"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":1}}\n\n";
        let read = read_chunks(AnswerFormat::EventStream, [stream.as_bytes()]);
        assert_eq!(read.usage.input_tokens, 5);
        assert!(!read.completed);
    }

    #[test]
    fn an_error_chunk_in_a_stream_keeps_the_tokens_seen() {
        let stream = "data: {\"usageMetadata\":{\"promptTokenCount\":40,\"candidatesTokenCount\":3}}\n\n\
                      data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n";
        let read = read_chunks(AnswerFormat::EventStream, [stream.as_bytes()]);
        assert_eq!((read.usage.input_tokens, read.usage.output_tokens), (40, 3));
        assert_eq!(read.error_type.as_deref(), Some("UNAVAILABLE"));
        assert!(!read.completed);
    }

    #[test]
    fn more_cached_than_prompt_tokens_never_goes_below_zero() {
        let usage = usage_from_json(&serde_json::json!({
            "promptTokenCount": 10, "cachedContentTokenCount": 12
        }))
        .unwrap();
        assert_eq!(usage.input_tokens, 0);
        assert_eq!(usage.cache_read_input_tokens, 12);
    }

    #[test]
    fn a_wrapped_answer_larger_than_one_kept_value_is_still_read() {
        // Code Assist's `response` holds the whole answer; its text may be long.
        let text = "x".repeat(200 * 1024);
        let body = format!(
            "{{\"response\":{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{text}\"}}]}}}}],\
             \"usageMetadata\":{{\"promptTokenCount\":7,\"candidatesTokenCount\":90000}},\
             \"modelVersion\":\"gemini-2.5-pro\"}},\"traceId\":\"abc\"}}"
        );
        let got = read_chunks(AnswerFormat::Json, body.as_bytes().chunks(4096));
        assert_eq!(got, answer((7, 0, 90_000, 0), Some("gemini-2.5-pro")));
    }

    /// What the fixture `name` reads as.
    fn expected(name: &str) -> Answer {
        let (.., answer) = fixture_answers()
            .into_iter()
            .find(|(fixture, ..)| *fixture == name)
            .unwrap();
        answer
    }

    /// The fixture `name` with parts past the SSE event cap put first among its last chunk's
    /// parts, beside its usage: a long text full of JSON look-alikes, an inline image, and a
    /// function call whose arguments hold `usageMetadata` and `candidates` of their own.
    fn with_huge_parts(name: &str) -> Vec<u8> {
        let body = String::from_utf8(fixture(name)).unwrap();
        let text = r#"\"usageMetadata\": {\"promptTokenCount\": 1} }]{[ \\"#.repeat(1200);
        let image = "iVBORw0KGgoAAAANSUhEUgAA".repeat(2000);
        let args = r#"{"usageMetadata":{"promptTokenCount":999},"candidates":[{"finishReason":"X"}],"s":"]}"},"#
            .repeat(400);
        let parts = format!(
            r#"{{"text":"{text}"}},{{"inlineData":{{"mimeType":"image/png","data":"{image}"}}}},{{"functionCall":{{"name":"write_file","args":{{"list":[{args}0]}}}}}},"#
        );
        let parts_at = body.rfind("\"parts\"").unwrap();
        let open = parts_at + body[parts_at..].find('[').unwrap() + 1;
        format!("{}{parts}{}", &body[..open], &body[open..]).into_bytes()
    }

    /// The body, read whole, byte by byte, cut at a stride and at every offset around its last
    /// `usageMetadata`, gives `expected`, holding a few kilobytes at most.
    fn assert_read_within_the_cap(format: AnswerFormat, name: &str, expected: &Answer) {
        let body = with_huge_parts(name);
        assert!(body.len() > 2 * MAX_BUFFERED_BYTES);
        assert_eq!(&read_chunks(format, [&body[..]]), expected, "{name} whole");
        assert_eq!(
            &read_chunks(format, body.chunks(1)),
            expected,
            "{name} byte by byte"
        );
        let usage_at = body
            .windows(15)
            .rposition(|w| w == b"\"usageMetadata\"")
            .unwrap();
        let cuts = (0..body.len())
            .step_by(body.len() / 40)
            .chain(usage_at - 64..usage_at + 256);
        for cut in cuts {
            let (first, second) = body.split_at(cut);
            assert_eq!(
                &read_chunks(format, [first, second]),
                expected,
                "{name} cut at {cut}"
            );
        }
        let mut parser = UsageParser::new_for(Protocol::Gemini, format).unwrap();
        let mut most_held = 0;
        for chunk in body.chunks(1400) {
            parser.feed(chunk);
            most_held = most_held.max(parser.buffered_bytes());
        }
        assert_eq!(&parser.finish(), expected, "{name} in 1400-byte chunks");
        assert!(most_held <= 4096, "{name}: held {most_held} bytes");
    }

    #[test]
    fn usage_of_a_stream_chunk_past_the_event_cap_is_read_within_the_cap() {
        for name in ["stream-generate-content.sse", "code-assist-stream.sse"] {
            assert_read_within_the_cap(AnswerFormat::EventStream, name, &expected(name));
        }
    }

    #[test]
    fn usage_of_a_json_answer_or_streamed_array_past_the_cap_is_read_within_the_cap() {
        for name in [
            "generate-content.json",
            "code-assist-generate.json",
            "stream-generate-content.json",
        ] {
            assert_read_within_the_cap(AnswerFormat::Json, name, &expected(name));
        }
    }

    #[test]
    fn a_streamed_array_cut_short_keeps_the_usage_seen_and_is_not_complete() {
        let body = fixture("stream-generate-content.json");
        let last = body.windows(4).rposition(|w| w == b",\r\n{").unwrap();
        let got = read_chunks(AnswerFormat::Json, [&body[..last + 40]]);
        // The second chunk's usage: 5 candidates + 230 thoughts.
        assert_eq!(got.usage.output_tokens, 235);
        assert_eq!(got.model.as_deref(), Some("gemini-2.5-flash"));
        assert!(!got.completed);
        // A JSON answer cut after its usage keeps it, and is not complete either.
        let body = fixture("generate-content.json");
        let end = body
            .windows(14)
            .rposition(|w| w == b"\"modelVersion\"")
            .unwrap();
        let got = read_chunks(AnswerFormat::Json, [&body[..end + 20]]);
        assert_eq!(got.usage, expected("generate-content.json").usage);
        assert!(!got.completed);
    }

    /// Bytes likely to reach the readers' corners: the kept keys among JSON and SSE syntax.
    fn tricky_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        let tokens: Vec<&'static [u8]> = vec![
            b"\"response\"",
            b"\"candidates\"",
            b"\"finishReason\"",
            b"\"usageMetadata\"",
            b"\"promptTokenCount\":",
            b"\"modelVersion\"",
            b"\"error\"",
        ];
        fixture_reads::tricky_bytes(tokens)
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_read_the_same_however_cut(
            bytes in tricky_bytes(),
            cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..12),
        ) {
            fixture_reads::read_alike_at_cuts(Protocol::Gemini, &bytes, &cuts)?;
        }
    }

    #[test]
    fn usage_metadata_below_the_answer_is_not_read() {
        // A function call's arguments may hold anything, `usageMetadata` included.
        let body = r#"{"candidates":[{"content":{"parts":[{"functionCall":{"args":{"usageMetadata":{"promptTokenCount":999}}}}]}}],"usageMetadata":{"promptTokenCount":3}}"#;
        let got = read_chunks(AnswerFormat::Json, [body.as_bytes()]);
        assert_eq!(got.usage.input_tokens, 3);
    }

    #[test]
    fn the_model_is_read_from_the_request_path() {
        let cases = [
            (
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
                Some("gemini-2.5-pro"),
            ),
            (
                "v1beta/models/gemini-2.5-flash:generateContent",
                Some("gemini-2.5-flash"),
            ),
            (
                "/v1/models/text-embedding-004:embedContent",
                Some("text-embedding-004"),
            ),
            (
                "/v1beta/tunedModels/my-model-7:generateContent",
                Some("my-model-7"),
            ),
            ("/v1internal:streamGenerateContent", None),
            ("/v1beta/models/gemini-2.5-pro", None),
            ("/v1beta/models/:generateContent", None),
            ("/v1beta/files/abc:download", None),
        ];
        for (path, model) in cases {
            assert_eq!(Gemini.model_in_path(path).as_deref(), model, "{path}");
        }
    }

    #[test]
    fn bearer_tokens_are_google_logins_unless_they_are_api_keys() {
        let cases: [(&[u8], BearerKind); 6] = [
            (b"Bearer ya29.a0AfH6SMB", BearerKind::Oauth),
            (b"Bearer AIzaSyD-example", BearerKind::ApiKey),
            (b"bearer\tya29.a0AfH6SMB", BearerKind::Oauth),
            (b"Basic dXNlcjpwYXNz", BearerKind::Other),
            (b"Bearerya29.x", BearerKind::Other),
            (b"ya29.x", BearerKind::Other),
        ];
        for (value, kind) in cases {
            let shown = String::from_utf8_lossy(value);
            assert_eq!(Gemini.bearer_kind(value), kind, "{shown}");
        }
    }

    #[test]
    fn the_key_query_parameter_is_found_as_sent() {
        assert_eq!(Gemini.query_credential("key=AIzaX"), Some("AIzaX"));
        assert_eq!(query_key("alt=sse&key=AIza%2DX"), Some("AIza%2DX"));
        assert_eq!(query_key("alt=sse&key="), None);
        assert_eq!(query_key("alt=sse&apikey=AIzaX&monkey=1"), None);
        assert_eq!(query_key(""), None);
    }

    #[test]
    fn server_key_goes_as_x_goog_api_key() {
        let value = Gemini.server_key_value("AIza-server").unwrap();
        let mut out = HeaderMap::new();
        Gemini.insert_server_key(&value, &mut out);
        assert_eq!(out.get("x-goog-api-key").unwrap(), "AIza-server");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn errors_take_google_s_shape() {
        let body: Value =
            serde_json::from_str(&Gemini.error_body(429, "quota", "sluice: quota spent")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": 429, "message": "sluice: quota spent", "status": "RESOURCE_EXHAUSTED"}})
        );
    }
}
