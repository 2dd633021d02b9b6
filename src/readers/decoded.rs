//! A decompressed copy of a request body sent with `content-encoding: gzip` or `zstd` (Codex
//! compresses its ChatGPT-mode requests with zstd). The body itself goes upstream untouched;
//! the copy only lets a reader see what the body names (its `model`). Bounded: at most
//! [`MAX_DECODED_BYTES`] are decoded (a compression bomb costs no more than that), output is
//! handed on as it is produced, and a zstd frame may not ask for a window over
//! 2^[`MAX_ZSTD_WINDOW_LOG`] bytes.

use std::io::{self, Write};

use actix_web::http::header::{self, HeaderMap};

/// Most decoded bytes handed on; the rest of the body is not decoded.
pub const MAX_DECODED_BYTES: usize = 32 * 1024 * 1024;
/// Largest zstd window accepted (4 MiB): a frame that needs more is not read.
pub const MAX_ZSTD_WINDOW_LOG: u32 = 22;

/// How a request body is encoded, from its `content-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    /// No `content-encoding`, or `identity`.
    Identity,
    Gzip,
    Zstd,
    /// Anything else (`br`, `deflate`, several codings): not read.
    Unreadable,
}

impl ContentCoding {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(header::CONTENT_ENCODING);
        let (Some(value), None) = (values.next(), values.next()) else {
            return if headers.contains_key(header::CONTENT_ENCODING) {
                Self::Unreadable
            } else {
                Self::Identity
            };
        };
        let value = value.to_str().unwrap_or_default().trim();
        if value.is_empty() || value.eq_ignore_ascii_case("identity") {
            Self::Identity
        } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
            Self::Gzip
        } else if value.eq_ignore_ascii_case("zstd") {
            Self::Zstd
        } else {
            Self::Unreadable
        }
    }
}

/// Takes the decoded bytes, piece by piece, as they are produced.
pub trait DecodedSink {
    fn take(&mut self, decoded: &[u8]);
}

/// Decodes copies of a body's chunks into a [`DecodedSink`], whatever their split.
pub struct DecodedCopy<S: DecodedSink> {
    decoder: Decoder<S>,
    /// The stream broke, or the limit was reached: nothing more is decoded.
    stopped: bool,
}

enum Decoder<S: DecodedSink> {
    Gzip(Box<flate2::write::GzDecoder<Capped<S>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Capped<S>>>),
}

/// Hands decoded bytes to the sink until the limit, then refuses more (which stops the
/// decoder in the middle of a chunk, not after it).
struct Capped<S> {
    sink: S,
    room: usize,
}

impl<S: DecodedSink> Write for Capped<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let taken = buf.len().min(self.room);
        self.sink.take(&buf[..taken]);
        self.room -= taken;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: DecodedSink> DecodedCopy<S> {
    /// A decoder of `coding` into `sink`; `None` for a coding that is not compressed or not
    /// read.
    pub fn new(coding: ContentCoding, sink: S) -> Option<Self> {
        Self::with_limit(coding, sink, MAX_DECODED_BYTES)
    }

    /// As [`new`](Self::new), decoding at most `limit` bytes.
    pub fn with_limit(coding: ContentCoding, sink: S, limit: usize) -> Option<Self> {
        let capped = Capped { sink, room: limit };
        let decoder = match coding {
            ContentCoding::Gzip => Decoder::Gzip(Box::new(flate2::write::GzDecoder::new(capped))),
            ContentCoding::Zstd => {
                let mut decoder = zstd::stream::write::Decoder::new(capped).ok()?;
                decoder.window_log_max(MAX_ZSTD_WINDOW_LOG).ok()?;
                Decoder::Zstd(Box::new(decoder))
            }
            ContentCoding::Identity | ContentCoding::Unreadable => return None,
        };
        Some(Self {
            decoder,
            stopped: false,
        })
    }

    /// Decodes the next chunk of the body as it came from the client.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.stopped {
            return;
        }
        let written = match &mut self.decoder {
            // Flushed at once: a decoder otherwise holds its output until the next write, and
            // a body that came in one chunk would show its model only after its end.
            Decoder::Gzip(decoder) => decoder.write_all(chunk).and_then(|()| decoder.flush()),
            Decoder::Zstd(decoder) => decoder.write_all(chunk).and_then(|()| decoder.flush()),
        };
        self.stopped = written.is_err();
    }

    /// The body ended: decodes what the decoder still holds.
    pub fn finish(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = match &mut self.decoder {
            Decoder::Gzip(decoder) => decoder.try_finish(),
            Decoder::Zstd(decoder) => decoder.flush(),
        };
    }

    pub fn sink(&self) -> &S {
        match &self.decoder {
            Decoder::Gzip(decoder) => &decoder.get_ref().sink,
            Decoder::Zstd(decoder) => &decoder.get_ref().sink,
        }
    }

    pub fn sink_mut(&mut self) -> &mut S {
        match &mut self.decoder {
            Decoder::Gzip(decoder) => &mut decoder.get_mut().sink,
            Decoder::Zstd(decoder) => &mut decoder.get_mut().sink,
        }
    }
}

