//! Clinic time zones (API.md "Clinics and time zones"): a clinic's zone, set
//! by an event that records the tzdata release computing it, and a slot's
//! wall-clock time as instants in that zone. A wall-clock time the clock jumps
//! over is unavailable; one that occurs twice is its first occurrence.

use chrono::{DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};

pub use chrono_tz::Tz;

use super::state::TenantState;
use super::{EventKind, Position, Rejection, Schedule, Text};

/// The IANA release of the time-zone database compiled in (`chrono-tz`'s).
pub const TZDATA: &str = chrono_tz::IANA_TZDB_VERSION;

/// A clinic's zone and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicZone {
    pub zone: Tz,
    /// The tzdata release that computed the clinic's times when it was set.
    pub tzdata: Text,
    pub position: Position,
}

/// When a slot is, in its clinic's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotTime {
    /// The schedule gives no wall-clock times.
    Untimed,
    /// `minute` after midnight does not exist on that date (a daylight-saving gap).
    Unavailable {
        minute: u32,
    },
    At {
        minute: u32,
        starts_at: DateTime<FixedOffset>,
        ends_at: DateTime<FixedOffset>,
    },
}

impl SlotTime {
    /// Slot `slot` of `schedule` on `date` in `zone`.
    pub fn of(zone: Tz, schedule: &Schedule, date: NaiveDate, slot: u32) -> SlotTime {
        let (Some(minute), Some(length)) = (schedule.slot_minute(slot), schedule.slot_minutes) else { return SlotTime::Untimed };
        let wall = wall_clock(date, minute);
        let starts = match zone.from_local_datetime(&wall) {
            LocalResult::Single(at) => at,
            // The first occurrence of a time the clock passes twice.
            LocalResult::Ambiguous(first, _) => first,
            LocalResult::None => return SlotTime::Unavailable { minute },
        };
        SlotTime::at(minute, starts.with_timezone(&Utc), length, zone)
    }

    /// As [`SlotTime::of`], but a booked slot whose time stopped existing (its
    /// zone changed after it was booked) keeps an instant: its wall-clock time
    /// read with the offset in force before the gap, so moved forward by the
    /// gap's length, as RFC 5545 does.
    pub fn booked(zone: Tz, schedule: &Schedule, date: NaiveDate, slot: u32) -> SlotTime {
        match SlotTime::of(zone, schedule, date, slot) {
            SlotTime::Unavailable { minute } => {
                let wall = wall_clock(date, minute);
                // Three hours back is before any gap there has ever been.
                let before = zone.from_local_datetime(&(wall - Duration::hours(3))).earliest().map(|t| t.offset().fix());
                let Some(offset) = before else { return SlotTime::Unavailable { minute } };
                let starts = (wall - Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc();
                SlotTime::at(minute, starts, schedule.slot_minutes.unwrap_or(0), zone)
            }
            time => time,
        }
    }

    fn at(minute: u32, starts: DateTime<Utc>, length: u32, zone: Tz) -> SlotTime {
        let in_zone = |at: DateTime<Utc>| at.with_timezone(&zone).fixed_offset();
        SlotTime::At { minute, starts_at: in_zone(starts), ends_at: in_zone(starts + Duration::minutes(i64::from(length))) }
    }

    /// The wall-clock minute after midnight, when the schedule gives one.
    pub fn minute(&self) -> Option<u32> {
        match self {
            SlotTime::Untimed => None,
            SlotTime::Unavailable { minute } | SlotTime::At { minute, .. } => Some(*minute),
        }
    }
}

fn wall_clock(date: NaiveDate, minute: u32) -> NaiveDateTime {
    date.and_hms_opt(minute / 60, minute % 60, 0).expect("a minute of the day")
}

/// A clinic's zone: its own, or UTC.
pub fn zone_of(tenant: Option<&TenantState>, clinic: &str) -> Tz {
    tenant.and_then(|t| t.clinics.get(clinic)).and_then(|c| c.zone.as_ref()).map_or(Tz::UTC, |z| z.zone)
}

/// The date at the clinic at `now`.
pub fn today_at(zone: Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&zone).date_naive()
}

