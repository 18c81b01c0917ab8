//! `ledger audit`: the ledger's invariants re-derived from the raw events of a
//! data directory no server holds (see `forensics::audit`). It streams the log
//! once and never writes to it: not even a torn tail is cut off.

use std::path::PathBuf;

use anyhow::Context;

use super::{Finding, Progress, open_read_only};
use crate::core::Rules;
use crate::forensics::audit::audit_dir;
use crate::node::LEDGER_DIR;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Audit this tenant only (the positions of the others still count for the gap check).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The server's configuration file, for its rules (the call cooldown).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The call cooldown the server ran with, in seconds [default: the
    /// configuration's, else 86400]. A shorter one than the server's hides
    /// violations; a longer one reports calls the server rightly allowed.
    #[arg(long, value_name = "SECS")]
    pub call_cooldown_secs: Option<u64>,
}

pub fn run(args: &AuditArgs) -> anyhow::Result<Finding> {
    let rules = rules(args)?;
    #[cfg(feature = "cluster")]
    if let Some(path) = &args.config {
        let config = crate::config::Config::load(Some(path), None, None)?;
        if let Some(cluster) = &config.cluster {
            return super::for_each_partition(cluster, config.log, |data| audit(data, rules, args.tenant.as_deref()));
        }
    }
    audit(&args.data, rules, args.tenant.as_deref())
}

fn audit(data: &std::path::Path, rules: Rules, tenant: Option<&str>) -> anyhow::Result<Finding> {
    let _lock = open_read_only(data)?;
    let dir = data.join(LEDGER_DIR);
    // A torn record at the very end was never acknowledged: the audit stops
    // before it (`ledger verify` tells torn writes from damage).
    let last = crate::log::last_position(&dir)?.unwrap_or(0);
    let mut progress = Progress::new(last, "auditing");
    let report = audit_dir(&dir, last, rules, tenant, &mut |n| progress.inc(n))
        .map_err(|e| anyhow::anyhow!("{e}: the log cannot be audited (`ledger verify` checks it record by record)"))?;
    progress.finish();
    for violation in &report.violations {
        let positions: Vec<String> = violation.positions.iter().map(u64::to_string).collect();
        println!("{} at positions {}: {}", violation.rule, positions.join(", "), violation.detail);
    }
    if report.is_clean() {
        println!("checked {} events: clean", report.checked_events);
        Ok(Finding::Clean)
    } else {
        println!("checked {} events: {} violations", report.checked_events, report.violations.len());
        Ok(Finding::Found)
    }
}

fn rules(args: &AuditArgs) -> anyhow::Result<Rules> {
    let mut rules = match &args.config {
        Some(path) => {
            crate::config::Config::load(Some(path), Some(args.data.clone()), None)
                .with_context(|| format!("reading the rules from {}", path.display()))?
                .rules
        }
        None => Rules::default(),
    };
    if let Some(secs) = args.call_cooldown_secs {
        let secs = i64::try_from(secs).ok().and_then(chrono::Duration::try_seconds).context("--call-cooldown-secs is too large")?;
        rules.call_cooldown = secs;
    }
    Ok(rules)
}
