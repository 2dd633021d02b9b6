//! How the rest of sluice uses the store: its options from `[store]` settings, and the sink that
//! turns each finished request into a row.

use std::path::Path;

use super::{
    resolve_path, RateLimitLog, StoreError, StoreHandle, StoreOptions, StoreRow, Target, Text,
};
use crate::metrics::stats::RateLimitState;
use crate::metrics::{Finished, Sink};
use crate::settings::{StoreLocation, StoreSettings};

/// How long an in-memory store (`path = ""`) keeps rows: as long as `?since=` windows reached
/// before there was a store, so that memory stays bounded by the request rate.
pub const MEMORY_RETENTION_DAYS: u32 = 8;

/// The store's options from settings (`path = ""`: an in-memory database). `env` looks up
/// environment variables (`STATE_DIRECTORY`, `url_env`); a relative `url_file` is read under
/// `secrets_dir`, as every secret file is (see [`crate::secrets::base_dir`]). The URL is a
/// secret: it is never logged.
pub fn options_from_settings(
    settings: &StoreSettings,
    env: impl Fn(&str) -> Option<String>,
    secrets_dir: &Path,
) -> Result<Option<StoreOptions>, StoreError> {
    let target = match &settings.location {
        StoreLocation::Memory => {
            let mut options = StoreOptions::new(Target::memory());
            options.retention_days = settings.retention_days.min(MEMORY_RETENTION_DAYS);
            return Ok(Some(options));
        }
        StoreLocation::Sqlite(path) => {
            Target::Sqlite(resolve_path(path, env("STATE_DIRECTORY").as_deref()))
        }
        StoreLocation::PostgresEnv(name) => {
            let url =
                env(name)
                    .filter(|u| !u.trim().is_empty())
                    .ok_or_else(|| StoreError::Open {
                        what: format!("the PostgreSQL URL in ${name}"),
                        reason: "the variable is unset or empty".into(),
                    })?;
            Target::Postgres(url.trim().to_string())
        }
        StoreLocation::PostgresFile(path) => {
            Target::Postgres(read_url_file(&crate::secrets::resolve(secrets_dir, path))?)
        }
    };
    let mut options = StoreOptions::new(target);
    options.retention_days = settings.retention_days;
    Ok(Some(options))
}

fn read_url_file(path: &Path) -> Result<String, StoreError> {
    let open_error = |reason: String| StoreError::Open {
        what: format!("the PostgreSQL URL in {}", path.display()),
        reason,
    };
    match crate::secrets::read_secret_file(path).map_err(open_error)? {
        Some(url) if !url.expose().trim().is_empty() => Ok(url.expose().trim().to_string()),
        _ => Err(open_error("the file is empty".into())),
    }
}

/// The row of one finished request. `instance` names this sluice.
pub fn row_of(finished: &Finished, instance: &str) -> StoreRow {
    row_after(finished, &Text::from(instance), None)
}

