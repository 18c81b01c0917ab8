//! Encoding events as `EventRecord`s (`proto/ledger.proto`) straight from the
//! borrowed `Event`, for the writer's hot path: no intermediate prost structs,
//! so no string copied and nothing allocated once the output buffer has grown.
//! The bytes are exactly prost's (its field order, the oneof before `response`,
//! proto3 defaults left out):
//! the tests below and the golden vectors hold it to that.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use uuid::Uuid;

use super::codec::pb;
use super::wire::{self, Bytes, Msg, OptionalText, OptionalVarint, Text, Varint, event_record::Event as Member};
use crate::core::{Attendance, BookingKind, CallState, Duplicate, Event, EventKind, StoredResponse, format_date};

/// Appends the `EventRecord` of `event` to `out`. `scratch` is reused for the
/// nested messages, whose length comes before them.
pub fn encode_event(event: &Event, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    use wire::event_record as f;
    uint64(out, f::POSITION, event.position);
    int64(out, f::RECORDED_AT_MICROS, micros(event.recorded_at));
    string(out, f::TENANT, &event.tenant);
    string(out, f::ACTOR, &event.actor);
    string(out, f::REQUEST_ID, &event.request_id);
    string(out, f::IDEMPOTENCY_KEY, event.idempotency_key.as_deref().unwrap_or_default());
    scratch.clear();
    let member = kind(scratch, &event.kind);
    message(out, Msg(member.number()), scratch);
    if let Some(response) = &event.response {
        scratch.clear();
        stored_response(scratch, response);
        message(out, f::RESPONSE, scratch);
    }
}

