//! `ledger replay`, `ledger export` and `ledger slots`: reading a data
//! directory that no server holds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::serve::LEDGER_DIR;
use super::{Finding, Progress, open_offline};
use crate::core::{Event, EventKind, Text};
use crate::forensics::clinics::ClinicIndex;
use crate::forensics::{json, timeline};
use crate::log::{Tail, codec};

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

#[derive(Debug, clap::Args)]
pub struct SlotsArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub clinic: String,
    /// YYYY-MM-DD.
    #[arg(long)]
    pub date: String,
    /// The projection as it stood right after this position (default: the end).
    #[arg(long)]
    pub as_of: Option<u64>,
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
fn each_event(data: &Path, from: u64, visit: &mut dyn FnMut(&Event) -> bool) -> anyhow::Result<u64> {
    let dir = data.join(LEDGER_DIR);
    let total = crate::log::last_position(&dir)?.unwrap_or(0);
    let mut progress = Progress::new(total.saturating_sub(from - 1), "events");
    let mut tail = Tail::new(&dir, from);
    let (mut failure, mut going, mut seen) = (None, true, 0);
    while going && failure.is_none() {
        let read = tail.read_available(4096, &mut |position, _, payload| {
            if !going || failure.is_some() {
                return;
            }
            match codec::decode_event(payload) {
                Ok(event) => going = visit(&event),
                Err(error) => failure = Some(anyhow::anyhow!("position {position}: {error}")),
            }
            seen += 1;
        })?;
        progress.inc(read as u64);
        if read == 0 {
            break;
        }
    }
    progress.finish();
    failure.map_or(Ok(seen), Err)
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<Finding> {
    let _lock = open_offline(&args.data)?;
    let until = args.until.as_deref().map(Until::parse).transpose()?;
    let mut clinic_bookings: BTreeMap<Uuid, Text> = BTreeMap::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_failure = None;
    each_event(&args.data, args.from.max(1), &mut |event| {
        if until.as_ref().is_some_and(|u| u.passed(event)) {
            return false;
        }
        if args.tenant.as_deref().is_some_and(|t| *event.tenant != *t) {
            return true;
        }
        if let Some(clinic) = &args.clinic {
            let about = match &event.kind {
                EventKind::ScheduleSet { clinic, .. } => Some(clinic.clone()),
                EventKind::BookingCreated(b) => {
                    clinic_bookings.insert(b.details.booking_id, b.details.clinic.clone());
                    Some(b.details.clinic.clone())
                }
                EventKind::BookingCancelled { booking_id, .. } => clinic_bookings.get(booking_id).cloned(),
                _ => None,
            };
            if about.as_deref() != Some(clinic.as_str()) {
                return true;
            }
        }
        let line = match args.format {
            Format::Text => timeline::line(event),
            Format::Json => json::event(event, true).to_string(),
        };
        if let Err(error) = writeln!(out, "{line}") {
            write_failure = Some(error);
            return false;
        }
        true
    })?;
    finish_output(out, write_failure)
}

pub fn export(args: &ExportArgs) -> anyhow::Result<Finding> {
    let _lock = open_offline(&args.data)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_failure = None;
    each_event(&args.data, 1, &mut |event| {
        if args.tenant.as_deref().is_some_and(|t| *event.tenant != *t) {
            return true;
        }
        if let Err(error) = writeln!(out, "{}", json::event(event, true)) {
            write_failure = Some(error);
            return false;
        }
        true
    })?;
    finish_output(out, write_failure)
}

/// Flushes; a closed pipe (`| head`) is a normal end, not a failure.
fn finish_output(mut out: impl Write, failure: Option<std::io::Error>) -> anyhow::Result<Finding> {
    match failure.map_or_else(|| out.flush(), Err) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(Finding::Clean),
    }
}

pub fn slots(args: &SlotsArgs) -> anyhow::Result<Finding> {
    let _lock = open_offline(&args.data)?;
    let date =
        chrono::NaiveDate::parse_from_str(&args.date, "%Y-%m-%d").with_context(|| format!("--date {:?} is not YYYY-MM-DD", args.date))?;
    let dir = args.data.join(LEDGER_DIR);
    let last = crate::log::last_position(&dir)?.unwrap_or(0);
    let as_of = args.as_of.unwrap_or(last);
    anyhow::ensure!(as_of <= last, "--as-of {as_of} is beyond the ledger's last position {last}");
    let index = ClinicIndex::new(&dir);
    index.index_through(&mut Tail::new(&dir, 1), last)?;
    let state = index.clinic_as_of(&args.tenant, &args.clinic, as_of)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "clinic {} on {} as of position {as_of}", args.clinic, args.date)?;
    writeln!(out, "{:<16} {:>5} {:>6} {:<7} {:<6} booking", "doctor", "slot", "time", "state", "token")?;
    let doctors = state.tenant(&args.tenant).and_then(|t| t.clinics.get(args.clinic.as_str())).map(|c| &c.doctors);
    for (name, doctor) in doctors.into_iter().flatten() {
        let day = doctor.days.get(&date);
        for slot in 0..doctor.schedule.slots_per_day {
            let time = doctor.schedule.slot_minute(slot).map_or_else(|| "-".into(), |m| format!("{:02}:{:02}", m / 60, m % 60));
            let booking = day.and_then(|d| d.slots.get(&slot)).and_then(|id| state.tenants[args.tenant.as_str()].bookings.get(id));
            let (state_name, token, id) = match booking {
                Some(b) => ("booked", b.token(), b.details.booking_id.to_string()),
                None => ("free", "-".into(), "-".into()),
            };
            writeln!(out, "{name:<16} {slot:>5} {time:>6} {state_name:<7} {token:<6} {id}")?;
        }
    }
    Ok(Finding::Clean)
}
