//! The waitlist (API.md "Waitlist"): patients waiting for a clinic day (one
//! doctor's, or any), offered a freed slot as a hold in the same command that
//! freed it, in the order they joined. An offer's hold confirmed books the
//! entry; expired, it expires the entry and the slot goes to the next one;
//! released, it withdraws the entry.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::booking::BookingDetails;
use super::holds::{HoldDetails, HoldStatus};
use super::state::TenantState;
use super::{Context, EventKind, Patient, Position, Rejection, Rules, SlotTime, Text, zones};

/// What a patient asks to wait for, as `WaitlistJoined` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDetails {
    pub entry_id: Uuid,
    pub clinic: Text,
    pub date: NaiveDate,
    /// Any doctor of the clinic when none.
    pub doctor: Option<Text>,
    pub patient: Patient,
    pub patient_id: Option<Text>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    Waiting,
    /// Offered a slot, held by this hold.
    Offered(Uuid),
    /// Its offer was confirmed as this booking.
    Booked(Uuid),
    Expired,
    Withdrawn,
}

impl EntryStatus {
    pub fn name(self) -> &'static str {
        match self {
            EntryStatus::Waiting => "waiting",
            EntryStatus::Offered(_) => "offered",
            EntryStatus::Booked(_) => "booked",
            EntryStatus::Expired => "expired",
            EntryStatus::Withdrawn => "withdrawn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub details: EntryDetails,
    pub status: EntryStatus,
    /// Its place in the line: the position it joined at.
    pub joined: Position,
    pub joined_at: DateTime<Utc>,
    /// The position of the last event that changed it.
    pub position: Position,
}

impl Entry {
    /// The status at `now`: an offer past its hold's expiry has expired,
    /// written or not.
    pub fn status_at(&self, tenant: &TenantState, now: DateTime<Utc>) -> EntryStatus {
        match self.status {
            EntryStatus::Offered(hold_id) if tenant.find_hold(&hold_id).is_some_and(|h| h.status_at(now) == HoldStatus::Expired) => {
                EntryStatus::Expired
            }
            status => status,
        }
    }
}

/// The id of the hold an offer places: made from the position of its event,
/// so that `decide` stays a function of its inputs.
pub fn offer_hold_id(position: Position) -> Uuid {
    Uuid::from_u64_pair(0x6f66_6665_7200_0000, position)
}

/// Joining while a matching slot is free offers it at once.
pub(super) fn decide_join(
    tenant: Option<&TenantState>,
    request: &EntryDetails,
    rules: &Rules,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    if let Some(doctor) = &request.doctor
        && tenant.and_then(|t| t.clinics.get(&request.clinic)).and_then(|c| c.doctors.get(doctor)).is_none()
    {
        return Err(Rejection::UnknownDoctor { clinic: request.clinic.clone(), doctor: doctor.clone() });
    }
    let mut kinds = vec![EventKind::WaitlistJoined { details: request.clone() }];
    if let Some(tenant) = tenant
        && let Some((doctor, slot)) =
            free_slot(tenant, &request.clinic, request.date, request.doctor.as_ref(), &BTreeSet::new(), context.now)
    {
        kinds.push(offer(request, doctor, slot, rules, context, kinds.len()));
    }
    Ok(kinds)
}

/// Withdrawing a waiting entry removes it; an offered one releases its hold
/// (which offers the slot to the next); again, or expired, is a repeat.
pub(super) fn decide_withdraw(tenant: Option<&TenantState>, entry_id: Uuid, context: &Context) -> Result<Vec<EventKind>, Rejection> {
    let (tenant, entry) = tenant.and_then(|t| Some((t, t.find_entry(&entry_id)?))).ok_or(Rejection::EntryNotFound { entry_id })?;
    match entry.status_at(tenant, context.now) {
        EntryStatus::Waiting => Ok(vec![EventKind::WaitlistWithdrawn { entry_id }]),
        EntryStatus::Offered(hold_id) => Ok(vec![EventKind::HoldReleased { hold_id }]),
        EntryStatus::Booked(booking_id) => Err(Rejection::EntryBooked { entry_id, booking_id }),
        EntryStatus::Expired | EntryStatus::Withdrawn => Ok(vec![]),
    }
}

/// The first slot of `date` free for an entry of `clinic` (any doctor, or
/// `doctor`): not booked, not held, at a time that exists, not `taken`.
fn free_slot(
    tenant: &TenantState,
    clinic: &Text,
    date: NaiveDate,
    doctor: Option<&Text>,
    taken: &BTreeSet<(Text, u32)>,
    now: DateTime<Utc>,
) -> Option<(Text, u32)> {
    let zone = zones::zone_of(Some(tenant), clinic);
    let doctors = tenant.clinics.get(clinic)?.doctors.iter().filter(|(name, _)| doctor.is_none_or(|d| *name == d));
    for (name, d) in doctors {
        let day = d.days.get(&date);
        for slot in 0..d.schedule.slots_per_day {
            let held = day.and_then(|day| day.held.get(&slot)).is_some_and(|h| tenant.holds[h].expires_at > now);
            if day.and_then(|day| day.slots.get(&slot)).is_none()
                && !held
                && !taken.contains(&(name.clone(), slot))
                && !matches!(SlotTime::of(zone, &d.schedule, date, slot), SlotTime::Unavailable { .. })
            {
                return Some((name.clone(), slot));
            }
        }
    }
    None
}

/// The hold offering `doctor`'s `slot` to `entry`, as the `index`th event of its command.
fn offer(entry: &EntryDetails, doctor: Text, slot: u32, rules: &Rules, context: &Context, index: usize) -> EventKind {
    let hold = HoldDetails {
        hold_id: offer_hold_id(context.position_next + index as u64),
        clinic: entry.clinic.clone(),
        doctor,
        date: entry.date,
        slot,
        patient: Some(entry.patient.clone()),
        patient_id: entry.patient_id.clone(),
        entry_id: Some(entry.entry_id),
    };
    EventKind::HoldPlaced { details: hold, expires_at: context.now + chrono::Duration::seconds(rules.waitlist_offer_secs.into()) }
}

/// The slots the events `kinds` free, as (clinic, doctor, date, slot).
fn freed(tenant: &TenantState, kinds: &[EventKind]) -> Vec<(Text, Text, NaiveDate, u32)> {
    let mut freed = Vec::new();
    let place = |d: &BookingDetails| (d.clinic.clone(), d.doctor.clone(), d.date, d.slot);
    for kind in kinds {
        match kind {
            EventKind::BookingCancelled { booking_id, .. } | EventKind::BookingRescheduled { booking_id, .. } => {
                freed.extend(tenant.bookings.get(booking_id).map(|b| place(&b.details)));
            }
            EventKind::HoldReleased { hold_id } | EventKind::HoldExpired { hold_id } => {
                freed.extend(
                    tenant.holds.get(hold_id).map(|h| (h.details.clinic.clone(), h.details.doctor.clone(), h.details.date, h.details.slot)),
                );
            }
            EventKind::ScheduleSet { clinic, doctor, schedule } => {
                let before = tenant.clinics.get(clinic).and_then(|c| c.doctors.get(doctor)).map_or(0, |d| d.schedule.slots_per_day);
                let dates: BTreeSet<NaiveDate> = tenant
                    .waiting
                    .range((clinic.clone(), NaiveDate::MIN)..=(clinic.clone(), NaiveDate::MAX))
                    .map(|((_, date), _)| *date)
                    .collect();
                for date in dates {
                    freed.extend((before..schedule.slots_per_day).map(|slot| (clinic.clone(), doctor.clone(), date, slot)));
                }
            }
            _ => {}
        }
    }
    freed
}

/// The slots `kinds` take (booked or held), as (doctor, slot) of a clinic day.
fn taken(kinds: &[EventKind], clinic: &Text, date: NaiveDate) -> BTreeSet<(Text, u32)> {
    let mut taken = BTreeSet::new();
    for kind in kinds {
        match kind {
            EventKind::BookingCreated(c) if c.details.clinic == *clinic && c.details.date == date => {
                taken.insert((c.details.doctor.clone(), c.details.slot));
            }
            EventKind::BookingRescheduled { clinic: c, doctor, date: d, slot, .. } if c == clinic && *d == date => {
                taken.insert((doctor.clone(), *slot));
            }
            EventKind::HoldPlaced { details: h, .. } if h.clinic == *clinic && h.date == date => {
                taken.insert((h.doctor.clone(), h.slot));
            }
            _ => {}
        }
    }
    taken
}

/// Appends to a command's `kinds` the offers of the slots they free: each to
/// the first waiting entry it matches, one offer per entry.
pub(super) fn offer_freed(tenant: Option<&TenantState>, kinds: &mut Vec<EventKind>, rules: &Rules, context: &Context) {
    let Some(tenant) = tenant else { return };
    if tenant.waiting.is_empty() {
        return;
    }
    let mut offered = BTreeSet::new();
    for (clinic, doctor, date, slot) in freed(tenant, kinds) {
        let Some(line) = tenant.waiting.get(&(clinic.clone(), date)) else { continue };
        if taken(kinds, &clinic, date).contains(&(doctor.clone(), slot))
            || super::days::is_closed(Some(tenant), &clinic, date, rules, context.now)
        {
            continue;
        }
        let zone = zones::zone_of(Some(tenant), &clinic);
        // The schedule as the command leaves it: one that grows frees its new slots.
        let set_now = kinds.iter().rev().find_map(|kind| match kind {
            EventKind::ScheduleSet { clinic: c, doctor: d, schedule } if *c == clinic && *d == doctor => Some(*schedule),
            _ => None,
        });
        let schedule = set_now.or_else(|| tenant.clinics.get(&clinic).and_then(|c| c.doctors.get(&doctor)).map(|d| d.schedule));
        if schedule.is_none_or(|s| slot >= s.slots_per_day || matches!(SlotTime::of(zone, &s, date, slot), SlotTime::Unavailable { .. })) {
            continue;
        }
        let next = line
            .values()
            .map(|id| &tenant.waitlist[id])
            .find(|e| !offered.contains(&e.details.entry_id) && e.details.doctor.as_ref().is_none_or(|d| *d == doctor));
        if let Some(entry) = next {
            offered.insert(entry.details.entry_id);
            kinds.push(offer(&entry.details, doctor, slot, rules, context, kinds.len()));
        }
    }
}

/// Sets an entry's status at `position`; a waiting one leaves the line.
fn set_status(tenant: &mut TenantState, entry_id: Uuid, status: EntryStatus, position: Position) {
    let entry = Arc::make_mut(tenant.waitlist.get_mut(&entry_id).expect("a known entry"));
    if entry.status == EntryStatus::Waiting {
        let key = (entry.details.clinic.clone(), entry.details.date);
        let line = tenant.waiting.get_mut(&key).expect("a waiting entry is in its line");
        assert_eq!(line.remove(&entry.joined), Some(entry_id), "the entry waited in its line");
        if line.is_empty() {
            tenant.waiting.remove(&key);
        }
    }
    entry.status = status;
    entry.position = position;
}

/// Expires every entry still waiting for `clinic` on a day through `through`
/// (called by `days_closed`'s `apply`; offered ones expired with their holds).
pub(super) fn expire_lines(tenant: &mut TenantState, clinic: &Text, through: NaiveDate, position: Position) {
    let waiting: Vec<Uuid> = tenant
        .waiting
        .range((clinic.clone(), NaiveDate::MIN)..=(clinic.clone(), through))
        .flat_map(|(_, line)| line.values().copied())
        .collect();
    for entry_id in waiting {
        set_status(tenant, entry_id, EntryStatus::Expired, position);
    }
}

/// What an offer's hold ending means for its entry (called by the holds' and bookings' `apply`).
pub(super) fn hold_ended(tenant: &mut TenantState, entry_id: Uuid, ended: HoldStatus, position: Position) {
    let status = match ended {
        HoldStatus::Confirmed(booking_id) => EntryStatus::Booked(booking_id),
        HoldStatus::Released => EntryStatus::Withdrawn,
        HoldStatus::Expired => EntryStatus::Expired,
        HoldStatus::Held => unreachable!("a hold that ends"),
    };
    set_status(tenant, entry_id, status, position);
}

/// An offer placed for `entry_id` (called by the holds' `apply`).
pub(super) fn offered(tenant: &mut TenantState, entry_id: Uuid, hold_id: Uuid, position: Position) {
    assert_eq!(tenant.waitlist.get(&entry_id).map(|e| e.status), Some(EntryStatus::Waiting), "offers go to waiting entries");
    set_status(tenant, entry_id, EntryStatus::Offered(hold_id), position);
}

impl TenantState {
    /// Makes an entry's clinic and doctor names the schedule's own (see [`TenantState::share_names`]).
    pub fn share_entry_names(&self, details: &mut EntryDetails) {
        let mut doctor = details.doctor.clone().unwrap_or_default();
        self.share_clinic_and_doctor(&mut details.clinic, &mut doctor);
        details.doctor = details.doctor.take().map(|_| doctor);
    }
}

pub(super) fn apply(tenant: &mut TenantState, kind: &EventKind, at: DateTime<Utc>, position: Position) {
    match kind {
        EventKind::WaitlistJoined { details } => {
            let mut details = details.clone();
            tenant.share_entry_names(&mut details);
            let key = (details.clinic.clone(), details.date);
            let entry = Entry { details, status: EntryStatus::Waiting, joined: position, joined_at: at, position };
            tenant.waiting.entry(key.clone()).or_default().insert(position, entry.details.entry_id);
            super::state::DayRecords::add(&mut tenant.day_records.entry(key).or_default().entries, entry.details.entry_id);
            assert!(tenant.waitlist.insert(entry.details.entry_id, Arc::new(entry)).is_none(), "entry ids are unique");
        }
        EventKind::WaitlistWithdrawn { entry_id } => {
            assert_eq!(tenant.waitlist.get(entry_id).map(|e| e.status), Some(EntryStatus::Waiting), "withdrawing a waiting entry");
            set_status(tenant, *entry_id, EntryStatus::Withdrawn, position);
        }
        _ => unreachable!("not a waitlist event"),
    }
}
