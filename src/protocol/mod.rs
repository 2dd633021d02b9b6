//! What sluice knows of an API's wire protocol, one module per API (`anthropic`, `openai`,
//! `gemini`), each answering the same questions through [`Api`]: what a client credential is and
//! how the server key is sent; how usage is read from a JSON answer and an SSE stream; what an
//! error body looks like; which response headers carry rate limits; which model a request asks
//! for; which requests fetch a batch's results, and how they are read ([`batch_results`]: one
//! reader for all three). The request path asks the route's [`Protocol`] and never matches on a
//! provider's name: a fourth API is one module and one variant here.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::pricing::PriceTable;
use crate::usage::AnswerFormat;
use batch_results::BatchReading;

pub mod anthropic;
pub mod batch_results;
#[cfg(test)]
mod fixture_reads;
pub mod gemini;
pub mod openai;
mod parser;
mod request;

pub use parser::{Reading, UsageParser, MAX_BUFFERED_BYTES, MAX_JSON_VALUE_BYTES};
pub use request::{RequestModel, SessionInBody};

/// How usage is read from a route's answers, and how its credentials and errors look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Anthropic,
    #[serde(rename = "openai")]
    OpenAi,
    Gemini,
    /// Forwarded and counted, but answers are not read (credentials and sluice's own errors
    /// as on an Anthropic route).
    None,
}

/// What a bearer token is, by its shape: the official SDKs send API keys as bearer tokens too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerKind {
    /// An API key (counts as `client_api_key`).
    ApiKey,
    /// A subscription login: Claude's OAuth token, a ChatGPT login (`client_oauth`).
    Oauth,
    /// Anything else (`client_bearer`).
    Other,
}

/// Which kind of client credential a request header carries on an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialHeader {
    /// A header that holds an API key as it is (`x-api-key`, Azure's `api-key`,
    /// `x-goog-api-key`).
    ApiKey,
    /// `authorization`: what it is depends on its token ([`Api::bearer_kind`]).
    Authorization,
}

/// The questions every API's module answers. Implementations are unit structs, reached through
/// [`Protocol::api`].
pub trait Api: Sync {
    /// The header this API takes an API key in (`authorization` carries the other credentials).
    fn api_key_header(&self) -> HeaderName;
    /// The kind of client credential header `name` is on this API, if it is one.
    fn credential_header(&self, name: &HeaderName) -> Option<CredentialHeader> {
        if *name == header::AUTHORIZATION {
            Some(CredentialHeader::Authorization)
        } else if *name == self.api_key_header() {
            Some(CredentialHeader::ApiKey)
        } else {
            None
        }
    }
    /// What the token of an `authorization` value is (`Bearer <token>`, any letter case).
    fn bearer_kind(&self, authorization: &[u8]) -> BearerKind;
    /// The header value the server key `secret` is sent as (`None`: it cannot be one).
    fn server_key_value(&self, secret: &str) -> Option<HeaderValue>;
    /// Sets the server key, as [`server_key_value`](Self::server_key_value) made it, on the
    /// outgoing headers (and whatever else the API needs beside it).
    fn insert_server_key(&self, value: &HeaderValue, out: &mut HeaderMap);
    /// The body of an error sluice itself answers with, in this API's shape, so clients and
    /// SDKs report it as their own. `kind` is the `x-sluice-error` kind; `message` starts with
    /// `sluice: `.
    fn error_body(&self, status: u16, kind: &str, message: &str) -> String;
    /// Response headers that carry rate-limit state (lower-case name), kept in `rate_limits`.
    /// `retry-after` is kept on every API.
    fn is_rate_limit_header(&self, name: &str) -> bool;
    /// The reader of this API's answers' usage, or `None` when answers are not read.
    fn answer_reading(&self) -> Option<Reading>;
    /// Whether a JSON request body names its `model` at the top level.
    fn model_in_request_body(&self) -> bool;
    /// The model named by the path below the route's prefix (Gemini's
    /// `models/{model}:generateContent`), when the API puts it there.
    fn model_in_path(&self, _rest: &str) -> Option<String> {
        None
    }
    /// Where a request body names its session, when this API puts one there.
    fn session_in_request_body(&self) -> Option<SessionInBody> {
        None
    }
    /// The client credential a request's query string carries (Gemini's `?key=`), as sent.
    /// It travels in the URL, never in a header: only its fingerprint is kept.
    fn query_credential<'q>(&self, _query: &'q str) -> Option<&'q str> {
        None
    }
    /// The JSON keys whose string values are an answer's generated text (see `readers::text`).
    fn text_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// How the answer to a request (`method`, `path` with the route's prefix) carries a batch's
    /// results, when the request fetches them: recognised by the request, since the answers'
    /// content types say nothing more than a file download.
    fn batch_reading(&self, _method: &str, _path: &str) -> Option<&'static BatchReading> {
        None
    }
    /// Whether the answer to a request to `path` describes a batch with the tokens its results
    /// used summed up (OpenAI's Batch object), which are counted from the results when they
    /// are fetched: read as the request's own usage, every poll would count them again.
    fn answer_sums_batch_usage(&self, _path: &str) -> bool {
        false
    }
}

