//! `decide`: a command against the state, to events or a rejection, by the
//! workflow it belongs to; then the answer it reads. Reads only: no rule lives here.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::state::State;
use super::{
    Action, Booking, Call, Campaign, ClinicZone, Command, Community, Context, Event, EventKind, Hold, PhoneState, Rejection, Schedule,
    SlotTime, Text, booking, calls, community, days, holds, phone, waitlist, zones,
};

/// Checks `command` against `state` as of `context` and returns the events it
/// produces (none for a repeat that changes nothing) or why it is refused.
pub fn decide(state: &State, command: &Command, context: &Context) -> Result<Vec<Event>, Rejection> {
    let tenant = state.tenant(&command.tenant);
    let rules = &state.rules;
    let kinds = decide_action(tenant, command, rules, context);
    // A repeat that changes nothing answers as it did while its day was open.
    if !matches!(&kinds, Ok(kinds) if kinds.is_empty()) {
        days::check_action(tenant, &command.action, rules, context)?;
    }
    let mut kinds = kinds?;
    waitlist::offer_freed(tenant, &mut kinds, rules, context);
    Ok(events(command, context, kinds))
}

/// The events of `command` by its workflow's rules, before the checks every workflow shares.
fn decide_action(
    tenant: Option<&super::TenantState>,
    command: &Command,
    rules: &super::Rules,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    Ok(match &command.action {
        Action::SetSchedule { clinic, doctor, schedule } => booking::decide_schedule(tenant, clinic, doctor, schedule, rules)?,
        Action::Book(request) => booking::decide_book(tenant, request, rules, context)?,
        Action::Cancel { booking_id, reason } => booking::decide_cancel(tenant, *booking_id, reason)?,
        Action::ClaimPhone { business, claim_id } => phone::decide_claim(tenant, business, *claim_id, rules, context)?,
        Action::CompletePhone { business, claim_id, phone_number, provider_sid } => {
            phone::decide_complete(tenant, business, *claim_id, phone_number, provider_sid)?
        }
        Action::FailPhone { business, claim_id, reason } => phone::decide_fail(tenant, business, *claim_id, reason)?,
        Action::ReleasePhone { business, reason } => phone::decide_release(tenant, business, reason)?,
        Action::StartCall { call_id, campaign, to } => calls::decide_start(tenant, *call_id, campaign, to, rules, context)?,
        Action::RecordOutcome { call_id, outcome } => calls::decide_outcome(tenant, *call_id, *outcome, rules)?,
        Action::ResumeCampaign { campaign, reason } => calls::decide_resume(tenant, campaign, reason),
        Action::BlockNumber { number, reason } => calls::decide_block(tenant, number, reason),
        Action::CreateCommunity { community_id, name, owner, plan } => community::decide_create(tenant, *community_id, name, owner, plan)?,
        Action::Hold { hold, ttl_secs } => holds::decide_hold(tenant, hold, *ttl_secs, rules, context)?,
        Action::ConfirmHold { hold_id, booking_id, patient, patient_id, kind } => {
            holds::decide_confirm(tenant, *hold_id, *booking_id, patient, patient_id, *kind, context)?
        }
        Action::ReleaseHold { hold_id } => holds::decide_release(tenant, *hold_id, context)?,
        Action::Reschedule { booking_id, to } => booking::decide_reschedule(tenant, *booking_id, to, context)?,
        Action::MarkAttendance { booking_id, attendance, correct } => {
            let clinic = tenant.and_then(|t| t.find_booking(booking_id)).map(|b| b.details.clinic.clone()).unwrap_or_default();
            let today = zones::today_at(zones::zone_of(tenant, &clinic), context.now);
            booking::decide_attendance(tenant, *booking_id, *attendance, *correct, today)?
        }
        Action::SetClinicZone { clinic, zone } => zones::decide_zone(tenant, clinic, *zone),
        Action::JoinWaitlist(entry) => waitlist::decide_join(tenant, entry, rules, context)?,
        Action::WithdrawEntry { entry_id } => waitlist::decide_withdraw(tenant, *entry_id, context)?,
    })
}

