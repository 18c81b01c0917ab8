//! `ledger verify`: every segment header, record checksum, position and link of
//! the hash chain of the ledger, the stored responses and the rejection journal,
//! and every snapshot against those logs, on a data directory no server holds.
//! It reads and never repairs.

use std::path::Path;

use anyhow::Context;

use super::{Finding, Progress, open_read_only};
use crate::log::Position;
use crate::log::snapshot::{self, Logs};
use crate::log::verify::{self, Origin, Verdict, VerifyReport};
use crate::node::{LEDGER_DIR, REJECTIONS_DIR, RESPONSES_DIR, snapshot_dirs};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: std::path::PathBuf,
    /// A node's configuration file: with a `[cluster]` section, every
    /// partition's JetStream stream is read and verified instead of `--data`.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// The logs of a data directory, in the order they are checked. The rejection
/// journal is rotated, so its oldest segments may be gone.
const LOGS: [(&str, Origin); 3] = [(LEDGER_DIR, Origin::Genesis), (RESPONSES_DIR, Origin::Genesis), (REJECTIONS_DIR, Origin::Retained)];

/// Prints one line per log and per snapshot; `Found` if any log is corrupt or
/// any snapshot bad. Everything is checked even after a problem is found,
/// since each is evidence on its own.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Finding> {
    if let Some(path) = &args.config {
        // Loaded in every build: one without cluster mode refuses a `[cluster]` section here.
        let config = crate::config::Config::load(Some(path), None, None)?;
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &config.cluster {
            return super::for_each_partition(cluster, config.log, |data| run(&VerifyArgs { data: data.to_owned(), config: None }));
        }
        #[cfg(not(feature = "cluster"))]
        let _ = config;
    }
    let _lock = open_read_only(&args.data)?;
    let mut finding = Finding::Clean;
    let mut ledger_last = 0;
    for (name, origin) in LOGS {
        let dir = args.data.join(name);
        if !dir.is_dir() {
            println!("{name}: no {name}/ directory, nothing to verify");
            continue;
        }
        let report = verify_log(&dir, name, origin)?;
        println!("{}", describe(name, &report));
        if matches!(report.verdict, Verdict::Corrupt(_)) {
            finding = Finding::Found;
        }
        if name == LEDGER_DIR {
            ledger_last = report.position_last;
        }
    }
    if verify_snapshots(&args.data, ledger_last)? == Finding::Found {
        finding = Finding::Found;
    }
    Ok(finding)
}

/// Checks every snapshot against the ledger through `ledger_last` (its last
/// intact record) and the responses journal: checksums, position, chain links,
/// and that the body decodes to the state the header names.
fn verify_snapshots(data: &Path, ledger_last: Position) -> anyhow::Result<Finding> {
    let dirs = snapshot_dirs(data);
    let snapshots = snapshot::list_snapshots(&dirs.snapshots).with_context(|| format!("listing {}", dirs.snapshots.display()))?;
    let temporary = snapshot::list_temporary(&dirs.snapshots).with_context(|| format!("listing {}", dirs.snapshots.display()))?;
    if snapshots.is_empty() && temporary.is_empty() {
        println!("snapshots: none");
        return Ok(Finding::Clean);
    }
    let logs = Logs { ledger: &dirs.ledger, ledger_last, responses: &dirs.responses };
    let mut finding = Finding::Clean;
    for (named, path) in snapshots {
        match snapshot::check(&path, named, &logs, None) {
            Ok(header) => println!(
                "snapshots: {}: position {}, responses journal position {}; checksums and chain links match the logs",
                path.display(),
                header.position,
                header.responses_position
            ),
            Err(fault) => {
                println!("snapshots: BAD {}: {fault} (start-up skips it)", path.display());
                finding = Finding::Found;
            }
        }
    }
    for path in temporary {
        println!("snapshots: {}: a snapshot whose writing was interrupted, never used (the next start deletes it)", path.display());
    }
    Ok(finding)
}

fn verify_log(dir: &Path, name: &str, origin: Origin) -> anyhow::Result<VerifyReport> {
    let estimate = verify::records_estimate(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut progress = Progress::new(estimate, &format!("verifying {name}"));
    let report = verify::verify_dir(dir, origin, &mut |records| progress.inc(records));
    progress.finish();
    report.with_context(|| format!("reading {}", dir.display()))
}

fn describe(name: &str, report: &VerifyReport) -> String {
    let checked = format!("{} in {}", plural(report.records, "record"), plural(report.segments as u64, "segment"));
    match &report.verdict {
        Verdict::Clean => format!("{name}: {checked}, chain intact, last position {}", report.position_last),
        Verdict::TornTail(torn) => format!(
            "{name}: {checked}, chain intact, last position {}; torn tail of {} bytes at {} byte offset {} \
             (position {}, never acknowledged: the server cuts it off at its next start)",
            report.position_last,
            torn.bytes,
            torn.path.display(),
            torn.offset,
            torn.position
        ),
        Verdict::Corrupt(problem) => format!(
            "{name}: CORRUPT at position {} in {} (byte offset {}): {}; {} before it intact",
            problem.position,
            problem.path.display(),
            problem.offset,
            problem.fault,
            plural(report.records, "record")
        ),
    }
}

fn plural(count: u64, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}
