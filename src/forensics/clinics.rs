//! The clinic index, for time travel: where each clinic day's booking events
//! are on disk and each doctor's schedules, so that "the slots of a day as of
//! position P" reads that day's records only. Its cost grows with the day
//! (bounded by doctors × slots), never with the clinic's history or the ledger.
//!
//! It is fed events in log order by the follower (`forensics::follower`) or,
//! offline, by `ledger slots`; it never reads the log itself except the day's
//! records a query asks for.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use chrono::NaiveDate;
use uuid::Uuid;

use crate::core::{Event, EventKind, Schedule, State, Text, token};
use crate::log::decode::Decoder;
use crate::log::events::{self, ReadError};
use crate::log::{Location, Position, read_many};

/// A clinic day: (tenant, clinic, date).
type DayKey = (Text, Text, NaiveDate);
/// Each doctor's schedules, in position order.
type Schedules = BTreeMap<Text, Vec<(Position, Schedule)>>;

#[derive(Default)]
pub struct ClinicIndex {
    /// Per (tenant, clinic): each doctor's schedules, in position order.
    schedules: BTreeMap<(Text, Text), Schedules>,
    /// Each clinic day's number in `days`.
    day_numbers: BTreeMap<DayKey, u32>,
    /// Per clinic day: where its bookings' creations and cancellations are, in order.
    days: Vec<Vec<(Position, Location)>>,
    /// Per booking: its day's number, to index its cancellation.
    bookings: BTreeMap<Uuid, u32>,
}

/// One clinic's day as `GET .../slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicDay {
    /// The position the day is seen as of.
    pub position: Position,
    /// By doctor name.
    pub doctors: Vec<DoctorDay>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorDay {
    pub doctor: Text,
    pub schedule: Schedule,
    /// The booked slots: the active booking holding each, and its token.
    pub booked: BTreeMap<u32, (Uuid, String)>,
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
                let slots = d.days.get(&date).map(|day| &day.slots);
                let booked = slots
                    .into_iter()
                    .flatten()
                    .map(|(slot, id)| {
                        let token = tenant_state.and_then(|t| t.bookings.get(id)).map(|b| b.token()).unwrap_or_default();
                        (*slot, (*id, token))
                    })
                    .collect();
                DoctorDay { doctor: name.clone(), schedule: d.schedule, booked }
            })
            .collect();
        ClinicDay { position: state.position, doctors }
    }
}

impl ClinicIndex {
    /// Indexes the next event of the log (events come in position order).
    pub fn index(&mut self, event: &Event, location: Location) {
        match &event.kind {
            EventKind::ScheduleSet { clinic, doctor, schedule } => {
                let doctors = self.schedules.entry((event.tenant.clone(), clinic.clone())).or_default();
                doctors.entry(doctor.clone()).or_default().push((event.position, *schedule));
            }
            EventKind::BookingCreated(created) => {
                let key = (event.tenant.clone(), created.details.clinic.clone(), created.details.date);
                let next = self.days.len() as u32;
                let number = *self.day_numbers.entry(key).or_insert(next);
                if number == next {
                    self.days.push(Vec::new());
                }
                self.days[number as usize].push((event.position, location));
                self.bookings.insert(created.details.booking_id, number);
            }
            EventKind::BookingCancelled { booking_id, .. } => {
                if let Some(number) = self.bookings.get(booking_id) {
                    self.days[*number as usize].push((event.position, location));
                }
            }
            _ => {}
        }
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
                let upto = history.partition_point(|(position, _)| *position <= as_of);
                upto.checked_sub(1).map(|i| (name.clone(), history[i].1))
            })
            .collect();
        let day = self.day_numbers.get(&(clinic_key.0, clinic_key.1, date)).map(|n| &self.days[*n as usize]);
        let locations = day.into_iter().flatten().take_while(|(position, _)| *position <= as_of).copied().collect();
        DayPlan { as_of, schedules, locations }
    }
}

/// A query of one clinic day, planned against the index.
pub struct DayPlan {
    as_of: Position,
    schedules: Vec<(Text, Schedule)>,
    /// The day's records up to `as_of`: each position and where its record is.
    locations: Vec<(Position, Location)>,
}

impl DayPlan {
    /// Reads the day's events from the log in `dir` and folds them into the day.
    pub fn run(self, dir: &Path) -> Result<ClinicDay, ReadError> {
        let mut doctors: BTreeMap<Text, DoctorDay> = self
            .schedules
            .into_iter()
            .map(|(doctor, schedule)| (doctor.clone(), DoctorDay { doctor, schedule, booked: BTreeMap::new() }))
            .collect();
        // Where each active booking of the day is, to free its slot on cancellation.
        let mut holding: BTreeMap<Uuid, (Text, u32)> = BTreeMap::new();
        let mut decoder = Decoder::interning();
        read_many(dir, &self.locations, &mut |position, location, payload| {
            let event = events::decode_at(&mut decoder, position, payload).map_err(|fault| ReadError::Event {
                path: crate::log::location_path(dir, location),
                position,
                fault,
            })?;
            match event.kind {
                EventKind::BookingCreated(created) => {
                    let b = &created.details;
                    if let Some(doctor) = doctors.get_mut(&b.doctor) {
                        doctor.booked.insert(b.slot, (b.booking_id, token(b.kind, created.token_number)));
                    }
                    holding.insert(b.booking_id, (b.doctor.clone(), b.slot));
                }
                EventKind::BookingCancelled { booking_id, .. } => {
                    if let Some((doctor, slot)) = holding.remove(&booking_id)
                        && let Some(doctor) = doctors.get_mut(&doctor)
                    {
                        doctor.booked.remove(&slot);
                    }
                }
                _ => {}
            }
            Ok::<(), ReadError>(())
        })?;
        Ok(ClinicDay { position: self.as_of, doctors: doctors.into_values().collect() })
    }
}

/// Indexes every event of the log in `dir` through `last`, offline.
pub fn index_dir(dir: &Path, last: Position) -> Result<ClinicIndex, ReadError> {
    let mut index = ClinicIndex::default();
    let mut reader = events::EventReader::new(dir, 1);
    while reader.next_position() <= last {
        reader.read(last, super::READ_CHUNK_LEN, &mut |event, location| {
            index.index(&event, location);
            ControlFlow::Continue(())
        })?;
    }
    Ok(index)
}
