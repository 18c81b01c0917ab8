//! The encoding of ledger events and stored responses as the protobuf messages
//! of `proto/ledger.proto`: the only place that knows both the core's types and
//! the wire schema. Every decode validates what the schema cannot express.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use uuid::Uuid;

use crate::core::{
    BookingCreated, BookingDetails, BookingKind, CallState, Duplicate, Event, EventKind, Rejected, Schedule, StoredResponse, Text,
    format_date,
};

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/booking_ledger.v1.rs"));
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("undecodable record: {0}")]
pub struct CodecError(pub String);

impl From<prost::DecodeError> for CodecError {
    fn from(e: prost::DecodeError) -> Self {
        CodecError(e.to_string())
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(micros: i64, field: &str) -> Result<DateTime<Utc>, CodecError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| CodecError(format!("{field} out of range")))
}

fn parse_date(text: &str) -> Result<NaiveDate, CodecError> {
    text.parse().map_err(|_| CodecError(format!("bad date {text:?}")))
}

fn uuid(bytes: &[u8]) -> Result<Uuid, CodecError> {
    Uuid::from_slice(bytes).map_err(|_| CodecError("an id is not 16 bytes".into()))
}

fn optional(text: &str) -> Option<Text> {
    (!text.is_empty()).then(|| text.into())
}

fn to_pb_response(response: &StoredResponse) -> pb::StoredResponse {
    pb::StoredResponse {
        actor: response.actor.to_string(),
        key: response.key.to_string(),
        fingerprint: response.fingerprint.to_vec(),
        status: response.status.into(),
        body: response.body.to_vec(),
    }
}

fn from_pb_response(response: pb::StoredResponse) -> Result<StoredResponse, CodecError> {
    Ok(StoredResponse {
        actor: response.actor.into(),
        key: response.key.into(),
        fingerprint: response.fingerprint.try_into().map_err(|_| CodecError("fingerprint is not 32 bytes".into()))?,
        status: u16::try_from(response.status).map_err(|_| CodecError("status out of range".into()))?,
        body: Arc::from(response.body),
    })
}

