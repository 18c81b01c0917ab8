//! The encoding of ledger events and stored responses as the protobuf messages
//! of `proto/ledger.proto`: the only place that knows both the core's types and
//! the wire schema. Every decode validates what the schema cannot express.

use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use prost::Message;
use uuid::Uuid;

use crate::core::{BookingCreated, BookingKind, Event, EventKind, Schedule, StoredResponse, Text};

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/booking_ledger.v1.rs"));
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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

pub fn format_date(date: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

fn parse_date(text: &str) -> Result<NaiveDate, CodecError> {
    text.parse().map_err(|_| CodecError(format!("bad date {text:?}")))
}

fn uuid(bytes: &[u8]) -> Result<Uuid, CodecError> {
    Uuid::from_slice(bytes).map_err(|_| CodecError("a booking id is not 16 bytes".into()))
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
            booking_id: b.booking_id.as_bytes().to_vec(),
            clinic: b.clinic.to_string(),
            doctor: b.doctor.to_string(),
            date: format_date(b.date),
            slot: b.slot,
            patient: b.patient.to_string(),
            kind: match b.kind {
                BookingKind::Advance => pb::BookingKind::Advance,
                BookingKind::WalkIn => pb::BookingKind::WalkIn,
            }
            .into(),
            token_number: b.token_number,
            external_ref: b.external_ref.as_deref().unwrap_or_default().to_owned(),
            correlation_id: b.correlation_id.as_deref().unwrap_or_default().to_owned(),
            external_created_at_micros: b.external_created_at.map_or(0, micros),
        }),
        EventKind::BookingCancelled { booking_id, reason } => E::BookingCancelled(pb::BookingCancelled {
            booking_id: booking_id.as_bytes().to_vec(),
            reason: reason.as_deref().unwrap_or_default().to_owned(),
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

/// Appends the encoded event to `out`.
pub fn encode_event_into(event: &Event, out: &mut Vec<u8>) {
    to_pb_event(event).encode(out).expect("a Vec grows as needed");
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    encode_event_into(event, &mut out);
    out
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
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
            token_number: b.token_number,
            external_ref: optional(&b.external_ref),
            correlation_id: optional(&b.correlation_id),
            external_created_at: match b.external_created_at_micros {
                0 => None,
                m => Some(from_micros(m, "external_created_at")?),
            },
        }),
        E::BookingCancelled(c) => EventKind::BookingCancelled { booking_id: uuid(&c.booking_id)?, reason: optional(&c.reason) },
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
