//! The headers every export carries (a backend's API key), read from `[otlp] headers_file`: a
//! secret file, one `name: value` a line. Their values never reach `Debug`, a log line or JSON.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

/// Headers for the collector; `Debug` shows their names only.
#[derive(Clone, Default, PartialEq)]
pub struct OtlpHeaders(Arc<Vec<(HeaderName, HeaderValue)>>);

impl fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Headers the exporter sets itself: a file may not replace them.
const OWN_HEADERS: [&str; 4] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
];

impl OtlpHeaders {
    /// Reads the file's text: blank lines and lines starting with `#` are skipped. An error
    /// names the line by its number, never its value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut headers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = i + 1;
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("line {number} is not `name: value`"));
            };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("line {number}: the name is not a header name"))?;
            if OWN_HEADERS.contains(&name.as_str()) {
                return Err(format!(
                    "line {number}: {name} is set by sluice, not by this file"
                ));
            }
            let mut value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("line {number}: the value is not a header value"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(Self(Arc::new(headers)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.0.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_headers_and_values_stay_out_of_debug() {
        let headers = OtlpHeaders::parse(
            "# Honeycomb\nx-honeycomb-team: hc-secret-value\n\nAuthorization: Bearer abc:def\n",
        )
        .unwrap();
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("x-honeycomb-team", b"hc-secret-value".as_slice()),
                ("authorization", b"Bearer abc:def".as_slice()),
            ]
        );
        let debug = format!("{headers:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("abc"),
            "{debug}"
        );
        assert!(debug.contains("x-honeycomb-team"), "{debug}");
    }

    #[test]
    fn a_bad_line_is_named_by_number_without_its_value() {
        let err = OtlpHeaders::parse("a: 1\nno-colon-secret-value\n").unwrap_err();
        assert_eq!(err, "line 2 is not `name: value`");
        let err = OtlpHeaders::parse("bad name: x\n").unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
        let err = OtlpHeaders::parse("content-type: text/plain\n").unwrap_err();
        assert!(err.contains("set by sluice"), "{err}");
        let err = OtlpHeaders::parse("x: secret\u{7f}value\n").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
