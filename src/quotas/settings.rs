//! `[[quotas]]` as written in the settings file, validated into [`Quota`]s, and which requests
//! (and which subject within the quota) each one applies to.

use std::borrow::Cow;
use std::collections::HashSet;

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::window::{usd_to_nanos, Window};

/// One `[[quotas]]` entry as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaFile {
    pub name: String,
    #[serde(default)]
    pub caller: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub max_usd: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_requests: Option<u64>,
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_mode() -> String {
    "enforce".into()
}

/// A quota setting that is wrong, with the key that is wrong (`quotas[0].window`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSettingsError {
    pub key: String,
    pub reason: String,
}

/// What a request is, for deciding which quotas and subjects it falls under.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSubjects<'a> {
    /// The access key's name.
    pub caller: Option<&'a str>,
    /// The route's prefix.
    pub route: Option<&'a str>,
    pub model: Option<&'a str>,
    /// The credential source (`client_oauth`, `server_key`, …).
    pub source: Option<&'a str>,
    pub project: Option<&'a str>,
    /// The route's protocol (`anthropic`, `openai`, `gemini`, `none`).
    pub provider: Option<&'a str>,
    /// The agent or SDK that sent the request (`claude-code`, `codex`, …).
    pub client: Option<&'a str>,
}

/// Which values of one request attribute a quota applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Not set: the attribute plays no part.
    Any,
    /// `"*"`: each value separately (each is its own subject); requests without a value are
    /// outside the quota.
    Each,
    /// This value only (for `model`, every model whose name starts with it).
    Exactly(String),
}

impl Selector {
    fn parse(value: &Option<String>) -> Selector {
        match value.as_deref() {
            None => Selector::Any,
            Some("*") => Selector::Each,
            Some(value) => Selector::Exactly(value.to_string()),
        }
    }
}

/// Limits of a quota; at least one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub usd_nanos: Option<u64>,
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
    pub concurrent: Option<u64>,
}