/// The events a *refused* command still produces: a refused duplicate call is
/// recorded, because the campaign's kill switch counts them (and may halt).
/// Every other rejection produces none.
pub fn decide_refusal(state: &State, command: &Command, rejection: &Rejection, context: &Context) -> Vec<Event> {
    let Action::StartCall { campaign, to, .. } = &command.action else { return vec![] };
    let kinds = calls::decide_refusal(state.tenant(&command.tenant), campaign, to, rejection, &state.rules, context);
    events(command, context, kinds)
}

/// A refusal the state alone gives, with no writer: a `Book` without an
/// Idempotency-Key and without an external timestamp, on a day open at `now`
/// (the request's moment), refused for what the state holds (unknown doctor,
/// slot out of range, external reference bound, slot taken). `decide_book`
/// reads its context only for `external_created_at`, so for such a command
/// `decide` answers the same at any moment its day is open (a test holds it to
/// that). Asked of the published state, which holds every acknowledged
/// command and nothing that is not durable, the answer is the writer's had it
/// decided the command right after the published position, at `now`: the
/// refusal is linearizable without the hand-off to the writer. A keyed
/// command is never refused here (its answer is stored durably, by the
/// writer), nor a call (a refused call is recorded, for the kill switch), nor
/// a slot held (a hold ends by the writer's clock), nor anything on a closed
/// day (the writer says so, by its clock).
pub fn refusal_on_sight(state: &State, command: &Command, now: DateTime<Utc>) -> Option<Rejection> {
    let Action::Book(request) = &command.action else { return None };
    let tenant = state.tenant(&command.tenant);
    if command.idempotency.is_some()
        || request.external_created_at().is_some()
        || days::is_closed(tenant, &request.clinic, request.date, &state.rules, now)
    {
        return None;
    }
    let context = Context { now, position_next: state.position + 1 };
    booking::decide_book(tenant, request, &state.rules, &context).err().filter(|rejection| !matches!(rejection, Rejection::SlotHeld { .. }))
}

/// Wraps event kinds in the command's provenance, at consecutive positions.
fn events(command: &Command, context: &Context, kinds: Vec<EventKind>) -> Vec<Event> {
    kinds
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
        .collect()
}

/// How a phone-number answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneReply {
    /// A new claim: the caller may buy a number (201).
    Claimed,
    /// A claim on a business that already has its number (200, `already_complete`).
    AlreadyComplete,
    /// The business's number as it now stands (200).
    Current,
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
        /// When its slot is, in its clinic's zone.
        time: SlotTime,
    },
    /// `created` is false for a withdrawal, or a repeated one.
    Entry {
        entry: Arc<super::Entry>,
        created: bool,
        /// An offered entry's hold's expiry.
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// A clinic's zone: its own, or UTC (`zone` none).
    Clinic {
        clinic: Text,
        zone: Option<ClinicZone>,
    },
    Phone {
        business: Text,
        phone: Option<PhoneState>,
        reply: PhoneReply,
    },
    Call {
        call: Arc<Call>,
        created: bool,
    },
    Campaign {
        campaign: Text,
        state: Campaign,
    },
    Blocked {
        number: Text,
        reason: Text,
        created: bool,
    },
    Community {
        community: Arc<Community>,
    },
    /// `created` is false for a release, or a repeated one.
    Hold {
        hold: Arc<Hold>,
        created: bool,
    },
}

