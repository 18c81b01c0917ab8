//! Schedules and bookings: at most one active booking per slot, tokens issued
//! in sequence per (clinic, doctor, date, kind) and never reused, an external
//! calendar's reference bound to one booking forever. Like every workflow of
//! the core it reads no clock and no configuration: they come in as arguments.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::state::{DayRecords, State, TenantState};
use super::{Context, EventKind, Patient, Position, Rejection, Rules, SlotTime, Text, holds, zones};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// 1..=1000.
    pub slots_per_day: u32,
    /// Minutes after midnight of slot 0.
    pub first_slot_minute: Option<u32>,
    /// 1..=480.
    pub slot_minutes: Option<u32>,
}

impl Schedule {
    /// The wall-clock start of `slot` in minutes after midnight, when the schedule
    /// says and the slot starts before midnight.
    pub fn slot_minute(&self, slot: u32) -> Option<u32> {
        let minute = self.first_slot_minute? + slot * self.slot_minutes?;
        (minute < 24 * 60).then_some(minute)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum BookingKind {
    Advance,
    WalkIn,
}

impl BookingKind {
    pub fn token_prefix(self) -> char {
        match self {
            BookingKind::Advance => 'A',
            BookingKind::WalkIn => 'W',
        }
    }
}

/// `A005`: the kind's letter and at least three digits.
pub fn token(kind: BookingKind, number: u32) -> String {
    format!("{}{number:03}", kind.token_prefix())
}

/// What a booking is, declared once: the `Book` command carries it,
/// [`BookingCreated`] records it and the projection's [`Booking`] keeps it.
/// All of it is what the caller asked for; what the ledger decided (the token,
/// the status, the positions) sits beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingDetails {
    /// Chosen by the caller: a UUIDv7, so that new ids sort last and the booking
    /// index grows at its edge. `apply` asserts it is new.
    pub booking_id: Uuid,
    pub clinic: Text,
    pub doctor: Text,
    pub date: NaiveDate,
    pub slot: u32,
    /// Inline up to 24 bytes (most names): no allocation of its own.
    pub patient: Patient,
    pub kind: BookingKind,
    /// What an external calendar sent with the booking (incident 04) and the
    /// hold it confirmed, boxed: most bookings carry none of it and pay 8
    /// bytes instead of 64.
    pub external: Option<Box<External>>,
}

/// The fields of a booking that most bookings lack: what an external
/// calendar sets, and the hold the booking confirmed. Never all absent: a
/// booking without any of them has no `External` (see [`External::boxed`]),
/// so that two equal bookings are equal field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub external_ref: Option<Text>,
    pub correlation_id: Option<Text>,
    pub external_created_at: Option<DateTime<Utc>>,
    pub hold_id: Option<Uuid>,
    /// The caller's id of the patient, never itself personal data.
    pub patient_id: Option<Text>,
}

impl External {
    /// The box for an external calendar's fields, or `None` when none is given.
    pub fn boxed(
        external_ref: Option<Text>,
        correlation_id: Option<Text>,
        external_created_at: Option<DateTime<Utc>>,
    ) -> Option<Box<External>> {
        External { external_ref, correlation_id, external_created_at, hold_id: None, patient_id: None }.boxed_if_any()
    }

    /// The box for these fields, or `None` when none is given: two equal
    /// bookings are then equal field by field.
    pub fn boxed_if_any(self) -> Option<Box<External>> {
        let External { external_ref, correlation_id, external_created_at, hold_id, patient_id } = &self;
        (external_ref.is_some() || correlation_id.is_some() || external_created_at.is_some() || hold_id.is_some() || patient_id.is_some())
            .then(|| Box::new(self))
    }
}

impl BookingDetails {
    pub fn external_ref(&self) -> Option<&Text> {
        self.external.as_ref()?.external_ref.as_ref()
    }

    pub fn correlation_id(&self) -> Option<&Text> {
        self.external.as_ref()?.correlation_id.as_ref()
    }

