//! Events as JSON, the one shape that `GET /events`, the event stream and
//! `ledger export` all print: any tool can read it without the protobuf schema.

use serde_json::{Map, Value, json};

use crate::core::Rejected;
use crate::core::{BookingCreated, BookingKind, Event, EventKind, format_date, token};

fn time(at: &chrono::DateTime<chrono::Utc>) -> Value {
    json!(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn kind_name(kind: BookingKind) -> &'static str {
    match kind {
        BookingKind::Advance => "advance",
        BookingKind::WalkIn => "walk_in",
    }
}

/// What happened, without the envelope.
pub fn data(kind: &EventKind) -> Value {
    match kind {
        EventKind::ScheduleSet { clinic, doctor, schedule } => json!({
            "clinic": clinic, "doctor": doctor, "slots_per_day": schedule.slots_per_day,
            "first_slot_minute": schedule.first_slot_minute, "slot_minutes": schedule.slot_minutes,
        }),
        EventKind::BookingCreated(BookingCreated { details: b, token_number }) => json!({
            "booking_id": b.booking_id, "clinic": b.clinic, "doctor": b.doctor, "date": format_date(b.date), "slot": b.slot,
            "patient": b.patient, "kind": kind_name(b.kind), "token": token(b.kind, *token_number),
            "external_ref": b.external_ref, "correlation_id": b.correlation_id, "external_created_at": b.external_created_at.as_ref().map(time),
        }),
        EventKind::BookingCancelled { booking_id, reason } => json!({ "booking_id": booking_id, "reason": reason }),
        EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => {
            json!({ "business": business, "claim_id": claim_id, "lease_expires_at": time(lease_expires_at) })
        }
        EventKind::PhoneCompleted { business, claim_id, phone_number, provider_sid } => {
            json!({ "business": business, "claim_id": claim_id, "phone_number": phone_number, "provider_sid": provider_sid })
        }
        EventKind::PhoneClaimFailed { business, claim_id, reason } => {
            json!({ "business": business, "claim_id": claim_id, "reason": reason })
        }
        EventKind::PhoneReleased { business, phone_number, reason } => {
            json!({ "business": business, "phone_number": phone_number, "reason": reason })
        }
        EventKind::CallStarted { call_id, campaign, to } => json!({ "call_id": call_id, "campaign": campaign, "to": to }),
        EventKind::CallOutcomeRecorded { call_id, outcome } => json!({ "call_id": call_id, "outcome": outcome.name() }),
        EventKind::CallRefused { campaign, to, duplicate, call_id } => json!({
            "campaign": campaign, "to": to, "call_id": call_id,
            "refused_as": match duplicate { crate::core::Duplicate::InProgress => "call_in_progress", crate::core::Duplicate::RecentlyCalled => "recently_called" },
        }),
        EventKind::CampaignHalted { campaign, reason } | EventKind::CampaignResumed { campaign, reason } => {
            json!({ "campaign": campaign, "reason": reason })
        }
        EventKind::NumberBlocked { number, reason } => json!({ "number": number, "reason": reason }),
        EventKind::CommunityCreated { community_id, slug, name, owner, plan } => json!({
            "community_id": community_id, "slug": slug, "name": name, "owner": owner,
            "membership": { "user": owner, "role": "admin" }, "subscription": { "plan": plan },
        }),
    }
}

/// An event with its provenance, as API.md's `GET /events` lists it. With
/// `tenant`, the event's tenant is included too (for exports across tenants).
pub fn event(event: &Event, tenant: bool) -> Value {
    let mut out = Map::new();
    out.insert("position".into(), json!(event.position));
    out.insert("recorded_at".into(), time(&event.recorded_at));
    if tenant {
        out.insert("tenant".into(), json!(event.tenant));
    }
    out.insert("type".into(), json!(event.kind.name()));
    out.insert("data".into(), data(&event.kind));
    out.insert("actor".into(), json!(event.actor));
    if !event.request_id.is_empty() {
        out.insert("correlation_id".into(), json!(event.request_id));
    }
    if let Some(key) = &event.idempotency_key {
        out.insert("idempotency_key".into(), json!(key));
    }
    Value::Object(out)
}

/// A journaled rejection, as `GET /rejections` lists it.
pub fn rejection(seq: u64, rejected: &Rejected) -> Value {
    let body = serde_json::from_slice::<Value>(&rejected.body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&rejected.body)));
    let mut out = Map::new();
    out.insert("seq".into(), json!(seq));
    out.insert("recorded_at".into(), time(&rejected.recorded_at));
    out.insert("code".into(), json!(rejected.code));
    out.insert("detail".into(), json!(rejected.detail));
    out.insert("command".into(), json!({ "method": rejected.method, "path": rejected.path, "body": body }));
    out.insert("actor".into(), json!(rejected.actor));
    out.insert("correlation_id".into(), json!(rejected.request_id));
    if let Some(key) = &rejected.idempotency_key {
        out.insert("idempotency_key".into(), json!(key));
    }
    if let Some(conflict) = &rejected.conflicts_with {
        out.insert("conflicts_with".into(), json!(conflict));
    }
    Value::Object(out)
}
