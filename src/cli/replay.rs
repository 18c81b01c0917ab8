//! `ledger replay` and `ledger export`: the events of a data directory that no
//! server holds (opened read-only), as a timeline or as JSON lines, through
//! the same reader and filter as `GET /events`.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{Finding, Progress, open_read_only, require_tenant};
use crate::core::Event;
use crate::forensics::feed::EventFilter;
use crate::forensics::{json, timeline};
use crate::log::events::{EventReader, ReadError};
use crate::node::LEDGER_DIR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per event: position, time, tenant/actor, what happened.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Only this tenant's events.
    #[arg(long)]
    pub tenant: Option<String>,
    /// The first position.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// The last position, or the last time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only events about this clinic (its schedules, bookings and their cancellations).
    #[arg(long)]
    pub clinic: Option<String>,
    /// Only events about this campaign (its calls, their outcomes and refusals, its halts and resumptions).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Only events about this phone number (calls to it and their outcomes, its blocking, its purchase and release).
    #[arg(long)]
    pub number: Option<String>,
    /// Only events about this business's phone number (claims, purchase, failure, release).
    #[arg(long)]
    pub business: Option<String>,
    /// Only events caused by this token name.
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Only this tenant's events.
    #[arg(long)]
    pub tenant: Option<String>,
}

/// Where `--until` stops.
enum Until {
    Position(u64),
    Time(DateTime<Utc>),
}

impl Until {
    fn parse(text: &str) -> anyhow::Result<Until> {
        if let Ok(position) = text.parse() {
            return Ok(Until::Position(position));
        }
        let time =
            DateTime::parse_from_rfc3339(text).with_context(|| format!("--until {text:?} is neither a position nor an RFC 3339 time"))?;
        Ok(Until::Time(time.with_timezone(&Utc)))
    }

    fn passed(&self, event: &Event) -> bool {
        match self {
            Until::Position(last) => event.position > *last,
            Until::Time(last) => event.recorded_at > *last,
        }
    }
}

/// Visits every event of the ledger in `data` from `from`, in order, until `visit` says stop.
fn each_event(data: &Path, from: u64, visit: &mut dyn FnMut(&Event) -> ControlFlow<()>) -> anyhow::Result<()> {
    let dir = data.join(LEDGER_DIR);
    let total = crate::log::last_position(&dir)?.unwrap_or(0);
    let mut progress = Progress::new(total.saturating_sub(from - 1), "events");
    let mut reader = EventReader::new(&dir, from);
    reader.read_through(None, &mut |event, _| visit(&event), |read| {
        progress.inc(read as u64);
        Ok::<_, ReadError>(())
    })?;
    progress.finish();
    Ok(())
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<Finding> {
    let _lock = open_read_only(&args.data)?;
    let until = args.until.as_deref().map(Until::parse).transpose()?;
    if let Some(tenant) = &args.tenant {
        require_tenant(&args.data, tenant, false)?;
    }
    let mut filter = EventFilter::new(args.tenant.as_deref(), args.clinic.as_deref());
    filter.campaign = args.campaign.as_deref().map(Into::into);
    // Numbers are kept in E.164: one written as a person would is normalized as the API does.
    filter.number = args.number.as_deref().map(|n| crate::validate::e164("--number", n, None).unwrap_or_else(|_| n.into()));
    filter.business = args.business.as_deref().map(Into::into);
    filter.actor = args.actor.as_deref().map(Into::into);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_failure = None;
    let mut line = Vec::new();
    each_event(&args.data, args.from.max(1), &mut |event| {
        if until.as_ref().is_some_and(|u| u.passed(event)) {
            return ControlFlow::Break(());
        }
        if !filter.keep(event) {
            return ControlFlow::Continue(());
        }
        line.clear();
        match args.format {
            Format::Text => line.extend_from_slice(timeline::line(event).as_bytes()),
            Format::Json => json::write_event(&mut line, event, true),
        }
        write(&mut out, &line, &mut write_failure)
    })?;
    finish_output(out, write_failure)
}

pub fn export(args: &ExportArgs) -> anyhow::Result<Finding> {
    let _lock = open_read_only(&args.data)?;
    if let Some(tenant) = &args.tenant {
        require_tenant(&args.data, tenant, false)?;
    }
    let mut filter = EventFilter::new(args.tenant.as_deref(), None);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_failure = None;
    let mut line = Vec::new();
    each_event(&args.data, 1, &mut |event| {
        if !filter.keep(event) {
            return ControlFlow::Continue(());
        }
        line.clear();
        json::write_event(&mut line, event, true);
        write(&mut out, &line, &mut write_failure)
    })?;
    finish_output(out, write_failure)
}

/// Writes one line and its newline; a failure stops the read and is kept for `finish_output`.
fn write(out: &mut impl Write, line: &[u8], failure: &mut Option<std::io::Error>) -> ControlFlow<()> {
    match out.write_all(line).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => ControlFlow::Continue(()),
        Err(error) => {
            *failure = Some(error);
            ControlFlow::Break(())
        }
    }
}

/// Flushes; a closed pipe (`| head`) is a normal end, not a failure.
pub(super) fn finish_output(mut out: impl Write, failure: Option<std::io::Error>) -> anyhow::Result<Finding> {
    match failure.map_or_else(|| out.flush(), Err) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(Finding::Clean),
    }
}
