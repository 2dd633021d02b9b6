//! [`RequestModel`]: the `model` a request's JSON body names, read from copies of its chunks as
//! they stream upstream (bounded memory, any split), and from a decompressed copy when the
//! client compressed the body (`content-encoding: gzip` or `zstd`). The body itself is never
//! touched.

use actix_web::http::header::HeaderMap;

use serde_json::Value;

use super::UsageParser;
use crate::readers::decoded::{ContentCoding, DecodedCopy, DecodedSink};
use crate::readers::json::{JsonBodyReader, ValueHandler};
use crate::readers::MAX_NAME_BYTES;
use crate::usage::AnswerFormat;

/// Where a request body names its session, when its API puts one there: the object key that
/// holds it (opened, however large) and the key of the id itself. Code Assist (Gemini CLI's
/// Google login): `{"request": {…, "session_id": "…"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInBody {
    pub within: &'static str,
    pub key: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionKey {
    Within,
    Id,
}

/// Reads the session id a body names at [`SessionInBody`].
#[derive(Debug)]
struct SessionReading {
    place: SessionInBody,
    session: Option<String>,
}

impl ValueHandler for SessionReading {
    type Key = SessionKey;

    fn wants(&self, key: &[u8]) -> Option<SessionKey> {
        if key == self.place.within.as_bytes() {
            Some(SessionKey::Within)
        } else if key == self.place.key.as_bytes() && self.session.is_none() {
            Some(SessionKey::Id)
        } else {
            None
        }
    }

    fn opens(&self, key: SessionKey) -> bool {
        key == SessionKey::Within
    }

    fn on_value(&mut self, key: SessionKey, value: &[u8]) {
        if key != SessionKey::Id {
            return;
        }
        if let Ok(Value::String(id)) = serde_json::from_slice::<Value>(value) {
            if !id.is_empty() && id.len() <= MAX_NAME_BYTES {
                self.session = Some(id);
            }
        }
    }

    fn on_end(&mut self, _complete: bool) {}
}

/// Reads the top-level `model` of a request body.
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
    /// The session's reader, when the API names one in the body.
    session: Option<Box<(JsonBodyReader<SessionKey>, SessionReading)>>,
    /// The body's first bytes while they may still be a byte-order mark.
    head: Vec<u8>,
    past_head: bool,
}

impl ModelParser {
    fn new(session: Option<SessionInBody>) -> Self {
        Self {
            parser: UsageParser::new(AnswerFormat::Json),
            session: session.map(|place| {
                let reading = SessionReading {
                    place,
                    session: None,
                };
                Box::new((JsonBodyReader::new(), reading))
            }),
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
        if let Some(session) = self.session.as_deref_mut() {
            let (reader, reading) = session;
            reader.feed(bytes, reading);
        }
    }

    fn session(&self) -> Option<&str> {
        self.session.as_ref()?.1.session.as_deref()
    }

    /// Still looking for a session the body may name.
    fn wants_session(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| session.1.session.is_none())
    }

    fn finish(&mut self) -> Option<String> {
        if !self.past_head {
            self.past_head = true;
            let head = std::mem::take(&mut self.head);
            self.read(&head);
        }
        self.parser.finish().model
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
        self.parser().answer_model()
    }

    /// The session id the body named, when its API names one there and it was read.
    pub fn session(&self) -> Option<&str> {
        self.model_parser().session()
    }

    /// Whether later chunks are still worth reading once the model is known: the body may
    /// name a session after it.
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

    fn parser(&self) -> &UsageParser {
        &self.model_parser().parser
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
        let place = Some(SessionInBody {
            within: "request",
            key: "session_id",
        });
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
    fn bodies_in_other_codings_are_not_read() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(RequestModel::new(&headers, None).is_none());
        // Compressed bytes are not mistaken for JSON.
        assert_eq!(read(Some("gzip"), BODY), None);
    }
}