/// Writes the event's own message into `m` and returns its member of the oneof.
fn kind(m: &mut Vec<u8>, kind: &EventKind) -> Member {
    use wire::*;
    match kind {
        EventKind::ScheduleSet { clinic, doctor, schedule } => {
            use schedule_set as f;
            string(m, f::CLINIC, clinic);
            string(m, f::DOCTOR, doctor);
            uint64(m, f::SLOTS_PER_DAY, schedule.slots_per_day.into());
            optional_varint(m, f::FIRST_SLOT_MINUTE, schedule.first_slot_minute.map(u64::from));
            optional_varint(m, f::SLOT_MINUTES, schedule.slot_minutes.map(u64::from));
            Member::ScheduleSet
        }
        EventKind::BookingCreated(created) => {
            use booking_created as f;
            let b = &created.details;
            id(m, f::BOOKING_ID, &b.booking_id);
            string(m, f::CLINIC, &b.clinic);
            string(m, f::DOCTOR, &b.doctor);
            date(m, f::DATE, b.date);
            uint64(m, f::SLOT, b.slot.into());
            string(m, f::PATIENT, &b.patient);
            uint64(m, f::KIND, booking_kind(b.kind));
            uint64(m, f::TOKEN_NUMBER, created.token_number.into());
            string(m, f::EXTERNAL_REF, b.external_ref().map_or("", |r| r));
            string(m, f::CORRELATION_ID, b.correlation_id().map_or("", |c| c));
            int64(m, f::EXTERNAL_CREATED_AT_MICROS, b.external_created_at().map_or(0, micros));
            if let Some(hold_id) = b.hold_id() {
                id(m, f::HOLD_ID, &hold_id);
            }
            string(m, f::PATIENT_ID, b.patient_id().map_or("", |p| p));
            Member::BookingCreated
        }
        EventKind::BookingCancelled { booking_id, reason } => {
            use booking_cancelled as f;
            id(m, f::BOOKING_ID, booking_id);
            string(m, f::REASON, reason.as_deref().unwrap_or_default());
            Member::BookingCancelled
        }
        EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => {
            use phone_claimed as f;
            string(m, f::BUSINESS, business);
            id(m, f::CLAIM_ID, claim_id);
            int64(m, f::LEASE_EXPIRES_AT_MICROS, micros(*lease_expires_at));
            Member::PhoneClaimed
        }
        EventKind::PhoneCompleted { business, claim_id, phone_number, provider_sid } => {
            use phone_completed as f;
            string(m, f::BUSINESS, business);
            id(m, f::CLAIM_ID, claim_id);
            string(m, f::PHONE_NUMBER, phone_number);
            string(m, f::PROVIDER_SID, provider_sid);
            Member::PhoneCompleted
        }
        EventKind::PhoneClaimFailed { business, claim_id, reason } => {
            use phone_claim_failed as f;
            string(m, f::BUSINESS, business);
            id(m, f::CLAIM_ID, claim_id);
            string(m, f::REASON, reason);
            Member::PhoneClaimFailed
        }
        EventKind::PhoneReleased { business, phone_number, reason } => {
            use phone_released as f;
            string(m, f::BUSINESS, business);
            string(m, f::PHONE_NUMBER, phone_number);
            string(m, f::REASON, reason.as_deref().unwrap_or_default());
            Member::PhoneReleased
        }
        EventKind::CallStarted { call_id, campaign, to } => {
            use call_started as f;
            id(m, f::CALL_ID, call_id);
            string(m, f::CAMPAIGN, campaign);
            string(m, f::TO, to);
            Member::CallStarted
        }
        EventKind::CallOutcomeRecorded { call_id, outcome } => {
            use call_outcome_recorded as f;
            id(m, f::CALL_ID, call_id);
            let outcome = match outcome {
                CallState::Calling => unreachable!("calling is not an outcome"),
                CallState::Completed => pb::CallOutcome::Completed,
                CallState::NoAnswer => pb::CallOutcome::NoAnswer,
                CallState::Failed => pb::CallOutcome::Failed,
                CallState::BadNumber => pb::CallOutcome::BadNumber,
            };
            uint64(m, f::OUTCOME, outcome as u64);
            Member::CallOutcomeRecorded
        }
        EventKind::CallRefused { campaign, to, duplicate, call_id } => {
            use call_refused as f;
            string(m, f::CAMPAIGN, campaign);
            string(m, f::TO, to);
            let duplicate = match duplicate {
                Duplicate::InProgress => pb::Duplicate::InProgress,
                Duplicate::RecentlyCalled => pb::Duplicate::RecentlyCalled,
            };
            uint64(m, f::DUPLICATE, duplicate as u64);
            id(m, f::CALL_ID, call_id);
            Member::CallRefused
        }
        EventKind::CampaignHalted { campaign, reason } => {
            use campaign_halted as f;
            string(m, f::CAMPAIGN, campaign);
            string(m, f::REASON, reason);
            Member::CampaignHalted
        }
        EventKind::CampaignResumed { campaign, reason } => {
            use campaign_resumed as f;
            string(m, f::CAMPAIGN, campaign);
            string(m, f::REASON, reason);
            Member::CampaignResumed
        }
        EventKind::NumberBlocked { number, reason } => {
            use number_blocked as f;
            string(m, f::NUMBER, number);
            string(m, f::REASON, reason);
            Member::NumberBlocked
        }
        EventKind::CommunityCreated { community_id, slug, name, owner, plan } => {
            use community_created as f;
            id(m, f::COMMUNITY_ID, community_id);
            string(m, f::SLUG, slug);
            string(m, f::NAME, name);
            string(m, f::OWNER, owner);
            string(m, f::PLAN, plan);
            Member::CommunityCreated
        }
        EventKind::HoldPlaced { details, expires_at } => {
            use hold_placed as f;
            id(m, f::HOLD_ID, &details.hold_id);
            string(m, f::CLINIC, &details.clinic);
            string(m, f::DOCTOR, &details.doctor);
            date(m, f::DATE, details.date);
            uint64(m, f::SLOT, details.slot.into());
            optional_string(m, f::PATIENT, details.patient.as_deref());
            optional_string(m, f::PATIENT_ID, details.patient_id.as_deref());
            int64(m, f::EXPIRES_AT_MICROS, micros(*expires_at));
            if let Some(entry_id) = &details.entry_id {
                id(m, f::ENTRY_ID, entry_id);
            }
            Member::HoldPlaced
        }
        EventKind::HoldReleased { hold_id } => {
            id(m, hold_released::HOLD_ID, hold_id);
            Member::HoldReleased
        }
        EventKind::HoldExpired { hold_id } => {
            id(m, hold_expired::HOLD_ID, hold_id);
            Member::HoldExpired
        }
        EventKind::BookingRescheduled { booking_id, clinic, doctor, date: day, slot, kind, token_number, patient } => {
            use booking_rescheduled as f;
            id(m, f::BOOKING_ID, booking_id);
            string(m, f::CLINIC, clinic);
            string(m, f::DOCTOR, doctor);
            date(m, f::DATE, *day);
            uint64(m, f::SLOT, (*slot).into());
            uint64(m, f::KIND, booking_kind(*kind));
            uint64(m, f::TOKEN_NUMBER, (*token_number).into());
            string(m, f::PATIENT, patient);
            Member::BookingRescheduled
        }
        EventKind::AttendanceRecorded { booking_id, attendance, corrected } => {
            use attendance_recorded as f;
            id(m, f::BOOKING_ID, booking_id);
            let attendance = match attendance {
                Attendance::Arrived => pb::Attendance::Arrived,
                Attendance::NoShow => pb::Attendance::NoShow,
            };
            uint64(m, f::ATTENDANCE, attendance as u64);
            uint64(m, f::CORRECTED, u64::from(*corrected));
            Member::AttendanceRecorded
        }
        EventKind::WaitlistJoined { details: e } => {
            use waitlist_joined as f;
            id(m, f::ENTRY_ID, &e.entry_id);
            string(m, f::CLINIC, &e.clinic);
            date(m, f::DATE, e.date);
            optional_string(m, f::DOCTOR, e.doctor.as_deref());
            string(m, f::PATIENT, &e.patient);
            optional_string(m, f::PATIENT_ID, e.patient_id.as_deref());
            Member::WaitlistJoined
        }
        EventKind::WaitlistWithdrawn { entry_id } => {
            id(m, waitlist_withdrawn::ENTRY_ID, entry_id);
            Member::WaitlistWithdrawn
        }
        EventKind::DaysClosed { clinic, through } => {
            use days_closed as f;
            string(m, f::CLINIC, clinic);
            date(m, f::THROUGH, *through);
            Member::DaysClosed
        }
        EventKind::ClinicZoneSet { clinic, zone, tzdata } => {
            use clinic_zone_set as f;
            string(m, f::CLINIC, clinic);
            string(m, f::TIME_ZONE, zone.name());
            string(m, f::TZDATA, tzdata);
            Member::ClinicZoneSet
        }
    }
}

