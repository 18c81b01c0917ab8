//! Open and closed days (API.md "Open and closed days"): a clinic's day D stays
//! open through D + `open_days_past` and closes at the start of the day after,
//! both in the clinic's zone. Commands that would change a closed day are
//! refused (`day_closed`); a repeat that changes nothing answers as before.
//!
//! Closing is the clock's, so `decide` refuses from the instant a day closes.
//! The ledger also records it: [`closings_due`] gives, for each clinic with
//! something recorded on a day that closed, the `hold_expired` of its active
//! holds and one `days_closed` through the last closed day, which expires its
//! waiting entries. A closed day never reopens, even if the zone or the
//! configuration would now say it is open: [`Clinic::closed_through`] keeps it.
//!
//! [`Clinic::closed_through`]: super::Clinic::closed_through

use std::collections::BTreeSet;

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::state::{State, TenantState};
use super::{Action, Context, Event, EventKind, Position, Rejection, Rules, Text, holds, waitlist, zones};

/// The date day `date` closes on: `date` + `open_days_past` + 1.
pub fn closes_on(date: NaiveDate, rules: &Rules) -> NaiveDate {
    date.checked_add_days(Days::new(u64::from(rules.open_days_past) + 1)).unwrap_or(NaiveDate::MAX)
}

/// The last closed day of `clinic` at `now`: by the clock in its zone, or as
/// the ledger recorded it, whichever is later (a day never reopens).
pub fn closed_through(tenant: Option<&TenantState>, clinic: &str, rules: &Rules, now: DateTime<Utc>) -> Option<NaiveDate> {
    let today = zones::today_at(zones::zone_of(tenant, clinic), now);
    let by_clock = today.checked_sub_days(Days::new(u64::from(rules.open_days_past) + 1));
    let recorded = tenant.and_then(|t| t.clinics.get(clinic)).and_then(|c| c.closed_through);
    by_clock.max(recorded)
}

/// Whether `clinic`'s `date` is closed at `now`.
pub fn is_closed(tenant: Option<&TenantState>, clinic: &str, date: NaiveDate, rules: &Rules, now: DateTime<Utc>) -> bool {
    closed_through(tenant, clinic, rules, now).is_some_and(|through| date <= through)
}

/// `day_closed` when `clinic`'s `date` is closed at `now`.
fn check_open(tenant: Option<&TenantState>, clinic: &str, date: NaiveDate, rules: &Rules, now: DateTime<Utc>) -> Result<(), Rejection> {
    if !is_closed(tenant, clinic, date, rules, now) {
        return Ok(());
    }
    // Closed by the ledger's record under other rules or another zone: it closed by today at the latest.
    let today = zones::today_at(zones::zone_of(tenant, clinic), now);
    Err(Rejection::DayClosed { date, closed_since: closes_on(date, rules).min(today) })
}

/// `day_closed` when `action` would change a closed day: booking, holding or
/// confirming on it, cancelling, marking or moving a booking of it, moving a
/// booking to it, joining its waitlist. Releasing and withdrawing stay allowed.
pub(super) fn check_action(tenant: Option<&TenantState>, action: &Action, rules: &Rules, context: &Context) -> Result<(), Rejection> {
    let check = |clinic: &str, date: NaiveDate| check_open(tenant, clinic, date, rules, context.now);
    let booking = |booking_id| tenant.and_then(|t| t.find_booking(booking_id));
    match action {
        Action::Book(request) => check(&request.clinic, request.date),
        Action::Hold { hold, .. } => check(&hold.clinic, hold.date),
        Action::JoinWaitlist(entry) => check(&entry.clinic, entry.date),
        Action::ConfirmHold { hold_id, .. } => match tenant.and_then(|t| t.find_hold(hold_id)) {
            Some(hold) => check(&hold.details.clinic, hold.details.date),
            None => Ok(()),
        },
        Action::Cancel { booking_id, .. } | Action::MarkAttendance { booking_id, .. } => match booking(booking_id) {
            Some(b) => check(&b.details.clinic, b.details.date),
            None => Ok(()),
        },
        Action::Reschedule { booking_id, to } => match booking(booking_id) {
            Some(b) => {
                check(&b.details.clinic, b.details.date)?;
                check(&b.details.clinic, to.date.unwrap_or(b.details.date))
            }
            None => Ok(()),
        },
        Action::SetSchedule { .. }
        | Action::SetClinicZone { .. }
        | Action::ReleaseHold { .. }
        | Action::WithdrawEntry { .. }
        | Action::ClaimPhone { .. }
        | Action::CompletePhone { .. }
        | Action::FailPhone { .. }
        | Action::ReleasePhone { .. }
        | Action::StartCall { .. }
        | Action::RecordOutcome { .. }
        | Action::ResumeCampaign { .. }
        | Action::BlockNumber { .. }
        | Action::CreateCommunity { .. } => Ok(()),
    }
}

