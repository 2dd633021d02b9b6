//! [`RequestModel`]: the `model` a request's JSON body names (at its top level, or nested where
//! its API puts it, with the session: [`SessionInBody`]), read from copies of its chunks as
//! they stream upstream (bounded memory, any split), and from a decompressed copy when the
//! client compressed the body (`content-encoding: gzip` or `zstd`). The body itself is never
//! touched.

use actix_web::http::header::HeaderMap;

use serde_json::Value;

use super::UsageParser;
use crate::readers::decoded::{ContentCoding, DecodedCopy, DecodedSink};
use crate::readers::pruned::{JsonPruner, Kept, MAX_PRUNED_BYTES};
use crate::usage::AnswerFormat;

/// Where a request body names its session, and its model when it nests it, below the top
/// level, when its API puts them there: the keys of the body kept (read however large the
/// body is, see `readers::pruned`) and how to name them from the body cut down to those. Code
/// Assist (Gemini CLI's Google login): `{"request": {…, "session_id": "…"}}`, and a
/// `countTokens` call's `{"request": {"model": "models/…", …}}`.
#[derive(Debug, Clone, Copy)]
pub struct SessionInBody {
    pub kept: &'static [Kept],
    pub names: fn(&Value) -> NamesInBody,
}

/// The session and the model a request body names below its top level.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NamesInBody {
    pub session: Option<String>,
    pub model: Option<String>,
}

/// Reads the names a body holds at [`SessionInBody`], once the body (or what came of it) ends.
#[derive(Debug)]
struct NestedNames {
    place: SessionInBody,
    pruner: JsonPruner,
    /// What was read, once the body ended.
    names: Option<NamesInBody>,
}

impl NestedNames {
    fn new(place: SessionInBody) -> Self {
        Self {
            place,
            pruner: JsonPruner::new(place.kept, MAX_PRUNED_BYTES),
            names: None,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.names.is_some() {
            return;
        }
        self.pruner.feed(bytes);
        if self.pruner.is_done() {
            self.read(self.pruner.pruned().map(<[u8]>::to_vec));
        }
    }

    /// The body ended, maybe cut: the names among what of it was read.
    fn finish(&mut self) {
        if self.names.is_none() {
            self.read(self.pruner.pruned_so_far());
        }
    }

    fn read(&mut self, pruned: Option<Vec<u8>>) {
        let body = pruned.and_then(|copy| serde_json::from_slice::<Value>(&copy).ok());
        self.names = Some(
            body.map(|body| (self.place.names)(&body))
                .unwrap_or_default(),
        );
    }

    /// Still worth feeding: the body has not ended, nor turned out not to be JSON.
    fn wants_more(&self) -> bool {
        self.names.is_none() && !self.pruner.is_unreadable()
    }
}

/// Reads the `model` of a request body (its top-level one, else the one its API nests) and the
/// session it nests.
#[derive(Debug)]
pub struct RequestModel(Body);

#[derive(Debug)]
enum Body {
    Plain(Box<ModelParser>),
    /// The decoder holds the parser behind its own box.
    Decoded(DecodedCopy<ModelParser>),
}

/// A UTF-8 byte-order mark, which some clients put before a JSON body (the upstream skips it).
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The JSON reader of the body, after a byte-order mark when the body starts with one.
#[derive(Debug)]
struct ModelParser {
    parser: UsageParser,
    /// The reader of the names nested in the body, when the API nests them.
    nested: Option<Box<NestedNames>>,
    /// The body's first bytes while they may still be a byte-order mark.
    head: Vec<u8>,
    past_head: bool,
}

impl ModelParser {
    fn new(session: Option<SessionInBody>) -> Self {
        Self {
            parser: UsageParser::new(AnswerFormat::Json),
            nested: session.map(|place| Box::new(NestedNames::new(place))),
            head: Vec::with_capacity(BOM.len()),
            past_head: false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        if !self.past_head {
            let wanted = (BOM.len() - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..wanted]);
            bytes = &bytes[wanted..];
            if !BOM.starts_with(&self.head) || self.head.len() == BOM.len() {
                self.past_head = true;
                if self.head != BOM {
                    let head = std::mem::take(&mut self.head);
                    self.read(&head);
                    self.head = head;
                }
            }
        }
        if !bytes.is_empty() {
            self.read(bytes);
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        self.parser.feed(bytes);
        if let Some(nested) = self.nested.as_deref_mut() {
            nested.feed(bytes);
        }
    }

    fn nested_names(&self) -> Option<&NamesInBody> {
        self.nested.as_ref()?.names.as_ref()
    }

    fn session(&self) -> Option<&str> {
        self.nested_names()?.session.as_deref()
    }

    /// The model: the body's top-level `model`, else the one it nests (once read).
    fn model(&self) -> Option<&str> {
        self.parser
            .answer_model()
            .or_else(|| self.nested_names()?.model.as_deref())
    }

    /// Still reading the names the body may nest.
    fn wants_session(&self) -> bool {
        self.nested
            .as_ref()
            .is_some_and(|nested| nested.wants_more())
    }

    fn finish(&mut self) -> Option<String> {
        if !self.past_head {
            self.past_head = true;
            let head = std::mem::take(&mut self.head);
            self.read(&head);
        }
        if let Some(nested) = self.nested.as_deref_mut() {
            nested.finish();
        }
        let model = self.parser.finish().model;
        model.or_else(|| self.nested_names()?.model.clone())
    }
}

impl DecodedSink for ModelParser {
    fn take(&mut self, decoded: &[u8]) {
        self.feed(decoded);
    }
}

impl RequestModel {
    /// A reader for a body with these request headers; `None` when its content coding is one
    /// sluice does not decode.
    pub fn new(request_headers: &HeaderMap, session: Option<SessionInBody>) -> Option<Self> {
        let parser = ModelParser::new(session);
        let body = match ContentCoding::of(request_headers) {
            ContentCoding::Identity => Body::Plain(Box::new(parser)),
            coding => Body::Decoded(DecodedCopy::new(coding, parser)?),
        };
        Some(Self(body))
    }

