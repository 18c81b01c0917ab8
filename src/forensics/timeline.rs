//! Events as a human timeline: one line each, saying what happened.

use crate::core::{BookingCreated, Duplicate, Event, EventKind, format_date, token};

/// What the event says happened, in a few words.
pub fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::ScheduleSet { clinic, doctor, schedule } => {
            format!("schedule of {clinic}/{doctor}: {} slots a day", schedule.slots_per_day)
        }
        EventKind::BookingCreated(BookingCreated { details: b, token_number }) => format!(
            "booked {}/{} {} slot {} for {}: token {} (booking {}){}",
            b.clinic,
            b.doctor,
            format_date(b.date),
            b.slot,
            b.patient,
            token(b.kind, *token_number),
            b.booking_id,
            b.external_ref().map(|r| format!(", external {r}")).unwrap_or_default()
                + &b.hold_id().map(|h| format!(", confirming hold {h}")).unwrap_or_default()
        ),
        EventKind::BookingCancelled { booking_id, reason } => {
            format!("cancelled booking {booking_id}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())
        }
        EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => {
            format!("{business} claimed the right to buy a number (claim {claim_id}, until {lease_expires_at})")
        }
        EventKind::PhoneCompleted { business, phone_number, provider_sid, .. } => {
            format!("{business} bought {phone_number} ({provider_sid})")
        }
        EventKind::PhoneClaimFailed { business, claim_id, reason } => format!("{business}'s claim {claim_id} failed: {reason}"),
        EventKind::PhoneReleased { business, phone_number, .. } => format!("{business} released {phone_number}"),
        EventKind::CallStarted { call_id, campaign, to } => format!("call {call_id} to {to} started by campaign {campaign}"),
        EventKind::CallOutcomeRecorded { call_id, outcome } => format!("call {call_id} ended: {}", outcome.name()),
        EventKind::CallRefused { campaign, to, duplicate, call_id } => {
            let why = match duplicate {
                Duplicate::InProgress => "still in progress",
                Duplicate::RecentlyCalled => "called recently",
            };
            format!("refused campaign {campaign}'s call to {to}: call {call_id} {why}")
        }
        EventKind::CampaignHalted { campaign, reason } => format!("campaign {campaign} HALTED: {reason}"),
        EventKind::CampaignResumed { campaign, reason } => format!("campaign {campaign} resumed: {reason}"),
        EventKind::NumberBlocked { number, reason } => format!("{number} blocked: {reason}"),
        EventKind::CommunityCreated { slug, name, owner, plan, .. } => {
            format!("community {slug} ({name:?}) created by {owner}, plan {plan}")
        }
        EventKind::HoldPlaced { details: h, expires_at } => format!(
            "held {}/{} {} slot {}{} until {expires_at} (hold {})",
            h.clinic,
            h.doctor,
            format_date(h.date),
            h.slot,
            h.patient.as_ref().map(|p| format!(" for {p}")).unwrap_or_default(),
            h.hold_id
        ),
        EventKind::HoldReleased { hold_id } => format!("hold {hold_id} released"),
        EventKind::HoldExpired { hold_id } => format!("hold {hold_id} expired"),
        EventKind::BookingRescheduled { booking_id, clinic, doctor, date, slot, kind, token_number, .. } => format!(
            "moved booking {booking_id} to {clinic}/{doctor} {} slot {slot}: token {}",
            format_date(*date),
            token(*kind, *token_number)
        ),
        EventKind::WaitlistJoined { details: e } => format!(
            "{} joined the waitlist of {}/{} {} (entry {})",
            e.patient,
            e.clinic,
            e.doctor.as_deref().unwrap_or("any doctor"),
            format_date(e.date),
            e.entry_id
        ),
        EventKind::WaitlistWithdrawn { entry_id } => format!("waitlist entry {entry_id} withdrawn"),
        EventKind::DaysClosed { clinic, through } => {
            format!("clinic {clinic}'s days through {} closed: they never change again", format_date(*through))
        }
        EventKind::ClinicZoneSet { clinic, zone, tzdata } => format!("clinic {clinic} is in {} (tzdata {tzdata})", zone.name()),
        EventKind::AttendanceRecorded { booking_id, attendance, corrected } => {
            format!("booking {booking_id}: {}{}", attendance.name(), if *corrected { " (corrected)" } else { "" })
        }
    }
}

/// One timeline line: position, time, tenant/actor, the request's correlation
/// id in brackets (when it had one), what happened.
pub fn line(event: &Event) -> String {
    let correlation = if event.request_id.is_empty() { String::new() } else { format!("  [{}]", event.request_id) };
    format!(
        "{:>8}  {}  {}/{}{correlation}  {}",
        event.position,
        event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event.tenant,
        event.actor,
        describe(&event.kind)
    )
}
