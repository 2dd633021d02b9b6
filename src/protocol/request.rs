//! [`RequestModel`]: the `model` a request's JSON body names, read from copies of its chunks as
//! they stream upstream (bounded memory, any split), and from a decompressed copy when the
//! client compressed the body (`content-encoding: gzip` or `zstd`). The body itself is never
//! touched.

use actix_web::http::header::HeaderMap;

use super::UsageParser;
use crate::readers::decoded::{ContentCoding, DecodedCopy, DecodedSink};
use crate::usage::AnswerFormat;

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
    /// The body's first bytes while they may still be a byte-order mark.
    head: Vec<u8>,
    past_head: bool,
}

impl ModelParser {
    fn new() -> Self {
        Self {
            parser: UsageParser::new(AnswerFormat::Json),
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
                    self.parser.feed(&self.head);
                }
            }
        }
        if !bytes.is_empty() {
            self.parser.feed(bytes);
        }
    }

    fn finish(&mut self) -> Option<String> {
        if !self.past_head {
            self.past_head = true;
            self.parser.feed(&self.head);
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
    pub fn new(request_headers: &HeaderMap) -> Option<Self> {
        let parser = ModelParser::new();
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
        match &self.0 {
            Body::Plain(model) => &model.parser,
            Body::Decoded(copy) => &copy.sink().parser,
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
        let mut reader = RequestModel::new(&headers)?;
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
            let mut reader = RequestModel::new(&HeaderMap::new()).unwrap();
            reader.feed(&with_bom[..split]);
            reader.feed(&with_bom[split..]);
            assert_eq!(reader.finish().as_deref(), Some("gpt-5.1-codex"), "{split}");
        }
    }

    #[test]
    fn bodies_in_other_codings_are_not_read() {
        assert!(RequestModel::new(&{
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            headers
        })
        .is_none());
        // Compressed bytes are not mistaken for JSON.
        assert_eq!(read(Some("gzip"), BODY), None);
    }
}