pub fn to_pb_event(event: &Event) -> pb::EventRecord {
    use pb::event_record::Event as E;
    let kind = match &event.kind {
        EventKind::ScheduleSet { clinic, doctor, schedule } => E::ScheduleSet(pb::ScheduleSet {
            clinic: clinic.to_string(),
            doctor: doctor.to_string(),
            slots_per_day: schedule.slots_per_day,
            first_slot_minute: schedule.first_slot_minute,
            slot_minutes: schedule.slot_minutes,
        }),
        EventKind::BookingCreated(b) => E::BookingCreated(pb::BookingCreated {
            booking_id: b.details.booking_id.as_bytes().to_vec(),
            clinic: b.details.clinic.to_string(),
            doctor: b.details.doctor.to_string(),
            date: format_date(b.details.date),
            slot: b.details.slot,
            patient: b.details.patient.to_string(),
            kind: match b.details.kind {
                BookingKind::Advance => pb::BookingKind::Advance,
                BookingKind::WalkIn => pb::BookingKind::WalkIn,
            }
            .into(),
            token_number: b.token_number,
            external_ref: b.details.external_ref.as_deref().unwrap_or_default().to_owned(),
            correlation_id: b.details.correlation_id.as_deref().unwrap_or_default().to_owned(),
            external_created_at_micros: b.details.external_created_at.map_or(0, micros),
        }),
        EventKind::BookingCancelled { booking_id, reason } => E::BookingCancelled(pb::BookingCancelled {
            booking_id: booking_id.as_bytes().to_vec(),
            reason: reason.as_deref().unwrap_or_default().to_owned(),
        }),
        EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => E::PhoneClaimed(pb::PhoneClaimed {
            business: business.to_string(),
            claim_id: claim_id.as_bytes().to_vec(),
            lease_expires_at_micros: micros(*lease_expires_at),
        }),
        EventKind::PhoneCompleted { business, claim_id, phone_number, provider_sid } => E::PhoneCompleted(pb::PhoneCompleted {
            business: business.to_string(),
            claim_id: claim_id.as_bytes().to_vec(),
            phone_number: phone_number.to_string(),
            provider_sid: provider_sid.to_string(),
        }),
        EventKind::PhoneClaimFailed { business, claim_id, reason } => E::PhoneClaimFailed(pb::PhoneClaimFailed {
            business: business.to_string(),
            claim_id: claim_id.as_bytes().to_vec(),
            reason: reason.to_string(),
        }),
        EventKind::PhoneReleased { business, phone_number, reason } => E::PhoneReleased(pb::PhoneReleased {
            business: business.to_string(),
            phone_number: phone_number.to_string(),
            reason: reason.as_deref().unwrap_or_default().to_owned(),
        }),
        EventKind::CallStarted { call_id, campaign, to } => {
            E::CallStarted(pb::CallStarted { call_id: call_id.as_bytes().to_vec(), campaign: campaign.to_string(), to: to.to_string() })
        }
        EventKind::CallOutcomeRecorded { call_id, outcome } => E::CallOutcomeRecorded(pb::CallOutcomeRecorded {
            call_id: call_id.as_bytes().to_vec(),
            outcome: match outcome {
                CallState::Calling => unreachable!("calling is not an outcome"),
                CallState::Completed => pb::CallOutcome::Completed,
                CallState::NoAnswer => pb::CallOutcome::NoAnswer,
                CallState::Failed => pb::CallOutcome::Failed,
                CallState::BadNumber => pb::CallOutcome::BadNumber,
            }
            .into(),
        }),
        EventKind::CallRefused { campaign, to, duplicate, call_id } => E::CallRefused(pb::CallRefused {
            campaign: campaign.to_string(),
            to: to.to_string(),
            duplicate: match duplicate {
                Duplicate::InProgress => pb::Duplicate::InProgress,
                Duplicate::RecentlyCalled => pb::Duplicate::RecentlyCalled,
            }
            .into(),
            call_id: call_id.as_bytes().to_vec(),
        }),
        EventKind::CampaignHalted { campaign, reason } => {
            E::CampaignHalted(pb::CampaignHalted { campaign: campaign.to_string(), reason: reason.to_string() })
        }
        EventKind::CampaignResumed { campaign, reason } => {
            E::CampaignResumed(pb::CampaignResumed { campaign: campaign.to_string(), reason: reason.to_string() })
        }
        EventKind::NumberBlocked { number, reason } => {
            E::NumberBlocked(pb::NumberBlocked { number: number.to_string(), reason: reason.to_string() })
        }
        EventKind::CommunityCreated { community_id, slug, name, owner, plan } => E::CommunityCreated(pb::CommunityCreated {
            community_id: community_id.as_bytes().to_vec(),
            slug: slug.to_string(),
            name: name.to_string(),
            owner: owner.to_string(),
            plan: plan.to_string(),
        }),
    };
    pb::EventRecord {
        position: event.position,
        recorded_at_micros: micros(event.recorded_at),
        tenant: event.tenant.to_string(),
        actor: event.actor.to_string(),
        request_id: event.request_id.to_string(),
        idempotency_key: event.idempotency_key.as_deref().unwrap_or_default().to_owned(),
        event: Some(kind),
        response: event.response.as_ref().map(to_pb_response),
    }
}

/// Appends the encoded event to `out` (see `log::encode`; the writer keeps its
/// own scratch buffer instead).
pub fn encode_event_into(event: &Event, out: &mut Vec<u8>) {
    super::encode::encode_event(event, out, &mut Vec::new());
}

