//! The `/usage` query a report sends, and the dates people type on the command line.

use super::ReportError;

/// A `/usage` `group_by` dimension that reports use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    Day,
    Week,
    Month,
    Block,
    Session,
    Caller,
    Model,
    Project,
    Provider,
    Client,
}

impl Dimension {
    /// Its name in `group_by` and as the column key of `/usage` rows.
    pub fn key(self) -> &'static str {
        match self {
            Dimension::Day => "day",
            Dimension::Week => "week",
            Dimension::Month => "month",
            Dimension::Block => "block",
            Dimension::Session => "session",
            Dimension::Caller => "caller",
            Dimension::Model => "model",
            Dimension::Project => "project",
            Dimension::Provider => "provider",
            Dimension::Client => "client",
        }
    }

    /// Periods read in time order; everything else busiest first.
    pub fn is_period(self) -> bool {
        matches!(
            self,
            Dimension::Day | Dimension::Week | Dimension::Month | Dimension::Block
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageFormat {
    Json,
    Csv,
}

/// What a report asks of `/usage` (and of the store, which answers the same query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    pub group_by: Vec<Dimension>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub tz: Option<String>,
}

impl UsageQuery {
    /// The query string after `/usage?`, values percent-encoded.
    pub fn to_query_string(&self, format: UsageFormat) -> String {
        let group_by: Vec<&str> = self.group_by.iter().map(|d| d.key()).collect();
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        pairs.append_pair("group_by", &group_by.join(","));
        if let Some(since) = &self.since {
            pairs.append_pair("since", since);
        }
        if let Some(until) = &self.until {
            pairs.append_pair("until", until);
        }
        if let Some(tz) = &self.tz {
            pairs.append_pair("tz", tz);
        }
        pairs.append_pair(
            "format",
            match format {
                UsageFormat::Json => "json",
                UsageFormat::Csv => "csv",
            },
        );
        pairs.finish()
    }
}

/// Accepts what people type for `--since`/`--until` and gives the form `/usage` takes:
/// `2026-11-27` and ccusage's `20261127` become `2026-11-27` (midnight in the query's zone);
/// RFC 3339 times and `30m`/`5h`/`7d` pass through unchanged.
pub fn parse_date(text: &str) -> Result<String, ReportError> {
    let text = text.trim();
    let bad = || ReportError::BadDate(text.to_string());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if text.len() == 8 && digits(text) {
        let (y, rest) = text.split_at(4);
        let (m, d) = rest.split_at(2);
        return checked_date(y, m, d).ok_or_else(bad);
    }
    if text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-' {
        return checked_date(&text[0..4], &text[5..7], &text[8..10]).ok_or_else(bad);
    }
    if let Some(amount) = text
        .strip_suffix('m')
        .or_else(|| text.strip_suffix('h'))
        .or_else(|| text.strip_suffix('d'))
    {
        return if digits(amount) {
            Ok(text.to_string())
        } else {
            Err(bad())
        };
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|_| text.to_string())
        .map_err(|_| bad())
}

fn checked_date(y: &str, m: &str, d: &str) -> Option<String> {
    let year: i32 = y.parse().ok()?;
    let month: u8 = m.parse().ok()?;
    let day: u8 = d.parse().ok()?;
    let month = time::Month::try_from(month).ok()?;
    time::Date::from_calendar_date(year, month, day).ok()?;
    Some(format!("{y}-{m}-{d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_people_type_become_what_usage_takes() {
        assert_eq!(parse_date("20261127").unwrap(), "2026-11-27");
        assert_eq!(parse_date("2026-11-27").unwrap(), "2026-11-27");
        assert_eq!(parse_date("7d").unwrap(), "7d");
        assert_eq!(parse_date("30m").unwrap(), "30m");
        assert_eq!(
            parse_date("2026-11-27T10:00:00+01:00").unwrap(),
            "2026-11-27T10:00:00+01:00"
        );
    }

    #[test]
    fn impossible_dates_are_refused() {
        for text in [
            "20261332",
            "2026-02-30",
            "yesterday",
            "d",
            "7w",
            "2026-11-27T25:00:00Z",
        ] {
            assert!(
                matches!(parse_date(text), Err(ReportError::BadDate(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn query_string_lists_dimensions_and_encodes_values() {
        let query = UsageQuery {
            group_by: vec![Dimension::Day, Dimension::Model],
            since: Some("2026-11-27T10:00:00+01:00".into()),
            until: None,
            tz: Some("Europe/Berlin".into()),
        };
        assert_eq!(
            query.to_query_string(UsageFormat::Csv),
            "group_by=day%2Cmodel&since=2026-11-27T10%3A00%3A00%2B01%3A00&tz=Europe%2FBerlin&format=csv"
        );
    }
}
