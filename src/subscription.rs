//! Reads the subscription rate-limit headers into typed windows: Anthropic's unified headers
//! (`anthropic-ratelimit-unified-*`, sent to Claude subscription traffic: overall status, and per
//! window `5h`, `7d`, … the utilisation, when it resets, and its status) and Codex's plan windows
//! on ChatGPT-login traffic (`x-codex-primary-*` / `x-codex-secondary-*`: used percent, window
//! length in minutes, reset time), keyed the same way by the window's length.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const PREFIX: &str = "anthropic-ratelimit-unified-";
const CODEX_PREFIX: &str = "x-codex-";
/// Most windows kept from one answer; more would be headers nobody sends.
pub const MAX_WINDOWS: usize = 8;
const MAX_WINDOW_NAME_BYTES: usize = 16;
const MAX_STATUS_BYTES: usize = 32;

/// The unified headers of one answer.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionLimits {
    /// `anthropic-ratelimit-unified-status`: `allowed`, `allowed_warning`, `rejected`.
    pub status: Option<String>,
    /// By window name, as the headers spell it (`5h`, `7d`, `7d_opus`, …).
    pub windows: BTreeMap<String, Window>,
}

/// One rate-limit window of a subscription.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Share of the window used, as sent: 0.42 is 42 %; above 1 once the limit is passed.
    pub utilization: Option<f64>,
    /// When the window resets (RFC 3339, UTC).
    pub resets_at: Option<String>,
    pub status: Option<String>,
}

/// The unified headers among `headers` (names in any letter case), or `None` when there are
/// none. Values that do not parse are left out, never guessed.
pub fn parse<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<SubscriptionLimits> {
    let mut limits = SubscriptionLimits::default();
    let mut seen = false;
    let mut codex = [CodexWindow::default(), CodexWindow::default()];
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if let Some(rest) = name.strip_prefix(CODEX_PREFIX) {
            seen |= read_codex(&mut codex, rest, value.trim());
            continue;
        }
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        seen = true;
        let value = value.trim();
        if rest == "status" {
            limits.status = short(value);
            continue;
        }
        let Some((window, field)) = rest.split_once('-') else {
            continue;
        };
        if !is_window_name(window) {
            continue; // `overage-status`, `fallback-percentage`, `representative-claim`, …
        }
        if !limits.windows.contains_key(window) && limits.windows.len() == MAX_WINDOWS {
            continue;
        }
        let entry = limits.windows.entry(window.to_string()).or_default();
        match field {
            "utilization" => entry.utilization = utilization(value),
            "reset" => entry.resets_at = reset_time(value),
            "status" => entry.status = short(value),
            _ => {}
        }
    }
    for (family, window) in ["primary", "secondary"].into_iter().zip(codex) {
        if window.used_percent.is_none() {
            continue;
        }
        let name = window
            .minutes
            .map(window_length)
            .unwrap_or_else(|| family.to_string());
        limits.windows.insert(
            name,
            Window {
                utilization: window.used_percent.map(|percent| percent / 100.0),
                resets_at: window.resets_at,
                status: None,
            },
        );
    }
    seen.then_some(limits)
}

/// One of Codex's two plan windows, as its headers give it.
#[derive(Default)]
struct CodexWindow {
    used_percent: Option<f64>,
    minutes: Option<u64>,
    resets_at: Option<String>,
}

/// Reads `primary-used-percent`, `secondary-window-minutes`, `primary-reset-at`, … (the name
/// below `x-codex-`). Whether the name was one of them.
fn read_codex(windows: &mut [CodexWindow; 2], rest: &str, value: &str) -> bool {
    let (window, field) = if let Some(field) = rest.strip_prefix("primary-") {
        (&mut windows[0], field)
    } else if let Some(field) = rest.strip_prefix("secondary-") {
        (&mut windows[1], field)
    } else {
        return false;
    };
    match field {
        "used-percent" => window.used_percent = utilization(value),
        "window-minutes" => window.minutes = value.parse().ok().filter(|m| *m > 0),
        "reset-at" => window.resets_at = reset_time(value),
        _ => return false,
    }
    true
}