fn or_empty(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

/// As [`row_of`], with every text that `previous` has too shared with it rather than copied.
fn row_after(finished: &Finished, instance: &Text, previous: Option<&StoreRow>) -> StoreRow {
    let text = |column: fn(&StoreRow) -> &Text, value: &str| match previous.map(column) {
        Some(same) if **same == *value => same.clone(),
        _ => Text::from(value),
    };
    let record = &finished.record;
    let usage = &record.usage;
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    // The split of cache writes, when the answer gives it; without one they are 5-minute writes.
    let cache_1h = usage.cache_creation_1h_input_tokens.unwrap_or(0);
    let cache_5m = usage.cache_creation_input_tokens.saturating_sub(cache_1h);
    StoreRow {
        finished_ms: super::unix_ms(record.finished_at),
        instance: instance.clone(),
        route: text(|r| &r.route, &record.route),
        method: text(|r| &r.method, &record.method),
        status: record.status,
        outcome: text(|r| &r.outcome, record.outcome.as_str()),
        streamed: record.streamed,
        model: text(|r| &r.model, or_empty(&record.model)),
        source: text(
            |r| &r.source,
            record.source.map(|s| s.as_str()).unwrap_or_default(),
        ),
        credential: text(|r| &r.credential, or_empty(&record.credential)),
        caller: text(|r| &r.caller, or_empty(&record.caller)),
        session: text(|r| &r.session, or_empty(&record.session)),
        agent: text(|r| &r.agent, or_empty(&record.agent)),
        parent_agent: text(|r| &r.parent_agent, or_empty(&record.parent_agent)),
        project: text(|r| &r.project, or_empty(&record.project)),
        provider: text(|r| &r.provider, record.provider.unwrap_or_default()),
        client: text(|r| &r.client, record.client.unwrap_or_default()),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_write_5m_tokens: cache_5m,
        cache_write_1h_tokens: cache_1h,
        cache_read_tokens: usage.cache_read_input_tokens,
        web_search_requests: usage.web_search_requests,
        reasoning_output_tokens: usage.reasoning_output_tokens,
        usage_missing: record.usage_missing,
        cost_usd: finished.cost.unwrap_or(0.0),
        ttfb_ms: record.ttfb.map(ms),
        total_ms: ms(record.total),
        overhead_ms: record.overhead.map(ms),
    }
}

/// The MetricsAggregator's sink into the store: hands each batch to the writer (never waits on
/// the database).
pub struct StoreSink {
    store: StoreHandle,
    instance: Text,
    /// The last row handed over, whose texts the next batch's first row may share.
    last: Option<StoreRow>,
    rate_limits: Option<RateLimitLog>,
}

impl StoreSink {
    pub fn new(store: StoreHandle, instance: String) -> Self {
        Self {
            store,
            instance: instance.into(),
            last: None,
            rate_limits: None,
        }
    }

    /// Also hands each answer's rate-limit state to `log`.
    pub fn with_rate_limits(mut self, log: Option<RateLimitLog>) -> Self {
        self.rate_limits = log;
        self
    }
}

impl Sink for StoreSink {
    fn accept(&mut self, batch: &[Finished]) {
        let mut rows: Vec<StoreRow> = Vec::with_capacity(batch.len());
        for finished in batch {
            let row = row_after(finished, &self.instance, rows.last().or(self.last.as_ref()));
            rows.push(row);
        }
        self.last = rows.last().cloned();
        self.store.submit(rows);
        if let Some(log) = &self.rate_limits {
            for finished in batch {
                let record = &finished.record;
                let Some(state) = RateLimitState::of_record(record) else {
                    continue;
                };
                if let Ok(json) = serde_json::to_string(&state) {
                    let credential = record.credential.as_deref().unwrap_or("none");
                    log.set(credential, super::unix_ms(record.finished_at), json);
                }
            }
        }
    }
}

/// This sluice's name in the rows it writes: host name, listening address and process id (two
/// processes on one host, even with the same address setting, never share it).
pub fn instance_name(listen: &std::net::SocketAddr) -> String {
    format!("{}/{listen}/{}", host_name(), std::process::id())
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "sluice".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialSource;
    use crate::metrics::{Outcome, RequestRecord};
    use crate::usage::Usage;
    use std::path::PathBuf;
    use std::time::{Duration, UNIX_EPOCH};

    fn settings(location: StoreLocation) -> StoreSettings {
        StoreSettings {
            location,
            retention_days: 30,
        }
    }

    #[test]
    fn options_follow_the_settings() {
        let env = |name: &str| match name {
            "STATE_DIRECTORY" => Some("/var/lib/sluice".to_string()),
            "STORE_URL" => Some(" postgresql://u:p@db/x \n".to_string()),
            _ => None,
        };
        let memory = options_from_settings(&settings(StoreLocation::Memory), env, Path::new("/"))
            .unwrap()
            .unwrap();
        assert!(matches!(memory.target, Target::Memory(_)));
        assert_eq!(memory.retention_days, MEMORY_RETENTION_DAYS);
        let sqlite = options_from_settings(
            &settings(StoreLocation::Sqlite(PathBuf::from("sluice.db"))),
            env,
            Path::new("/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            sqlite.target,
            Target::Sqlite(PathBuf::from("/var/lib/sluice/sluice.db"))
        );
        assert_eq!(sqlite.retention_days, 30);
        let pg = options_from_settings(
            &settings(StoreLocation::PostgresEnv("STORE_URL".into())),
            env,
            Path::new("/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(pg.target, Target::Postgres("postgresql://u:p@db/x".into()));
        let missing = options_from_settings(
            &settings(StoreLocation::PostgresEnv("NOPE".into())),
            env,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(missing.to_string().contains("$NOPE"), "{missing}");
    }

    #[test]
    fn the_url_file_is_read_like_every_secret_file() {
        use std::os::unix::fs::PermissionsExt;
        let secrets = tempfile::tempdir().unwrap();
        let file = secrets.path().join("store-url");
        std::fs::write(&file, "postgresql://u:hunter2@db/x\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let from_file = settings(StoreLocation::PostgresFile(PathBuf::from("store-url")));
        // Relative to the secrets directory, not the working directory; the newline dropped.
        let pg = options_from_settings(&from_file, |_| None, secrets.path())
            .unwrap()
            .unwrap();
        assert_eq!(
            pg.target,
            Target::Postgres("postgresql://u:hunter2@db/x".into())
        );
        let elsewhere = tempfile::tempdir().unwrap();
        let err = options_from_settings(&from_file, |_| None, elsewhere.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("store-url") && !text.contains("hunter2"),
            "{text}"
        );
        std::fs::write(&file, "\n").unwrap();
        let err = options_from_settings(&from_file, |_| None, secrets.path()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn store_settings_are_validated_with_the_key_named() {
        let env = crate::settings::EnvSource::Fixed(Default::default());
        let parse = |text: &str| {
            let text = format!("[[routes]]\nprefix = \"/a\"\nupstream = \"http://x\"\n{text}");
            crate::settings::Settings::from_toml(&text, "test", &env)
        };
        let defaults = parse("").unwrap();
        assert_eq!(
            defaults.store,
            settings(StoreLocation::Sqlite(PathBuf::from("state/sluice.db"))).with_days(400)
        );
        let memory = parse("[store]\npath = \"\"").unwrap();
        assert_eq!(memory.store.location, StoreLocation::Memory);
        let pg = parse("[store]\nurl_env = \"SLUICE_STORE_URL\"").unwrap();
        assert_eq!(
            pg.store.location,
            StoreLocation::PostgresEnv("SLUICE_STORE_URL".into())
        );
        for (text, key) in [
            (
                "[store]\nurl_env = \"A\"\nurl_file = \"b\"",
                "store.url_env",
            ),
            ("[store]\nretention_days = 0", "store.retention_days"),
            ("[store]\ncolour = 1", "colour"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    impl StoreSettings {
        fn with_days(mut self, days: u32) -> Self {
            self.retention_days = days;
            self
        }
    }

    #[test]
    fn a_record_becomes_a_row_without_secrets() {
        let finished = Finished {
            record: RequestRecord {
                request_id: "req-1".into(),
                finished_at: UNIX_EPOCH + Duration::from_millis(1_795_773_600_123),
                route: "/anthropic".into(),
                method: "POST".into(),
                path: "/anthropic/v1/messages".into(),
                status: 200,
                model: Some("claude-sonnet-4-5".into()),
                source: Some(CredentialSource::ClientOauth),
                credential: Some("client_oauth:3fa29c1b4d5e".into()),
                session: Some("s-1".into()),
                agent: Some("agent-7".into()),
                parent_agent: Some("agent-1".into()),
                project: Some("sluice".into()),
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cache_creation_input_tokens: 300,
                    cache_read_input_tokens: 7,
                    cache_creation_5m_input_tokens: Some(100),
                    cache_creation_1h_input_tokens: Some(200),
                    web_search_requests: 2,
                    ..Usage::default()
                },
                streamed: true,
                outcome: Outcome::ClientGone,
                ttfb: Some(Duration::from_millis(250)),
                total: Duration::from_millis(1500),
                rate_limits: vec![("retry-after".into(), "7".into())],
                ..RequestRecord::default()
            },
            cost: Some(0.25),
        };
        let row = row_of(&finished, "host/127.0.0.1:4080");
        assert_eq!(row.finished_ms, 1_795_773_600_123);
        assert_eq!(row.source, "client_oauth");
        assert_eq!(row.outcome, "client_gone");
        assert!(row.is_incomplete());
        assert_eq!(
            (row.cache_write_5m_tokens, row.cache_write_1h_tokens),
            (100, 200)
        );
        assert_eq!(row.caller, "");
        assert_eq!(
            (
                row.agent.as_str(),
                row.parent_agent.as_str(),
                row.project.as_str()
            ),
            ("agent-7", "agent-1", "sluice")
        );
        assert_eq!(row.web_search_requests, 2);
        assert_eq!(
            (row.ttfb_ms, row.total_ms, row.overhead_ms),
            (Some(250), 1500, None)
        );
        assert_eq!(row.cost_usd, 0.25);

        // The next row shares the texts that did not change and has its own for the rest.
        let mut next = finished;
        next.record.model = Some("claude-opus-4-1".into());
        next.record.outcome = Outcome::Completed;
        let instance = Text::from("host/127.0.0.1:4080");
        let next_row = row_after(&next, &instance, Some(&row));
        let same = |a: &Text, b: &Text| std::ptr::eq(a.as_str(), b.as_str());
        assert!(same(&next_row.route, &row.route) && same(&next_row.agent, &row.agent));
        assert!(same(&next_row.caller, &row.caller) && same(&next_row.source, &row.source));
        assert_eq!(
            (next_row.model.as_str(), row.model.as_str()),
            ("claude-opus-4-1", "claude-sonnet-4-5")
        );
        assert_eq!(
            (next_row.outcome.as_str(), row.outcome.as_str()),
            ("completed", "client_gone")
        );
        assert_eq!(next_row, row_of(&next, "host/127.0.0.1:4080"));
    }
}