impl Limits {
    /// A limit that spend within a window counts against (all but `concurrent`).
    pub fn has_window_limit(&self) -> bool {
        self.usd_nanos.is_some() || self.tokens.is_some() || self.requests.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    /// Never refuses; counts (and logs) what it would have refused.
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// A validated quota.
#[derive(Debug, Clone)]
pub struct Quota {
    pub name: String,
    pub caller: Selector,
    pub route: Selector,
    pub model: Selector,
    pub source: Selector,
    pub project: Selector,
    pub provider: Selector,
    pub client: Selector,
    /// `None` when the quota only limits concurrency.
    pub window: Option<Window>,
    pub timezone: TimeZone,
    /// The time zone's name as written.
    pub timezone_name: String,
    pub limits: Limits,
    pub mode: Mode,
    /// The subject when the quota has no `"*"` selector: its fixed values, or "everyone".
    fixed_subject: String,
}

/// The subject of a quota that has no `"*"` selector: everyone it applies to, together.
const EVERYONE: &str = "everyone";
/// Separates the values of several `"*"` selectors in a subject's key; header values never
/// contain it, so two different requests cannot share a key by accident.
const KEY_SEPARATOR: char = '\n';

impl Quota {
    /// The subject within this quota that the request counts against, or `None` when the
    /// quota does not apply to it.
    pub fn subject_of<'a>(&'a self, request: &RequestSubjects<'a>) -> Option<Cow<'a, str>> {
        let attributes = [
            (&self.caller, request.caller, false),
            (&self.route, request.route, false),
            (&self.model, request.model, true),
            (&self.source, request.source, false),
            (&self.project, request.project, false),
            (&self.provider, request.provider, false),
            (&self.client, request.client, false),
        ];
        let mut key: Option<Cow<'a, str>> = None;
        for (selector, value, by_prefix) in attributes {
            match selector {
                Selector::Any => {}
                Selector::Exactly(wanted) => {
                    let value = value?;
                    let matches = if by_prefix {
                        value.starts_with(wanted.as_str())
                    } else {
                        value == wanted
                    };
                    if !matches {
                        return None;
                    }
                }
                Selector::Each => {
                    let value = value?;
                    key = Some(match key {
                        None => Cow::Borrowed(value),
                        Some(so_far) => Cow::Owned(format!("{so_far}{KEY_SEPARATOR}{value}")),
                    });
                }
            }
        }
        Some(key.unwrap_or(Cow::Borrowed(self.fixed_subject.as_str())))
    }

    /// Whether admission needs the request's model (read from the start of its body).
    pub fn needs_model(&self) -> bool {
        self.model != Selector::Any
    }

    /// Spend survives a reload when the quota still counts the same things over the same
    /// windows: same name, window, time zone and selectors (limits and mode may change).
    pub fn counts_like(&self, other: &Quota) -> bool {
        self.name == other.name
            && self.window == other.window
            && self.timezone_name == other.timezone_name
            && self.caller == other.caller
            && self.route == other.route
            && self.model == other.model
            && self.source == other.source
            && self.project == other.project
            && self.provider == other.provider
            && self.client == other.client
    }
}

/// A subject's key as shown to people: several `"*"` values joined by " / ".
pub fn display_subject(key: &str) -> Cow<'_, str> {
    if key.contains(KEY_SEPARATOR) {
        Cow::Owned(key.replace(KEY_SEPARATOR, " / "))
    } else {
        Cow::Borrowed(key)
    }
}

/// Credential sources a `source` selector may name.
const SOURCES: [&str; 5] = [
    "client_api_key",
    "client_oauth",
    "client_bearer",
    "server_key",
    "none",
];

/// Providers a `provider` selector may name: the routes' protocols.
const PROVIDERS: [&str; 4] = ["anthropic", "openai", "gemini", "none"];

/// Validates `[[quotas]]`; `route_prefixes` are the configured routes' prefixes.
pub fn validate(
    raw: &[QuotaFile],
    route_prefixes: &[&str],
) -> Result<Vec<Quota>, QuotaSettingsError> {
    let mut names = HashSet::new();
    let mut quotas = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let key = |field: &str| format!("quotas[{i}].{field}");
        let invalid = |field: &str, reason: String| QuotaSettingsError {
            key: key(field),
            reason,
        };
        // The name goes into a response header and a metrics label: keep it plain.
        let plain = !entry.name.is_empty()
            && entry.name.len() <= 64
            && entry
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !plain {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                    entry.name
                ),
            ));
        }
        if !names.insert(entry.name.as_str()) {
            return Err(invalid(
                "name",
                format!("{:?} is used by another quota", entry.name),
            ));
        }
        for (field, value) in [
            ("caller", &entry.caller),
            ("route", &entry.route),
            ("model", &entry.model),
            ("source", &entry.source),
            ("project", &entry.project),
            ("provider", &entry.provider),
            ("client", &entry.client),
        ] {
            if value.as_deref() == Some("") {
                return Err(invalid(
                    field,
                    "must not be empty (leave it out to apply to every value)".into(),
                ));
            }
        }
        if let Some(route) = entry.route.as_deref().filter(|r| *r != "*") {
            if !route_prefixes.contains(&route) {
                return Err(invalid(
                    "route",
                    format!(
                        "{route:?} is not the prefix of a route (routes: {})",
                        route_prefixes.join(", ")
                    ),
                ));
            }
        }
        if let Some(source) = entry.source.as_deref().filter(|s| *s != "*") {
            if !SOURCES.contains(&source) {
                return Err(invalid(
                    "source",
                    format!("{source:?} is not \"*\" or one of {}", SOURCES.join(", ")),
                ));
            }
        }
        for (field, value, known) in [
            ("provider", &entry.provider, &PROVIDERS[..]),
            (
                "client",
                &entry.client,
                &crate::attribution::client::CLIENTS[..],
            ),
        ] {
            if let Some(value) = value.as_deref().filter(|v| *v != "*") {
                if !known.contains(&value) {
                    return Err(invalid(
                        field,
                        format!("{value:?} is not \"*\" or one of {}", known.join(", ")),
                    ));
                }
            }
        }

        let usd_nanos = match entry.max_usd {
            None => None,
            Some(usd) if usd.is_finite() && usd > 0.0 => Some(usd_to_nanos(usd)),
            Some(usd) => {
                return Err(invalid(
                    "max_usd",
                    format!("{usd} must be a number greater than 0"),
                ))
            }
        };
        for (field, value) in [
            ("max_tokens", entry.max_tokens),
            ("max_requests", entry.max_requests),
            ("max_concurrent", entry.max_concurrent),
        ] {
            if value == Some(0) {
                return Err(invalid(field, "must be greater than 0".into()));
            }
        }
        let limits = Limits {
            usd_nanos,
            tokens: entry.max_tokens,
            requests: entry.max_requests,
            concurrent: entry.max_concurrent,
        };
        if !limits.has_window_limit() && limits.concurrent.is_none() {
            return Err(QuotaSettingsError {
                key: format!("quotas[{i}]"),
                reason: "needs at least one of max_usd, max_tokens, max_requests, \
                         max_concurrent"
                    .into(),
            });
        }

        let window = match &entry.window {
            Some(text) => Some(Window::parse(text).map_err(|reason| invalid("window", reason))?),
            None if limits.has_window_limit() => {
                return Err(invalid(
                    "window",
                    "is required with max_usd, max_tokens or max_requests \
                     (\"5h\", \"day\", \"week\", \"month\", or \"1h\"..\"30d\")"
                        .into(),
                ))
            }
            None => None,
        };
        let timezone = TimeZone::get(&entry.timezone).map_err(|_| {
            invalid(
                "timezone",
                format!(
                    "{:?} is not an IANA time zone (like \"UTC\" or \"Europe/Berlin\")",
                    entry.timezone
                ),
            )
        })?;
        let mode = match entry.mode.as_str() {
            "enforce" => Mode::Enforce,
            "shadow" => Mode::Shadow,
            other => {
                return Err(invalid(
                    "mode",
                    format!("{other:?} is not \"enforce\" or \"shadow\""),
                ))
            }
        };

        let selectors = [
            &entry.caller,
            &entry.route,
            &entry.model,
            &entry.source,
            &entry.project,
            &entry.provider,
            &entry.client,
        ];
        let fixed: Vec<&str> = selectors
            .iter()
            .filter_map(|value| value.as_deref().filter(|v| *v != "*"))
            .collect();
        let fixed_subject = if fixed.is_empty() {
            EVERYONE.to_string()
        } else {
            fixed.join(" / ")
        };
        quotas.push(Quota {
            name: entry.name.clone(),
            caller: Selector::parse(&entry.caller),
            route: Selector::parse(&entry.route),
            model: Selector::parse(&entry.model),
            source: Selector::parse(&entry.source),
            project: Selector::parse(&entry.project),
            provider: Selector::parse(&entry.provider),
            client: Selector::parse(&entry.client),
            fixed_subject,
            window,
            timezone,
            timezone_name: entry.timezone.clone(),
            limits,
            mode,
        });
    }
    Ok(quotas)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Quotas from a TOML fragment of `[[quotas]]` tables, for tests.
    pub(crate) fn quotas(toml_text: &str) -> Result<Vec<Quota>, QuotaSettingsError> {
        #[derive(Deserialize)]
        struct Wrapper {
            quotas: Vec<QuotaFile>,
        }
        let wrapper: Wrapper = config::Config::builder()
            .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| QuotaSettingsError {
                key: "parse".into(),
                reason: e.to_string(),
            })?;
        validate(&wrapper.quotas, &["/anthropic"])
    }

    fn error_key(toml_text: &str) -> String {
        quotas(toml_text).expect_err("should be refused").key
    }

    #[test]
    fn the_documented_example_is_valid() {
        let q = quotas(
            r#"
            [[quotas]]
            name = "daily-per-person"
            caller = "*"
            window = "day"
            timezone = "UTC"
            max_usd = 20
            max_tokens = 5000000
            max_requests = 2000
            max_concurrent = 4
            mode = "enforce"
            "#,
        )
        .unwrap();
        assert_eq!(q[0].caller, Selector::Each);
        assert_eq!(q[0].window, Some(Window::Day));
        assert_eq!(q[0].limits.usd_nanos, Some(20_000_000_000));
        assert_eq!(q[0].limits.concurrent, Some(4));
        assert_eq!(q[0].mode, Mode::Enforce);
    }

    #[test]
    fn wrong_values_are_refused_by_key() {
        let q = |body: &str| format!("[[quotas]]\nname = \"q\"\n{body}\n");
        assert_eq!(
            error_key(&q("window = \"2w\"\nmax_usd = 1")),
            "quotas[0].window"
        );
        assert_eq!(error_key(&q("max_usd = 1")), "quotas[0].window");
        assert_eq!(error_key(&q("window = \"day\"")), "quotas[0]");
        assert_eq!(
            error_key(&q(
                "window = \"day\"\nmax_usd = 1\ntimezone = \"Mars/Olympus\""
            )),
            "quotas[0].timezone"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 0")),
            "quotas[0].max_concurrent"
        );
        assert_eq!(
            error_key(&q("window = \"day\"\nmax_usd = -2")),
            "quotas[0].max_usd"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 1\nmode = \"warn\"")),
            "quotas[0].mode"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 1\nroute = \"/openai\"")),
            "quotas[0].route"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 1\nsource = \"oauth\"")),
            "quotas[0].source"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 1\nproject = \"\"")),
            "quotas[0].project"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 1\nprovider = \"azure\"")),
            "quotas[0].provider"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 1\nclient = \"Claude Code\"")),
            "quotas[0].client"
        );
        assert_eq!(
            error_key(&q("max_concurrent = 1\nclient = \"\"")),
            "quotas[0].client"
        );
        let twice = format!("{}{}", q("max_concurrent = 1"), q("max_concurrent = 2"));
        assert_eq!(error_key(&twice), "quotas[1].name");
        assert_eq!(
            error_key("[[quotas]]\nname = \"a b\"\nmax_concurrent = 1\n"),
            "quotas[0].name"
        );
        let unknown = quotas(&q("max_concurrent = 1\nmax_dollars = 3")).unwrap_err();
        assert!(unknown.reason.contains("max_dollars"), "{unknown:?}");
    }

    #[test]
    fn provider_and_client_select_like_the_other_attributes() {
        let q = quotas(
            r#"
            [[quotas]]
            name = "openai-spend"
            provider = "openai"
            max_concurrent = 1
            [[quotas]]
            name = "per-client"
            client = "*"
            max_concurrent = 1
            [[quotas]]
            name = "codex-per-caller"
            caller = "*"
            client = "codex"
            max_concurrent = 1
            "#,
        )
        .unwrap();
        let codex = RequestSubjects {
            caller: Some("alice"),
            provider: Some("openai"),
            client: Some("codex"),
            ..Default::default()
        };
        let claude_code = RequestSubjects {
            caller: Some("alice"),
            provider: Some("anthropic"),
            client: Some("claude-code"),
            ..Default::default()
        };
        let subject = |i: usize, r: &RequestSubjects| q[i].subject_of(r).map(|s| s.into_owned());
        assert_eq!(subject(0, &codex).as_deref(), Some("openai"));
        assert_eq!(subject(0, &claude_code), None);
        assert_eq!(subject(1, &codex).as_deref(), Some("codex"));
        assert_eq!(subject(1, &claude_code).as_deref(), Some("claude-code"));
        assert_eq!(
            subject(1, &RequestSubjects::default()),
            None,
            "a request that names no client is outside a per-client quota"
        );
        assert_eq!(subject(2, &codex).as_deref(), Some("alice"));
        assert_eq!(subject(2, &claude_code), None);
        // Changing what a quota selects starts its spend afresh.
        let mut other = q[0].clone();
        other.provider = Selector::Exactly("gemini".into());
        assert!(!q[0].counts_like(&other));
        let mut other = q[1].clone();
        other.client = Selector::Any;
        assert!(!q[1].counts_like(&other));
    }

    #[test]
    fn concurrency_only_quota_needs_no_window() {
        let q = quotas("[[quotas]]\nname = \"c\"\ncaller = \"*\"\nmax_concurrent = 2\n").unwrap();
        assert_eq!(q[0].window, None);
    }

    #[test]
    fn subjects_follow_the_selectors() {
        let q = quotas(
            r#"
            [[quotas]]
            name = "each-caller"
            caller = "*"
            max_concurrent = 1
            [[quotas]]
            name = "alice-opus"
            caller = "alice"
            model = "claude-opus"
            max_concurrent = 1
            [[quotas]]
            name = "per-caller-project"
            caller = "*"
            project = "*"
            max_concurrent = 1
            [[quotas]]
            name = "all"
            max_concurrent = 1
            "#,
        )
        .unwrap();
        let alice_opus = RequestSubjects {
            caller: Some("alice"),
            model: Some("claude-opus-4-5"),
            project: Some("atlas"),
            ..Default::default()
        };
        let bob_sonnet = RequestSubjects {
            caller: Some("bob"),
            model: Some("claude-sonnet-4-5"),
            ..Default::default()
        };
        let subject = |i: usize, r: &RequestSubjects| q[i].subject_of(r).map(|s| s.into_owned());
        assert_eq!(subject(0, &alice_opus).as_deref(), Some("alice"));
        assert_eq!(subject(0, &bob_sonnet).as_deref(), Some("bob"));
        assert_eq!(
            subject(0, &RequestSubjects::default()),
            None,
            "no caller, outside a per-caller quota"
        );
        assert_eq!(
            subject(1, &alice_opus).as_deref(),
            Some("alice / claude-opus")
        );
        assert_eq!(subject(1, &bob_sonnet), None);
        assert_eq!(
            subject(2, &alice_opus)
                .as_deref()
                .map(display_subject)
                .as_deref(),
            Some("alice / atlas")
        );
        assert_eq!(subject(2, &bob_sonnet), None, "no project");
        assert_eq!(subject(3, &bob_sonnet).as_deref(), Some("everyone"));
        assert!(q[1].needs_model() && !q[0].needs_model());
    }
}
