//! The clinic index, for time travel: where each clinic day's booking events
//! are on disk and each doctor's schedules, so that "the slots of a day as of
//! position P" reads that day's records only. Its cost grows with the day
//! (bounded by doctors × slots), never with the clinic's history or the ledger.
//!
//! It is fed events in log order by the follower (`forensics::follower`) or,
//! offline, by `ledger slots`; it never reads the log itself except the day's
//! records a query asks for.
//!
//! [`LiveDay`] is one clinic day folded event by event, saying what each
//! event changed: the state of the live slots stream, of a time-travel read
//! and of a day's history.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use chrono::NaiveDate;
use uuid::Uuid;

use crate::core::{Event, EventKind, Patient, Schedule, State, Text, Tz, token};
use crate::log::decode::Decoder;
use crate::log::events::{self, ReadError};
use crate::log::{Location, Position, read_many};

use super::audit::Interner;
pub use super::disk::DayRecords;

/// A clinic day: (tenant, clinic, date).
pub type DayKey = (Text, Text, NaiveDate);
/// A clinic's zones, in position order, with where each was set.
type Zones = Vec<(Position, Location, Tz)>;
/// Each doctor's schedules, in position order, with where each was set.
type Schedules = BTreeMap<Text, Vec<(Position, Location, Schedule)>>;

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct ClinicIndex {
    /// Per (tenant, clinic): each doctor's schedules, in position order.
    schedules: BTreeMap<(Text, Text), Schedules>,
    /// Each open clinic day's number in `days` (a closed day's list is in the
    /// read side's store, `forensics::disk`, once written there).
    day_numbers: BTreeMap<DayKey, u32>,
    /// Per clinic day: where its bookings' creations and cancellations are, in order.
    days: BTreeMap<u32, DayRecords>,
    /// The number the next new day gets.
    next_day: u32,
    /// The days closed whose lists are still here, until [`ClinicIndex::forget_closing`].
    #[serde(skip)]
    closing: Vec<DayKey>,
    /// Days closed since bookings and holds of closed days were last dropped.
    #[serde(skip)]
    closed_unswept: u32,
    /// Per booking: its day's number, to index its cancellation.
    bookings: BTreeMap<Uuid, u32>,
    /// Per hold: its day's number, to index its release or expiry.
    holds: BTreeMap<Uuid, u32>,
    /// Per (tenant, clinic): its zones, in position order, with where each was set.
    zones: BTreeMap<(Text, Text), Zones>,
}

/// One clinic's day as `GET .../slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicDay {
    /// The position the day is seen as of.
    pub position: Position,
    /// The clinic's zone as of then (UTC until one is set).
    pub zone: Tz,
    /// By doctor name.
    pub doctors: Vec<DoctorDay>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorDay {
    pub doctor: Text,
    pub schedule: Schedule,
    /// The booked slots: the active booking holding each.
    pub booked: BTreeMap<u32, Held>,
    /// The held slots, as the events have them (a view compares `expires_at`
    /// with its clock: a hold past it is free before its expiry is written).
    pub holds: BTreeMap<u32, HoldOn>,
}

/// The active hold on a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldOn {
    pub hold_id: Uuid,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The active booking holding a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub booking_id: Uuid,
    pub token: String,
    pub patient: Patient,
}