/// The answer to an accepted `command` whose `events` have been applied to `state`.
pub fn reply(state: &State, command: &Command, events: &[Event]) -> Reply {
    // A command accepted with no events (releasing a number never claimed,
    // resuming a campaign never halted) may be the tenant's first: it has no
    // state yet, and reads as empty.
    let empty;
    let tenant = match state.tenant(&command.tenant) {
        Some(tenant) => tenant,
        None => {
            empty = super::TenantState::default();
            &empty
        }
    };
    match &command.action {
        Action::SetSchedule { clinic, doctor, .. } => {
            let current = &tenant.clinics[clinic].doctors[doctor];
            Reply::Schedule {
                clinic: clinic.clone(),
                doctor: doctor.clone(),
                schedule: current.schedule,
                position: current.schedule_position,
            }
        }
        Action::Book(request) => {
            let created = !events.is_empty();
            let booking = booking::booked(tenant, request, created);
            Reply::Booking { time: tenant.booking_time(&booking), booking, created }
        }
        Action::Cancel { booking_id, .. } | Action::Reschedule { booking_id, .. } | Action::MarkAttendance { booking_id, .. } => {
            let booking = tenant.find_booking(booking_id).expect("the command's booking").clone();
            Reply::Booking { time: tenant.booking_time(&booking), booking, created: false }
        }
        Action::JoinWaitlist(super::EntryDetails { entry_id, .. }) | Action::WithdrawEntry { entry_id } => {
            let entry = tenant.find_entry(entry_id).expect("the command's entry").clone();
            let expires_at = match entry.status {
                super::EntryStatus::Offered(hold_id) => tenant.find_hold(&hold_id).map(|h| h.expires_at),
                _ => None,
            };
            Reply::Entry { entry, created: matches!(command.action, Action::JoinWaitlist(_)), expires_at }
        }
        Action::SetClinicZone { clinic, .. } => {
            Reply::Clinic { clinic: clinic.clone(), zone: tenant.clinics.get(clinic).and_then(|c| c.zone.clone()) }
        }
        Action::ClaimPhone { business, .. } => {
            let reply = if events.is_empty() { PhoneReply::AlreadyComplete } else { PhoneReply::Claimed };
            Reply::Phone { business: business.clone(), phone: phone_of(tenant, business), reply }
        }
        Action::CompletePhone { business, .. } | Action::FailPhone { business, .. } | Action::ReleasePhone { business, .. } => {
            Reply::Phone { business: business.clone(), phone: phone_of(tenant, business), reply: PhoneReply::Current }
        }
        Action::StartCall { call_id, .. } => Reply::Call { call: tenant.calls[call_id].clone(), created: true },
        Action::RecordOutcome { call_id, .. } => Reply::Call { call: tenant.calls[call_id].clone(), created: false },
        Action::ResumeCampaign { campaign, .. } => {
            Reply::Campaign { campaign: campaign.clone(), state: tenant.campaigns.get(campaign).cloned().unwrap_or_default() }
        }
        Action::BlockNumber { number, .. } => {
            let reason = tenant.numbers[number].blocked.clone().expect("the number is blocked");
            Reply::Blocked { number: number.clone(), reason, created: !events.is_empty() }
        }
        Action::CreateCommunity { .. } => {
            let Some(EventKind::CommunityCreated { slug, .. }) = events.first().map(|e| &e.kind) else {
                unreachable!("a created community")
            };
            Reply::Community { community: tenant.communities[slug].clone() }
        }
        Action::Hold { hold, .. } => Reply::Hold { hold: tenant.holds[&hold.hold_id].clone(), created: true },
        Action::ReleaseHold { hold_id } => {
            Reply::Hold { hold: tenant.find_hold(hold_id).expect("the command's hold").clone(), created: false }
        }
        Action::ConfirmHold { hold_id, .. } => {
            let hold = tenant.find_hold(hold_id).expect("the command's hold");
            let super::HoldStatus::Confirmed(booking_id) = hold.status else { unreachable!("a confirmed hold") };
            let booking = tenant.find_booking(&booking_id).expect("the hold's booking").clone();
            Reply::Booking { time: tenant.booking_time(&booking), booking, created: !events.is_empty() }
        }
    }
}

fn phone_of(tenant: &super::TenantState, business: &str) -> Option<PhoneState> {
    tenant.businesses.get(business).and_then(|b| b.phone.clone())
}