/// `Protocol::None`: credentials and sluice's errors as on an Anthropic route, answers unread.
struct Unread;

impl Api for Unread {
    fn api_key_header(&self) -> HeaderName {
        anthropic::Anthropic.api_key_header()
    }
    fn bearer_kind(&self, authorization: &[u8]) -> BearerKind {
        anthropic::Anthropic.bearer_kind(authorization)
    }
    fn server_key_value(&self, secret: &str) -> Option<HeaderValue> {
        anthropic::Anthropic.server_key_value(secret)
    }
    fn insert_server_key(&self, value: &HeaderValue, out: &mut HeaderMap) {
        anthropic::Anthropic.insert_server_key(value, out)
    }
    fn error_body(&self, status: u16, kind: &str, message: &str) -> String {
        anthropic::Anthropic.error_body(status, kind, message)
    }
    fn is_rate_limit_header(&self, name: &str) -> bool {
        anthropic::Anthropic.is_rate_limit_header(name)
    }
    fn answer_reading(&self) -> Option<Reading> {
        None
    }
    fn model_in_request_body(&self) -> bool {
        false
    }
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::Gemini => "gemini",
            Self::None => "none",
        }
    }

    /// The JSON keys whose string values are the answer's generated text, for estimating the
    /// output of an answer whose usage never came (see `readers::text`).
    pub fn text_keys(self) -> &'static [&'static str] {
        self.api().text_keys()
    }

    /// This protocol's answers to the questions of [`Api`].
    pub fn api(self) -> &'static dyn Api {
        match self {
            Self::Anthropic => &anthropic::Anthropic,
            Self::OpenAi => &openai::OpenAi,
            Self::Gemini => &gemini::Gemini,
            Self::None => &Unread,
        }
    }

    /// Rate-limit state among an answer's headers: this API's own, `retry-after`, and Codex's
    /// plan windows (`x-codex-primary-*`, `x-codex-secondary-*`), which a ChatGPT backend sends
    /// whatever protocol the route was given.
    pub fn rate_limit_headers(self, headers: &HeaderMap) -> Vec<(String, String)> {
        let api = self.api();
        headers
            .iter()
            .filter(|(name, _)| {
                *name == header::RETRY_AFTER
                    || openai::is_codex_plan_header(name.as_str())
                    || api.is_rate_limit_header(name.as_str())
            })
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect()
    }

    /// A reader for the `model` a request asks for, when this protocol names one in its body:
    /// whatever content type the body declares, since the upstream reads it as JSON anyway
    /// (and from a decompressed copy when the body is gzip or zstd).
    pub fn request_reader(self, request_headers: &HeaderMap) -> Option<RequestModel> {
        if !self.api().model_in_request_body() {
            return None;
        }
        RequestModel::new(request_headers, self.api().session_in_request_body())
    }

    /// A reader for the usage in an answer of this `format`, when this protocol has usage.
    pub fn answer_reader(self, format: AnswerFormat) -> Option<UsageParser> {
        UsageParser::new_for(self, format)
    }

    /// A reader for the answer to this request: a batch's results, when the request fetched
    /// them and they came back (priced result by result with `prices` at the batch rate, see
    /// [`Api::batch_reading`]), else as [`answer_reader`](Self::answer_reader) reads `format`.
    /// An error answer to a results request is JSON and read as one. A successful answer that
    /// describes a batch ([`Api::answer_sums_batch_usage`]) is not read.
    pub fn answer_reader_for(
        self,
        method: &Method,
        path: &str,
        status: StatusCode,
        format: AnswerFormat,
        prices: impl FnOnce() -> PriceTable,
    ) -> Option<UsageParser> {
        let batch = status
            .is_success()
            .then(|| self.api().batch_reading(method.as_str(), path))
            .flatten();
        if let Some(reading) = batch {
            return Some(UsageParser::batch_results(prices(), reading));
        }
        if status.is_success() && self.api().answer_sums_batch_usage(path) {
            return self.answer_reader(AnswerFormat::Other);
        }
        self.answer_reader(format)
    }
}

