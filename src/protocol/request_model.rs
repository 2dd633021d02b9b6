//! The `model` a request body asks for, read whatever the body declares itself to be: JSON by
//! its content type or not (`text/plain`, none at all), after a UTF-8 byte-order mark, and
//! gzip-compressed when `content-encoding` says so. The upstream reads such bodies all the
//! same, so quotas that select by model are judged from what the body holds, not from what it
//! claims. Memory stays bounded: the JSON reader keeps only what it needs, and a compressed body
//! is inflated only up to [`MAX_INFLATED_BYTES`].

use std::io::Write;

use actix_web::http::header::{self, HeaderMap};

use super::UsageParser;
use crate::usage::AnswerFormat;

/// How much of a compressed body is inflated to find its model: enough for any real request,
/// not enough for a small body that inflates a thousandfold to cost more than a moment.
pub const MAX_INFLATED_BYTES: u64 = 8 * 1024 * 1024;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// Reads the model out of a request body fed to it chunk by chunk.
pub struct RequestModel {
    reader: Reader,
    /// Read as far as it will be: past the bound, or not the encoding it claimed.
    stopped: bool,
}

// One per request, held in place for its whole body: no variant is worth a box of its own.
#[allow(clippy::large_enum_variant)]
enum Reader {
    Plain(ModelSink),
    Gzip(flate2::write::GzDecoder<ModelSink>),
    /// An encoding sluice does not read (or a broken gzip stream): no model.
    Unread,
}

impl RequestModel {
    /// A reader for the body of a request with these headers.
    pub fn for_request(headers: &HeaderMap) -> Self {
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        let reader = match encoding.as_deref() {
            None | Some("" | "identity") => Reader::Plain(ModelSink::new(u64::MAX)),
            Some("gzip" | "x-gzip") => Reader::Gzip(flate2::write::GzDecoder::new(ModelSink::new(
                MAX_INFLATED_BYTES,
            ))),
            Some(_) => Reader::Unread,
        };
        RequestModel {
            reader,
            stopped: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.stopped {
            return;
        }
        // Past the bound, or not gzip after all: what was read so far stays readable.
        self.stopped = match &mut self.reader {
            Reader::Plain(sink) => sink.write_all(chunk).is_err(),
            // Flushed at once: the decoder otherwise holds its output until the next write, and
            // a body that came in one chunk would show its model only after its end.
            Reader::Gzip(decoder) => decoder
                .write_all(chunk)
                .and_then(|()| decoder.flush())
                .is_err(),
            Reader::Unread => true,
        };
    }

    /// The model, once the body has shown it.
    pub fn model(&self) -> Option<&str> {
        self.sink()?.parser.answer_model()
    }

    /// The model the whole body asked for, at its end.
    pub fn finish(&mut self) -> Option<String> {
        if let (Reader::Gzip(decoder), false) = (&mut self.reader, self.stopped) {
            let _ = decoder.try_finish();
        }
        match &mut self.reader {
            Reader::Plain(sink) => sink.parser.finish().model,
            Reader::Gzip(decoder) => decoder.get_mut().parser.finish().model,
            Reader::Unread => None,
        }
    }

    fn sink(&self) -> Option<&ModelSink> {
        match &self.reader {
            Reader::Plain(sink) => Some(sink),
            Reader::Gzip(decoder) => Some(decoder.get_ref()),
            Reader::Unread => None,
        }
    }
}

/// The JSON reader behind the decoding: skips a leading byte-order mark and stops at `cap`.
struct ModelSink {
    parser: UsageParser,
    /// The body's first bytes, held until it is known whether they are a byte-order mark.
    head: Vec<u8>,
    seen: u64,
    cap: u64,
}

impl ModelSink {
    fn new(cap: u64) -> Self {
        ModelSink {
            parser: UsageParser::new(AnswerFormat::Json),
            head: Vec::with_capacity(BOM.len()),
            seen: 0,
            cap,
        }
    }
}

impl Write for ModelSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.seen >= self.cap {
            return Err(std::io::Error::other(
                "read as far as a model is looked for",
            ));
        }
        let take = buf
            .len()
            .min(usize::try_from(self.cap - self.seen).unwrap_or(usize::MAX));
        let mut bytes = &buf[..take];
        if self.seen < BOM.len() as u64 {
            let wanted = (BOM.len() - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..wanted]);
            bytes = &bytes[wanted..];
            if self.head.len() == BOM.len() && self.head != BOM {
                self.parser.feed(&self.head);
            }
        }
        self.seen += take as u64;
        if !bytes.is_empty() {
            self.parser.feed(bytes);
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    const BODY: &str = r#"{"max_tokens":64,"messages":[{"role":"user","content":"hi"}],"model":"claude-opus-4-5"}"#;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    /// The model as soon as the whole body was fed (quotas judge it then, before its end is
    /// known), which must be the model read at its end.
    fn read(pairs: &[(&str, &str)], body: &[u8], chunk: usize) -> Option<String> {
        let mut reader = RequestModel::for_request(&headers(pairs));
        for piece in body.chunks(chunk) {
            reader.feed(piece);
        }
        let seen = reader.model().map(str::to_string);
        assert_eq!(seen, reader.finish());
        seen
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn the_model_is_read_whatever_the_body_declares_itself_to_be() {
        let model = Some("claude-opus-4-5".to_string());
        let with_bom = [BOM, BODY.as_bytes()].concat();
        for chunk in [1, 2, 7, 4096] {
            for declared in [&[][..], &[("content-type", "text/plain")][..]] {
                assert_eq!(read(declared, BODY.as_bytes(), chunk), model, "{chunk}");
                assert_eq!(read(declared, &with_bom, chunk), model, "BOM, {chunk}");
            }
            let gz = [("content-encoding", "gzip")];
            assert_eq!(
                read(&gz, &gzip(BODY.as_bytes()), chunk),
                model,
                "gzip {chunk}"
            );
            assert_eq!(
                read(&gz, &gzip(&with_bom), chunk),
                model,
                "gzip+BOM {chunk}"
            );
        }
    }

    #[test]
    fn a_body_inflating_past_the_bound_is_read_no_further() {
        // The model after 16 MiB of spaces: inflating stops at the bound, and finds none.
        let mut body = b"{\"messages\":[],".to_vec();
        body.extend(vec![b' '; 16 << 20]);
        body.extend_from_slice(b"\"model\":\"claude-opus-4-5\"}");
        let gz = gzip(&body);
        assert!(gz.len() < 1 << 20, "{}", gz.len());
        assert_eq!(read(&[("content-encoding", "gzip")], &gz, 64 << 10), None);
        // Not gzip after all, or an encoding not read: no model, no failure.
        assert_eq!(
            read(&[("content-encoding", "gzip")], BODY.as_bytes(), 16),
            None
        );
        assert_eq!(
            read(&[("content-encoding", "br")], BODY.as_bytes(), 16),
            None
        );
    }
}
