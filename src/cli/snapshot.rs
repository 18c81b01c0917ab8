//! `ledger snapshot`: writes a snapshot of the state at the ledger's last
//! position, on a data directory no server holds, with the function the
//! server's snapshot thread runs (`snapshots::take`). The next start loads it.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use super::{Finding, open_offline};
use crate::core::Rules;
use crate::log::snapshot;
use crate::node::snapshot_dirs;
use crate::snapshots::{self, SnapshotConfig, Through};

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// The server's configuration file: a snapshot is used only under the rules
    /// it was taken under, and `snapshots_kept` says how many to keep.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: &SnapshotArgs) -> anyhow::Result<Finding> {
    let _lock = open_offline(&args.data)?;
    let (rules, config) = match &args.config {
        Some(path) => {
            let config = crate::config::Config::load(Some(path), Some(args.data.clone()), None)
                .with_context(|| format!("reading the rules from {}", path.display()))?;
            (config.rules, config.snapshots)
        }
        None => (Rules::default(), SnapshotConfig::default()),
    };
    let dirs = snapshot_dirs(&args.data);
    for path in snapshot::remove_temporary(&dirs.snapshots)? {
        println!("deleted {}: a snapshot whose writing was interrupted", path.display());
    }
    let taken = snapshots::take(&dirs, rules, Through::Available, config.kept, &AtomicBool::new(false))
        .context("taking a snapshot (`ledger verify` checks the log record by record)")?;
    let base = taken.base.map_or_else(|| "the first event".to_owned(), |position| format!("the snapshot of position {position}"));
    println!(
        "wrote {}: position {}, responses journal position {}; from {base}, {} events and {} stored answers after it, in {:.3} s",
        taken.path.display(),
        taken.header.position,
        taken.header.responses_position,
        taken.events,
        taken.responses,
        taken.elapsed.as_secs_f64()
    );
    for path in &taken.deleted {
        println!("deleted {}: beyond the newest {} kept", path.display(), config.kept);
    }
    Ok(Finding::Clean)
}