    pub fn external_created_at(&self) -> Option<DateTime<Utc>> {
        self.external.as_ref()?.external_created_at
    }

    /// The hold this booking confirmed.
    pub fn hold_id(&self) -> Option<Uuid> {
        self.external.as_ref()?.hold_id
    }

    pub fn patient_id(&self) -> Option<&Text> {
        self.external.as_ref()?.patient_id.as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingCreated {
    pub details: BookingDetails,
    pub token_number: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Clinic {
    pub doctors: BTreeMap<Text, Doctor>,
    /// Its zone, once set; UTC until then.
    pub zone: Option<super::ClinicZone>,
    /// Its last closed day ([`super::days`]): this day and every one before it never reopen.
    pub closed_through: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doctor {
    pub schedule: Schedule,
    /// The position of the event that set `schedule`.
    pub schedule_position: Position,
    pub days: BTreeMap<NaiveDate, Day>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Day {
    /// The active booking holding each booked slot; a free slot is absent.
    pub slots: SlotMap,
    /// The active hold on each held slot (never a booked one).
    pub held: SlotMap,
    /// The last token number issued per kind; the next one is this plus one.
    pub tokens_issued_advance: u32,
    pub tokens_issued_walk_in: u32,
}

impl Day {
    pub fn tokens_issued(&self, kind: BookingKind) -> u32 {
        match kind {
            BookingKind::Advance => self.tokens_issued_advance,
            BookingKind::WalkIn => self.tokens_issued_walk_in,
        }
    }

    fn tokens_issued_mut(&mut self, kind: BookingKind) -> &mut u32 {
        match kind {
            BookingKind::Advance => &mut self.tokens_issued_advance,
            BookingKind::WalkIn => &mut self.tokens_issued_walk_in,
        }
    }
}

/// A day's booked (or held) slots and the booking (or hold) on each, as one sorted vector:
/// 20 bytes a booked slot (a B-tree map took about twice that in nodes about
/// half full, in each of the writer's two copies). A day has at most
/// `slots_per_day` (at most 1,000) entries, so an insert or a removal moves at
/// most 20 KB, and the vector grows by doubling up to that bound: no stall
/// grows with the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotMap {
    /// Sorted by slot, each slot once.
    entries: Vec<(u32, Uuid)>,
}

impl SlotMap {
    /// The map of these entries, in any order; `None` if a slot is given twice.
    pub fn from_entries(mut entries: Vec<(u32, Uuid)>) -> Option<SlotMap> {
        entries.sort_unstable_by_key(|(slot, _)| *slot);
        if entries.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return None;
        }
        entries.shrink_to_fit();
        Some(SlotMap { entries })
    }

    fn find(&self, slot: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&slot, |(s, _)| *s)
    }

    pub fn get(&self, slot: &u32) -> Option<&Uuid> {
        self.find(*slot).ok().map(|i| &self.entries[i].1)
    }

    /// Books `slot` for `booking_id`; the booking that held it, if one did.
    pub fn insert(&mut self, slot: u32, booking_id: Uuid) -> Option<Uuid> {
        match self.find(slot) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, booking_id)),
            Err(i) => {
                self.entries.insert(i, (slot, booking_id));
                None
            }
        }
    }

    pub fn remove(&mut self, slot: &u32) -> Option<Uuid> {
        self.find(*slot).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The first booked slot at or after `slot`, with its booking.
    pub fn first_from(&self, slot: u32) -> Option<(&u32, &Uuid)> {
        let i = self.find(slot).unwrap_or_else(|i| i);
        self.entries.get(i).map(|(slot, id)| (slot, id))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The booked slots in order, each with its booking.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &Uuid)> {
        self.into_iter()
    }

    /// Gives back memory the vector holds beyond its entries (after a start-up).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }
}

impl<'a> IntoIterator for &'a SlotMap {
    type Item = (&'a u32, &'a Uuid);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (u32, Uuid)>, fn(&'a (u32, Uuid)) -> (&'a u32, &'a Uuid)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(slot, id)| (slot, id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attendance {
    Arrived,
    NoShow,
}

impl Attendance {
    pub fn name(self) -> &'static str {
        match self {
            Attendance::Arrived => "arrived",
            Attendance::NoShow => "no_show",
        }
    }
}

