//! The command line: `orchestrator [-config FILE] [serve | validate FILE... | migrate | health]`,
//! and the client subcommands of [`crate::client`] (`apply`, `run`, `logs`, …).
//!
//! Go-style single-dash `-config` is accepted beside `--config`. `validate` checks
//! definition files offline with the same validator the server uses.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::actions::Registry;
use crate::client::{ClientCommand, ClientOptions};
use crate::config::Config;
use crate::definition::schema::SchemaError;
use crate::definition::{Validator, parse_document};
use crate::outbound::HttpClient;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "A declarative workflow runtime"
)]
pub struct Cli {
    /// The configuration file (default: config.yaml).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; serving is the default.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server.
    Serve,
    /// Validate workflow definition files (JSON or YAML); exit 1 when any is invalid.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Apply store migrations and exit.
    Migrate,
    /// Probe a running server's /health (for container health checks); exit 1 unless it
    /// answers 200.
    Health {
        /// The URL to probe (default: /health at server.host and server.port).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Evaluate heavy templates for a server (started by the server itself).
    #[command(hide = true)]
    Sandbox {
        #[arg(long)]
        fuel: u64,
        #[arg(long)]
        max_bytes: usize,
        #[arg(long)]
        memory_bytes: u64,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "config.yaml";

/// Rewrites Go-style `-config x` / `-config=x` into `--config`.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-config") => OsString::from("--config"),
            Some(s) if s.starts_with("-config=") => OsString::from(format!("-{s}")),
            _ => a,
        })
        .collect()
}

impl Cli {
    /// The configuration to use: the named file, else `config.yaml`; commands other than
    /// `serve` fall back to defaults when no file was named and `config.yaml` is absent.
    pub fn load_config(&self, required: bool) -> Result<Config, crate::config::ConfigError> {
        match &self.config {
            Some(path) => Config::load(path),
            None if required || Path::new(DEFAULT_CONFIG).exists() => {
                Config::load(Path::new(DEFAULT_CONFIG))
            }
            None => Config::defaults(),
        }
    }
}

/// The validator a server with `config` would use (its actions never call out here).
pub fn validator(config: &Config) -> Result<Validator, CliError> {
    let client = HttpClient::new().map_err(CliError::Client)?;
    let actions = Registry::new(&config.services, client);
    Ok(crate::app::validator(config, &actions)?)
}

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] crate::outbound::ClientError),
    #[error("workflow schema {0}")]
    Schema(#[from] SchemaError),
}

/// Validates each file, printing one line per file and one per violation; true when all
/// are valid.
pub fn validate_files(
    validator: &Validator,
    files: &[PathBuf],
    out: &mut impl std::io::Write,
) -> std::io::Result<bool> {
    let mut all_valid = true;
    for file in files {
        let yaml = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let result = std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                parse_document(&bytes, yaml)
                    .and_then(|doc| validator.validate(&doc).map(|_| ()))
                    .map_err(|invalid| {
                        let mut text = invalid.title().to_owned();
                        for v in &invalid.violations {
                            let pointer = if v.pointer.is_empty() {
                                "/"
                            } else {
                                &v.pointer
                            };
                            text.push_str(&format!("\n  {pointer}: {}", v.message));
                        }
                        text
                    })
            });
        match result {
            Ok(()) => writeln!(out, "{}: valid", file.display())?,
            Err(text) => {
                all_valid = false;
                writeln!(out, "{}: {text}", file.display())?;
            }
        }
    }
    Ok(all_valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_config_flags_become_long_flags() {
        let args = normalize_args(["orchestrator", "-config", "x.yaml"].map(OsString::from));
        let cli = Cli::try_parse_from(args).unwrap();
        assert_eq!(cli.config.as_deref(), Some(Path::new("x.yaml")));
        let args = normalize_args(
            ["orchestrator", "-config=y.yaml", "validate", "a.json"].map(OsString::from),
        );
        let cli = Cli::try_parse_from(args).unwrap();
        assert_eq!(cli.config.as_deref(), Some(Path::new("y.yaml")));
        assert!(matches!(cli.command, Some(Command::Validate { .. })));
    }
}
