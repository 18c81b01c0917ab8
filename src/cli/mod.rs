//! The command line: `ledger serve` and (later) the offline commands.
//! Configuration, start-up and shutdown live here; `anyhow` only at this edge.

pub mod config;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ledger", version, about = "An event-sourced booking ledger that makes duplicate side effects impossible.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: CommandLine,
}

#[derive(Debug, Subcommand)]
pub enum CommandLine {
    /// Serve the HTTP API of shared/API.md.
    Serve {
        /// A TOML configuration file (tokens, limits, rules).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory [default: data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// The address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<String>,
    },
}

/// Exit codes: 0 clean, 1 a runtime failure, 2 a configuration mistake.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        CommandLine::Serve { config, data, listen } => {
            let config = match config::Config::load(config.as_deref(), data, listen) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("ledger: configuration error: {error}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
            let clock = Arc::new(crate::writer::SystemClock);
            match runtime.block_on(serve::serve(config, clock, serve::signals(), |_| {})) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    eprintln!("ledger: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