/// Where a booking was, with the token it had there: what a reschedule moved it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub doctor: Text,
    pub date: NaiveDate,
    pub slot: u32,
    pub kind: BookingKind,
    pub token_number: u32,
}

impl Place {
    pub fn token(&self) -> String {
        token(self.kind, self.token_number)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub details: BookingDetails,
    pub token_number: u32,
    pub status: BookingStatus,
    pub created_at: DateTime<Utc>,
    /// The position of the last event that changed this booking.
    pub position: Position,
    /// Boxed behind a thin pointer (8 bytes in every booking, not the 16 of
    /// an `Arc<str>` or a `Box<str>`): most bookings never have one.
    pub cancel_reason: Option<Box<Text>>,
    /// 1 when created, one more at each event that changed it.
    pub version: u32,
    pub attendance: Option<Attendance>,
    /// Where its latest reschedule moved it from; boxed, as most never move.
    pub rescheduled_from: Option<Box<Place>>,
}

impl Booking {
    pub fn token(&self) -> String {
        token(self.details.kind, self.token_number)
    }
}

impl State {
    pub fn booking(&self, tenant: &str, booking_id: &Uuid) -> Option<&Arc<Booking>> {
        self.tenant(tenant)?.bookings.get(booking_id)
    }
}

impl TenantState {
    /// When a booking's slot is, in its clinic's zone (a booked slot keeps an
    /// instant even if its time stopped existing: [`SlotTime::booked`]).
    pub fn booking_time(&self, booking: &Booking) -> SlotTime {
        let BookingDetails { booking_id, clinic, date, .. } = &booking.details;
        // A closed day's booking read back: in the zone its day closed in.
        let closed = (!self.bookings.contains_key(booking_id)).then(|| self.closed.zones.get(&(clinic.clone(), *date)).copied()).flatten();
        self.booking_time_in(booking, closed.unwrap_or_else(|| zones::zone_of(Some(self), clinic)))
    }

    /// When a booking's slot is in `zone` (a closed day's: the zone it closed in).
    pub fn booking_time_in(&self, booking: &Booking, zone: super::Tz) -> SlotTime {
        let BookingDetails { clinic, doctor, date, slot, .. } = &booking.details;
        let Some(schedule) = doctor_of(self, clinic, doctor).map(|d| d.schedule) else { return SlotTime::Untimed };
        SlotTime::booked(zone, &schedule, *date, *slot)
    }
}

pub(super) fn doctor_of<'a>(tenant: &'a TenantState, clinic: &str, doctor: &str) -> Option<&'a Doctor> {
    tenant.clinics.get(clinic)?.doctors.get(doctor)
}

/// The doctor whose `slot` on `date` a booking, hold or move would take, in
/// API.md's order: the doctor has a schedule (404), the slot is within it
/// (422) and starts at a time that exists at the clinic (422).
pub(super) fn slot_to_take<'a>(
    tenant: Option<&'a TenantState>,
    clinic: &Text,
    doctor: &Text,
    date: NaiveDate,
    slot: u32,
) -> Result<(&'a TenantState, &'a Doctor), Rejection> {
    let Some((tenant, found)) = tenant.and_then(|t| Some((t, doctor_of(t, clinic, doctor)?))) else {
        return Err(Rejection::UnknownDoctor { clinic: clinic.clone(), doctor: doctor.clone() });
    };
    let slots_per_day = found.schedule.slots_per_day;
    if slot >= slots_per_day {
        return Err(Rejection::SlotOutOfRange { slot, slots_per_day });
    }
    zones::check_available(tenant, clinic, &found.schedule, date, slot)?;
    Ok((tenant, found))
}

