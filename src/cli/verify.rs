//! `ledger verify`: every segment header, record checksum, position and link of
//! the hash chain of the ledger, the stored responses and the rejection journal,
//! on a data directory no server holds. It reads and never repairs.

use std::path::Path;

use anyhow::Context;

use super::serve::{LEDGER_DIR, REJECTIONS_DIR, RESPONSES_DIR};
use super::{Finding, Progress, open_offline};
use crate::log::verify::{self, Origin, Verdict, VerifyReport};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The data directory [default: data].
    #[arg(long, default_value = "data")]
    pub data: std::path::PathBuf,
}

/// The logs of a data directory, in the order they are checked. The rejection
/// journal is rotated, so its oldest segments may be gone.
const LOGS: [(&str, Origin); 3] = [(LEDGER_DIR, Origin::Genesis), (RESPONSES_DIR, Origin::Genesis), (REJECTIONS_DIR, Origin::Retained)];

/// Prints one line per log; `Found` if any log is corrupt. Every log is checked
/// even after one is found corrupt, since each is evidence on its own.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Finding> {
    let _lock = open_offline(&args.data)?;
    let mut finding = Finding::Clean;
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