/// Stands for any one non-empty path segment in [`path_ends_with`].
pub(crate) const ANY_SEGMENT: &str = "{}";

/// Whether `path` (a trailing `/` aside) ends with the segments of `pattern`, where
/// [`ANY_SEGMENT`] matches any non-empty one: how an API's endpoints are told apart by path.
pub(crate) fn path_ends_with(path: &str, pattern: &[&str]) -> bool {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    pattern.iter().rev().all(|&want| {
        segments.next().is_some_and(|got| {
            if want == ANY_SEGMENT {
                !got.is_empty()
            } else {
                got == want
            }
        })
    })
}

/// The token of `Bearer <token>` (any letter case, any run of spaces or tabs after the
/// scheme), else `None`.
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    value
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer"))
        .map(|_| &value[6..])
        .filter(|rest| rest.first().is_some_and(|b| matches!(b, b' ' | b'\t')))
        .map(|rest| rest.trim_ascii_start())
}

/// `Bearer <secret>` as a sensitive header value.
pub(crate) fn bearer_value(secret: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {secret}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_ends_with_its_last_segments_any_segment_matching_a_non_empty_one() {
        let pattern = ["files", ANY_SEGMENT, "content"];
        assert!(path_ends_with("/v1/files/file-abc/content", &pattern));
        assert!(path_ends_with("/v1/files/file-abc/content/", &pattern));
        assert!(!path_ends_with("/v1/files//content", &pattern));
        assert!(!path_ends_with("/v1/files/file-abc/contents", &pattern));
        assert!(!path_ends_with("file-abc/content", &pattern));
    }

    #[test]
    fn protocol_names_are_the_settings_values() {
        for (protocol, name) in [
            (Protocol::Anthropic, "anthropic"),
            (Protocol::OpenAi, "openai"),
            (Protocol::Gemini, "gemini"),
            (Protocol::None, "none"),
        ] {
            assert_eq!(protocol.as_str(), name);
            let parsed: Protocol = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(parsed, protocol);
        }
    }

    #[test]
    fn rate_limit_headers_are_the_protocols_own_and_retry_after() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("anthropic-ratelimit-tokens-remaining", "10"),
            ("x-ratelimit-remaining-requests", "59"),
            ("retry-after", "7"),
            ("content-type", "application/json"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let names = |protocol: Protocol| {
            let mut names: Vec<String> = protocol
                .rate_limit_headers(&headers)
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(Protocol::Anthropic),
            ["anthropic-ratelimit-tokens-remaining", "retry-after"]
        );
        assert_eq!(names(Protocol::None), names(Protocol::Anthropic));
        assert_eq!(
            names(Protocol::OpenAi),
            ["retry-after", "x-ratelimit-remaining-requests"]
        );
    }

    #[test]
    fn only_the_none_protocol_has_no_answer_reader() {
        assert!(Protocol::None
            .answer_reader(AnswerFormat::EventStream)
            .is_none());
        assert!(Protocol::None.answer_reader(AnswerFormat::Json).is_none());
        for protocol in [Protocol::Anthropic, Protocol::OpenAi, Protocol::Gemini] {
            assert!(protocol.answer_reader(AnswerFormat::EventStream).is_some());
            assert!(protocol.answer_reader(AnswerFormat::Json).is_some());
        }
    }
}