/// Whether `slot` of `day` is free to take at `now`: 409 `slot_taken` naming
/// its booking, then `slot_held` for a hold in force; for a hold past its
/// expiry whose event is not written yet, the `hold_expired` to append first.
pub(super) fn free_to_take(tenant: &TenantState, day: Option<&Day>, slot: u32, now: DateTime<Utc>) -> Result<Vec<EventKind>, Rejection> {
    if let Some(booking_id) = day.and_then(|d| d.slots.get(&slot)) {
        return Err(Rejection::SlotTaken { booking_id: *booking_id, token: tenant.bookings[booking_id].token() });
    }
    Ok(holds::clear_expired_hold(tenant, day, slot, now)?.into_iter().collect())
}

/// A timed schedule's slots all start before midnight; changing a doctor's
/// schedule must leave every active booking inside it; adding a doctor must
/// leave the clinic within `doctors_per_clinic_max`.
pub(super) fn decide_schedule(
    tenant: Option<&TenantState>,
    clinic: &Text,
    doctor: &Text,
    schedule: &Schedule,
    rules: &Rules,
) -> Result<Vec<EventKind>, Rejection> {
    // Every slot of a timed schedule starts before midnight (API.md).
    if let (Some(first), Some(minutes)) = (schedule.first_slot_minute, schedule.slot_minutes) {
        let past_midnight = (24 * 60 - first.min(24 * 60)).div_ceil(minutes.max(1));
        if past_midnight < schedule.slots_per_day {
            return Err(Rejection::SlotOutOfRange { slot: past_midnight, slots_per_day: schedule.slots_per_day });
        }
    }
    let doctors = tenant.and_then(|t| t.clinics.get(clinic)).map(|c| &c.doctors);
    match doctors.and_then(|d| d.get(doctor)) {
        Some(existing) => {
            if existing.schedule == *schedule {
                return Ok(vec![]);
            }
            for (date, day) in &existing.days {
                if let Some((&slot, &booking_id)) = day.slots.first_from(schedule.slots_per_day) {
                    return Err(Rejection::ScheduleConflict { booking_id, date: *date, slot });
                }
            }
        }
        None => {
            let limit = rules.doctors_per_clinic_max;
            if doctors.map_or(0, BTreeMap::len) >= limit as usize {
                return Err(Rejection::TooManyDoctors { clinic: clinic.clone(), limit });
            }
        }
    }
    Ok(vec![EventKind::ScheduleSet { clinic: clinic.clone(), doctor: doctor.clone(), schedule: *schedule }])
}

/// The checks run in the order API.md gives: schedule, slot range, external
/// reference, freshness, slot (booked, then held).
pub(super) fn decide_book(
    tenant: Option<&TenantState>,
    request: &BookingDetails,
    rules: &Rules,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    let (tenant, doctor) = slot_to_take(tenant, &request.clinic, &request.doctor, request.date, request.slot)?;
    if let Some(external_ref) = request.external_ref()
        && let Some(booking_id) = tenant.find_external_ref(external_ref)
    {
        let bound = tenant.find_booking(booking_id).expect("an external ref's booking");
        if request.correlation_id().is_some() && bound.details.correlation_id() == request.correlation_id() {
            return Ok(vec![]);
        }
        return Err(Rejection::ExternalRefBound {
            external_ref: external_ref.clone(),
            booking_id: *booking_id,
            correlation_id: bound.details.correlation_id().cloned(),
        });
    }
    if let Some(created_at) = request.external_created_at() {
        let age = context.now - created_at;
        if age > rules.freshness_window {
            return Err(Rejection::StaleExternalBooking { age_secs: age.num_seconds(), window_secs: rules.freshness_window.num_seconds() });
        }
        // A timestamp from the future would pass the freshness check forever:
        // the external clock may be ahead of ours by the window, no more.
        if -age > rules.freshness_window {
            let window_secs = rules.freshness_window.num_seconds();
            return Err(Rejection::ExternalCreatedInFuture { ahead_secs: (-age).num_seconds(), window_secs });
        }
    }
    let day = doctor.days.get(&request.date);
    let mut kinds = free_to_take(tenant, day, request.slot, context.now)?;
    let token_number = day.map_or(0, |d| d.tokens_issued(request.kind)) + 1;
    kinds.push(EventKind::BookingCreated(BookingCreated { details: request.clone(), token_number }));
    Ok(kinds)
}