fn booking_kind(kind: BookingKind) -> u64 {
    (match kind {
        BookingKind::Advance => pb::BookingKind::Advance,
        BookingKind::WalkIn => pb::BookingKind::WalkIn,
    }) as u64
}

fn stored_response(m: &mut Vec<u8>, response: &StoredResponse) {
    use wire::stored_response as f;
    string(m, f::ACTOR, &response.actor);
    string(m, f::KEY, &response.key);
    bytes(m, f::FINGERPRINT, &response.fingerprint);
    uint64(m, f::STATUS, response.status.into());
    bytes(m, f::BODY, &response.body);
}

/// `YYYY-MM-DD`, as `format_date` writes it, without allocating for the common years.
fn date(out: &mut Vec<u8>, field: Text, value: NaiveDate) {
    let (year, month, day) = (value.year(), value.month(), value.day());
    if !(0..=9999).contains(&year) {
        return string(out, field, &format_date(value));
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
    length_delimited(out, field.number(), &text);
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
fn uint64(out: &mut Vec<u8>, field: Varint, value: u64) {
    if value != 0 {
        key(out, field.number(), 0);
        varint(out, value);
    }
}

/// An `optional` scalar: written when set, even when 0.
fn optional_varint(out: &mut Vec<u8>, field: OptionalVarint, value: Option<u64>) {
    if let Some(value) = value {
        key(out, field.number(), 0);
        varint(out, value);
    }
}

fn int64(out: &mut Vec<u8>, field: Varint, value: i64) {
    uint64(out, field, value as u64);
}

fn length_delimited(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    key(out, number, 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn bytes(out: &mut Vec<u8>, field: Bytes, value: &[u8]) {
    if !value.is_empty() {
        length_delimited(out, field.number(), value);
    }
}

fn string(out: &mut Vec<u8>, field: Text, value: &str) {
    if !value.is_empty() {
        length_delimited(out, field.number(), value.as_bytes());
    }
}

/// An `optional string`: written when set, even when empty.
fn optional_string(out: &mut Vec<u8>, field: OptionalText, value: Option<&str>) {
    if let Some(value) = value {
        length_delimited(out, field.number(), value.as_bytes());
    }
}

fn id(out: &mut Vec<u8>, field: Bytes, value: &Uuid) {
    bytes(out, field, value.as_bytes());
}

/// An embedded message, written even when empty (prost writes a set message).
fn message(out: &mut Vec<u8>, field: Msg, body: &[u8]) {
    length_delimited(out, field.number(), body);
}
