//! `ledger slots`: a clinic's day as a table, now or as of a position, from a
//! data directory that no server holds, through the same clinic index as
//! `GET .../slots?as_of=`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::{Finding, open_read_only, require_tenant};
use crate::core::SlotTime;
use crate::forensics::clinics;
use crate::node::LEDGER_DIR;

#[derive(Debug, clap::Args)]
pub struct SlotsArgs {
    /// The data directory.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// The tenant whose clinic it is (the `{tenant}` of `/v1/{tenant}/...`).
    #[arg(long)]
    pub tenant: String,
    /// The clinic, as named in its doctors' schedules.
    #[arg(long)]
    pub clinic: String,
    /// YYYY-MM-DD.
    #[arg(long)]
    pub date: String,
    /// The projection as it stood right after this position (default: the end).
    #[arg(long)]
    pub as_of: Option<u64>,
}

pub fn run(args: &SlotsArgs) -> anyhow::Result<Finding> {
    let _lock = open_read_only(&args.data)?;
    require_tenant(&args.data, &args.tenant, false)?;
    let date =
        chrono::NaiveDate::parse_from_str(&args.date, "%Y-%m-%d").with_context(|| format!("--date {:?} is not YYYY-MM-DD", args.date))?;
    let dir = args.data.join(LEDGER_DIR);
    let last = crate::log::last_position(&dir)?.unwrap_or(0);
    let as_of = args.as_of.unwrap_or(last);
    anyhow::ensure!(as_of <= last, "--as-of {as_of} is beyond the ledger's last position {last}");
    let day = clinics::index_dir(&dir, last)?.plan(&args.tenant, &args.clinic, date, None, as_of).run(&dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "clinic {} on {} as of position {as_of}, time zone {}", args.clinic, args.date, day.zone.name())?;
    writeln!(out, "{:<16} {:>5} {:>6} {:<25} {:<11} {:<6} booking", "doctor", "slot", "time", "starts_at", "state", "token")?;
    for doctor in &day.doctors {
        for slot in 0..doctor.schedule.slots_per_day {
            let booked = doctor.booked.get(&slot);
            let at = if booked.is_some() { SlotTime::booked } else { SlotTime::of };
            let at = at(day.zone, &doctor.schedule, date, slot);
            let time = at.minute().map_or_else(|| "-".into(), |m| format!("{:02}:{:02}", m / 60, m % 60));
            let starts_at = match at {
                SlotTime::At { starts_at, .. } => starts_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                SlotTime::Untimed | SlotTime::Unavailable { .. } => "-".into(),
            };
            let (state_name, token, id) = match (booked, doctor.holds.get(&slot), at) {
                (Some(held), _, _) => ("booked", held.token.clone(), held.booking_id.to_string()),
                (None, Some(on), _) => ("held", "-".into(), format!("hold {} until {}", on.hold_id, on.expires_at)),
                (None, None, SlotTime::Unavailable { .. }) => ("unavailable", "-".into(), "-".into()),
                (None, None, _) => ("free", "-".into(), "-".into()),
            };
            writeln!(out, "{:<16} {slot:>5} {time:>6} {starts_at:<25} {state_name:<11} {token:<6} {id}", doctor.doctor)?;
        }
    }
    Ok(Finding::Clean)
}
