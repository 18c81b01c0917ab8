//! `ledger rejections`: the rejection journal of a data directory (every
//! command the writer refused, who sent it, what it hit), as text or as the
//! JSON `GET /v1/{tenant}/rejections` answers, filtered by tenant, code and
//! time. It reads the journal's files and never writes.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{Finding, open_read_only, require_tenant};
use crate::core::RejectionRecord;
use crate::forensics::{READ_CHUNK_LEN, json};
use crate::log::{Tail, codec, location_path};
use crate::node::REJECTIONS_DIR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per refusal: sequence, time, tenant/actor, correlation id, code, what it conflicted with, the request.
    Text,
    /// `{"next", "rejections": [...]}`, as `GET /v1/{tenant}/rejections` answers (each with its `tenant` too without `--tenant`).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RejectionsArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Only this tenant's refusals.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only refusals with this code (`slot_taken`, `call_in_progress`, ...).
    #[arg(long)]
    pub code: Option<String>,
    /// Only refusals recorded at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only refusals recorded at or before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

/// Visits every refusal the journal in `dir` keeps, oldest first, with its
/// sequence number, until `visit` breaks (then `Break`). A torn record at the
/// very end is where it stops; a record that does not decode is an error naming it.
pub fn each(dir: &Path, visit: &mut dyn FnMut(u64, RejectionRecord) -> ControlFlow<()>) -> anyhow::Result<ControlFlow<()>> {
    let mut tail = Tail::rotated(dir, 1);
    let mut failure = None;
    let mut flow = ControlFlow::Continue(());
    while flow.is_continue()
        && failure.is_none()
        && tail.read_available(READ_CHUNK_LEN, &mut |seq, location, payload| match codec::decode_rejection(payload) {
            Ok(rejected) => {
                flow = visit(seq, rejected);
                flow
            }
            Err(error) => {
                failure =
                    Some(anyhow::anyhow!("{}: journal record {seq} does not decode: {error}", location_path(dir, location).display()));
                ControlFlow::Break(())
            }
        })? > 0
    {}
    match failure {
        Some(failure) => Err(failure),
        None => Ok(flow),
    }
}

pub fn run(args: &RejectionsArgs) -> anyhow::Result<Finding> {
    let _lock = open_read_only(&args.data)?;
    let dir = args.data.join(REJECTIONS_DIR);
    anyhow::ensure!(dir.is_dir(), "{} holds no rejection journal (no {REJECTIONS_DIR} directory)", args.data.display());
    if let Some(tenant) = &args.tenant {
        require_tenant(&args.data, tenant, true)?;
    }
    let next = crate::log::last_position(&dir).with_context(|| format!("reading {}", dir.display()))?.unwrap_or(0) + 1;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_failure = None;
    let mut line = Vec::new();
    let mut first = true;
    if args.format == Format::Json {
        // The members in the order `json::rejections_page` writes them (sorted):
        // the same document as `GET /rejections`, streamed.
        line.extend_from_slice(format!("{{\"next\":{next},\"rejections\":[").as_bytes());
    }
    // A write failure breaks the read; it is reported below.
    let _ = each(&dir, &mut |seq, rejected| {
        let kept = args.tenant.as_deref().is_none_or(|t| *rejected.tenant == *t)
            && args.code.as_deref().is_none_or(|c| *rejected.code == *c)
            && args.since.is_none_or(|since| rejected.recorded_at >= since)
            && args.until.is_none_or(|until| rejected.recorded_at <= until);
        if !kept {
            return ControlFlow::Continue(());
        }
        match args.format {
            Format::Text => {
                line.extend_from_slice(text_line(seq, &rejected).as_bytes());
                line.push(b'\n');
            }
            Format::Json => {
                if !first {
                    line.push(b',');
                }
                json::write_rejection(&mut line, seq, &rejected, args.tenant.is_none());
            }
        }
        first = false;
        let written = out.write_all(&line);
        line.clear();
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                write_failure = Some(error);
                ControlFlow::Break(())
            }
        }
    })?;
    if args.format == Format::Json && write_failure.is_none() {
        write_failure = out.write_all(b"]}\n").err();
    }
    super::replay::finish_output(out, write_failure)
}

/// One refusal in one line.
fn text_line(seq: u64, rejected: &RejectionRecord) -> String {
    let correlation = if rejected.request_id.is_empty() { String::new() } else { format!("  [{}]", rejected.request_id) };
    let conflict = rejected.conflicts_with.as_ref().map(|c| format!(" ({c})")).unwrap_or_default();
    let request = if rejected.method.is_empty() { String::new() } else { format!("  {} {}", rejected.method, rejected.path) };
    format!(
        "{seq:>8}  {}  {}/{}{correlation}  {}{conflict}{request}: {}",
        rejected.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        rejected.tenant,
        rejected.actor,
        rejected.code,
        rejected.detail
    )
}