impl ClinicDay {
    /// The day as the projection `state` has it now (one doctor's, or every one's).
    pub fn from_state(state: &State, tenant: &str, clinic: &str, date: NaiveDate, doctor: Option<&str>) -> ClinicDay {
        let tenant_state = state.tenant(tenant);
        let doctors = tenant_state.and_then(|t| t.clinics.get(clinic)).map(|c| &c.doctors);
        let doctors = doctors
            .into_iter()
            .flatten()
            .filter(|(name, _)| doctor.is_none_or(|d| name.as_ref() == d))
            .map(|(name, d)| {
                let day = d.days.get(&date);
                let slots = day.map(|day| &day.slots);
                let booked = slots
                    .into_iter()
                    .flatten()
                    .map(|(slot, id)| {
                        let booking = tenant_state.and_then(|t| t.bookings.get(id));
                        let token = booking.map(|b| b.token()).unwrap_or_default();
                        let patient = booking.map_or_else(Patient::default, |b| b.details.patient.clone());
                        (*slot, Held { booking_id: *id, token, patient })
                    })
                    .collect();
                let holds = day
                    .into_iter()
                    .flat_map(|day| day.held.iter())
                    .filter_map(|(slot, id)| {
                        let hold = tenant_state?.holds.get(id)?;
                        Some((*slot, HoldOn { hold_id: *id, expires_at: hold.expires_at }))
                    })
                    .collect();
                DoctorDay { doctor: name.clone(), schedule: d.schedule, booked, holds }
            })
            .collect();
        ClinicDay { position: state.position, zone: crate::core::zones::zone_of(tenant_state, clinic), doctors }
    }
}

impl ClinicIndex {
    /// Indexes the next event of the log (events come in position order).
    pub fn index(&mut self, event: &Event, location: Location) {
        match &event.kind {
            EventKind::ScheduleSet { clinic, doctor, schedule } => {
                let doctors = self.schedules.entry((event.tenant.clone(), clinic.clone())).or_default();
                doctors.entry(doctor.clone()).or_default().push((event.position, location, *schedule));
            }
            EventKind::BookingCreated(created) => {
                let number = self.day_of(event, &created.details.clinic, created.details.date, location);
                self.bookings.insert(created.details.booking_id, number);
            }
            EventKind::HoldPlaced { details, .. } => {
                let number = self.day_of(event, &details.clinic, details.date, location);
                self.holds.insert(details.hold_id, number);
            }
            EventKind::BookingRescheduled { booking_id, clinic, date, .. } => {
                // The day it leaves and the day it enters both change.
                if let Some(number) = self.bookings.get(booking_id).copied() {
                    self.push(number, event.position, location);
                    let entered = self.day_numbers.get(&(event.tenant.clone(), clinic.clone(), *date)).copied();
                    if entered != Some(number) {
                        let entered = self.day_of(event, clinic, *date, location);
                        self.bookings.insert(*booking_id, entered);
                    }
                }
            }
            EventKind::BookingCancelled { booking_id: id, .. }
            | EventKind::HoldReleased { hold_id: id }
            | EventKind::HoldExpired { hold_id: id } => {
                let index = if matches!(event.kind, EventKind::BookingCancelled { .. }) { &self.bookings } else { &self.holds };
                if let Some(number) = index.get(id).copied() {
                    self.push(number, event.position, location);
                }
            }
            // No clinic day changes by these.
            EventKind::PhoneClaimed { .. }
            | EventKind::PhoneCompleted { .. }
            | EventKind::PhoneClaimFailed { .. }
            | EventKind::PhoneReleased { .. }
            | EventKind::CallStarted { .. }
            | EventKind::CallOutcomeRecorded { .. }
            | EventKind::CallRefused { .. }
            | EventKind::CampaignHalted { .. }
            | EventKind::CampaignResumed { .. }
            | EventKind::NumberBlocked { .. }
            | EventKind::CommunityCreated { .. }
            | EventKind::AttendanceRecorded { .. }
            | EventKind::WaitlistJoined { .. }
            | EventKind::WaitlistWithdrawn { .. } => {}
            // A closed day never changes: its bookings and holds need not be
            // found any more, and its list of records goes to the store.
            EventKind::DaysClosed { clinic, through } => {
                let (tenant, clinic) = (event.tenant.clone(), clinic.clone());
                let closed: Vec<&DayKey> = self
                    .day_numbers
                    .range((tenant.clone(), clinic.clone(), NaiveDate::MIN)..=(tenant, clinic, *through))
                    .map(|(key, _)| key)
                    .collect();
                // Their bookings and holds leave at the next sweep.
                self.closed_unswept += closed.len() as u32;
                let keys: Vec<DayKey> = closed.into_iter().filter(|&key| !self.closing.contains(key)).cloned().collect();
                self.closing.extend(keys);
            }
            EventKind::ClinicZoneSet { clinic, zone, .. } => {
                self.zones.entry((event.tenant.clone(), clinic.clone())).or_default().push((event.position, location, *zone));
            }
        }
    }

