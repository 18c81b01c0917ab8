//! Encoding events as `EventRecord`s (`proto/ledger.proto`) straight from the
//! borrowed `Event`, for the writer's hot path: no intermediate prost structs,
//! so no string copied and nothing allocated once the output buffer has grown.
//! The bytes are exactly prost's (its field order, the oneof before `response`,
//! proto3 defaults left out):
//! the tests below and the golden vectors hold it to that.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use uuid::Uuid;

use crate::core::{BookingKind, CallState, Duplicate, Event, EventKind, StoredResponse, format_date};

/// Appends the `EventRecord` of `event` to `out`. `scratch` is reused for the
/// nested messages, whose length comes before them.
pub fn encode_event(event: &Event, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    uint64(out, 1, event.position);
    int64(out, 2, micros(event.recorded_at));
    string(out, 3, &event.tenant);
    string(out, 4, &event.actor);
    string(out, 5, &event.request_id);
    string(out, 6, event.idempotency_key.as_deref().unwrap_or_default());
    scratch.clear();
    let number = kind(scratch, &event.kind);
    message(out, number, scratch);
    if let Some(response) = &event.response {
        scratch.clear();
        stored_response(scratch, response);
        message(out, 20, scratch);
    }
}

/// Writes the event's own message into `m` and returns its field number in the oneof.
fn kind(m: &mut Vec<u8>, kind: &EventKind) -> u32 {
    match kind {
        EventKind::ScheduleSet { clinic, doctor, schedule } => {
            string(m, 1, clinic);
            string(m, 2, doctor);
            uint64(m, 3, schedule.slots_per_day.into());
            if let Some(minute) = schedule.first_slot_minute {
                always_varint(m, 4, minute.into());
            }
            if let Some(minutes) = schedule.slot_minutes {
                always_varint(m, 5, minutes.into());
            }
            10
        }
        EventKind::BookingCreated(created) => {
            let b = &created.details;
            id(m, 1, &b.booking_id);
            string(m, 2, &b.clinic);
            string(m, 3, &b.doctor);
            date(m, 4, b.date);
            uint64(m, 5, b.slot.into());
            string(m, 6, &b.patient);
            uint64(
                m,
                7,
                match b.kind {
                    BookingKind::Advance => 1,
                    BookingKind::WalkIn => 2,
                },
            );
            uint64(m, 8, created.token_number.into());
            string(m, 9, b.external_ref().map_or("", |r| r));
            string(m, 10, b.correlation_id().map_or("", |c| c));
            int64(m, 11, b.external_created_at().map_or(0, micros));
            11
        }
        EventKind::BookingCancelled { booking_id, reason } => {
            id(m, 1, booking_id);
            string(m, 2, reason.as_deref().unwrap_or_default());
            12
        }
        EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => {
            string(m, 1, business);
            id(m, 2, claim_id);
            int64(m, 3, micros(*lease_expires_at));
            13
        }
        EventKind::PhoneCompleted { business, claim_id, phone_number, provider_sid } => {
            string(m, 1, business);
            id(m, 2, claim_id);
            string(m, 3, phone_number);
            string(m, 4, provider_sid);
            14
        }
        EventKind::PhoneClaimFailed { business, claim_id, reason } => {
            string(m, 1, business);
            id(m, 2, claim_id);
            string(m, 3, reason);
            15
        }
        EventKind::PhoneReleased { business, phone_number, reason } => {
            string(m, 1, business);
            string(m, 2, phone_number);
            string(m, 3, reason.as_deref().unwrap_or_default());
            16
        }
        EventKind::CallStarted { call_id, campaign, to } => {
            id(m, 1, call_id);
            string(m, 2, campaign);
            string(m, 3, to);
            17
        }
        EventKind::CallOutcomeRecorded { call_id, outcome } => {
            id(m, 1, call_id);
            uint64(
                m,
                2,
                match outcome {
                    CallState::Calling => unreachable!("calling is not an outcome"),
                    CallState::Completed => 1,
                    CallState::NoAnswer => 2,
                    CallState::Failed => 3,
                    CallState::BadNumber => 4,
                },
            );
            18
        }
        EventKind::CallRefused { campaign, to, duplicate, call_id } => {
            string(m, 1, campaign);
            string(m, 2, to);
            uint64(
                m,
                3,
                match duplicate {
                    Duplicate::InProgress => 1,
                    Duplicate::RecentlyCalled => 2,
                },
            );
            id(m, 4, call_id);
            19
        }
        EventKind::CampaignHalted { campaign, reason } => {
            string(m, 1, campaign);
            string(m, 2, reason);
            21
        }
        EventKind::CampaignResumed { campaign, reason } => {
            string(m, 1, campaign);
            string(m, 2, reason);
            22
        }
        EventKind::NumberBlocked { number, reason } => {
            string(m, 1, number);
            string(m, 2, reason);
            23
        }
        EventKind::CommunityCreated { community_id, slug, name, owner, plan } => {
            id(m, 1, community_id);
            string(m, 2, slug);
            string(m, 3, name);
            string(m, 4, owner);
            string(m, 5, plan);
            24
        }
    }
}

fn stored_response(m: &mut Vec<u8>, response: &StoredResponse) {
    string(m, 1, &response.actor);
    string(m, 2, &response.key);
    bytes(m, 3, &response.fingerprint);
    uint64(m, 4, response.status.into());
    bytes(m, 5, &response.body);
}

/// `YYYY-MM-DD`, as `format_date` writes it, without allocating for the common years.
fn date(out: &mut Vec<u8>, number: u32, value: NaiveDate) {
    let (year, month, day) = (value.year(), value.month(), value.day());
    if !(0..=9999).contains(&year) {
        return string(out, number, &format_date(value));
    }
    let mut text = *b"0000-00-00";
    let year = year as u32;
    for (i, digit) in [year / 1000, year / 100 % 10, year / 10 % 10, year % 10, 10, month / 10, month % 10, 10, day / 10, day % 10]
        .into_iter()
        .enumerate()
    {
        if digit < 10 {
            text[i] = b'0' + digit as u8;
        }
    }
    bytes(out, number, &text);
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(out: &mut Vec<u8>, number: u32, wire_type: u32) {
    varint(out, u64::from(number << 3 | wire_type));
}

/// A proto3 scalar: left out when it is the default.
fn uint64(out: &mut Vec<u8>, number: u32, value: u64) {
    if value != 0 {
        always_varint(out, number, value);
    }
}

/// An `optional` scalar that is set: written even when 0.
fn always_varint(out: &mut Vec<u8>, number: u32, value: u64) {
    key(out, number, 0);
    varint(out, value);
}

fn int64(out: &mut Vec<u8>, number: u32, value: i64) {
    uint64(out, number, value as u64);
}

fn bytes(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    if !value.is_empty() {
        key(out, number, 2);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

fn string(out: &mut Vec<u8>, number: u32, value: &str) {
    bytes(out, number, value.as_bytes());
}

fn id(out: &mut Vec<u8>, number: u32, value: &Uuid) {
    bytes(out, number, value.as_bytes());
}

/// An embedded message, written even when empty (prost writes a set message).
fn message(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    key(out, number, 2);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}
