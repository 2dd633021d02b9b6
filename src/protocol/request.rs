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
    Plain(Box<UsageParser>),
    /// The decoder holds the parser behind its own box.
    Decoded(DecodedCopy<UsageParser>),
}

impl DecodedSink for UsageParser {
    fn take(&mut self, decoded: &[u8]) {
        self.feed(decoded);
    }
}

impl RequestModel {
    /// A reader for a body with these request headers; `None` when its content coding is one
    /// sluice does not decode.
    pub fn new(request_headers: &HeaderMap) -> Option<Self> {
        let parser = UsageParser::new(AnswerFormat::Json);
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
        parser.finish().model
    }

    fn parser(&self) -> &UsageParser {
        match &self.0 {
            Body::Plain(parser) => parser,
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
