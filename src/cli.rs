//! The command line: `sluice [--settings FILE]`, `sluice check --settings FILE`, `sluice report …`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::logging::{self, LogFormat};
use crate::server;
use crate::settings::{EnvSource, Settings};
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
    match cli.command {
        Some(Command::Report(args)) => crate::report::main(
            args,
            Settings::load(cli.settings.as_deref(), &EnvSource::Process),
        ),
        Some(Command::Check) => crate::check::main(cli.settings.as_deref()),
        None => {
            logging::init(cli.log_format);
            // Every problem goes to the log once (and so stays one JSON line each with
            // `--log-format json`).
            let findings = crate::check::examine(cli.settings.as_deref(), &EnvSource::Process);
            for error in &findings.errors {
                tracing::error!("{error}");
            }
            let (Some(summary), Some((settings, material))) = (findings.summary, findings.loaded)
            else {
                return ExitCode::FAILURE;
            };
            for line in summary.lines() {
                tracing::info!("{line}");
            }
            // The resolver logs the material's own warnings when it takes the secrets.
            for warning in findings
                .warnings
                .iter()
                .filter(|w| !material.warnings.contains(w))
            {
                tracing::warn!("{warning}");
            }
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

fn serve(settings: Settings) -> std::io::Result<()> {
    actix_rt::System::new().block_on(async move {
        server::start(settings, Tuning::from_env())
            .await?
            .wait()
            .await
    })
}