impl<S: DecodedSink + std::fmt::Debug> std::fmt::Debug for DecodedCopy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedCopy")
            .field("sink", self.sink())
            .field("stopped", &self.stopped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    impl DecodedSink for Vec<u8> {
        fn take(&mut self, decoded: &[u8]) {
            self.extend_from_slice(decoded);
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(bytes, 3).unwrap()
    }

    const LIMIT: usize = 256 * 1024;

    fn decode(coding: ContentCoding, body: &[u8], chunk: usize) -> Vec<u8> {
        let mut copy = DecodedCopy::with_limit(coding, Vec::new(), LIMIT).unwrap();
        for piece in body.chunks(chunk) {
            copy.feed(piece);
        }
        copy.finish();
        copy.sink().clone()
    }

    #[test]
    fn content_coding_is_read_from_the_header() {
        let of = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            ContentCoding::of(&headers)
        };
        assert_eq!(of(&[]), ContentCoding::Identity);
        assert_eq!(of(&["identity"]), ContentCoding::Identity);
        assert_eq!(of(&["GZIP"]), ContentCoding::Gzip);
        assert_eq!(of(&["zstd"]), ContentCoding::Zstd);
        assert_eq!(of(&["br"]), ContentCoding::Unreadable);
        assert_eq!(of(&["gzip", "zstd"]), ContentCoding::Unreadable);
    }

    #[test]
    fn gzip_and_zstd_bodies_decode_whatever_their_chunking() {
        let body = br#"{"model":"gpt-5.1-codex","input":"hello"}"#.repeat(50);
        for (coding, encoded) in [
            (ContentCoding::Gzip, gzip(&body)),
            (ContentCoding::Zstd, zstd(&body)),
        ] {
            for chunk in [1, 7, encoded.len()] {
                assert_eq!(
                    decode(coding, &encoded, chunk),
                    body,
                    "{coding:?} by {chunk}"
                );
            }
        }
    }

    #[test]
    fn a_compression_bomb_decodes_no_more_than_the_limit() {
        let zeros = vec![0u8; 4 * LIMIT];
        for (coding, encoded) in [
            (ContentCoding::Gzip, gzip(&zeros)),
            (ContentCoding::Zstd, zstd(&zeros)),
        ] {
            assert_eq!(decode(coding, &encoded, 64 * 1024).len(), LIMIT);
        }
    }

    #[test]
    fn broken_streams_stop_without_panicking() {
        for coding in [ContentCoding::Gzip, ContentCoding::Zstd] {
            let decoded = decode(coding, b"\x1f\x8b\x08 not really compressed {\"model\":", 3);
            assert!(decoded.len() < 64, "{coding:?}");
        }
    }
}