/// prost's encoding of the same event: the oracle `log::encode` is tested against.
pub fn encode_event_with_prost(event: &Event) -> Vec<u8> {
    to_pb_event(event).encode_to_vec()
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    encode_event_into(event, &mut out);
    out
}

/// Decodes one event (see `log::decode`; readers of many records keep a
/// `Decoder::interning()` instead).
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    super::decode::Decoder::default().decode_event(bytes)
}

/// prost's decoding of the same record: the oracle `log::decode` is tested against.
pub fn decode_event_with_prost(bytes: &[u8]) -> Result<Event, CodecError> {
    from_pb_event(pb::EventRecord::decode(bytes)?)
}

pub fn from_pb_event(record: pb::EventRecord) -> Result<Event, CodecError> {
    use pb::event_record::Event as E;
    let kind = match record.event.ok_or_else(|| CodecError("no event in the record".into()))? {
        E::ScheduleSet(s) => EventKind::ScheduleSet {
            clinic: s.clinic.into(),
            doctor: s.doctor.into(),
            schedule: Schedule { slots_per_day: s.slots_per_day, first_slot_minute: s.first_slot_minute, slot_minutes: s.slot_minutes },
        },
        E::BookingCreated(b) => EventKind::BookingCreated(BookingCreated {
            details: BookingDetails {
                booking_id: uuid(&b.booking_id)?,
                kind: match pb::BookingKind::try_from(b.kind) {
                    Ok(pb::BookingKind::Advance) => BookingKind::Advance,
                    Ok(pb::BookingKind::WalkIn) => BookingKind::WalkIn,
                    _ => return Err(CodecError(format!("unknown booking kind {}", b.kind))),
                },
                date: parse_date(&b.date)?,
                clinic: b.clinic.into(),
                doctor: b.doctor.into(),
                slot: b.slot,
                patient: b.patient.into(),
                external_ref: optional(&b.external_ref),
                correlation_id: optional(&b.correlation_id),
                external_created_at: match b.external_created_at_micros {
                    0 => None,
                    m => Some(from_micros(m, "external_created_at")?),
                },
            },
            token_number: b.token_number,
        }),
        E::BookingCancelled(c) => EventKind::BookingCancelled { booking_id: uuid(&c.booking_id)?, reason: optional(&c.reason) },
        E::PhoneClaimed(p) => EventKind::PhoneClaimed {
            business: p.business.into(),
            claim_id: uuid(&p.claim_id)?,
            lease_expires_at: from_micros(p.lease_expires_at_micros, "lease_expires_at")?,
        },
        E::PhoneCompleted(p) => EventKind::PhoneCompleted {
            business: p.business.into(),
            claim_id: uuid(&p.claim_id)?,
            phone_number: p.phone_number.into(),
            provider_sid: p.provider_sid.into(),
        },
        E::PhoneClaimFailed(p) => {
            EventKind::PhoneClaimFailed { business: p.business.into(), claim_id: uuid(&p.claim_id)?, reason: p.reason.into() }
        }
        E::PhoneReleased(p) => {
            EventKind::PhoneReleased { business: p.business.into(), phone_number: p.phone_number.into(), reason: optional(&p.reason) }
        }
        E::CallStarted(c) => EventKind::CallStarted { call_id: uuid(&c.call_id)?, campaign: c.campaign.into(), to: c.to.into() },
        E::CallOutcomeRecorded(c) => EventKind::CallOutcomeRecorded {
            call_id: uuid(&c.call_id)?,
            outcome: match pb::CallOutcome::try_from(c.outcome) {
                Ok(pb::CallOutcome::Completed) => CallState::Completed,
                Ok(pb::CallOutcome::NoAnswer) => CallState::NoAnswer,
                Ok(pb::CallOutcome::Failed) => CallState::Failed,
                Ok(pb::CallOutcome::BadNumber) => CallState::BadNumber,
                _ => return Err(CodecError(format!("unknown call outcome {}", c.outcome))),
            },
        },
        E::CallRefused(c) => EventKind::CallRefused {
            duplicate: match pb::Duplicate::try_from(c.duplicate) {
                Ok(pb::Duplicate::InProgress) => Duplicate::InProgress,
                Ok(pb::Duplicate::RecentlyCalled) => Duplicate::RecentlyCalled,
                _ => return Err(CodecError(format!("unknown duplicate kind {}", c.duplicate))),
            },
            call_id: uuid(&c.call_id)?,
            campaign: c.campaign.into(),
            to: c.to.into(),
        },
        E::CampaignHalted(c) => EventKind::CampaignHalted { campaign: c.campaign.into(), reason: c.reason.into() },
        E::CampaignResumed(c) => EventKind::CampaignResumed { campaign: c.campaign.into(), reason: c.reason.into() },
        E::NumberBlocked(n) => EventKind::NumberBlocked { number: n.number.into(), reason: n.reason.into() },
        E::CommunityCreated(c) => EventKind::CommunityCreated {
            community_id: uuid(&c.community_id)?,
            slug: c.slug.into(),
            name: c.name.into(),
            owner: c.owner.into(),
            plan: c.plan.into(),
        },
    };
    Ok(Event {
        position: record.position,
        recorded_at: from_micros(record.recorded_at_micros, "recorded_at")?,
        tenant: record.tenant.into(),
        actor: record.actor.into(),
        request_id: record.request_id.into(),
        idempotency_key: optional(&record.idempotency_key),
        kind,
        response: record.response.map(from_pb_response).transpose()?,
    })
}