/// Cancelling a cancelled booking is a repeat: it changes nothing.
pub(super) fn decide_cancel(tenant: Option<&TenantState>, booking_id: Uuid, reason: &Option<Text>) -> Result<Vec<EventKind>, Rejection> {
    let booking = tenant.and_then(|t| t.find_booking(&booking_id)).ok_or(Rejection::BookingNotFound { booking_id })?;
    Ok(match booking.status {
        BookingStatus::Cancelled => vec![],
        BookingStatus::Confirmed => vec![EventKind::BookingCancelled { booking_id, reason: reason.clone() }],
    })
}

/// The booking a `Book` command answers with: the one it created or, when it
/// repeated an external reference with its correlation id, the bound one.
pub(super) fn booked(tenant: &TenantState, request: &BookingDetails, created: bool) -> Arc<Booking> {
    let booking_id = if created {
        request.booking_id
    } else {
        let external_ref = request.external_ref().expect("only an external ref repeat books nothing");
        *tenant.find_external_ref(external_ref).expect("a bound external ref")
    };
    tenant.find_booking(&booking_id).expect("the booked booking").clone()
}

impl TenantState {
    /// Makes a booking's clinic and doctor names the schedule's own: one
    /// allocation per name, however many bookings carry it.
    pub fn share_names(&self, details: &mut BookingDetails) {
        self.share_clinic_and_doctor(&mut details.clinic, &mut details.doctor);
    }

    /// Makes a clinic's and doctor's names the schedule's own (see [`TenantState::share_names`]).
    pub fn share_clinic_and_doctor(&self, clinic: &mut Text, doctor: &mut Text) {
        if let Some((shared, c)) = self.clinics.get_key_value(clinic) {
            *clinic = shared.clone();
            if let Some((shared, _)) = c.doctors.get_key_value(doctor) {
                *doctor = shared.clone();
            }
        }
    }
}

