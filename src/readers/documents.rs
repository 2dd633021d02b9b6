//! A JSON body read as the documents it holds: one top-level value (an answer), or each
//! element of a top-level array (Google's streamed JSON, `[{…}\r\n,\r\n{…}]`, as REST
//! streaming sends it without `alt=sse`). Each document streams through a [`JsonPruner`] cut
//! down to the keys its handler reads and is handed over as it ends, so that a body of any
//! size and any number of documents is read holding one document's kept keys.

use super::pruned::{JsonPruner, Kept, MAX_PRUNED_BYTES};

/// What the protocol does with the documents of a JSON body.
pub trait DocumentHandler {
    /// One document cut down to the kept keys: `whole` unless the body was cut short inside
    /// it (then the kept values that ended, in their objects closed).
    fn on_document(&mut self, document: &[u8], whole: bool);
    /// The top-level value closed (`true`), or bytes followed it after all (`false`).
    fn on_end(&mut self, complete: bool);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    BeforeBody,
    /// Reading the body's one document.
    Single,
    /// Just inside the top-level array: an element or its close.
    FirstElement,
    /// Reading an element.
    Element,
    /// After an element: a comma or the array's close.
    AfterElement,
    /// After a comma: the next element.
    NextElement,
    /// The top-level value ended.
    Done,
    /// Broken, or bytes after the end: nothing more is read.
    Unreadable,
}

/// Reads a JSON body's documents, whatever the split of its bytes. Memory: one pruner (its
/// copy at most [`MAX_PRUNED_BYTES`]).
#[derive(Debug)]
pub struct JsonDocumentsReader {
    phase: Phase,
    pruner: JsonPruner,
}

impl JsonDocumentsReader {
    /// A reader keeping `kept` of each document.
    pub fn new(kept: &'static [Kept]) -> Self {
        Self {
            phase: Phase::BeforeBody,
            pruner: JsonPruner::new(kept, MAX_PRUNED_BYTES),
        }
    }

    pub fn feed(&mut self, bytes: &[u8], handler: &mut impl DocumentHandler) {
        let mut at = 0;
        while at < bytes.len() {
            let byte = bytes[at];
            if self.phase == Phase::Unreadable {
                return;
            }
            if matches!(self.phase, Phase::Single | Phase::Element) {
                at += self.pruner.feed_document(&bytes[at..]);
                self.after_document(handler);
                continue;
            }
            at += 1;
            if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                continue;
            }
            self.phase = match (self.phase, byte) {
                (Phase::BeforeBody, b'[') => Phase::FirstElement,
                (Phase::FirstElement | Phase::AfterElement, b']') => {
                    handler.on_end(true);
                    Phase::Done
                }
                (Phase::AfterElement, b',') => Phase::NextElement,
                (Phase::BeforeBody | Phase::FirstElement | Phase::NextElement, _) => {
                    at -= 1; // the document's first byte: the pruner reads it
                    if self.phase == Phase::BeforeBody {
                        Phase::Single
                    } else {
                        Phase::Element
                    }
                }
                (Phase::Done, _) => {
                    handler.on_end(false); // trailing bytes: not one JSON value after all
                    Phase::Unreadable
                }
                _ => Phase::Unreadable,
            };
        }
    }

    /// The pruner read what it could of the bytes: hand over the document if it ended.
    fn after_document(&mut self, handler: &mut impl DocumentHandler) {
        if self.pruner.is_unreadable() {
            self.phase = Phase::Unreadable;
        } else if self.pruner.is_done() {
            if let Some(document) = self.pruner.pruned() {
                handler.on_document(document, true);
            }
            self.pruner.reset();
            self.phase = if self.phase == Phase::Single {
                handler.on_end(true);
                Phase::Done
            } else {
                Phase::AfterElement
            };
        }
    }

    /// The body ended, whole or cut: a document cut short gives what of it ended.
    pub fn finish(&mut self, handler: &mut impl DocumentHandler) {
        if matches!(self.phase, Phase::Single | Phase::Element) {
            if let Some(so_far) = self.pruner.pruned_so_far() {
                handler.on_document(&so_far, false);
            }
        }
        self.phase = Phase::Unreadable;
    }

    pub fn held_bytes(&self) -> usize {
        self.pruner.held_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEPT: &[Kept] = &[Kept::value("n")];

    #[derive(Default, Debug, PartialEq)]
    struct Seen {
        documents: Vec<(String, bool)>,
        ends: Vec<bool>,
    }

    impl DocumentHandler for Seen {
        fn on_document(&mut self, document: &[u8], whole: bool) {
            let document = String::from_utf8(document.to_vec()).unwrap();
            self.documents.push((document, whole));
        }
        fn on_end(&mut self, complete: bool) {
            self.ends.push(complete);
        }
    }

    fn read<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Seen {
        let mut reader = JsonDocumentsReader::new(KEPT);
        let mut seen = Seen::default();
        for chunk in chunks {
            reader.feed(chunk, &mut seen);
        }
        reader.finish(&mut seen);
        seen
    }

    fn whole(documents: &[&str], ends: &[bool]) -> Seen {
        Seen {
            documents: documents.iter().map(|d| (d.to_string(), true)).collect(),
            ends: ends.to_vec(),
        }
    }

    #[test]
    fn one_object_or_each_element_of_an_array_is_a_document_at_any_split() {
        let cases: [(&[u8], Seen); 4] = [
            (
                br#" {"x":[{"n":0}],"n":1} "#,
                whole(&[r#"{"n":1}"#], &[true]),
            ),
            (
                b"[{\r\n  \"n\": 1,\"s\":\"]},{\"\r\n}\r\n,\r\n{\"n\":[2]}\r\n]",
                whole(&[r#"{"n":1}"#, r#"{"n":[2]}"#], &[true]),
            ),
            (b" [ ] ", whole(&[], &[true])),
            (
                br#"[{"n":1},"s",3,{"m":0}]"#,
                whole(&[r#"{"n":1}"#, r#""s""#, "3", "{}"], &[true]),
            ),
        ];
        for (body, expected) in cases {
            let shown = String::from_utf8_lossy(body);
            assert_eq!(read([body]), expected, "{shown}");
            assert_eq!(read(body.chunks(1)), expected, "{shown} byte by byte");
            for cut in 0..=body.len() {
                let (first, second) = body.split_at(cut);
                assert_eq!(read([first, second]), expected, "{shown} cut at {cut}");
            }
        }
    }

    #[test]
    fn bytes_after_the_value_make_it_incomplete_and_broken_bodies_stop() {
        assert_eq!(
            read([&br#"{"n":1} x"#[..]]),
            whole(&[r#"{"n":1}"#], &[true, false])
        );
        assert_eq!(
            read([&br#"[{"n":1}] ["#[..]]),
            whole(&[r#"{"n":1}"#], &[true, false])
        );
        for body in [
            &br#"[{"n":1} {"n":2}]"#[..],
            br#"[{"n":1},,]"#,
            br#"[{"n":}]"#,
        ] {
            let seen = read([body]);
            assert!(seen.ends.is_empty(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_body_cut_inside_a_document_gives_what_of_it_ended() {
        let seen = read([&br#"[{"n":1},{"n":2,"x":"unfini"#[..]]);
        assert_eq!(
            seen.documents,
            [
                (r#"{"n":1}"#.to_string(), true),
                (r#"{"n":2}"#.to_string(), false)
            ]
        );
        assert!(seen.ends.is_empty());
    }
}
