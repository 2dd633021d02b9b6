//! Text that came from clients (model, caller, project names) made safe to print on a terminal
//! or open in a spreadsheet: control and bidi characters escaped, CSV formulas defused. Every
//! printer (log lines, `sluice report` tables, CSV, JSON) goes through [`escape`] or its JSON
//! form, so a name cannot set a window title, write the clipboard (OSC 52), clear the screen,
//! return the cursor (CR) or reorder what is shown (bidi overrides).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls and DEL, the Unicode line
/// and paragraph separators, and the bidi controls (marks, embeddings, overrides, isolates).
pub fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character of [`must_escape`] written as Rust writes it in a string literal
/// (`\n`, `\t`, `\r`, `\u{1b}`, `\u{202e}`); the rest kept. Borrowed when nothing needed it.
pub fn escape(text: &str) -> Cow<'_, str> {
    // Printable ASCII, what nearly every logged value is, needs no character-by-character look.
    if is_printable_ascii(text.as_bytes()) || !text.contains(must_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Whether every byte of `text` is printable ASCII (space to `~`), looked at eight at a time.
fn is_printable_ascii(text: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte below 0x20 borrows and keeps its high bit clear; 0x7f carries into it; a byte
        // from 0x80 has it. A borrow or carry across bytes only comes from such a byte itself.
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS;
        let del_or_beyond_ascii = (word.wrapping_add(ONES) | word) & HIGH_BITS;
        if control | del_or_beyond_ascii != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| (b' '..=b'~').contains(b))
}

fn push_escaped(out: &mut String, c: char) {
    if must_escape(c) {
        let _ = write!(out, "{}", c.escape_default());
    } else {
        out.push(c);
    }
}

/// Writes through to `W` what [`escape`] would make of it (for `Display` and `Debug` output).
pub struct Escaped<W>(pub W);

impl<W: std::fmt::Write> std::fmt::Write for Escaped<W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.write_str(&escape(text))
    }
}

/// Lines of text (a CSV document already written, a message of several lines) made safe to
/// print: every line escaped on its own, the line breaks kept.
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && must_escape(c)) {
        return Cow::Borrowed(text);
    }
    let lines: Vec<Cow<str>> = text.split('\n').map(escape).collect();
    Cow::Owned(lines.join("\n"))
}

/// A JSON text with every character of [`must_escape`] inside its strings written as a `\uXXXX`
/// escape: the same JSON data, safe to print. Whitespace between values (`\n`, `\r`, `\t`) is
/// kept; anything else outside strings (never in valid JSON) is escaped too.
pub fn escape_json_text(json: &str) -> Cow<'_, str> {
    if !json.contains(|c: char| must_escape(c) && !matches!(c, '\n' | '\r' | '\t')) {
        // Valid JSON holds no raw control characters inside strings, so only whitespace is left.
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut in_string = false;
    let mut after_backslash = false;
    for c in json.chars() {
        if in_string {
            if after_backslash {
                after_backslash = false;
            } else if c == '\\' {
                after_backslash = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        let whitespace = !in_string && matches!(c, '\n' | '\r' | '\t');
        if must_escape(c) && !whitespace {
            // Every character of must_escape is in the Basic Multilingual Plane: one escape.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
            // An escape always stands for a whole character, never the end of another escape.
            after_backslash = false;
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether a spreadsheet would read `text` as a formula: it starts with `=`, `+`, `-` or `@`,
/// also after leading spaces, tabs or line breaks (which spreadsheets drop), or with a tab or CR.
pub fn looks_like_formula(text: &str) -> bool {
    text.starts_with(['\t', '\r'])
        || text
            .trim_start_matches([' ', '\t', '\r', '\n'])
            .starts_with(['=', '+', '-', '@'])
}

/// One CSV field: escaped as [`escape`] does, a would-be formula defused with a leading `'`, and
/// quoted when it holds `,` or `"` (or was defused).
pub fn csv_field(text: &str) -> String {
    let escaped = escape(text);
    let defused = looks_like_formula(text);
    if defused || escaped.contains([',', '"']) {
        let quote = if defused { "'" } else { "" };
        format!("\"{quote}{}\"", escaped.replace('"', "\"\""))
    } else {
        escaped.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\u{1b}]0;title\u{7}b\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J\rc\u{9b}31m\
                           \u{1b}]8;;http://x\u{1b}\\link\u{202e}d\u{2066}e\u{200f}f\u{85}";

    #[test]
    fn terminal_escapes_and_bidi_controls_are_escaped_and_the_rest_kept() {
        let out = escape(HOSTILE);
        assert!(!out.contains(must_escape), "{out:?}");
        assert_eq!(
            out,
            "a\\u{1b}]0;title\\u{7}b\\u{1b}]52;c;ZXZpbA==\\u{7}\\u{1b}[2J\\rc\\u{9b}31m\
             \\u{1b}]8;;http://x\\u{1b}\\link\\u{202e}d\\u{2066}e\\u{200f}f\\u{85}"
        );
        assert!(matches!(
            escape("claude-sonnet-4-5 é 日本"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn printable_ascii_is_told_from_every_other_byte_at_every_place() {
        let printable = |text: &[u8]| text.iter().all(|b| (b' '..=b'~').contains(b));
        for len in 1..=17 {
            for at in 0..len {
                for byte in 0..=u8::MAX {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    for neighbour in [b' ', b'~', b'a'] {
                        if at + 1 < len {
                            text[at + 1] = neighbour;
                        }
                        if at > 0 {
                            text[at - 1] = neighbour;
                        }
                        assert_eq!(
                            is_printable_ascii(&text),
                            printable(&text),
                            "{len} {at} {byte:#x}"
                        );
                    }
                }
            }
        }
        // Mixes of the bytes at the edges, where a borrow or carry could cross bytes.
        let edges = [0x00, 0x1f, 0x20, 0x21, 0x7e, 0x7f, 0x80, 0xff, b'a'];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            let text: Vec<u8> = (0..16)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    edges[(state % 64) as usize % edges.len()]
                })
                .collect();
            assert_eq!(is_printable_ascii(&text), printable(&text), "{text:?}");
        }
    }

    #[test]
    fn escaped_json_is_the_same_data_with_no_control_or_bidi_character() {
        let value = serde_json::json!({"model": HOSTILE, "n": [1, "\\\"\u{202e}"]});
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = escape_json_text(&text);
        assert!(
            !safe.contains(|c: char| must_escape(c) && c != '\n'),
            "{safe:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
        let plain = serde_json::to_string(&serde_json::json!({"m": "claude"})).unwrap();
        assert!(matches!(escape_json_text(&plain), Cow::Borrowed(_)));
    }

    #[test]
    fn csv_formulas_are_defused_also_after_leading_whitespace() {
        assert_eq!(csv_field("claude"), "claude");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "\"'=cmd()\"");
        assert_eq!(csv_field(" =cmd()"), "\"' =cmd()\"");
        assert_eq!(csv_field("\t=cmd()"), "\"'\\t=cmd()\"");
        assert_eq!(csv_field("\r+1"), "\"'\\r+1\"");
        assert_eq!(csv_field("\n@SUM(A1)"), "\"'\\n@SUM(A1)\"");
        assert_eq!(csv_field("\tplain"), "\"'\\tplain\"");
        assert_eq!(csv_field("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
    }

    #[test]
    fn printed_csv_keeps_its_lines_and_escapes_the_rest() {
        let csv = "model,requests\nx\u{1b}]0;t\u{7},1\n";
        assert_eq!(escape_lines(csv), "model,requests\nx\\u{1b}]0;t\\u{7},1\n");
    }
}