/// A window's name from its length, as Anthropic names theirs: `5h`, `7d`, or minutes.
fn window_length(minutes: u64) -> String {
    if minutes % 1440 == 0 {
        format!("{}d", minutes / 1440)
    } else if minutes % 60 == 0 {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// Most `sluice_subscription_utilization` series `/metrics` shows.
pub const MAX_UTILIZATION_SERIES: usize = 100;

/// One sample of `sluice_subscription_utilization{credential, window}`.
#[derive(Debug, Clone, PartialEq)]
pub struct UtilizationSample {
    /// The credential's fingerprint (the part of a `by_credential` key after the source).
    pub credential: String,
    pub window: String,
    pub utilization: f64,
}

/// The samples for `/metrics`, from each credential's latest limits with when they were seen
/// (any order where later is larger): the most recently seen credentials first, at most
/// [`MAX_UTILIZATION_SERIES`] series, never half a credential's windows.
pub fn utilization_samples<'a, Seen: Ord + 'a>(
    latest: impl IntoIterator<Item = (&'a str, Seen, &'a SubscriptionLimits)>,
) -> Vec<UtilizationSample> {
    let mut latest: Vec<_> = latest.into_iter().collect();
    latest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut samples = Vec::new();
    for (credential, _, limits) in latest {
        let fingerprint = credential.rsplit(':').next().unwrap_or(credential);
        let windows: Vec<_> = limits
            .windows
            .iter()
            .filter_map(|(name, window)| window.utilization.map(|u| (name, u)))
            .collect();
        if samples.len() + windows.len() > MAX_UTILIZATION_SERIES {
            break;
        }
        samples.extend(
            windows
                .into_iter()
                .map(|(window, utilization)| UtilizationSample {
                    credential: fingerprint.to_string(),
                    window: window.clone(),
                    utilization,
                }),
        );
    }
    samples
}

/// Window names are a length of time: digits, a unit, maybe a qualifier (`7d_opus`).
fn is_window_name(name: &str) -> bool {
    name.len() <= MAX_WINDOW_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn short(value: &str) -> Option<String> {
    (!value.is_empty() && value.len() <= MAX_STATUS_BYTES).then(|| value.to_string())
}

fn utilization(value: &str) -> Option<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|share| share.is_finite() && *share >= 0.0)
}

/// A reset time as unix seconds (what the API sends) or already as RFC 3339.
fn reset_time(value: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let time = match value.parse::<i64>() {
        Ok(seconds) => time::OffsetDateTime::from_unix_timestamp(seconds).ok()?,
        Err(_) => time::OffsetDateTime::parse(value, &Rfc3339)
            .ok()?
            .to_offset(time::UtcOffset::UTC),
    };
    time.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(sample: &str) -> Vec<(String, String)> {
        sample
            .lines()
            .skip(1)
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn parse_owned(headers: &[(String, String)]) -> Option<SubscriptionLimits> {
        parse(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    #[test]
    fn codex_plan_windows_are_keyed_by_their_length() {
        let headers = [
            ("X-Codex-Primary-Used-Percent", "42.5"),
            ("x-codex-primary-window-minutes", "300"),
            ("x-codex-primary-reset-at", "1795760000"),
            ("x-codex-secondary-used-percent", "7"),
            ("x-codex-secondary-window-minutes", "10080"),
            ("x-codex-turn-state", "ignored"),
        ];
        let limits = parse(headers).unwrap();
        assert_eq!(limits.status, None);
        assert_eq!(
            limits.windows["5h"],
            Window {
                utilization: Some(0.425),
                resets_at: Some("2026-11-27T06:13:20Z".into()),
                status: None,
            }
        );
        assert_eq!(limits.windows["7d"].utilization, Some(0.07));
        assert_eq!(limits.windows.len(), 2);
        assert!(parse([("x-codex-turn-state", "x")]).is_none());
        assert_eq!(window_length(90), "90m");
    }

    #[test]
    fn rate_limited_subscription_answer_gives_its_windows() {
        let sample = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/anthropic/ratelimit-429.headers"
        ))
        .unwrap();
        let limits = parse_owned(&headers_of(&sample)).unwrap();
        let expected = SubscriptionLimits {
            status: Some("rejected".into()),
            windows: BTreeMap::from([
                (
                    "5h".to_string(),
                    Window {
                        utilization: Some(1.01),
                        // 1795760000 s after the epoch.
                        resets_at: Some("2026-11-27T06:13:20Z".into()),
                        status: Some("rejected".into()),
                    },
                ),
                (
                    "7d".to_string(),
                    Window {
                        utilization: Some(0.63),
                        resets_at: Some("2026-12-02T08:26:40Z".into()),
                        status: Some("allowed".into()),
                    },
                ),
            ]),
        };
        assert_eq!(limits, expected);
        assert_eq!(
            serde_json::to_value(&limits).unwrap()["windows"]["7d"],
            serde_json::json!({"utilization": 0.63, "resets_at": "2026-12-02T08:26:40Z",
                "status": "allowed"})
        );
    }

    #[test]
    fn answers_without_unified_headers_have_no_subscription_limits() {
        let headers = [
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("retry-after", "7"),
        ];
        assert_eq!(parse(headers), None);
    }

    #[test]
    fn names_in_any_case_and_odd_values_are_handled() {
        let headers = [
            ("Anthropic-RateLimit-Unified-Status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-utilization", "nan"),
            (
                "anthropic-ratelimit-unified-5h-reset",
                "2026-11-27T10:00:00+02:00",
            ),
            ("anthropic-ratelimit-unified-7d-utilization", "-0.5"),
            ("anthropic-ratelimit-unified-7d-reset", "soon"),
            ("anthropic-ratelimit-unified-7d_opus-utilization", "0.125"),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
        ];
        let limits = parse(headers).unwrap();
        assert_eq!(limits.status.as_deref(), Some("allowed_warning"));
        let names: Vec<&str> = limits.windows.keys().map(String::as_str).collect();
        assert_eq!(names, ["5h", "7d", "7d_opus"]);
        assert_eq!(limits.windows["5h"].utilization, None);
        assert_eq!(
            limits.windows["5h"].resets_at.as_deref(),
            Some("2026-11-27T08:00:00Z")
        );
        assert_eq!(limits.windows["7d"], Window::default());
        assert_eq!(limits.windows["7d_opus"].utilization, Some(0.125));
    }

    #[test]
    fn windows_are_bounded() {
        let names: Vec<String> = (0..50)
            .map(|i| format!("anthropic-ratelimit-unified-{i}h-utilization"))
            .collect();
        let limits = parse(names.iter().map(|name| (name.as_str(), "0.5"))).unwrap();
        assert_eq!(limits.windows.len(), MAX_WINDOWS);
        let long = format!("anthropic-ratelimit-unified-{}-status", "9".repeat(40));
        let status = "x".repeat(100);
        let limits = parse([(long.as_str(), "allowed"), (PREFIX_STATUS, status.as_str())]).unwrap();
        assert!(limits.windows.is_empty());
        assert_eq!(limits.status, None);
    }

    #[test]
    fn utilization_series_take_the_most_recent_credentials_up_to_the_cap() {
        let limits = |five_hours: f64| {
            parse([
                (
                    "anthropic-ratelimit-unified-5h-utilization",
                    five_hours.to_string().as_str(),
                ),
                ("anthropic-ratelimit-unified-7d-utilization", "0.5"),
                ("anthropic-ratelimit-unified-7d-status", "allowed"),
            ])
            .unwrap()
        };
        let credentials: Vec<(String, String, SubscriptionLimits)> = (0..60)
            .map(|i| {
                (
                    format!("client_oauth:{i:012x}"),
                    format!("2026-11-27T10:{:02}:00Z", i % 60),
                    limits(f64::from(i) / 100.0),
                )
            })
            .collect();
        let samples = utilization_samples(
            credentials
                .iter()
                .map(|(key, seen, limits)| (key.as_str(), seen.as_str(), limits)),
        );
        // 50 credentials of 2 windows each; the newest (seen at 10:59) first.
        assert_eq!(samples.len(), MAX_UTILIZATION_SERIES);
        assert_eq!(
            samples[0],
            UtilizationSample {
                credential: format!("{:012x}", 59),
                window: "5h".into(),
                utilization: 0.59,
            }
        );
        assert_eq!(samples[1].window, "7d");
        assert!(samples
            .iter()
            .all(|s| s.credential != format!("{:012x}", 9)));
    }

    const PREFIX_STATUS: &str = "anthropic-ratelimit-unified-status";
}
