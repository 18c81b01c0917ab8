//! `ledger reindex`: rebuilds the closed-day store (`closed.redb`) from the
//! ledger, on a data directory no server holds. The store is derived: the old
//! one is set aside (`closed.redb.old`), a new one is filled by replaying the
//! whole log, and the next start uses it. A server does the same by itself
//! when the store is missing or does not open. The read side's store
//! (`read.redb`) is deleted: the next start indexes the whole ledger into a new one.

use std::path::PathBuf;

use anyhow::Context;

use super::{Finding, open_offline};
use crate::closed::{self, ClosedStore};
use crate::node::{open_log, snapshot_dirs};
use crate::replay::{Start, recover_storing};

#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
}

pub fn run(args: &ReindexArgs) -> anyhow::Result<Finding> {
    let _lock = open_offline(&args.data)?;
    let path = args.data.join(closed::FILE);
    let old = path.with_extension("redb.old");
    if path.exists() {
        std::fs::rename(&path, &old).with_context(|| format!("setting {} aside", path.display()))?;
    }
    let store = ClosedStore::open(&path)?;
    let dirs = snapshot_dirs(&args.data);
    let options = crate::log::FileLogOptions::default();
    let (log, responses) = (open_log(&dirs.ledger, options)?, open_log(&dirs.responses, options)?);
    // The rules decide nothing here: every event is applied as it was written.
    let start = Start::empty(crate::core::Rules::default());
    let recovered = recover_storing(&log, &responses, start, chrono::Utc::now(), Some(&store)).context("replaying the ledger")?;
    println!(
        "rebuilt {} from {} events in {:.3} s: closed days through position {}",
        path.display(),
        recovered.events,
        recovered.elapsed.as_secs_f64(),
        store.through()?
    );
    if old.exists() {
        std::fs::remove_file(&old).with_context(|| format!("deleting {}", old.display()))?;
    }
    let read = args.data.join(crate::forensics::disk::FILE);
    if read.exists() {
        std::fs::remove_file(&read).with_context(|| format!("deleting {}", read.display()))?;
        println!("deleted {}: the next start indexes the ledger into a new one", read.display());
    }
    Ok(Finding::Clean)
}
