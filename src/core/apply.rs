//! `apply`: one event folded into the state, by the workflow it belongs to.
//! Never refuses: an event is a fact. The workflows' assertions guard the
//! invariants `decide` established; one failing means a bug or a log that was
//! not written by `decide`.

use super::state::State;
use super::{Event, EventKind, booking, calls, community, days, holds, phone, waitlist, zones};

pub fn apply(state: &mut State, event: &Event) {
    assert_eq!(event.position, state.position + 1, "positions must run without gaps");
    state.position = event.position;
    state.recorded_at_last = event.recorded_at;
    let rules = state.rules;
    let tenant = state.tenants.entry(event.tenant.clone()).or_default();
    match &event.kind {
        EventKind::ScheduleSet { .. }
        | EventKind::BookingCreated(_)
        | EventKind::BookingCancelled { .. }
        | EventKind::BookingRescheduled { .. }
        | EventKind::AttendanceRecorded { .. } => booking::apply(tenant, &event.kind, event.recorded_at, event.position),
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
        EventKind::ClinicZoneSet { .. } => zones::apply(tenant, &event.kind, event.position),
        EventKind::WaitlistJoined { .. } | EventKind::WaitlistWithdrawn { .. } => {
            waitlist::apply(tenant, &event.kind, event.recorded_at, event.position)
        }
        EventKind::HoldPlaced { .. } | EventKind::HoldReleased { .. } | EventKind::HoldExpired { .. } => {
            holds::apply(tenant, &event.kind, event.recorded_at, event.position)
        }
        EventKind::DaysClosed { clinic, through } => days::apply(tenant, clinic, *through, event.position),
    }
    if let EventKind::DaysClosed { .. } = event.kind {
        state.days_closed_last = event.position;
    }
    if let Some(response) = &event.response {
        state.idempotency.record(&event.tenant, response.clone(), event.recorded_at);
    }
}