pub(super) fn apply(tenant: &mut TenantState, kind: &EventKind, at: DateTime<Utc>, position: Position) {
    match kind {
        EventKind::ScheduleSet { clinic, doctor, schedule } => {
            let doctors = &mut tenant.clinics.entry(clinic.clone()).or_default().doctors;
            let entry = doctors.entry(doctor.clone()).or_insert_with(|| Doctor {
                schedule: *schedule,
                schedule_position: position,
                days: Default::default(),
            });
            entry.schedule = *schedule;
            entry.schedule_position = position;
        }
        EventKind::BookingCreated(BookingCreated { details, token_number }) => {
            if let Some(hold_id) = details.hold_id() {
                holds::confirm(tenant, hold_id, details.booking_id, position);
            }
            let doctor = tenant
                .clinics
                .get_mut(&details.clinic)
                .and_then(|c| c.doctors.get_mut(&details.doctor))
                .expect("a booking needs a schedule");
            assert!(details.slot < doctor.schedule.slots_per_day, "slot beyond the schedule");
            let day = doctor.days.entry(details.date).or_default();
            let issued = day.tokens_issued_mut(details.kind);
            assert_eq!(*token_number, *issued + 1, "tokens are sequential");
            *issued = *token_number;
            let previous = day.slots.insert(details.slot, details.booking_id);
            assert_eq!(previous, None, "one active booking per slot");
            assert_eq!(day.held.get(&details.slot), None, "a booking takes no slot held by another");
            if let Some(external_ref) = details.external_ref() {
                let previous = tenant.external_refs.insert(external_ref.clone(), details.booking_id);
                assert_eq!(previous, None, "an external ref binds once");
            }
            let mut details = details.clone();
            tenant.share_names(&mut details);
            let booking = Booking {
                details,
                token_number: *token_number,
                status: BookingStatus::Confirmed,
                created_at: at,
                position,
                cancel_reason: None,
                version: 1,
                attendance: None,
                rescheduled_from: None,
            };
            let records = tenant.day_records.entry((booking.details.clinic.clone(), booking.details.date)).or_default();
            DayRecords::add(&mut records.bookings, booking.details.booking_id);
            let previous = tenant.bookings.insert(booking.details.booking_id, Arc::new(booking));
            assert!(previous.is_none(), "booking ids are unique");
        }
        EventKind::BookingCancelled { booking_id, reason } => {
            let booking = Arc::make_mut(tenant.bookings.get_mut(booking_id).expect("cancelling a known booking"));
            assert_eq!(booking.status, BookingStatus::Confirmed, "cancelling an active booking");
            booking.status = BookingStatus::Cancelled;
            booking.position = position;
            booking.version += 1;
            booking.cancel_reason = reason.clone().map(Box::new);
            let BookingDetails { clinic, doctor, date, slot, .. } = &booking.details;
            let day = tenant.clinics[clinic].doctors[doctor].days.get(date);
            assert_eq!(day.and_then(|d| d.slots.get(slot)), Some(booking_id), "the booking held its slot");
            let day = tenant.clinics.get_mut(clinic).and_then(|c| c.doctors.get_mut(doctor)).and_then(|d| d.days.get_mut(date)).unwrap();
            day.slots.remove(slot);
        }
        EventKind::BookingRescheduled { booking_id, clinic, doctor, date, slot, kind, token_number, .. } => {
            let old = tenant.bookings.get(booking_id).expect("rescheduling a known booking").details.clone();
            assert_eq!(old.clinic, *clinic, "a reschedule stays in the clinic");
            let old_day =
                tenant.clinics.get_mut(clinic).and_then(|c| c.doctors.get_mut(&old.doctor)).and_then(|d| d.days.get_mut(&old.date));
            assert_eq!(old_day.and_then(|d| d.slots.remove(&old.slot)), Some(*booking_id), "the booking held its old slot");
            let new_doctor = tenant.clinics.get_mut(clinic).and_then(|c| c.doctors.get_mut(doctor)).expect("a reschedule needs a schedule");
            assert!(*slot < new_doctor.schedule.slots_per_day, "slot beyond the schedule");
            let day = new_doctor.days.entry(*date).or_default();
            let issued = day.tokens_issued_mut(*kind);
            assert_eq!(*token_number, *issued + 1, "tokens are sequential");
            *issued = *token_number;
            assert_eq!(day.slots.insert(*slot, *booking_id), None, "one active booking per slot");
            assert_eq!(day.held.get(slot), None, "a booking takes no held slot");
            let (mut doctor, mut clinic) = (doctor.clone(), clinic.clone());
            tenant.share_clinic_and_doctor(&mut clinic, &mut doctor);
            if old.date != *date {
                let key = (clinic.clone(), old.date);
                if let Some(records) = tenant.day_records.get_mut(&key) {
                    DayRecords::remove(&mut records.bookings, booking_id);
                    if records.is_empty() {
                        tenant.day_records.remove(&key);
                    }
                }
                DayRecords::add(&mut tenant.day_records.entry((clinic.clone(), *date)).or_default().bookings, *booking_id);
            }
            let booking = Arc::make_mut(tenant.bookings.get_mut(booking_id).expect("rescheduling a known booking"));
            assert_eq!(booking.status, BookingStatus::Confirmed, "rescheduling an active booking");
            assert_eq!(booking.details.kind, *kind, "a reschedule keeps the kind");
            booking.rescheduled_from = Some(Box::new(Place {
                doctor: old.doctor,
                date: old.date,
                slot: old.slot,
                kind: old.kind,
                token_number: booking.token_number,
            }));
            booking.details.doctor = doctor;
            booking.details.date = *date;
            booking.details.slot = *slot;
            booking.token_number = *token_number;
            booking.version += 1;
            booking.position = position;
        }
        EventKind::AttendanceRecorded { booking_id, attendance, corrected } => {
            let booking = Arc::make_mut(tenant.bookings.get_mut(booking_id).expect("marking a known booking"));
            assert_eq!(booking.status, BookingStatus::Confirmed, "marking an active booking");
            assert_eq!(booking.attendance.is_some(), *corrected, "only a correction replaces a mark");
            booking.attendance = Some(*attendance);
            booking.version += 1;
            booking.position = position;
        }
        _ => unreachable!("not a booking event"),
    }
}

