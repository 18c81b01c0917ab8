//! `apply`: one event folded into the state. Never refuses: an event is a fact.
//! Its assertions guard the invariants `decide` established; one failing means
//! a bug or a log that was not written by `decide`.

use std::sync::Arc;

use super::state::{Booking, BookingStatus, Doctor, State};
use super::{Event, EventKind, calls, community, phone};

pub fn apply(state: &mut State, event: &Event) {
    assert_eq!(event.position, state.position + 1, "positions must run without gaps");
    state.position = event.position;
    state.recorded_at_last = event.recorded_at;
    let rules = state.rules;
    let tenant = state.tenants.entry(event.tenant.clone()).or_default();
    match &event.kind {
        EventKind::ScheduleSet { clinic, doctor, schedule } => {
            let doctors = &mut tenant.clinics.entry(clinic.clone()).or_default().doctors;
            let entry = doctors.entry(doctor.clone()).or_insert_with(|| Doctor {
                schedule: *schedule,
                schedule_position: event.position,
                days: Default::default(),
            });
            entry.schedule = *schedule;
            entry.schedule_position = event.position;
        }
        EventKind::BookingCreated(created) => {
            let doctor = tenant
                .clinics
                .get_mut(&created.clinic)
                .and_then(|c| c.doctors.get_mut(&created.doctor))
                .expect("a booking needs a schedule");
            assert!(created.slot < doctor.schedule.slots_per_day, "slot beyond the schedule");
            let day = doctor.days.entry(created.date).or_default();
            let issued = day.tokens_issued_mut(created.kind);
            assert_eq!(created.token_number, *issued + 1, "tokens are sequential");
            *issued = created.token_number;
            let previous = day.slots.insert(created.slot, created.booking_id);
            assert_eq!(previous, None, "one active booking per slot");
            if let Some(external_ref) = &created.external_ref {
                let previous = tenant.external_refs.insert(external_ref.clone(), created.booking_id);
                assert_eq!(previous, None, "an external ref binds once");
            }
            let booking = Booking {
                booking_id: created.booking_id,
                clinic: created.clinic.clone(),
                doctor: created.doctor.clone(),
                date: created.date,
                slot: created.slot,
                patient: created.patient.clone(),
                kind: created.kind,
                token_number: created.token_number,
                status: BookingStatus::Confirmed,
                external_ref: created.external_ref.clone(),
                correlation_id: created.correlation_id.clone(),
                external_created_at: created.external_created_at,
                created_at: event.recorded_at,
                position: event.position,
                cancel_reason: None,
            };
            let previous = tenant.bookings.insert(created.booking_id, Arc::new(booking));
            assert!(previous.is_none(), "booking ids are unique");
        }
        EventKind::BookingCancelled { booking_id, reason } => {
            let booking = Arc::make_mut(tenant.bookings.get_mut(booking_id).expect("cancelling a known booking"));
            assert_eq!(booking.status, BookingStatus::Confirmed, "cancelling an active booking");
            booking.status = BookingStatus::Cancelled;
            booking.position = event.position;
            booking.cancel_reason = reason.clone();
            let day = tenant.clinics[&booking.clinic].doctors[&booking.doctor].days.get(&booking.date);
            assert_eq!(day.and_then(|d| d.slots.get(&booking.slot)), Some(booking_id), "the booking held its slot");
            let day = tenant
                .clinics
                .get_mut(&booking.clinic)
                .and_then(|c| c.doctors.get_mut(&booking.doctor))
                .and_then(|d| d.days.get_mut(&booking.date))
                .unwrap();
            day.slots.remove(&booking.slot);
        }
        EventKind::PhoneClaimed { .. }
        | EventKind::PhoneCompleted { .. }
        | EventKind::PhoneClaimFailed { .. }
        | EventKind::PhoneReleased { .. } => phone::apply(tenant, &event.kind),
        EventKind::CallStarted { .. }
        | EventKind::CallOutcomeRecorded { .. }
        | EventKind::CallRefused { .. }
        | EventKind::CampaignHalted { .. }
        | EventKind::CampaignResumed { .. }
        | EventKind::NumberBlocked { .. } => calls::apply(tenant, &event.kind, event.recorded_at, event.position, &rules),
        EventKind::CommunityCreated { .. } => community::apply(tenant, &event.kind, event.recorded_at, event.position),
    }
    if let Some(response) = &event.response {
        state.idempotency.record(&event.tenant, response.clone(), event.recorded_at);
    }
}
