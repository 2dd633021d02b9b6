//! What every protocol's reader tests do with its recorded answers: read a fixture, feed it in
//! chunks with the memory bound checked after each, and check that however the bytes are cut
//! the answer is the same.

use super::{Protocol, UsageParser, MAX_BUFFERED_BYTES};
use crate::usage::{Answer, AnswerFormat};

/// A recorded answer of `tests/fixtures/{dir}/`.
pub fn fixture(dir: &str, name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

/// Feeds the chunks one by one, checking the memory bound after each, then finishes.
pub fn read_chunks<'a>(
    protocol: Protocol,
    format: AnswerFormat,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Answer {
    let mut parser = UsageParser::new_for(protocol, format).unwrap();
    for chunk in chunks {
        parser.feed(chunk);
        assert!(parser.buffered_bytes() <= MAX_BUFFERED_BYTES);
    }
    parser.finish()
}

/// Calls `check` with the body whole, split in two at every offset, and in 1-byte chunks, each
/// with words for a failure message: how every reader test proves a split changes nothing.
pub fn for_every_cut(body: &[u8], mut check: impl FnMut(&[&[u8]], &str)) {
    check(&[body], "read whole");
    for cut in 0..=body.len() {
        let (first, second) = body.split_at(cut);
        check(&[first, second], &format!("cut at {cut}"));
    }
    check(&body.chunks(1).collect::<Vec<_>>(), "in 1-byte chunks");
}

/// The body read whole, split in two at every offset, and in 1-byte chunks gives `expected`.
pub fn assert_read_alike_however_cut(
    protocol: Protocol,
    format: AnswerFormat,
    name: &str,
    body: &[u8],
    expected: &Answer,
) {
    for_every_cut(body, |chunks, how| {
        assert_eq!(
            &read_chunks(protocol, format, chunks.iter().copied()),
            expected,
            "{name} {how}"
        );
    });
}

/// JSON's and SSE's syntax, which every reader acts on.
const SYNTAX: [&[u8]; 14] = [
    b"{", b"}", b"[", b"]", b"\"", b"\\", b":", b",", b" ", b"\n", b"\r", b"\r\n", b"data: ", b"7",
];

/// Bytes likely to reach a reader's corners: random bytes mixed with JSON and SSE syntax and with
/// `tokens` (the field names and keys the protocol's reader acts on), up to 200 pieces.
pub fn tricky_bytes(
    mut tokens: Vec<&'static [u8]>,
) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    tokens.extend(SYNTAX);
    let piece = prop_oneof![
        any::<u8>().prop_map(|byte| vec![byte]),
        proptest::sample::select(tokens).prop_map(<[u8]>::to_vec),
    ];
    proptest::collection::vec(piece, 0..200).prop_map(|pieces| pieces.concat())
}

/// `bytes` read as SSE and as JSON give the same answer whole and cut at `cuts` (picked
/// anywhere in it, in any order): what a property test of a protocol's readers checks.
pub fn read_alike_at_cuts(
    protocol: Protocol,
    bytes: &[u8],
    cuts: &[proptest::sample::Index],
) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for format in [AnswerFormat::EventStream, AnswerFormat::Json] {
        let whole = read_chunks(protocol, format, [bytes]);
        let mut pieces = Vec::new();
        let mut start = 0;
        for &cut in &cuts {
            pieces.push(&bytes[start..cut]);
            start = cut;
        }
        pieces.push(&bytes[start..]);
        proptest::prop_assert_eq!(read_chunks(protocol, format, pieces), whole);
    }
    Ok(())
}