    /// Records the event at `location` in its clinic day's list; the day's number.
    fn day_of(&mut self, event: &Event, clinic: &Text, date: NaiveDate, location: Location) -> u32 {
        let next = self.next_day;
        let number = *self.day_numbers.entry((event.tenant.clone(), clinic.clone(), date)).or_insert(next);
        if number == next {
            self.next_day += 1;
        }
        self.days.entry(number).or_default().push((event.position, location));
        number
    }

    /// Lists an event of a day already listed (not of a closed day: a booking
    /// or hold the next sweep drops can still point at one).
    fn push(&mut self, number: u32, position: Position, location: Location) {
        if let Some(records) = self.days.get_mut(&number) {
            records.push((position, location));
        }
    }

    /// Drops the bookings and holds of closed days (whose lists are gone).
    pub fn sweep(&mut self) {
        self.closed_unswept = 0;
        let days = &self.days;
        self.bookings.retain(|_, number| days.contains_key(number));
        self.holds.retain(|_, number| days.contains_key(number));
    }

    /// The same index, its names shared through `names` (a deserialized map
    /// holds a copy of each in every key).
    pub fn interned(mut self, names: &mut Interner) -> ClinicIndex {
        use std::mem::take;
        self.schedules = take(&mut self.schedules)
            .into_iter()
            .map(|((tenant, clinic), doctors)| {
                let doctors = doctors.into_iter().map(|(doctor, history)| (names.text(doctor), history)).collect();
                ((names.text(tenant), names.text(clinic)), doctors)
            })
            .collect();
        self.day_numbers =
            take(&mut self.day_numbers).into_iter().map(|((t, c, date), n)| ((names.text(t), names.text(c), date), n)).collect();
        self.zones = take(&mut self.zones).into_iter().map(|((t, c), zones)| ((names.text(t), names.text(c)), zones)).collect();
        self
    }

    /// The days closed since [`ClinicIndex::forget_closing`] last ran, with
    /// their record lists, for the read side's store.
    pub fn closing(&self) -> Vec<((&str, &str, NaiveDate), &DayRecords)> {
        const EMPTY: &DayRecords = &Vec::new();
        self.closing
            .iter()
            .map(|key| {
                let records = self.day_numbers.get(key).and_then(|number| self.days.get(number)).unwrap_or(EMPTY);
                ((&*key.0, &*key.1, key.2), records)
            })
            .collect()
    }

    /// Forgets the closing days' lists, now that the store holds them: a
    /// read of those days looks them up there.
    pub fn forget_closing(&mut self) {
        for key in std::mem::take(&mut self.closing) {
            if let Some(number) = self.day_numbers.remove(&key) {
                self.days.remove(&number);
            }
        }
        // One pass every `SWEEP_CLOSINGS` closed days, not one per closing:
        // that cost every open booking at each, quadratic over years of history.
        if self.closed_unswept >= super::audit::SWEEP_CLOSINGS {
            self.sweep();
        }
    }

    /// Whether closed days' lists are waiting for [`ClinicIndex::forget_closing`].
    pub fn has_closing(&self) -> bool {
        !self.closing.is_empty()
    }