/// A stored answer to a keyed command that appended no event.
pub fn encode_rejected_response(tenant: &str, response: &StoredResponse, recorded_at: DateTime<Utc>) -> Vec<u8> {
    pb::RejectedResponseRecord {
        recorded_at_micros: micros(recorded_at),
        tenant: tenant.to_owned(),
        response: Some(to_pb_response(response)),
    }
    .encode_to_vec()
}

pub fn decode_rejected_response(bytes: &[u8]) -> Result<(Text, StoredResponse, DateTime<Utc>), CodecError> {
    let record = pb::RejectedResponseRecord::decode(bytes)?;
    let response = record.response.ok_or_else(|| CodecError("no response in the record".into()))?;
    Ok((record.tenant.into(), from_pb_response(response)?, from_micros(record.recorded_at_micros, "recorded_at")?))
}

/// A refused command, as the rejection journal keeps it.
pub fn encode_rejection(rejected: &Rejected) -> Vec<u8> {
    pb::RejectionRecord {
        recorded_at_micros: micros(rejected.recorded_at),
        tenant: rejected.tenant.to_string(),
        actor: rejected.actor.to_string(),
        request_id: rejected.request_id.to_string(),
        idempotency_key: rejected.idempotency_key.as_deref().unwrap_or_default().to_owned(),
        code: rejected.code.to_string(),
        detail: rejected.detail.clone(),
        conflicts_with: rejected.conflicts_with.clone().unwrap_or_default(),
        method: rejected.method.to_string(),
        path: rejected.path.to_string(),
        body: rejected.body.to_vec(),
    }
    .encode_to_vec()
}

pub fn decode_rejection(bytes: &[u8]) -> Result<Rejected, CodecError> {
    let r = pb::RejectionRecord::decode(bytes)?;
    Ok(Rejected {
        recorded_at: from_micros(r.recorded_at_micros, "recorded_at")?,
        tenant: r.tenant.into(),
        actor: r.actor.into(),
        request_id: r.request_id.into(),
        idempotency_key: optional(&r.idempotency_key),
        code: r.code.into(),
        detail: r.detail,
        conflicts_with: (!r.conflicts_with.is_empty()).then_some(r.conflicts_with),
        method: r.method.into(),
        path: r.path.into(),
        body: bytes::Bytes::from(r.body),
    })
}