/// The booking a command names, still active, at the version it expects.
fn active_booking(tenant: Option<&TenantState>, booking_id: Uuid, expected_version: Option<u32>) -> Result<&Arc<Booking>, Rejection> {
    let booking = tenant.and_then(|t| t.find_booking(&booking_id)).ok_or(Rejection::BookingNotFound { booking_id })?;
    if booking.status == BookingStatus::Cancelled {
        return Err(Rejection::BookingCancelled { booking_id });
    }
    if let Some(expected) = expected_version
        && expected != booking.version
    {
        return Err(Rejection::VersionConflict { booking_id, version: booking.version });
    }
    Ok(booking)
}

/// The checks run in the order API.md gives: the booking (404, cancelled,
/// version, attendance), then the new place (doctor, range, taken, held).
/// Moving to its own slot is a repeat: it changes nothing.
pub(super) fn decide_reschedule(
    tenant: Option<&TenantState>,
    booking_id: Uuid,
    to: &Move,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    let booking = active_booking(tenant, booking_id, to.expected_version)?;
    let tenant = tenant.expect("a booking has a tenant");
    if let Some(attendance) = booking.attendance {
        return Err(Rejection::AttendanceRecorded { booking_id, attendance });
    }
    let clinic = &booking.details.clinic;
    let doctor_name = to.doctor.as_ref().unwrap_or(&booking.details.doctor);
    let date = to.date.unwrap_or(booking.details.date);
    let (_, doctor) = slot_to_take(Some(tenant), clinic, doctor_name, date, to.slot)?;
    if (doctor_name, date, to.slot) == (&booking.details.doctor, booking.details.date, booking.details.slot) {
        return Ok(vec![]);
    }
    let day = doctor.days.get(&date);
    let mut kinds = free_to_take(tenant, day, to.slot, context.now)?;
    let kind = booking.details.kind;
    kinds.push(EventKind::BookingRescheduled {
        booking_id,
        clinic: clinic.clone(),
        doctor: doctor_name.clone(),
        date,
        slot: to.slot,
        kind,
        token_number: day.map_or(0, |d| d.tokens_issued(kind)) + 1,
        patient: booking.details.patient.clone(),
    });
    Ok(kinds)
}

/// A mark on a booking from its day on; the same mark again is a repeat, the
/// other one a conflict unless `correct` (an admin's, checked by the caller).
/// `today` is the date at the clinic.
pub(super) fn decide_attendance(
    tenant: Option<&TenantState>,
    booking_id: Uuid,
    attendance: Attendance,
    correct: bool,
    today: NaiveDate,
) -> Result<Vec<EventKind>, Rejection> {
    let booking = active_booking(tenant, booking_id, None)?;
    if today < booking.details.date {
        return Err(Rejection::TooEarly { booking_id, date: booking.details.date });
    }
    match booking.attendance {
        None => Ok(vec![EventKind::AttendanceRecorded { booking_id, attendance, corrected: false }]),
        Some(marked) if marked == attendance => Ok(vec![]),
        Some(_) if correct => Ok(vec![EventKind::AttendanceRecorded { booking_id, attendance, corrected: true }]),
        Some(marked) => Err(Rejection::AttendanceRecorded { booking_id, attendance: marked }),
    }
}

/// Where a reschedule moves a booking: `doctor` and `date` default to its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub doctor: Option<Text>,
    pub date: Option<NaiveDate>,
    pub slot: u32,
    pub expected_version: Option<u32>,
}