    /// What a query of one day needs, copied out so the index is not held
    /// while the disk is read: each doctor's schedule as of `as_of`, and where
    /// the day's events up to it are.
    pub fn plan(&self, tenant: &str, clinic: &str, date: NaiveDate, doctor: Option<&str>, as_of: Position) -> DayPlan {
        let clinic_key = (Text::from(tenant), Text::from(clinic));
        let schedules = self
            .schedules
            .get(&clinic_key)
            .into_iter()
            .flatten()
            .filter(|(name, _)| doctor.is_none_or(|d| name.as_ref() == d))
            .filter_map(|(name, history)| {
                let upto = history.partition_point(|(position, _, _)| *position <= as_of);
                upto.checked_sub(1).map(|i| (name.clone(), history[i].2))
            })
            .collect();
        let day = self.day_numbers.get(&(clinic_key.0.clone(), clinic_key.1.clone(), date)).map(|n| &self.days[n]);
        let locations = day.into_iter().flatten().take_while(|(position, _)| *position <= as_of).copied().collect();
        let zones = self.zones.get(&clinic_key);
        let zone =
            zones.and_then(|z| z.iter().take_while(|(position, _, _)| *position <= as_of).last()).map_or(Tz::UTC, |(_, _, zone)| *zone);
        let stored = day.is_none().then_some((clinic_key.0, clinic_key.1, date));
        DayPlan { clinic: clinic.into(), date, doctor: doctor.map(Text::from), as_of, zone, schedules, locations, stored }
    }
}

/// A query of one clinic day, planned against the index.
pub struct DayPlan {
    clinic: Text,
    date: NaiveDate,
    doctor: Option<Text>,
    as_of: Position,
    zone: Tz,
    schedules: Vec<(Text, Schedule)>,
    /// The day's records up to `as_of`: each position and where its record is.
    locations: DayRecords,
    /// The day, when its records are not in memory: a closed day's are in the
    /// read side's store (see [`DayPlan::stored`]).
    stored: Option<DayKey>,
}

impl DayPlan {
    /// The day to look up in the store, if its records are not in memory.
    pub fn stored(&self) -> Option<&DayKey> {
        self.stored.as_ref()
    }

    /// The day's records read from the store: those up to `as_of`.
    pub fn with_stored(mut self, records: DayRecords) -> DayPlan {
        self.locations = records.into_iter().take_while(|(position, _)| *position <= self.as_of).collect();
        self.stored = None;
        self
    }

    /// Reads the day's events from the log in `dir` and folds them into the day.
    pub fn run(self, dir: &Path) -> Result<ClinicDay, ReadError> {
        let doctors = self
            .schedules
            .into_iter()
            .map(|(doctor, schedule)| DoctorDay { doctor, schedule, booked: BTreeMap::new(), holds: BTreeMap::new() })
            .collect();
        let mut live = LiveDay::new(ClinicDay { position: 0, zone: self.zone, doctors });
        read_day(dir, &self.locations, &mut |event| {
            live.apply_for(&event, &self.clinic, self.date, self.doctor.as_deref());
        })?;
        live.day.position = self.as_of;
        Ok(live.day)
    }
}

/// Reads the records at `locations` (in position order) as events.
fn read_day(dir: &Path, locations: &[(Position, Location)], visit: &mut dyn FnMut(Event)) -> Result<(), ReadError> {
    let mut decoder = Decoder::interning();
    read_many(dir, locations, &mut |position, location, payload| {
        let event = events::decode_at(&mut decoder, position, payload).map_err(|fault| ReadError::Event {
            path: crate::log::location_path(dir, location),
            position,
            fault,
        })?;
        visit(event);
        Ok::<(), ReadError>(())
    })
}

/// What one event changed in a clinic day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayChange {
    pub position: Position,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// The event's type (`schedule_set`, `booking_created`, `booking_cancelled`).
    pub kind: &'static str,
    pub doctor: Text,
    /// The doctor's slots whose state changed (every slot, for a new schedule).
    pub slots: Vec<u32>,
    /// A reschedule's old place, when it was in this day too.
    pub moved_from: Option<(Text, u32)>,
    /// The event in one line, for people.
    pub summary: String,
}