/// The first day after `after` on which `clinic` has anything recorded that
/// closing changes or drops: a doctor's day (bookings, tokens, holds) or a waitlist line.
fn first_day_after(tenant: &TenantState, clinic: &Text, after: Option<NaiveDate>) -> Option<NaiveDate> {
    let from = after.and_then(|d| d.succ_opt()).unwrap_or(NaiveDate::MIN);
    let doctors = tenant.clinics.get(clinic).into_iter().flat_map(|c| c.doctors.values());
    let booked = doctors.filter_map(|d| d.days.range(from..).next().map(|(date, _)| *date)).min();
    let waiting = tenant.waiting.range((clinic.clone(), from)..).next().filter(|((c, _), _)| c == clinic).map(|((_, date), _)| *date);
    booked.into_iter().chain(waiting).min()
}

/// The events that close what closed by `context.now`, tenant by tenant and
/// clinic by clinic, at consecutive positions from `context.position_next`:
/// the `hold_expired` of each active hold on a closed day, then the clinic's
/// `days_closed`. A clinic with nothing recorded on its newly closed days gets none.
/// The writer appends them before it decides a batch (after the holds that
/// expired by their own time) and on its timer.
pub fn closings_due(state: &State, context: &Context) -> Vec<Event> {
    let actor: Text = holds::LEDGER_ACTOR.into();
    let mut events = Vec::new();
    for (name, tenant) in &state.tenants {
        let clinics: BTreeSet<&Text> = tenant.clinics.keys().chain(tenant.waiting.keys().map(|(clinic, _)| clinic)).collect();
        for clinic in clinics {
            let recorded = tenant.clinics.get(clinic).and_then(|c| c.closed_through);
            let Some(through) = closed_through(Some(tenant), clinic, &state.rules, context.now) else { continue };
            if recorded.is_some_and(|r| r >= through) || first_day_after(tenant, clinic, recorded).is_none_or(|first| first > through) {
                continue;
            }
            let mut kinds: Vec<EventKind> = tenant
                .clinics
                .get(clinic)
                .into_iter()
                .flat_map(|c| c.doctors.values())
                .flat_map(|d| d.days.range(..=through).flat_map(|(_, day)| day.held.iter().map(|(_, hold_id)| *hold_id)))
                .map(|hold_id| EventKind::HoldExpired { hold_id })
                .collect();
            kinds.push(EventKind::DaysClosed { clinic: clinic.clone(), through });
            let position_next = context.position_next + events.len() as Position;
            events.extend(kinds.into_iter().enumerate().map(|(i, kind)| Event {
                position: position_next + i as Position,
                recorded_at: context.now,
                tenant: name.clone(),
                actor: actor.clone(),
                request_id: "".into(),
                idempotency_key: None,
                kind,
                response: None,
            }));
        }
    }
    events
}

/// A clinic's closed days as they leave memory: every booking, hold and
/// waitlist entry of them (as `days_closed` at `position` leaves them) with
/// the external refs bound to those bookings, in a tenant state of their own,
/// and the clinic's zone then. The writer hands it to the closed-day store
/// before it applies the `days_closed`; start-up does the same for one the
/// store lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedDays {
    pub clinic: Text,
    pub through: NaiveDate,
    /// The position of the `days_closed`.
    pub position: Position,
    /// The closed days that had records, in order.
    pub dates: Vec<NaiveDate>,
    pub zone: zones::Tz,
    pub records: TenantState,
}

