//! Holds: a slot kept for a patient who is deciding, until it is confirmed
//! into a booking, released, or expires by the ledger's own clock (API.md
//! "Holds"). A hold blocks its slot only until its `expires_at`: the clock in
//! the [`Context`] decides that, whether or not its `hold_expired` event has
//! been written yet, and a command that touches a slot whose hold is past its
//! expiry appends that event first, in the same command.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::booking::{BookingCreated, BookingDetails, BookingKind, Day, External, doctor_of, free_to_take, slot_to_take};
use super::state::{State, TenantState};
use super::{Context, Event, EventKind, Patient, Position, Rejection, Rules, Text};

/// What a hold is, as the `Hold` command asks for it and `HoldPlaced` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldDetails {
    pub hold_id: Uuid,
    pub clinic: Text,
    pub doctor: Text,
    pub date: NaiveDate,
    pub slot: u32,
    pub patient: Option<Patient>,
    pub patient_id: Option<Text>,
    /// The waitlist entry this hold offers the slot to, if it is an offer.
    pub entry_id: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    /// Confirmed into this booking.
    Confirmed(Uuid),
    Released,
    Expired,
}

impl HoldStatus {
    pub fn name(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Confirmed(_) => "confirmed",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub details: HoldDetails,
    pub expires_at: DateTime<Utc>,
    /// As the events say: a hold past its expiry whose `hold_expired` is not
    /// written yet is still `Held` here; [`Hold::status_at`] tells the truth.
    pub status: HoldStatus,
    pub created_at: DateTime<Utc>,
    /// The position of the last event that changed the hold.
    pub position: Position,
}

impl Hold {
    /// The status at `now`: a hold never outlives its `expires_at`.
    pub fn status_at(&self, now: DateTime<Utc>) -> HoldStatus {
        match self.status {
            HoldStatus::Held if self.expires_at <= now => HoldStatus::Expired,
            status => status,
        }
    }
}

/// What stands on a free-looking slot of `day`: `Err(slot_held)` for a hold
/// still in force at `now`; otherwise the `hold_expired` to append first for a
/// hold past its expiry whose event is not written yet (none when no hold).
pub(super) fn clear_expired_hold(
    tenant: &TenantState,
    day: Option<&Day>,
    slot: u32,
    now: DateTime<Utc>,
) -> Result<Option<EventKind>, Rejection> {
    let Some(hold_id) = day.and_then(|d| d.held.get(&slot)) else { return Ok(None) };
    let hold = &tenant.holds[hold_id];
    if hold.expires_at > now {
        return Err(Rejection::SlotHeld { hold_id: *hold_id, expires_at: hold.expires_at });
    }
    Ok(Some(EventKind::HoldExpired { hold_id: *hold_id }))
}

/// The checks run in the order API.md gives: schedule, slot range, the slot
/// (booked, then held), then the tenant's limit of active holds.
pub(super) fn decide_hold(
    tenant: Option<&TenantState>,
    request: &HoldDetails,
    ttl_secs: u32,
    rules: &Rules,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    let (tenant, doctor) = slot_to_take(tenant, &request.clinic, &request.doctor, request.date, request.slot)?;
    let mut kinds = free_to_take(tenant, doctor.days.get(&request.date), request.slot, context.now)?;
    // Holds past their expiry do not count: the writer expires them before
    // this batch, or this command just did.
    let active = tenant.hold_expiries.range((context.now, Uuid::max())..).count();
    if active >= rules.holds_max as usize {
        let earliest = tenant.hold_expiries.range((context.now, Uuid::max())..).next().map_or(context.now, |(at, _)| *at);
        let retry_after_secs = ((earliest - context.now).num_seconds() + 1).clamp(1, u32::MAX as i64) as u32;
        return Err(Rejection::TooManyHolds { limit: rules.holds_max, retry_after_secs });
    }
    let expires_at = context.now + chrono::Duration::seconds(i64::from(ttl_secs));
    kinds.push(EventKind::HoldPlaced { details: request.clone(), expires_at });
    Ok(kinds)
}

/// A field given at hold time and at confirmation must agree; either may give it.
fn agreed<T: PartialEq + Clone>(at_hold: &Option<T>, now: &Option<T>, field: &'static str) -> Result<Option<T>, Rejection> {
    match (at_hold, now) {
        (Some(a), Some(b)) if a != b => Err(Rejection::HoldPatientMismatch { field }),
        (Some(a), _) => Ok(Some(a.clone())),
        (None, b) => Ok(b.clone()),
    }
}

/// The hold named by a command, or `not_found`.
fn hold_of(tenant: Option<&TenantState>, hold_id: Uuid) -> Result<(&TenantState, &Arc<Hold>), Rejection> {
    tenant.and_then(|t| Some((t, t.find_hold(&hold_id)?))).ok_or(Rejection::HoldNotFound { hold_id })
}

/// Confirming a confirmed hold is a repeat: it changes nothing.
pub(super) fn decide_confirm(
    tenant: Option<&TenantState>,
    hold_id: Uuid,
    booking_id: Uuid,
    patient: &Option<Patient>,
    patient_id: &Option<Text>,
    kind: Option<BookingKind>,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    let (tenant, hold) = hold_of(tenant, hold_id)?;
    match hold.status_at(context.now) {
        HoldStatus::Confirmed(_) => return Ok(vec![]),
        HoldStatus::Released => return Err(Rejection::HoldReleased { hold_id }),
        HoldStatus::Expired => return Err(Rejection::HoldExpired { hold_id, expires_at: hold.expires_at }),
        HoldStatus::Held => {}
    }
    let patient = agreed(&hold.details.patient, patient, "patient")?.ok_or(Rejection::PatientRequired)?;
    let patient_id = agreed(&hold.details.patient_id, patient_id, "patient_id")?;
    let HoldDetails { clinic, doctor, date, slot, .. } = &hold.details;
    let Some(schedule_doctor) = doctor_of(tenant, clinic, doctor) else { unreachable!("a hold needs a schedule") };
    let slots_per_day = schedule_doctor.schedule.slots_per_day;
    // The schedule may have shrunk below the slot since it was held.
    if *slot >= slots_per_day {
        return Err(Rejection::SlotOutOfRange { slot: *slot, slots_per_day });
    }
    let kind = kind.unwrap_or(BookingKind::Advance);
    let token_number = schedule_doctor.days.get(date).map_or(0, |d| d.tokens_issued(kind)) + 1;
    let details = BookingDetails {
        booking_id,
        clinic: clinic.clone(),
        doctor: doctor.clone(),
        date: *date,
        slot: *slot,
        patient,
        kind,
        external: External { external_ref: None, correlation_id: None, external_created_at: None, hold_id: Some(hold_id), patient_id }
            .boxed_if_any(),
    };
    Ok(vec![EventKind::BookingCreated(BookingCreated { details, token_number })])
}

/// Releasing a released hold is a repeat: it changes nothing.
pub(super) fn decide_release(tenant: Option<&TenantState>, hold_id: Uuid, context: &Context) -> Result<Vec<EventKind>, Rejection> {
    let (_, hold) = hold_of(tenant, hold_id)?;
    match hold.status_at(context.now) {
        HoldStatus::Held => Ok(vec![EventKind::HoldReleased { hold_id }]),
        HoldStatus::Released => Ok(vec![]),
        HoldStatus::Confirmed(booking_id) => Err(Rejection::HoldConfirmed { hold_id, booking_id }),
        HoldStatus::Expired => Err(Rejection::HoldExpired { hold_id, expires_at: hold.expires_at }),
    }
}

/// Who the ledger's own events are from: the writer's clock, not a client.
pub const LEDGER_ACTOR: &str = "ledger";

/// The `hold_expired` events due at `context.now`, tenant by tenant, each
/// tenant's in order of expiry and followed by the waitlist offers of the
/// slots they free, at consecutive positions from `context.position_next`.
/// The writer appends them before it decides a batch, and on its timer.
pub fn expiries_due(state: &State, context: &Context) -> Vec<Event> {
    let actor: Text = LEDGER_ACTOR.into();
    let request_id: Text = "".into();
    let mut events = Vec::new();
    for (name, tenant) in &state.tenants {
        let mut kinds: Vec<EventKind> = tenant
            .hold_expiries
            .range(..=(context.now, Uuid::max()))
            .map(|(_, hold_id)| EventKind::HoldExpired { hold_id: *hold_id })
            .collect();
        if kinds.is_empty() {
            continue;
        }
        let at = Context { now: context.now, position_next: context.position_next + events.len() as u64 };
        super::waitlist::offer_freed(Some(tenant), &mut kinds, &state.rules, &at);
        events.extend(kinds.into_iter().enumerate().map(|(i, kind)| Event {
            position: at.position_next + i as u64,
            recorded_at: context.now,
            tenant: name.clone(),
            actor: actor.clone(),
            request_id: request_id.clone(),
            idempotency_key: None,
            kind,
            response: None,
        }));
    }
    events
}

/// When the next active hold expires, of every tenant's: the writer's timer.
pub fn next_expiry(state: &State) -> Option<DateTime<Utc>> {
    state.tenants.values().filter_map(|t| t.hold_expiries.first().map(|(at, _)| *at)).min()
}

/// Marks the hold confirmed by `booking_id` and gives its slot to the booking
/// (called by the booking's `apply`, which then books the slot).
pub(super) fn confirm(tenant: &mut TenantState, hold_id: Uuid, booking_id: Uuid, position: Position) {
    end(tenant, hold_id, HoldStatus::Confirmed(booking_id), position);
}

/// Ends an active hold: its status, its slot freed, its expiry forgotten.
fn end(tenant: &mut TenantState, hold_id: Uuid, status: HoldStatus, position: Position) {
    let hold = Arc::make_mut(tenant.holds.get_mut(&hold_id).expect("ending a known hold"));
    assert_eq!(hold.status, HoldStatus::Held, "ending an active hold");
    hold.status = status;
    hold.position = position;
    assert!(tenant.hold_expiries.remove(&(hold.expires_at, hold_id)), "an active hold's expiry is known");
    let entry_id = hold.details.entry_id;
    let HoldDetails { clinic, doctor, date, slot, .. } = &hold.details;
    let day = tenant.clinics.get_mut(clinic).and_then(|c| c.doctors.get_mut(doctor)).and_then(|d| d.days.get_mut(date));
    let freed = day.and_then(|d| d.held.remove(slot));
    assert_eq!(freed, Some(hold_id), "the hold held its slot");
    if let Some(entry_id) = entry_id {
        super::waitlist::hold_ended(tenant, entry_id, status, position);
    }
}

pub(super) fn apply(tenant: &mut TenantState, kind: &EventKind, at: DateTime<Utc>, position: Position) {
    match kind {
        EventKind::HoldPlaced { details, expires_at } => {
            let doctor =
                tenant.clinics.get_mut(&details.clinic).and_then(|c| c.doctors.get_mut(&details.doctor)).expect("a hold needs a schedule");
            assert!(details.slot < doctor.schedule.slots_per_day, "slot beyond the schedule");
            let day = doctor.days.entry(details.date).or_default();
            assert_eq!(day.slots.get(&details.slot), None, "a held slot is not booked");
            assert_eq!(day.held.insert(details.slot, details.hold_id), None, "one hold per slot");
            assert!(tenant.hold_expiries.insert((*expires_at, details.hold_id)), "hold ids are unique");
            let mut details = details.clone();
            tenant.share_clinic_and_doctor(&mut details.clinic, &mut details.doctor);
            let hold = Hold { details, expires_at: *expires_at, status: HoldStatus::Held, created_at: at, position };
            let records = tenant.day_records.entry((hold.details.clinic.clone(), hold.details.date)).or_default();
            super::state::DayRecords::add(&mut records.holds, hold.details.hold_id);
            if let Some(entry_id) = hold.details.entry_id {
                super::waitlist::offered(tenant, entry_id, hold.details.hold_id, position);
            }
            let previous = tenant.holds.insert(hold.details.hold_id, Arc::new(hold));
            assert!(previous.is_none(), "hold ids are unique");
        }
        EventKind::HoldReleased { hold_id } => {
            end(tenant, *hold_id, HoldStatus::Released, position);
        }
        EventKind::HoldExpired { hold_id } => {
            end(tenant, *hold_id, HoldStatus::Expired, position);
        }
        _ => unreachable!("not a hold event"),
    }
}