/// One clinic day (of one doctor, or of all), kept up to date event by event.
/// It is bounded by the day: doctors × slots, and the day's active bookings.
pub struct LiveDay {
    pub day: ClinicDay,
    /// Where each active booking of the day is, to free its slot on cancellation.
    holding: BTreeMap<Uuid, (Text, u32)>,
    /// Where each active hold of the day is, to free its slot when it ends.
    held: BTreeMap<Uuid, (Text, u32)>,
}

impl LiveDay {
    /// Starts from `day` as it stands at `day.position`.
    pub fn new(day: ClinicDay) -> LiveDay {
        let holding =
            day.doctors.iter().flat_map(|d| d.booked.iter().map(|(slot, held)| (held.booking_id, (d.doctor.clone(), *slot)))).collect();
        let held = day.doctors.iter().flat_map(|d| d.holds.iter().map(|(slot, on)| (on.hold_id, (d.doctor.clone(), *slot)))).collect();
        LiveDay { day, holding, held }
    }

    /// Folds the next event of the day's tenant in; `Some` when it changed the
    /// day. `clinic`, `date` and `doctor` say which day (and doctor) this is.
    pub fn apply_for(&mut self, event: &Event, clinic: &str, date: NaiveDate, doctor: Option<&str>) -> Option<DayChange> {
        if let EventKind::BookingRescheduled { booking_id, clinic: c, doctor: d, date: on, slot, kind, token_number, patient } = &event.kind
        {
            let enters = **c == *clinic && *on == date && doctor.is_none_or(|x| **d == *x);
            let left = self.holding.remove(booking_id);
            if left.is_none() && !enters {
                return None;
            }
            let mut moved_from = None;
            if let Some((from, from_slot)) = left {
                let held = self.day.doctors.iter_mut().find(|x| x.doctor == from).and_then(|x| x.booked.remove(&from_slot));
                moved_from = held.map(|_| (from, from_slot));
            }
            let token = token(*kind, *token_number);
            let summary = format!("booking {booking_id} of {patient} moved to {d} {on} slot {slot}: token {token}");
            if enters && let Some(to) = self.day.doctors.iter_mut().find(|x| x.doctor == *d) {
                to.booked.insert(*slot, Held { booking_id: *booking_id, token, patient: patient.clone() });
                self.holding.insert(*booking_id, (d.clone(), *slot));
            } else if moved_from.is_none() {
                return None;
            }
            let (doctor, slots) = match (enters, &moved_from) {
                (true, _) => (d.clone(), vec![*slot]),
                (false, Some((from, from_slot))) => (from.clone(), vec![*from_slot]),
                (false, None) => return None,
            };
            let moved_from = if enters { moved_from } else { None };
            self.day.position = event.position;
            return Some(DayChange {
                position: event.position,
                recorded_at: event.recorded_at,
                kind: event.kind.name(),
                doctor,
                slots,
                moved_from,
                summary,
            });
        }
        let relevant = match &event.kind {
            EventKind::ScheduleSet { clinic: c, doctor: d, .. } => **c == *clinic && doctor.is_none_or(|x| **d == *x),
            EventKind::BookingCreated(created) => {
                let b = &created.details;
                *b.clinic == *clinic && b.date == date && doctor.is_none_or(|x| *b.doctor == *x)
            }
            EventKind::HoldPlaced { details: h, .. } => *h.clinic == *clinic && h.date == date && doctor.is_none_or(|x| *h.doctor == *x),
            // `apply` finds whether the booking or hold is of this day.
            EventKind::BookingCancelled { .. } | EventKind::HoldReleased { .. } | EventKind::HoldExpired { .. } => true,
            EventKind::PhoneClaimed { .. }
            | EventKind::PhoneCompleted { .. }
            | EventKind::PhoneClaimFailed { .. }
            | EventKind::PhoneReleased { .. }
            | EventKind::CallStarted { .. }
            | EventKind::CallOutcomeRecorded { .. }
            | EventKind::CallRefused { .. }
            | EventKind::CampaignHalted { .. }
            | EventKind::CampaignResumed { .. }
            | EventKind::NumberBlocked { .. }
            | EventKind::CommunityCreated { .. }
            | EventKind::AttendanceRecorded { .. }
            | EventKind::WaitlistJoined { .. }
            | EventKind::WaitlistWithdrawn { .. }
            | EventKind::DaysClosed { .. } => false,
            EventKind::ClinicZoneSet { clinic: c, .. } => **c == *clinic,
            EventKind::BookingRescheduled { .. } => unreachable!("folded above"),
        };
        if relevant { self.apply(event) } else { None }
    }