/// A slot is bookable only at a wall-clock time that exists.
pub(super) fn check_available(
    tenant: &TenantState,
    clinic: &str,
    schedule: &Schedule,
    date: NaiveDate,
    slot: u32,
) -> Result<(), Rejection> {
    match SlotTime::of(zone_of(Some(tenant), clinic), schedule, date, slot) {
        SlotTime::Unavailable { minute } => {
            Err(Rejection::SlotUnavailable { slot, time: format!("{:02}:{:02}", minute / 60, minute % 60) })
        }
        SlotTime::Untimed | SlotTime::At { .. } => Ok(()),
    }
}

/// The same zone again changes nothing.
pub(super) fn decide_zone(tenant: Option<&TenantState>, clinic: &Text, zone: Tz) -> Vec<EventKind> {
    let current = tenant.and_then(|t| t.clinics.get(clinic)).and_then(|c| c.zone.as_ref());
    if current.is_some_and(|c| c.zone == zone) {
        return vec![];
    }
    vec![EventKind::ClinicZoneSet { clinic: clinic.clone(), zone, tzdata: TZDATA.into() }]
}

pub(super) fn apply(tenant: &mut TenantState, kind: &EventKind, position: Position) {
    let EventKind::ClinicZoneSet { clinic, zone, tzdata } = kind else { unreachable!("not a zone event") };
    let entry = tenant.clinics.entry(clinic.clone()).or_default();
    entry.zone = Some(ClinicZone { zone: *zone, tzdata: tzdata.clone(), position });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(first: u32, minutes: u32, slots: u32) -> Schedule {
        Schedule { slots_per_day: slots, first_slot_minute: Some(first), slot_minutes: Some(minutes) }
    }

    #[test]
    fn a_slot_is_an_instant_with_the_offset_in_force_and_a_gap_is_unavailable() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin.
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let night = schedule(60, 30, 6); // 01:00, 01:30, 02:00, 02:30, 03:00, 03:30
        let at = |slot| SlotTime::of(berlin, &night, spring, slot);
        let SlotTime::At { starts_at, ends_at, .. } = at(1) else { panic!("{:?}", at(1)) };
        assert_eq!(
            (starts_at.to_rfc3339(), ends_at.to_rfc3339()),
            ("2026-03-29T01:30:00+01:00".into(), "2026-03-29T03:00:00+02:00".into())
        );
        assert_eq!((at(2), at(3)), (SlotTime::Unavailable { minute: 120 }, SlotTime::Unavailable { minute: 150 }));
        let SlotTime::At { starts_at, .. } = at(4) else { panic!() };
        assert_eq!(starts_at.to_rfc3339(), "2026-03-29T03:00:00+02:00");
        // Booked before the zone made it vanish: moved forward by the gap's length.
        let SlotTime::At { starts_at, .. } = SlotTime::booked(berlin, &night, spring, 3) else { panic!() };
        assert_eq!(starts_at.to_rfc3339(), "2026-03-29T03:30:00+02:00");
        // 2026-10-25: 02:00 to 03:00 happens twice; the first occurrence counts.
        let autumn = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        let SlotTime::At { starts_at, .. } = SlotTime::of(berlin, &night, autumn, 3) else { panic!() };
        assert_eq!(starts_at.to_rfc3339(), "2026-10-25T02:30:00+02:00");
        assert_eq!(
            SlotTime::of(Tz::UTC, &Schedule { slots_per_day: 3, first_slot_minute: None, slot_minutes: None }, spring, 0),
            SlotTime::Untimed
        );
        let SlotTime::At { starts_at, .. } = SlotTime::of(Tz::UTC, &night, spring, 0) else { panic!() };
        assert_eq!(starts_at.to_rfc3339(), "2026-03-29T01:00:00+00:00");
    }

    #[test]
    fn today_is_the_clinics_date() {
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 20, 0, 0).unwrap();
        assert_eq!(today_at(kolkata, now), NaiveDate::from_ymd_opt(2026, 3, 2).unwrap());
        assert_eq!(today_at(Tz::UTC, now), NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        assert_eq!(TZDATA.len(), 5, "a release like 2025b");
    }
}
