//! The command line: `sluice [--settings FILE]`, `sluice check --settings FILE`, `sluice report …`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::credentials::SecretMaterial;
use crate::logging::{self, LogFormat};
use crate::server;
use crate::settings::{EnvSource, Settings, SettingsError};
use crate::state::Tuning;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A metering pass-through proxy for LLM APIs"
)]
pub struct Cli {
    /// Settings file (default: settings/sluice.toml when it exists, else built-in defaults).
    #[arg(long, env = "SLUICE_SETTINGS", global = true)]
    pub settings: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the settings: print a summary and exit 0, or the error and exit 1.
    Check,
    /// Usage history as a table (or /usage's JSON/CSV), from a running sluice or the store.
    Report(crate::report::ReportArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = load(cli.settings.as_deref());
    match cli.command {
        Some(Command::Report(args)) => crate::report::main(
            args,
            Settings::load(cli.settings.as_deref(), &EnvSource::Process),
        ),
        Some(Command::Check) => match settings {
            Ok((_, summary)) => {
                // A reader that stopped early (`sluice check | head -1`) is no failure.
                let _ = writeln!(std::io::stdout().lock(), "ok: {summary}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        None => {
            logging::init(cli.log_format);
            let settings = match settings {
                Ok((settings, summary)) => {
                    for line in summary.lines() {
                        tracing::info!("{line}");
                    }
                    settings
                }
                Err(err) => {
                    tracing::error!("{err}");
                    eprintln!("error: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match serve(settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The settings and the secrets they name, checked as a start would check them, with the
/// summary `check` prints and a start logs.
fn load(path: Option<&std::path::Path>) -> Result<(Settings, String), SettingsError> {
    let settings = Settings::load(path, &EnvSource::Process)?;
    let material = SecretMaterial::read(&settings, &EnvSource::Process)?;
    material.refuse_open_relay(&settings)?;
    let summary = format!("{}\n{}", settings.summary(), material.summary(&settings));
    Ok((settings, summary))
}

fn serve(settings: Settings) -> std::io::Result<()> {
    actix_rt::System::new().block_on(async move {
        server::start(settings, Tuning::from_env())
            .await?
            .wait()
            .await
    })
}