    /// The next chunk of the body as the client sent it.
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.0 {
            Body::Plain(parser) => parser.feed(chunk),
            Body::Decoded(copy) => copy.feed(chunk),
        }
    }

    /// The model read so far.
    pub fn model(&self) -> Option<&str> {
        self.model_parser().model()
    }

    /// The session id the body named, when its API names one there and it was read.
    pub fn session(&self) -> Option<&str> {
        self.model_parser().session()
    }

    /// Whether later chunks are still worth reading once the model is known: the body may
    /// name a session (or its model) below its top level, read when the body ends.
    pub fn wants_session(&self) -> bool {
        self.model_parser().wants_session()
    }

    /// The body ended (or was cut): the model it named, if any.
    pub fn finish(&mut self) -> Option<String> {
        let parser = match &mut self.0 {
            Body::Plain(parser) => parser,
            Body::Decoded(copy) => {
                copy.finish();
                copy.sink_mut()
            }
        };
        parser.finish()
    }

    fn model_parser(&self) -> &ModelParser {
        match &self.0 {
            Body::Plain(model) => model,
            Body::Decoded(copy) => copy.sink(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{gemini::Gemini, Api};
    use actix_web::http::header::{self, HeaderValue};
    use std::io::Write;

    const BODY: &[u8] = br#"{"model":"gpt-5.1-codex","instructions":"be brief","input":[]}"#;

    fn read(coding: Option<&'static str>, body: &[u8]) -> Option<String> {
        let mut headers = HeaderMap::new();
        if let Some(coding) = coding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        let mut reader = RequestModel::new(&headers, None)?;
        for byte in body.chunks(1) {
            reader.feed(byte);
        }
        reader.finish()
    }

    #[test]
    fn model_is_read_from_plain_gzip_and_zstd_bodies() {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(BODY).unwrap();
        let gzip = gzip.finish().unwrap();
        let zstd = zstd::stream::encode_all(BODY, 3).unwrap();
        for (coding, body) in [
            (None, BODY.to_vec()),
            (Some("gzip"), gzip),
            (Some("zstd"), zstd),
        ] {
            assert_eq!(
                read(coding, &body).as_deref(),
                Some("gpt-5.1-codex"),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn a_byte_order_mark_before_the_body_is_skipped_at_any_split() {
        let with_bom = [BOM, BODY].concat();
        for split in 0..=with_bom.len() {
            let mut reader = RequestModel::new(&HeaderMap::new(), None).unwrap();
            reader.feed(&with_bom[..split]);
            reader.feed(&with_bom[split..]);
            assert_eq!(reader.finish().as_deref(), Some("gpt-5.1-codex"), "{split}");
        }
    }

    #[test]
    fn a_code_assist_body_names_its_model_and_its_session_inside_request() {
        // What Gemini CLI 0.61.0 sends to v1internal:streamGenerateContent (shortened); the
        // text may hold look-alike keys.
        let body = br#"{"model":"gemini-3-flash","project":"p-1","user_prompt_id":"u-1",
            "request":{"contents":[{"role":"user","parts":[{"text":"hi \"session_id\": \"x\""}]}],
            "generationConfig":{"temperature":1},"session_id":"03e3b229-8e68-426d-ade1"}}"#;
        let place = Gemini.session_in_request_body();
        for chunk in [1, 7, body.len()] {
            let mut reader = RequestModel::new(&HeaderMap::new(), place).unwrap();
            assert!(reader.wants_session());
            for piece in body.chunks(chunk) {
                reader.feed(piece);
            }
            assert_eq!(reader.session(), Some("03e3b229-8e68-426d-ade1"));
            assert!(!reader.wants_session());
            assert_eq!(reader.finish().as_deref(), Some("gemini-3-flash"));
        }
        // No place named: no session read, none wanted.
        let mut reader = RequestModel::new(&HeaderMap::new(), None).unwrap();
        reader.feed(body);
        assert_eq!(reader.session(), None);
        assert!(!reader.wants_session());
    }

    #[test]
    fn a_code_assist_count_tokens_body_names_its_model_inside_request() {
        // Gemini CLI's `v1internal:countTokens` (code_assist/converter.ts,
        // `toCountTokenRequest`): the model only inside `request`, as `models/{model}`,
        // after contents of any size.
        let text = "x\\\"}]".repeat(50_000);
        let body = format!(
            r#"{{"request":{{"contents":[{{"role":"user","parts":[{{"text":"{text}"}}]}}],"model":"models/gemini-3.8-flash"}}}}"#
        );
        let place = Gemini.session_in_request_body();
        for cut in [0, 1, 17, body.len() - 40, body.len() - 1] {
            let mut reader = RequestModel::new(&HeaderMap::new(), place).unwrap();
            reader.feed(&body.as_bytes()[..cut]);
            assert_eq!(reader.model(), None);
            reader.feed(&body.as_bytes()[cut..]);
            assert_eq!(reader.model(), Some("gemini-3.8-flash"), "cut at {cut}");
            assert_eq!(reader.session(), None);
            assert_eq!(reader.finish().as_deref(), Some("gemini-3.8-flash"));
        }
        // A body cut after the model still names it.
        let cut = body.len() - 2;
        let mut reader = RequestModel::new(&HeaderMap::new(), place).unwrap();
        reader.feed(&body.as_bytes()[..cut]);
        assert_eq!(reader.finish().as_deref(), Some("gemini-3.8-flash"));
    }

    #[test]
    fn bodies_in_other_codings_are_not_read() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(RequestModel::new(&headers, None).is_none());
        // Compressed bytes are not mistaken for JSON.
        assert_eq!(read(Some("gzip"), BODY), None);
    }
}
