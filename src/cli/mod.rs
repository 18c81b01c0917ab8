//! The command line: `ledger serve` and the offline commands (`replay`,
//! `export`, `slots`, `rejections`, `audit`, `verify`, `snapshot`, `backup`), and `token new`.
//! Configuration, start-up and shutdown live here; `anyhow` only at this edge.
//! The offline commands that only read open the data directory read-only
//! ([`open_read_only`]): they create nothing in it, so they work on an
//! evidence copy nobody may write.

pub mod audit;
pub mod backup;
pub mod reindex;
pub mod rejections;
pub mod replay;
pub mod serve;
pub mod slots;
pub mod snapshot;
pub mod token;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ledger", version, about = "An event-sourced booking ledger that makes duplicate side effects impossible.")]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one JSON object a line) for log collectors.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: CommandLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Print the ledger as a timeline, one line per event (offline).
    Replay(replay::ReplayArgs),
    /// Re-derive the ledger's invariants from its raw events; exit 1 listing any violation (offline).
    Audit(audit::AuditArgs),
    /// Check every record's checksum and the hash chain, the journals and the snapshots; exit 1 at the first bad record or any bad snapshot (offline).
    Verify(verify::VerifyArgs),
    /// Print a clinic's slots on a date, now or as of a position, as a table (offline).
    Slots(slots::SlotsArgs),
    /// Print every event as JSON lines (offline).
    Export(replay::ExportArgs),
    /// Print the rejection journal: every refused command, who sent it and what it hit (offline).
    Rejections(rejections::RejectionsArgs),
    /// Copy a data directory consistently, even while a server runs on it (no lock taken; `ledger verify` checks the copy).
    Backup(backup::BackupArgs),
    /// Write a snapshot of the state at the ledger's last position, which the next start loads (offline).
    Snapshot(snapshot::SnapshotArgs),
    /// Rebuild the closed-day store (closed.redb) from the ledger (offline).
    Reindex(reindex::ReindexArgs),
    /// Tokens for the config file: `ledger token new --name N --tenants a,b --role client`.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Exit codes: 0 clean, 1 a runtime failure, 2 a configuration mistake.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    // A failure is said once: as a log line where stderr is JSON, else as one plain line.
    let failed = |what: &str, error: &dyn std::fmt::Display| match cli.log_format {
        LogFormat::Json => tracing::error!("{what}{error}"),
        LogFormat::Text => eprintln!("ledger: {what}{error}"),
    };
    match cli.command {
        CommandLine::Serve { config, data, listen } => {
            let config = match crate::config::Config::load(config.as_deref(), data, listen) {
                Ok(config) => config,
                Err(error) => {
                    failed("configuration error: ", &error);
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
            let clock = Arc::new(crate::writer::SystemClock);
            match runtime.block_on(serve::serve(config, clock, serve::signals(), |_| {})) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    failed("", &format_args!("{error:#}"));
                    ExitCode::from(1)
                }
            }
        }
        CommandLine::Replay(args) => offline(replay::replay(&args)),
        CommandLine::Audit(args) => offline(audit::run(&args)),
        CommandLine::Verify(args) => offline(verify::run(&args)),
        CommandLine::Slots(args) => offline(slots::run(&args)),
        CommandLine::Export(args) => offline(replay::export(&args)),
        CommandLine::Rejections(args) => offline(rejections::run(&args)),
        CommandLine::Snapshot(args) => offline(snapshot::run(&args)),
        CommandLine::Reindex(args) => offline(reindex::run(&args)),
        CommandLine::Token(command) => match token::run(&command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("ledger: {error:#}");
                ExitCode::from(2)
            }
        },
        CommandLine::Backup(args) => offline(backup::run(&args)),
    }
}

