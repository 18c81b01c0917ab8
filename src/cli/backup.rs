//! `ledger backup`: a consistent copy of a data directory, taken while a server
//! runs on it (or not). It reads the files and takes no lock, so the server
//! is neither stopped nor waited for. What it copies, in this order, so that
//! each piece only refers to what a later piece holds:
//!
//! 1. the newest snapshot (its ledger and responses positions were durable
//!    before it was written);
//! 2. the responses journal, cut after its last whole record (a stored answer
//!    is appended after its batch's events were fsynced);
//! 3. the ledger, cut after its last whole record;
//! 4. the rejection journal (evidence: what was written, synced or not), and
//!    `admin.token`.
//!
//! Every source segment copied is fsynced (read-only) after it is read, so
//! each record kept is durable at the source too, and the copy is fsynced.
//! The copy holds every command acknowledged before the backup started, and
//! possibly some acknowledged while it ran.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Finding;
use crate::log::copy::{Copied, copy_log};
use crate::log::snapshot;
use crate::node::{ADMIN_TOKEN_FILE, LEDGER_DIR, REJECTIONS_DIR, RESPONSES_DIR, SNAPSHOTS_DIR};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The data directory to copy (a server may be running on it).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Where to write the copy: a directory that does not exist or is empty.
    #[arg(long)]
    pub to: PathBuf,
}

pub fn run(args: &BackupArgs) -> anyhow::Result<Finding> {
    let (data, dest) = (&args.data, &args.to);
    anyhow::ensure!(data.join(LEDGER_DIR).is_dir(), "{} holds no ledger (no {LEDGER_DIR} directory)", data.display());
    anyhow::ensure!(
        !data.join("partitions").exists(),
        "{} is a cluster node's directory: its partitions' logs live in JetStream (back up the NATS servers' stores)",
        data.display()
    );
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            anyhow::ensure!(entries.next().is_none(), "{} is not empty: a backup goes to a new or empty directory", dest.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
    }

    match copy_snapshot(&data.join(SNAPSHOTS_DIR), &dest.join(SNAPSHOTS_DIR))? {
        Some((position, path)) => println!("snapshot: {} (position {position})", path.display()),
        None => println!("snapshot: none"),
    }
    for (name, rotated) in [(RESPONSES_DIR, false), (LEDGER_DIR, false), (REJECTIONS_DIR, true)] {
        if !data.join(name).is_dir() {
            println!("{name}: none");
            continue;
        }
        let copied =
            copy_log(&data.join(name), &dest.join(name), rotated).with_context(|| format!("copying {}", data.join(name).display()))?;
        let note = if name == REJECTIONS_DIR {
            " (evidence: the refusals written so far, including any the journal had not synced yet)"
        } else {
            ""
        };
        println!("{name}: {}{note}", describe(&copied));
    }
    let token = data.join(ADMIN_TOKEN_FILE);
    if token.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        let target = dest.join(ADMIN_TOKEN_FILE);
        let mut to = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target)?;
        std::io::copy(&mut std::fs::File::open(&token)?, &mut to)?;
        to.sync_all()?;
        println!("{ADMIN_TOKEN_FILE}: copied");
    }
    std::fs::File::open(dest).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dest.display()))?;
    println!("backed up {} to {}: check it with `ledger verify --data {}`", data.display(), dest.display(), dest.display());
    Ok(Finding::Clean)
}

fn describe(copied: &Copied) -> String {
    match copied.positions {
        Some((first, last)) => {
            let segments = if copied.segments == 1 { "1 segment".to_owned() } else { format!("{} segments", copied.segments) };
            format!("positions {first} to {last} ({segments}, {} bytes)", copied.bytes)
        }
        None => "empty".to_owned(),
    }
}

/// Copies the newest snapshot in `src` (written whole and renamed into place
/// by its writer, so any one listed is complete) into `dest`. One pruned
/// between the listing and the copy is looked for again.
fn copy_snapshot(src: &Path, dest: &Path) -> anyhow::Result<Option<(u64, PathBuf)>> {
    if !src.is_dir() {
        return Ok(None);
    }
    for _ in 0..3 {
        let Some((position, path)) = snapshot::list_snapshots(src).with_context(|| format!("listing {}", src.display()))?.pop() else {
            return Ok(None);
        };
        let mut from = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        std::fs::create_dir_all(dest)?;
        let target = dest.join(path.file_name().expect("a snapshot file has a name"));
        let mut to = std::fs::OpenOptions::new().write(true).create_new(true).open(&target)?;
        std::io::copy(&mut from, &mut to).with_context(|| format!("copying {}", path.display()))?;
        to.sync_all()?;
        std::fs::File::open(dest).and_then(|d| d.sync_all())?;
        return Ok(Some((position, path)));
    }
    anyhow::bail!("the snapshots in {} kept being replaced while they were copied", src.display())
}
