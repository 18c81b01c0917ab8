//! `decide`: a command against the state, to events or a rejection. Reads only.

use std::sync::Arc;

use super::state::{Booking, BookingStatus, State};
use super::{Action, BookRequest, BookingCreated, Command, Context, Event, EventKind, Rejection, Schedule, Text};

/// Checks `command` against `state` as of `context` and returns the events it
/// produces (none for a repeat that changes nothing) or why it is refused.
pub fn decide(state: &State, command: &Command, context: &Context) -> Result<Vec<Event>, Rejection> {
    let kinds = match &command.action {
        Action::SetSchedule { clinic, doctor, schedule } => decide_schedule(state, command, clinic, doctor, schedule)?,
        Action::Book(request) => decide_book(state, command, request, context)?,
        Action::Cancel { booking_id, reason } => {
            let booking = state.booking(&command.tenant, booking_id).ok_or(Rejection::BookingNotFound { booking_id: *booking_id })?;
            match booking.status {
                BookingStatus::Cancelled => vec![],
                BookingStatus::Confirmed => vec![EventKind::BookingCancelled { booking_id: *booking_id, reason: reason.clone() }],
            }
        }
    };
    let events = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            position: context.position_next + i as u64,
            recorded_at: context.now,
            tenant: command.tenant.clone(),
            actor: command.actor.clone(),
            request_id: command.request_id.clone(),
            idempotency_key: command.idempotency.as_ref().map(|k| k.key.clone()),
            kind,
            response: None,
        })
        .collect();
    Ok(events)
}

fn decide_schedule(
    state: &State,
    command: &Command,
    clinic: &Text,
    doctor: &Text,
    schedule: &Schedule,
) -> Result<Vec<EventKind>, Rejection> {
    if let Some(existing) = state.doctor(&command.tenant, clinic, doctor) {
        if existing.schedule == *schedule {
            return Ok(vec![]);
        }
        for (date, day) in &existing.days {
            if let Some((&slot, &booking_id)) = day.slots.range(schedule.slots_per_day..).next() {
                return Err(Rejection::ScheduleConflict { booking_id, date: *date, slot });
            }
        }
    }
    Ok(vec![EventKind::ScheduleSet { clinic: clinic.clone(), doctor: doctor.clone(), schedule: *schedule }])
}

/// The checks run in the order API.md gives: schedule, slot range, external
/// reference, freshness, slot.
fn decide_book(state: &State, command: &Command, request: &BookRequest, context: &Context) -> Result<Vec<EventKind>, Rejection> {
    let tenant = state.tenant(&command.tenant);
    let doctor = state
        .doctor(&command.tenant, &request.clinic, &request.doctor)
        .ok_or_else(|| Rejection::UnknownDoctor { clinic: request.clinic.clone(), doctor: request.doctor.clone() })?;
    let slots_per_day = doctor.schedule.slots_per_day;
    if request.slot >= slots_per_day {
        return Err(Rejection::SlotOutOfRange { slot: request.slot, slots_per_day });
    }
    if let Some(external_ref) = &request.external_ref
        && let Some(booking_id) = tenant.and_then(|t| t.external_refs.get(external_ref))
    {
        let bound = &tenant.unwrap().bookings[booking_id];
        if request.correlation_id.is_some() && bound.correlation_id == request.correlation_id {
            return Ok(vec![]);
        }
        return Err(Rejection::ExternalRefBound {
            external_ref: external_ref.clone(),
            booking_id: *booking_id,
            correlation_id: bound.correlation_id.clone(),
        });
    }
    if let Some(created_at) = request.external_created_at {
        let age = context.now - created_at;
        if age > state.rules.freshness_window {
            return Err(Rejection::StaleExternalBooking {
                age_secs: age.num_seconds(),
                window_secs: state.rules.freshness_window.num_seconds(),
            });
        }
    }
    let day = doctor.days.get(&request.date);
    if let Some(booking_id) = day.and_then(|d| d.slots.get(&request.slot)) {
        let holder = &tenant.unwrap().bookings[booking_id];
        return Err(Rejection::SlotTaken { booking_id: *booking_id, token: holder.token() });
    }
    let token_number = day.map_or(0, |d| d.tokens_issued(request.kind)) + 1;
    Ok(vec![EventKind::BookingCreated(BookingCreated {
        booking_id: request.booking_id,
        clinic: request.clinic.clone(),
        doctor: request.doctor.clone(),
        date: request.date,
        slot: request.slot,
        patient: request.patient.clone(),
        kind: request.kind,
        token_number,
        external_ref: request.external_ref.clone(),
        correlation_id: request.correlation_id.clone(),
        external_created_at: request.external_created_at,
    })])
}

/// What an accepted command answers, read from the state after its events were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Schedule {
        clinic: Text,
        doctor: Text,
        schedule: Schedule,
        position: u64,
    },
    /// `created` is false when the command returned an existing booking.
    Booking {
        booking: Arc<Booking>,
        created: bool,
    },
}

/// The answer to an accepted `command` whose `events` have been applied to `state`.
pub fn reply(state: &State, command: &Command, events: &[Event]) -> Reply {
    let tenant = &command.tenant;
    match &command.action {
        Action::SetSchedule { clinic, doctor, .. } => {
            let current = state.doctor(tenant, clinic, doctor).expect("an accepted schedule exists");
            Reply::Schedule {
                clinic: clinic.clone(),
                doctor: doctor.clone(),
                schedule: current.schedule,
                position: current.schedule_position,
            }
        }
        Action::Book(request) => {
            let created = !events.is_empty();
            let booking_id = if created {
                request.booking_id
            } else {
                let external_ref = request.external_ref.as_ref().expect("only an external ref repeat books nothing");
                state.tenants[tenant].external_refs[external_ref]
            };
            Reply::Booking { booking: state.tenants[tenant].bookings[&booking_id].clone(), created }
        }
        Action::Cancel { booking_id, .. } => Reply::Booking { booking: state.tenants[tenant].bookings[booking_id].clone(), created: false },
    }
}