/// The exit code of an offline command: 0 clean, 1 a finding (what it found is
/// already printed) or a failure (a data directory a server holds, say).
fn offline(result: anyhow::Result<Finding>) -> std::process::ExitCode {
    use std::process::ExitCode;
    match result {
        Ok(Finding::Clean) => ExitCode::SUCCESS,
        Ok(Finding::Found) => ExitCode::from(1),
        Err(error) => {
            eprintln!("ledger: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs an offline check on a copy of every partition of a cluster, each
/// under a `partition N` heading; a stream that cannot be read is a finding.
#[cfg(feature = "cluster")]
fn for_each_partition(
    cluster: &crate::cluster::ClusterConfig,
    options: crate::log::FileLogOptions,
    mut check: impl FnMut(&std::path::Path) -> anyhow::Result<Finding>,
) -> anyhow::Result<Finding> {
    let downloaded = crate::cluster::download(cluster, options)?;
    let mut finding = Finding::Clean;
    for (partition, data) in &downloaded.partitions {
        println!("partition {partition} (stream {}):", crate::cluster::stream::stream_name(*partition));
        match data {
            Ok(data) => {
                if check(data)? == Finding::Found {
                    finding = Finding::Found;
                }
            }
            Err(reason) => {
                println!("CORRUPT: {reason}");
                finding = Finding::Found;
            }
        }
    }
    Ok(finding)
}

/// What an offline check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    Clean,
    Found,
}

/// The data directory for an offline command that writes (`snapshot`),
/// locked so that no server starts on it meanwhile; a directory a server holds
/// is refused.
pub fn open_offline(data: &std::path::Path) -> anyhow::Result<std::fs::File> {
    anyhow::ensure!(
        data.join(crate::node::LEDGER_DIR).is_dir(),
        "{} holds no ledger (no {} directory)",
        data.display(),
        crate::node::LEDGER_DIR
    );
    crate::node::lock_data_dir(data).map_err(|e| anyhow::anyhow!("{e:#}: stop the server first, or run this on a copy of the directory"))
}

/// The data directory for an offline command that only reads: nothing in it is
/// created or written, so it works on a copy the user cannot write. A
/// directory a live server holds is still refused: its `LOCK`, if it has one,
/// is opened read-only (never created) and locked shared, which fails while a
/// server holds it. The shared lock lasts as long as the returned file, so no
/// server starts on the directory meanwhile. A directory without `LOCK` is one
/// no server ever ran on, or a copy made without it: no server holds it.
pub fn open_read_only(data: &std::path::Path) -> anyhow::Result<Option<std::fs::File>> {
    use std::fs::TryLockError;
    anyhow::ensure!(
        data.join(crate::node::LEDGER_DIR).is_dir(),
        "{} holds no ledger (no {} directory)",
        data.display(),
        crate::node::LEDGER_DIR
    );
    let path = data.join(crate::node::LOCK_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("opening {} read-only, to check that no server holds the directory", path.display()));
        }
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => anyhow::bail!(
            "the data directory {} is held by another ledger process: stop the server first, or run this on a copy \
             of the directory (`ledger backup` makes one while the server runs)",
            data.display()
        ),
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("testing the lock {}", path.display())),
    }
}

/// Refuses a tenant the data directory never saw (no event of it in the
/// ledger, and no refusal of it in the rejection journal when `journal`), so
/// that a misspelt tenant is an error, not an empty success.
pub fn require_tenant(data: &std::path::Path, tenant: &str, journal: bool) -> anyhow::Result<()> {
    use std::ops::ControlFlow;
    let mut seen = false;
    let mut reader = crate::log::events::EventReader::new(&data.join(crate::node::LEDGER_DIR), 1);
    let mut visit = |event: crate::core::Event, _| {
        seen = *event.tenant == *tenant;
        if seen { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    };
    reader.read_through(None, &mut visit, |_| Ok::<_, crate::log::events::ReadError>(()))?;
    if !seen && journal && data.join(crate::node::REJECTIONS_DIR).is_dir() {
        seen = rejections::each(&data.join(crate::node::REJECTIONS_DIR), &mut |_, rejected| {
            if *rejected.tenant == *tenant { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })?
        .is_break();
    }
    let place = if journal { "in the ledger or the rejection journal" } else { "in the ledger" };
    anyhow::ensure!(
        seen,
        "unknown tenant {tenant:?}: {} holds no event of it {place} (tenants are named in each event: `ledger export` lists them)",
        data.display()
    );
    Ok(())
}

/// A progress bar on stderr for runs that last over a second on a terminal;
/// nothing at all when stderr is piped.
pub struct Progress {
    bar: indicatif::ProgressBar,
    terminal: bool,
    shown: bool,
}

impl Progress {
    pub fn new(total: u64, what: &str) -> Progress {
        use std::io::IsTerminal;
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::hidden());
        bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, {eta})").expect("a valid template"));
        bar.set_message(what.to_owned());
        Progress { bar, terminal: std::io::stderr().is_terminal(), shown: false }
    }

    pub fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        if self.terminal && !self.shown && self.bar.elapsed() > std::time::Duration::from_secs(1) {
            self.bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
