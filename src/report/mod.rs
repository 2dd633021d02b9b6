//! `sluice report`: usage history as tables for people, read from a running sluice's `/usage`
//! or straight from the store, printed like ccusage's daily/monthly/blocks tables.

mod query;
mod source;
mod table;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

pub use query::{parse_date, Dimension, UsageFormat, UsageQuery};
pub use source::{default_url, HttpSource, StoreSource, UsageSource};
pub use table::{render_table, TableStyle, UsageDoc};

use crate::settings::{EnvSource, Settings, SettingsError};

/// What one `sluice report …` line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    Daily,
    Weekly,
    Monthly,
    Blocks,
    Sessions,
    Callers,
    Models,
    Projects,
    Providers,
    Clients,
}

impl ReportKind {
    /// The `/usage` dimension each line of the table stands for.
    pub fn dimension(self) -> Dimension {
        match self {
            ReportKind::Daily => Dimension::Day,
            ReportKind::Weekly => Dimension::Week,
            ReportKind::Monthly => Dimension::Month,
            ReportKind::Blocks => Dimension::Block,
            ReportKind::Sessions => Dimension::Session,
            ReportKind::Callers => Dimension::Caller,
            ReportKind::Models => Dimension::Model,
            ReportKind::Projects => Dimension::Project,
            ReportKind::Providers => Dimension::Provider,
            ReportKind::Clients => Dimension::Client,
        }
    }
}

/// The second dimension a report may be split by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Breakdown {
    Model,
    Caller,
    Project,
    /// The route's protocol: anthropic, openai, gemini, none.
    Provider,
    /// The agent or SDK that sent the request: claude-code, codex, openai-sdk-python, …
    Client,
}

impl Breakdown {
    fn dimension(self) -> Dimension {
        match self {
            Breakdown::Model => Dimension::Model,
            Breakdown::Caller => Dimension::Caller,
            Breakdown::Project => Dimension::Project,
            Breakdown::Provider => Dimension::Provider,
            Breakdown::Client => Dimension::Client,
        }
    }
}

/// `sluice report` on the command line.
#[derive(Clone, Debug, clap::Args)]
pub struct ReportArgs {
    /// Which table: one line per day, week, month, 5-hour block, session, caller, model, project,
    /// provider or client.
    #[arg(value_enum)]
    pub kind: ReportKind,
    /// Only requests that finished at or after this: 2026-11-27, 20261127, an RFC 3339 time, or 30m/5h/7d ago.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only requests that finished before this (same forms as --since).
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Split every line by model, caller, project, provider or client (one line per pair).
    #[arg(long, value_enum)]
    pub by: Option<Breakdown>,
    /// Print `/usage`'s JSON as it is.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print `/usage`'s CSV as it is.
    #[arg(long)]
    pub csv: bool,
    /// A running sluice (default: http:// and the settings' `listen`).
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub url: Option<String>,
    /// Read this SQLite store file instead of asking a running sluice.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

impl ReportArgs {
    /// The `/usage` query this report needs.
    pub fn query(&self) -> Result<UsageQuery, ReportError> {
        let since = self.since.as_deref().map(parse_date).transpose()?;
        let until = self.until.as_deref().map(parse_date).transpose()?;
        Ok(UsageQuery {
            group_by: group_by(self.kind, self.by),
            since,
            until,
            tz: local_time_zone(),
        })
    }