    /// Folds in an event already known to concern this day (a cancellation of
    /// a booking of another day changes nothing).
    pub fn apply(&mut self, event: &Event) -> Option<DayChange> {
        let change = |doctor: &Text, slots: Vec<u32>, summary: String| DayChange {
            position: event.position,
            recorded_at: event.recorded_at,
            kind: event.kind.name(),
            doctor: doctor.clone(),
            slots,
            moved_from: None,
            summary,
        };
        let result = match &event.kind {
            EventKind::ScheduleSet { doctor, schedule, .. } => {
                let at = self.day.doctors.partition_point(|d| d.doctor < *doctor);
                if self.day.doctors.get(at).is_none_or(|d| d.doctor != *doctor) {
                    let new = DoctorDay { doctor: doctor.clone(), schedule: *schedule, booked: BTreeMap::new(), holds: BTreeMap::new() };
                    self.day.doctors.insert(at, new);
                }
                self.day.doctors[at].schedule = *schedule;
                let times = match (schedule.first_slot_minute, schedule.slot_minutes) {
                    (Some(first), Some(minutes)) => format!(" from {}, {minutes} min each", minute_text(first)),
                    _ => String::new(),
                };
                let summary = format!("schedule of {doctor}: {} slots a day{times}", schedule.slots_per_day);
                Some(change(doctor, (0..schedule.slots_per_day).collect(), summary))
            }
            EventKind::BookingCreated(created) => {
                let b = &created.details;
                let at = self.day.doctors.iter().position(|d| d.doctor == b.doctor)?;
                let doctor = &mut self.day.doctors[at];
                let held = Held { booking_id: b.booking_id, token: token(b.kind, created.token_number), patient: b.patient.clone() };
                let summary =
                    format!("{} {} booked for {}: token {}", b.doctor, slot_text(&doctor.schedule, b.slot), b.patient, held.token);
                if let Some(hold_id) = b.hold_id() {
                    self.held.remove(&hold_id);
                    doctor.holds.remove(&b.slot);
                }
                doctor.booked.insert(b.slot, held);
                self.holding.insert(b.booking_id, (b.doctor.clone(), b.slot));
                Some(change(&b.doctor, vec![b.slot], summary))
            }
            EventKind::BookingCancelled { booking_id, reason } => {
                let (doctor_name, slot) = self.holding.remove(booking_id)?;
                let doctor = self.day.doctors.iter_mut().find(|d| d.doctor == doctor_name)?;
                let held = doctor.booked.remove(&slot)?;
                let reason = reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
                let summary = format!(
                    "{doctor_name} {} freed: {} for {} cancelled{reason}",
                    slot_text(&doctor.schedule, slot),
                    held.token,
                    held.patient
                );
                Some(change(&doctor_name, vec![slot], summary))
            }
            EventKind::HoldPlaced { details: h, expires_at } => {
                let doctor = self.day.doctors.iter_mut().find(|d| d.doctor == h.doctor)?;
                doctor.holds.insert(h.slot, HoldOn { hold_id: h.hold_id, expires_at: *expires_at });
                self.held.insert(h.hold_id, (h.doctor.clone(), h.slot));
                let until = expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let summary = format!("{} {} held until {until}", h.doctor, slot_text(&doctor.schedule, h.slot));
                Some(change(&h.doctor, vec![h.slot], summary))
            }
            EventKind::HoldReleased { hold_id } | EventKind::HoldExpired { hold_id } => {
                let (doctor_name, slot) = self.held.remove(hold_id)?;
                let doctor = self.day.doctors.iter_mut().find(|d| d.doctor == doctor_name)?;
                doctor.holds.remove(&slot)?;
                let how = if matches!(event.kind, EventKind::HoldReleased { .. }) { "released" } else { "expired" };
                let summary = format!("{doctor_name} {} freed: hold {hold_id} {how}", slot_text(&doctor.schedule, slot));
                Some(change(&doctor_name, vec![slot], summary))
            }
            EventKind::PhoneClaimed { .. }
            | EventKind::PhoneCompleted { .. }
            | EventKind::PhoneClaimFailed { .. }
            | EventKind::PhoneReleased { .. }
            | EventKind::CallStarted { .. }
            | EventKind::CallOutcomeRecorded { .. }
            | EventKind::CallRefused { .. }
            | EventKind::CampaignHalted { .. }
            | EventKind::CampaignResumed { .. }
            | EventKind::NumberBlocked { .. }
            | EventKind::CommunityCreated { .. }
            | EventKind::AttendanceRecorded { .. }
            | EventKind::WaitlistJoined { .. }
            | EventKind::WaitlistWithdrawn { .. }
            | EventKind::DaysClosed { .. }
            | EventKind::BookingRescheduled { .. } => None,
            EventKind::ClinicZoneSet { zone, tzdata, .. } => {
                self.day.zone = *zone;
                let summary = format!("time zone {} (tzdata {tzdata}): every slot's instant follows it", zone.name());
                // Every doctor's every slot changed: a view of the change lists them all.
                Some(change(&Text::from(""), Vec::new(), summary))
            }
        };
        if result.is_some() {
            self.day.position = event.position;
        }
        result
    }
}