/// What applying `days_closed` for `clinic` through `through` at `position`
/// takes out of `tenant`.
pub fn closing(tenant: &TenantState, clinic: &Text, through: NaiveDate, position: Position) -> ClosedDays {
    let mut records = TenantState::default();
    let mut dates = Vec::new();
    for ((_, date), day) in records_through(tenant, clinic, through) {
        dates.push(*date);
        for id in &day.bookings {
            let booking = tenant.bookings[id].clone();
            if let Some(external_ref) = booking.details.external_ref() {
                records.external_refs.insert(external_ref.clone(), *id);
            }
            records.bookings.insert(*id, booking);
        }
        for id in &day.holds {
            records.holds.insert(*id, tenant.holds[id].clone());
        }
        for id in &day.entries {
            let mut entry = tenant.waitlist[id].clone();
            if entry.status == super::EntryStatus::Waiting {
                let expired = std::sync::Arc::make_mut(&mut entry);
                expired.status = super::EntryStatus::Expired;
                expired.position = position;
            }
            records.waitlist.insert(*id, entry);
        }
    }
    ClosedDays { clinic: clinic.clone(), through, position, dates, zone: zones::zone_of(Some(tenant), clinic), records }
}

/// `clinic`'s day records through `through`: what its `days_closed` takes out.
fn records_through<'t>(
    tenant: &'t TenantState,
    clinic: &Text,
    through: NaiveDate,
) -> impl Iterator<Item = (&'t (Text, NaiveDate), &'t super::DayRecords)> {
    tenant.day_records.range((clinic.clone(), NaiveDate::MIN)..=(clinic.clone(), through))
}

pub(super) fn apply(tenant: &mut TenantState, clinic: &Text, through: NaiveDate, position: Position) {
    let entry = tenant.clinics.entry(clinic.clone()).or_default();
    entry.closed_through = entry.closed_through.max(Some(through));
    for doctor in entry.doctors.values_mut() {
        doctor.days = doctor.days.split_off(&through.succ_opt().unwrap_or(NaiveDate::MAX));
    }
    waitlist::expire_lines(tenant, clinic, through, position);
    // Every record of those days leaves memory: the closed-day store has them.
    let closed: Vec<(Text, NaiveDate)> = records_through(tenant, clinic, through).map(|(key, _)| key.clone()).collect();
    for key in closed {
        let records = tenant.day_records.remove(&key).expect("a closed day's records");
        for id in records.bookings {
            let booking = tenant.bookings.remove(&id).expect("a closed day's booking");
            if let Some(external_ref) = booking.details.external_ref() {
                tenant.external_refs.remove(external_ref);
            }
        }
        for id in records.holds {
            let hold = tenant.holds.remove(&id).expect("a closed day's hold");
            tenant.hold_expiries.remove(&(hold.expires_at, id));
        }
        for id in records.entries {
            tenant.waitlist.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn a_day_closes_at_the_start_of_the_day_after_its_open_days_in_the_clinics_zone() {
        let rules = Rules::default();
        assert_eq!(closes_on(date("2026-03-02"), &rules), date("2026-03-05"));
        // 2026-03-04T18:29:59Z is 23:59:59 in Kolkata: 2026-03-02 is still open there, and in UTC.
        let mut tenant = TenantState::default();
        let clinic: Text = "kochi".into();
        let zone = "Asia/Kolkata".parse().unwrap();
        tenant.clinics.entry(clinic.clone()).or_default().zone = Some(super::super::ClinicZone { zone, tzdata: "x".into(), position: 1 });
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        assert!(!is_closed(Some(&tenant), "kochi", date("2026-03-02"), &rules, at("2026-03-04T18:29:59Z")));
        assert!(is_closed(Some(&tenant), "kochi", date("2026-03-02"), &rules, at("2026-03-04T18:30:00Z")));
        assert!(!is_closed(None, "kochi", date("2026-03-02"), &rules, at("2026-03-04T23:59:59Z")));
        assert!(is_closed(None, "kochi", date("2026-03-02"), &rules, at("2026-03-05T00:00:00Z")));
        // Recorded closed: it stays closed when the clock says otherwise.
        tenant.clinics.get_mut("kochi").unwrap().closed_through = Some(date("2026-03-10"));
        assert!(is_closed(Some(&tenant), "kochi", date("2026-03-10"), &rules, at("2026-03-04T00:00:00Z")));
        assert!(!is_closed(Some(&tenant), "kochi", date("2026-03-11"), &rules, at("2026-03-04T00:00:00Z")));
    }
}