    fn format(&self) -> Option<UsageFormat> {
        if self.json {
            Some(UsageFormat::Json)
        } else if self.csv {
            Some(UsageFormat::Csv)
        } else {
            None
        }
    }
}

/// The dimensions asked of `/usage`: the report's own, then the breakdown (by default the models
/// used, listed in the table like ccusage does), never the same one twice.
pub fn group_by(kind: ReportKind, by: Option<Breakdown>) -> Vec<Dimension> {
    let first = kind.dimension();
    let second = by.map(Breakdown::dimension).unwrap_or(Dimension::Model);
    if second == first {
        vec![first]
    } else {
        vec![first, second]
    }
}

/// The IANA zone of this machine when `TZ` names one, so days start at local midnight as in
/// ccusage; otherwise `/usage` uses its own default.
fn local_time_zone() -> Option<String> {
    let tz = std::env::var("TZ").ok()?;
    let tz = tz.trim_start_matches(':');
    let looks_iana = tz.contains('/') || tz == "UTC";
    (looks_iana && !tz.starts_with('/')).then(|| tz.to_string())
}

/// Why a report could not be printed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "sluice is not running at {url} (connection refused); start it, or pass --url or --db"
    )]
    NotRunning { url: String },
    #[error("could not reach sluice at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("sluice at {url} wants the admin token (401); set the env var named by [admin] token_env (SLUICE_ADMIN_TOKEN by default)")]
    TokenMissing { url: String },
    #[error("sluice at {url} refused the admin token (401); check the env var named by [admin] token_env (SLUICE_ADMIN_TOKEN by default)")]
    TokenRefused { url: String },
    #[error("sluice at {url} has no /usage (404); it is older than this `sluice report`")]
    NoUsageEndpoint { url: String },
    #[error("sluice at {url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the answer from {origin} is not /usage JSON: {detail}")]
    BadAnswer { origin: String, detail: String },
    #[error("no database at {0} (is [store] path set, and has sluice run with it?)")]
    NoDatabase(PathBuf),
    #[error("reading {path}: {detail}")]
    StoreQuery { path: PathBuf, detail: String },
    #[error("{0:?} is not a date: use 2026-11-27, 20261127, an RFC 3339 time, or 30m/5h/7d")]
    BadDate(String),
    #[error("settings: {0}")]
    Settings(#[from] SettingsError),
    #[error("could not write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Fetches what `args` asks for from `source` and writes it to `out`: `/usage`'s own JSON or
/// CSV, or a table.
pub fn run(
    args: &ReportArgs,
    source: &dyn UsageSource,
    out: &mut dyn Write,
    style: TableStyle,
) -> Result<(), ReportError> {
    let query = args.query()?;
    match args.format() {
        Some(format) => {
            let body = source.fetch(&query, format)?;
            // The same data, with nothing in it that a terminal would act on (an older or
            // foreign sluice may not have escaped it).
            let body = match format {
                UsageFormat::Json => crate::printable::escape_json_text(&body),
                UsageFormat::Csv => crate::printable::escape_lines(&body),
            };
            out.write_all(body.as_bytes())?;
            if !body.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        None => {
            let body = source.fetch(&query, UsageFormat::Json)?;
            let doc = UsageDoc::parse(&body).map_err(|detail| ReportError::BadAnswer {
                origin: source.describe(),
                detail,
            })?;
            let text = render_table(args.kind, args.by, &doc, style);
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

/// `sluice report …`: picks the source from the flags and settings, prints, and exits 1 with a
/// one-line reason when anything is missing.
pub fn main(args: ReportArgs, settings: Result<Settings, SettingsError>) -> ExitCode {
    match source_for(&args, settings).and_then(|source| {
        let stdout = std::io::stdout();
        let style = if stdout.is_terminal() {
            TableStyle::terminal()
        } else {
            TableStyle::plain()
        }
        .at(time::OffsetDateTime::now_utc());
        run(&args, source.as_ref(), &mut stdout.lock(), style)
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // An error may quote what the server answered.
            eprintln!(
                "error: {}",
                crate::printable::escape_lines(&err.to_string())
            );
            ExitCode::FAILURE
        }
    }
}

fn source_for(
    args: &ReportArgs,
    settings: Result<Settings, SettingsError>,
) -> Result<Box<dyn UsageSource>, ReportError> {
    if let Some(path) = &args.db {
        return Ok(Box::new(StoreSource::open(path)?));
    }
    // With an explicit URL the settings only lend the token, so a broken settings file does
    // not stop a report about another machine.
    let settings = match (&args.url, settings) {
        (_, Ok(settings)) => Some(settings),
        (Some(_), Err(_)) => None,
        (None, Err(err)) => return Err(err.into()),
    };
    let url = match (&args.url, &settings) {
        (Some(url), _) => url.clone(),
        (None, Some(settings)) => default_url(settings.listen),
        (None, None) => unreachable!("settings errors returned above"),
    };
    let token = settings.as_ref().and_then(admin_token);
    Ok(Box::new(HttpSource::new(&url, token)))
}

/// The admin token the way the server itself reads it, so a token from a file works too; when
/// other secret material cannot be read, still the token's own env var.
fn admin_token(settings: &Settings) -> Option<String> {
    let material = crate::credentials::SecretMaterial::read(settings, &EnvSource::Process).ok();
    match material {
        Some(material) => material.admin_token.map(|t| t.expose().to_string()),
        None => std::env::var(&settings.admin_token_env).ok(),
    }
}

#[cfg(test)]
mod tests;