fn minute_text(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// "slot 3 (09:45)", or "slot 3" when the schedule has no times.
fn slot_text(schedule: &Schedule, slot: u32) -> String {
    match schedule.slot_minute(slot) {
        Some(minute) => format!("slot {slot} ({})", minute_text(minute)),
        None => format!("slot {slot}"),
    }
}

impl ClinicIndex {
    /// What a day's history through `upto` needs: where the clinic's schedule
    /// events and the day's booking events are, in position order.
    pub fn history_plan(&self, tenant: &str, clinic: &str, date: NaiveDate, doctor: Option<&str>, upto: Position) -> HistoryPlan {
        let clinic_key = (Text::from(tenant), Text::from(clinic));
        let mut locations: Vec<(Position, Location)> = self
            .schedules
            .get(&clinic_key)
            .into_iter()
            .flatten()
            .filter(|(name, _)| doctor.is_none_or(|d| name.as_ref() == d))
            .flat_map(|(_, history)| history.iter().map(|(position, location, _)| (*position, *location)))
            .chain(self.zones.get(&clinic_key).into_iter().flatten().map(|(position, location, _)| (*position, *location)))
            .filter(|(position, _)| *position <= upto)
            .collect();
        let key = (clinic_key.0, clinic_key.1, date);
        let stored = match self.day_numbers.get(&key) {
            Some(number) => {
                locations.extend(self.days[number].iter().copied().filter(|(position, _)| *position <= upto));
                None
            }
            None => Some(key),
        };
        locations.sort_unstable_by_key(|(position, _)| *position);
        HistoryPlan { clinic: clinic.into(), date, doctor: doctor.map(Text::from), upto, locations, stored }
    }
}

/// A read of one clinic day's history, planned against the index.
pub struct HistoryPlan {
    clinic: Text,
    date: NaiveDate,
    doctor: Option<Text>,
    upto: Position,
    locations: DayRecords,
    /// As [`DayPlan`]'s.
    stored: Option<DayKey>,
}

impl HistoryPlan {
    /// The day to look up in the store, if its records are not in memory.
    pub fn stored(&self) -> Option<&DayKey> {
        self.stored.as_ref()
    }

    /// The day's records read from the store joined to the plan's, in position order.
    pub fn with_stored(mut self, records: DayRecords) -> HistoryPlan {
        self.locations.extend(records.into_iter().filter(|(position, _)| *position <= self.upto));
        self.locations.sort_unstable_by_key(|(position, _)| *position);
        self.stored = None;
        self
    }

    /// Every change of the day, in order: each schedule of the clinic's doctors
    /// and each zone of the clinic, and each booking, move, hold and
    /// cancellation of the day.
    pub fn run(self, dir: &Path) -> Result<Vec<DayChange>, ReadError> {
        let mut live = LiveDay::new(ClinicDay { position: 0, zone: Tz::UTC, doctors: Vec::new() });
        let mut changes = Vec::new();
        read_day(dir, &self.locations, &mut |event| {
            changes.extend(live.apply_for(&event, &self.clinic, self.date, self.doctor.as_deref()));
        })?;
        Ok(changes)
    }
}

/// Indexes every event of the log in `dir` through `last`, offline.
pub fn index_dir(dir: &Path, last: Position) -> Result<ClinicIndex, ReadError> {
    let mut index = ClinicIndex::default();
    let mut reader = events::EventReader::new(dir, 1);
    let mut visit = |event: Event, location| {
        index.index(&event, location);
        ControlFlow::Continue(())
    };
    reader.read_through(Some(last), &mut visit, |_| Ok::<_, ReadError>(()))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{BookingCreated, BookingDetails, BookingKind, External};
    use chrono::{TimeZone, Utc};

    fn event(position: Position, kind: EventKind) -> Event {
        Event {
            position,
            recorded_at: Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
            tenant: "t".into(),
            actor: "a".into(),
            request_id: "".into(),
            idempotency_key: None,
            kind,
            response: None,
        }
    }

    /// A closed day's list of records goes to the store, then its bookings
    /// leave the index's maps at a sweep.
    #[test]
    fn a_closed_days_bookings_leave_the_index_and_its_records_stay() {
        let date = |day| NaiveDate::from_ymd_opt(2026, 3, day).unwrap();
        let booked = |n: u128, day| {
            EventKind::BookingCreated(BookingCreated {
                details: BookingDetails {
                    booking_id: Uuid::from_u128(n),
                    clinic: "c".into(),
                    doctor: "d".into(),
                    date: date(day),
                    slot: 0,
                    patient: "p".into(),
                    kind: BookingKind::Advance,
                    external: External::boxed(None, None, None),
                },
                token_number: 1,
            })
        };
        let schedule = Schedule { slots_per_day: 1, first_slot_minute: None, slot_minutes: None };
        let mut index = ClinicIndex::default();
        let at = |position| Location { segment: 1, offset: position * 100 };
        let events = [
            EventKind::ScheduleSet { clinic: "c".into(), doctor: "d".into(), schedule },
            booked(1, 2),
            booked(2, 3),
            EventKind::DaysClosed { clinic: "c".into(), through: date(2) },
        ];
        for (i, kind) in events.into_iter().enumerate() {
            index.index(&event(i as u64 + 1, kind), at(i as u64 + 1));
        }
        let plan = index.plan("t", "c", date(2), None, 4);
        assert_eq!(plan.locations, [(2, at(2))], "the closed day's records stay listed until the store takes them");
        assert_eq!(index.closing(), [(("t", "c", date(2)), &vec![(2, at(2))])], "for the store");
        index.forget_closing();
        let plan = index.plan("t", "c", date(2), None, 4);
        assert_eq!((plan.locations.len(), plan.stored()), (0, Some(&("t".into(), "c".into(), date(2)))), "read from the store");
        assert_eq!(index.bookings.len(), 2, "the closed day's booking leaves at the next sweep");
        index.sweep();
        assert_eq!(index.bookings.keys().copied().collect::<Vec<_>>(), [Uuid::from_u128(2)], "only the open day's booking");
    }
}
