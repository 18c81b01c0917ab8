//! Decoding `EventRecord`s (`proto/ledger.proto`) straight from the record's
//! bytes, for recovery and every reader: the protobuf wire format read in
//! place, strings borrowed until they become the event's `Text`, and the names
//! that repeat from event to event (tenants, actors, clinics, doctors,
//! campaigns, businesses) interned, so that a booking's event costs a few
//! allocations instead of twenty. Field numbers and schemas come from
//! [`super::wire`]. prost's generated decoder is only the oracle this one is
//! tested and fuzzed against (`tests` below, `fuzz/fuzz_targets/event.rs`).
//!
//! Semantics are proto3's, as prost implements them: unknown fields are
//! skipped (groups too), a repeated scalar keeps its last value, occurrences
//! of a message member merge and a oneof member replaces another,
//! a missing field is its default; a declared field of another wire
//! type, a string that is not UTF-8 (in any occurrence, even one a later one
//! replaces) and a key beyond 32 bits are refused, as prost refuses them.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::codec::{CodecError, pb};
use super::wire::{self, Bytes, Field, Msg, OptionalText, OptionalVarint, Schema, Text as TextField, Varint};
use crate::core::{
    Attendance, BookingCreated, BookingDetails, BookingKind, CallState, Duplicate, EntryDetails, Event, EventKind, External, HoldDetails,
    Patient, Place, Schedule, StoredResponse, Text,
};

/// Slots of an interner: a direct-mapped table, so its memory is bounded
/// whatever the ledger holds (a collision replaces the older name).
const NAME_SLOTS: usize = 1024;
/// Longer strings are never interned (they are not names).
const NAME_BYTES_MAX: usize = 64;

/// A decoder that remembers the names it has seen: one per reader of many
/// records. (`Decoder::default()` remembers nothing, for a single record.)
#[derive(Default)]
pub struct Decoder {
    names: Vec<Option<Text>>,
    /// Recovery applies events and drops them: their provenance (request id,
    /// Idempotency-Key) is not decoded, since `apply` never reads it.
    without_provenance: bool,
    empty: Option<Text>,
}

impl Decoder {
    /// A decoder that interns names, for a reader of many records.
    pub fn interning() -> Decoder {
        Decoder { names: vec![None; NAME_SLOTS], ..Decoder::default() }
    }

    /// An interning decoder for recovery: events come without their request id
    /// and Idempotency-Key (empty and none), which `apply` does not read.
    pub fn for_recovery() -> Decoder {
        Decoder { without_provenance: true, empty: Some(Text::from("")), ..Decoder::interning() }
    }

    /// The shared `Text` of a name seen before, or a new one.
    fn name(&mut self, text: &str) -> Text {
        if self.names.is_empty() || text.len() > NAME_BYTES_MAX {
            return Text::from(text);
        }
        // FNV-1a: names are short, and SipHash cost more than the allocation it saved.
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let slot = &mut self.names[(hash as usize) % NAME_SLOTS];
        match slot {
            Some(name) if **name == *text => name.clone(),
            _ => slot.insert(Text::from(text)).clone(),
        }
    }

    pub fn decode_event(&mut self, bytes: &[u8]) -> Result<Event, CodecError> {
        use super::wire::event_record as f;
        let mut position = 0;
        let mut recorded_at_micros = 0;
        let (mut tenant, mut actor, mut request_id, mut idempotency_key) = ("", "", "", "");
        let mut kind: Option<(f::Event, &[u8])> = None;
        let mut response: Option<&[u8]> = None;
        // Messages are never written with a member twice (two events, two
        // responses); protobuf merges or replaces such members, and decodes
        // each one: that rare case is `merged_members`.
        // The record's own fields are read here rather than by `Message`,
        // whose table for them cost recovery 6-8%.
        let (mut kinds, mut responses) = (0, 0);
        let mut fields = Fields::new(bytes, RECURSION_LIMIT);
        while let Some((number, value)) = fields.next_field()? {
            if let (Some(member), Value::Bytes(b)) = (f::Event::from_number(number), value) {
                kind = Some((member, b));
                kinds += 1;
                continue;
            }
            match (number, value) {
                (n, Value::Varint(v)) if n == f::POSITION.0 => position = v,
                (n, Value::Varint(v)) if n == f::RECORDED_AT_MICROS.0 => recorded_at_micros = v as i64,
                (n, Value::Bytes(b)) if n == f::TENANT.0 => tenant = utf8(b)?,
                (n, Value::Bytes(b)) if n == f::ACTOR.0 => actor = utf8(b)?,
                (n, Value::Bytes(b)) if n == f::REQUEST_ID.0 => request_id = utf8(b)?,
                (n, Value::Bytes(b)) if n == f::IDEMPOTENCY_KEY.0 => idempotency_key = utf8(b)?,
                (n, Value::Bytes(b)) if n == f::RESPONSE.0 => {
                    response = Some(b);
                    responses += 1;
                }
                (n, _) if f::SCHEMA.get(n as usize).is_some_and(|field| *field != Field::Undeclared) => return Err(wire_type(n)),
                _ => {}
            }
        }
        let (kind, response) = if kinds > 1 || responses > 1 {
            self.merged_members(bytes)?
        } else {
            let (member, body) = kind.ok_or_else(|| CodecError("no event in the record".into()))?;
            (self.kind(member, &[body], RECURSION_LIMIT - 1)?, response.map(|b| self.response(&[b])).transpose()?)
        };
        Ok(Event {
            position,
            recorded_at: from_micros(recorded_at_micros, "recorded_at")?,
            tenant: self.name(tenant),
            actor: self.name(actor),
            request_id: match &self.empty {
                Some(empty) if self.without_provenance => empty.clone(),
                _ => Text::from(request_id),
            },
            idempotency_key: if self.without_provenance { None } else { optional(idempotency_key) },
            kind,
            response,
        })
    }

    /// The event and the stored answer of a record with an event or response
    /// member more than once, as protobuf reads them (found by the `event`
    /// fuzz target): occurrences of one event member in a row merge, a member
    /// replaces a different one before it (which must still be a well-formed
    /// message, though nothing more is asked of it), and every occurrence of
    /// the response merges. prost's decoder is the oracle the tests hold it to.
    fn merged_members(&mut self, bytes: &[u8]) -> Result<(EventKind, Option<StoredResponse>), CodecError> {
        use super::wire::event_record as f;
        let (mut events, mut responses) = (Vec::<(f::Event, Vec<&[u8]>)>::new(), Vec::new());
        let mut fields = Fields::new(bytes, RECURSION_LIMIT);
        while let Some((number, value)) = fields.next_field()? {
            match (f::Event::from_number(number), value) {
                (Some(member), Value::Bytes(b)) => match events.last_mut() {
                    Some((last, occurrences)) if *last == member => occurrences.push(b),
                    _ => events.push((member, vec![b])),
                },
                (None, Value::Bytes(b)) if number == f::RESPONSE.0 => responses.push(b),
                _ => {}
            }
        }
        let (member, occurrences) = events.pop().ok_or_else(|| CodecError("no event in the record".into()))?;
        for (replaced, occurrences) in &events {
            well_formed(*replaced, occurrences)?;
        }
        let kind = self.kind(member, &occurrences, RECURSION_LIMIT - 1)?;
        let response = if responses.is_empty() { None } else { Some(self.response(&responses)?) };
        Ok((kind, response))
    }

    /// The event of `member`, its message `body` read at recursion count `limit`.
    fn kind(&mut self, member: wire::event_record::Event, body: &[&[u8]], limit: u32) -> Result<EventKind, CodecError> {
        use super::wire::event_record::Event as E;
        Ok(match member {
            E::ScheduleSet => {
                use super::wire::schedule_set as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::ScheduleSet {
                    clinic: self.name(m.text(f::CLINIC)),
                    doctor: self.name(m.text(f::DOCTOR)),
                    schedule: Schedule {
                        slots_per_day: m.uint32(f::SLOTS_PER_DAY),
                        first_slot_minute: m.optional_uint32(f::FIRST_SLOT_MINUTE),
                        slot_minutes: m.optional_uint32(f::SLOT_MINUTES),
                    },
                }
            }
            E::BookingCreated => EventKind::BookingCreated(self.booking_created(body, limit)?),
            E::BookingCancelled => {
                use super::wire::booking_cancelled as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::BookingCancelled { booking_id: uuid(m.bytes(f::BOOKING_ID))?, reason: optional(m.text(f::REASON)) }
            }
            E::PhoneClaimed => {
                use super::wire::phone_claimed as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::PhoneClaimed {
                    business: self.name(m.text(f::BUSINESS)),
                    claim_id: uuid(m.bytes(f::CLAIM_ID))?,
                    lease_expires_at: from_micros(m.int64(f::LEASE_EXPIRES_AT_MICROS), "lease_expires_at")?,
                }
            }
            E::PhoneCompleted => {
                use super::wire::phone_completed as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::PhoneCompleted {
                    business: self.name(m.text(f::BUSINESS)),
                    claim_id: uuid(m.bytes(f::CLAIM_ID))?,
                    phone_number: Text::from(m.text(f::PHONE_NUMBER)),
                    provider_sid: Text::from(m.text(f::PROVIDER_SID)),
                }
            }
            E::PhoneClaimFailed => {
                use super::wire::phone_claim_failed as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::PhoneClaimFailed {
                    business: self.name(m.text(f::BUSINESS)),
                    claim_id: uuid(m.bytes(f::CLAIM_ID))?,
                    reason: Text::from(m.text(f::REASON)),
                }
            }
            E::PhoneReleased => {
                use super::wire::phone_released as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::PhoneReleased {
                    business: self.name(m.text(f::BUSINESS)),
                    phone_number: Text::from(m.text(f::PHONE_NUMBER)),
                    reason: optional(m.text(f::REASON)),
                }
            }
            E::CallStarted => {
                use super::wire::call_started as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::CallStarted {
                    call_id: uuid(m.bytes(f::CALL_ID))?,
                    campaign: self.name(m.text(f::CAMPAIGN)),
                    to: Text::from(m.text(f::TO)),
                }
            }
            E::CallOutcomeRecorded => {
                use super::wire::call_outcome_recorded as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::CallOutcomeRecorded {
                    call_id: uuid(m.bytes(f::CALL_ID))?,
                    outcome: match pb::CallOutcome::try_from(m.int32(f::OUTCOME)) {
                        Ok(pb::CallOutcome::Completed) => CallState::Completed,
                        Ok(pb::CallOutcome::NoAnswer) => CallState::NoAnswer,
                        Ok(pb::CallOutcome::Failed) => CallState::Failed,
                        Ok(pb::CallOutcome::BadNumber) => CallState::BadNumber,
                        Ok(pb::CallOutcome::Unspecified) | Err(_) => {
                            return Err(CodecError(format!("unknown call outcome {}", m.int32(f::OUTCOME))));
                        }
                    },
                }
            }
            E::CallRefused => {
                use super::wire::call_refused as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::CallRefused {
                    campaign: self.name(m.text(f::CAMPAIGN)),
                    to: Text::from(m.text(f::TO)),
                    duplicate: match pb::Duplicate::try_from(m.int32(f::DUPLICATE)) {
                        Ok(pb::Duplicate::InProgress) => Duplicate::InProgress,
                        Ok(pb::Duplicate::RecentlyCalled) => Duplicate::RecentlyCalled,
                        Ok(pb::Duplicate::Unspecified) | Err(_) => {
                            return Err(CodecError(format!("unknown duplicate kind {}", m.int32(f::DUPLICATE))));
                        }
                    },
                    call_id: uuid(m.bytes(f::CALL_ID))?,
                }
            }
            E::CampaignHalted => {
                use super::wire::campaign_halted as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::CampaignHalted { campaign: self.name(m.text(f::CAMPAIGN)), reason: Text::from(m.text(f::REASON)) }
            }
            E::CampaignResumed => {
                use super::wire::campaign_resumed as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::CampaignResumed { campaign: self.name(m.text(f::CAMPAIGN)), reason: Text::from(m.text(f::REASON)) }
            }
            E::NumberBlocked => {
                use super::wire::number_blocked as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::NumberBlocked { number: Text::from(m.text(f::NUMBER)), reason: Text::from(m.text(f::REASON)) }
            }
            E::CommunityCreated => {
                use super::wire::community_created as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::CommunityCreated {
                    community_id: uuid(m.bytes(f::COMMUNITY_ID))?,
                    slug: Text::from(m.text(f::SLUG)),
                    name: Text::from(m.text(f::NAME)),
                    owner: self.name(m.text(f::OWNER)),
                    plan: self.name(m.text(f::PLAN)),
                }
            }
            E::HoldPlaced => {
                use super::wire::hold_placed as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::HoldPlaced {
                    details: HoldDetails {
                        hold_id: uuid(m.bytes(f::HOLD_ID))?,
                        clinic: self.name(m.text(f::CLINIC)),
                        doctor: self.name(m.text(f::DOCTOR)),
                        date: parse_date(m.text(f::DATE))?,
                        slot: m.uint32(f::SLOT),
                        patient: m.optional_text(f::PATIENT).map(Patient::from),
                        patient_id: m.optional_text(f::PATIENT_ID).map(Text::from),
                        entry_id: optional_uuid(m.bytes(f::ENTRY_ID))?,
                    },
                    expires_at: from_micros(m.int64(f::EXPIRES_AT_MICROS), "expires_at")?,
                }
            }
            E::HoldReleased => {
                use super::wire::hold_released as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::HoldReleased { hold_id: uuid(m.bytes(f::HOLD_ID))? }
            }
            E::HoldExpired => {
                use super::wire::hold_expired as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::HoldExpired { hold_id: uuid(m.bytes(f::HOLD_ID))? }
            }
            E::BookingRescheduled => {
                use super::wire::booking_rescheduled as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::BookingRescheduled {
                    booking_id: uuid(m.bytes(f::BOOKING_ID))?,
                    clinic: self.name(m.text(f::CLINIC)),
                    doctor: self.name(m.text(f::DOCTOR)),
                    date: parse_date(m.text(f::DATE))?,
                    slot: m.uint32(f::SLOT),
                    kind: booking_kind(m.int32(f::KIND))?,
                    token_number: m.uint32(f::TOKEN_NUMBER),
                    patient: Patient::from(m.text(f::PATIENT)),
                }
            }
            E::AttendanceRecorded => {
                use super::wire::attendance_recorded as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::AttendanceRecorded {
                    booking_id: uuid(m.bytes(f::BOOKING_ID))?,
                    attendance: attendance(m.int32(f::ATTENDANCE))?,
                    corrected: m.varint(f::CORRECTED) != 0,
                }
            }
            E::WaitlistJoined => {
                use super::wire::waitlist_joined as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::WaitlistJoined {
                    details: EntryDetails {
                        entry_id: uuid(m.bytes(f::ENTRY_ID))?,
                        clinic: self.name(m.text(f::CLINIC)),
                        date: parse_date(m.text(f::DATE))?,
                        doctor: m.optional_text(f::DOCTOR).map(|d| self.name(d)),
                        patient: Patient::from(m.text(f::PATIENT)),
                        patient_id: m.optional_text(f::PATIENT_ID).map(Text::from),
                    },
                }
            }
            E::WaitlistWithdrawn => {
                use super::wire::waitlist_withdrawn as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::WaitlistWithdrawn { entry_id: uuid(m.bytes(f::ENTRY_ID))? }
            }
            E::DaysClosed => {
                use super::wire::days_closed as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::DaysClosed { clinic: self.name(m.text(f::CLINIC)), through: parse_date(m.text(f::THROUGH))? }
            }
            E::ClinicZoneSet => {
                use super::wire::clinic_zone_set as f;
                let m = Message::read_all(body, &f::SCHEMA, limit)?;
                EventKind::ClinicZoneSet {
                    clinic: self.name(m.text(f::CLINIC)),
                    zone: time_zone(m.text(f::TIME_ZONE))?,
                    tzdata: self.name(m.text(f::TZDATA)),
                }
            }
        })
    }

    /// A `BookingCreated` message: the event's, or the one inside a snapshot's booking.
    fn booking_created(&mut self, body: &[&[u8]], limit: u32) -> Result<BookingCreated, CodecError> {
        use super::wire::booking_created as f;
        let m = Message::read_all(body, &f::SCHEMA, limit)?;
        Ok(BookingCreated {
            details: BookingDetails {
                booking_id: uuid(m.bytes(f::BOOKING_ID))?,
                clinic: self.name(m.text(f::CLINIC)),
                doctor: self.name(m.text(f::DOCTOR)),
                date: parse_date(m.text(f::DATE))?,
                slot: m.uint32(f::SLOT),
                patient: Patient::from(m.text(f::PATIENT)),
                kind: booking_kind(m.int32(f::KIND))?,
                external: External {
                    external_ref: optional(m.text(f::EXTERNAL_REF)),
                    correlation_id: optional(m.text(f::CORRELATION_ID)),
                    external_created_at: match m.int64(f::EXTERNAL_CREATED_AT_MICROS) {
                        0 => None,
                        micros => Some(from_micros(micros, "external_created_at")?),
                    },
                    hold_id: optional_uuid(m.bytes(f::HOLD_ID))?,
                    patient_id: optional(m.text(f::PATIENT_ID)),
                }
                .boxed_if_any(),
            },
            token_number: m.uint32(f::TOKEN_NUMBER),
        })
    }

    /// A snapshot entry (`SnapshotEntry`) that holds only a booking, decoded in
    /// place: bookings are nearly all of a snapshot. None for any other entry,
    /// which the caller decodes with prost.
    pub fn snapshot_booking(&mut self, entry: &[u8]) -> Result<Option<SnapshotBooking>, CodecError> {
        use super::wire::snapshot_booking as f;
        let mut fields = Fields::new(entry, RECURSION_LIMIT);
        let mut booking = None;
        while let Some((number, value)) = fields.next_field()? {
            match (wire::snapshot_entry::Entry::from_number(number), value, booking) {
                // A member twice is merged by protobuf: prost's to decode.
                (Some(wire::snapshot_entry::Entry::Booking), Value::Bytes(b), None) => booking = Some(b),
                _ => return Ok(None),
            }
        }
        let Some(booking) = booking else { return Ok(None) };
        let m = Message::read(booking, &f::SCHEMA, RECURSION_LIMIT - 1)?;
        if m.merged {
            return Ok(None);
        }
        let rescheduled_from = match m.optional_message(f::RESCHEDULED_FROM) {
            None => None,
            Some(place) => {
                use super::wire::snapshot_place as p;
                let place = Message::read(place, &p::SCHEMA, RECURSION_LIMIT - 2)?;
                Some(Place {
                    doctor: self.name(place.text(p::DOCTOR)),
                    date: parse_date(place.text(p::DATE))?,
                    slot: place.uint32(p::SLOT),
                    kind: booking_kind(place.int32(p::KIND))?,
                    token_number: place.uint32(p::TOKEN_NUMBER),
                })
            }
        };
        Ok(Some(SnapshotBooking {
            created: self.booking_created(&[m.message(f::BOOKING)], RECURSION_LIMIT - 2)?,
            cancelled: m.varint(f::CANCELLED) != 0,
            created_at_micros: m.int64(f::CREATED_AT_MICROS),
            position: m.uint64(f::POSITION),
            cancel_reason: m.optional_text(f::CANCEL_REASON).map(Text::from),
            version: m.uint32(f::VERSION),
            attendance: match m.int32(f::ATTENDANCE) {
                0 => None,
                value => Some(attendance(value)?),
            },
            rescheduled_from,
        }))
    }

    fn response(&mut self, body: &[&[u8]]) -> Result<StoredResponse, CodecError> {
        use super::wire::stored_response as f;
        let m = Message::read_all(body, &f::SCHEMA, RECURSION_LIMIT - 1)?;
        Ok(StoredResponse {
            actor: self.name(m.text(f::ACTOR)),
            key: Text::from(m.text(f::KEY)),
            fingerprint: m.bytes(f::FINGERPRINT).try_into().map_err(|_| CodecError("fingerprint is not 32 bytes".into()))?,
            status: u16::try_from(m.uint32(f::STATUS)).map_err(|_| CodecError("status out of range".into()))?,
            body: Arc::from(m.bytes(f::BODY)),
        })
    }
}

/// Whether the occurrences of an event member that a later member replaced
/// read as their message: the wire types and strings protobuf checks, and
/// nothing of what the event would mean.
fn well_formed(member: wire::event_record::Event, occurrences: &[&[u8]]) -> Result<(), CodecError> {
    use super::wire::event_record::Event as E;
    use super::wire::*;
    let limit = RECURSION_LIMIT - 1;
    match member {
        E::ScheduleSet => Message::read_all(occurrences, &schedule_set::SCHEMA, limit).map(drop),
        E::BookingCreated => Message::read_all(occurrences, &booking_created::SCHEMA, limit).map(drop),
        E::BookingCancelled => Message::read_all(occurrences, &booking_cancelled::SCHEMA, limit).map(drop),
        E::PhoneClaimed => Message::read_all(occurrences, &phone_claimed::SCHEMA, limit).map(drop),
        E::PhoneCompleted => Message::read_all(occurrences, &phone_completed::SCHEMA, limit).map(drop),
        E::PhoneClaimFailed => Message::read_all(occurrences, &phone_claim_failed::SCHEMA, limit).map(drop),
        E::PhoneReleased => Message::read_all(occurrences, &phone_released::SCHEMA, limit).map(drop),
        E::CallStarted => Message::read_all(occurrences, &call_started::SCHEMA, limit).map(drop),
        E::CallOutcomeRecorded => Message::read_all(occurrences, &call_outcome_recorded::SCHEMA, limit).map(drop),
        E::CallRefused => Message::read_all(occurrences, &call_refused::SCHEMA, limit).map(drop),
        E::CampaignHalted => Message::read_all(occurrences, &campaign_halted::SCHEMA, limit).map(drop),
        E::CampaignResumed => Message::read_all(occurrences, &campaign_resumed::SCHEMA, limit).map(drop),
        E::NumberBlocked => Message::read_all(occurrences, &number_blocked::SCHEMA, limit).map(drop),
        E::CommunityCreated => Message::read_all(occurrences, &community_created::SCHEMA, limit).map(drop),
        E::HoldPlaced => Message::read_all(occurrences, &hold_placed::SCHEMA, limit).map(drop),
        E::HoldReleased => Message::read_all(occurrences, &hold_released::SCHEMA, limit).map(drop),
        E::HoldExpired => Message::read_all(occurrences, &hold_expired::SCHEMA, limit).map(drop),
        E::BookingRescheduled => Message::read_all(occurrences, &booking_rescheduled::SCHEMA, limit).map(drop),
        E::AttendanceRecorded => Message::read_all(occurrences, &attendance_recorded::SCHEMA, limit).map(drop),
        E::ClinicZoneSet => Message::read_all(occurrences, &clinic_zone_set::SCHEMA, limit).map(drop),
        E::WaitlistJoined => Message::read_all(occurrences, &waitlist_joined::SCHEMA, limit).map(drop),
        E::WaitlistWithdrawn => Message::read_all(occurrences, &waitlist_withdrawn::SCHEMA, limit).map(drop),
        E::DaysClosed => Message::read_all(occurrences, &days_closed::SCHEMA, limit).map(drop),
    }
}

/// A booking as a snapshot keeps it (`SnapshotBooking`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBooking {
    pub created: BookingCreated,
    pub cancelled: bool,
    pub created_at_micros: i64,
    pub position: u64,
    pub cancel_reason: Option<Text>,
    pub version: u32,
    pub attendance: Option<Attendance>,
    pub rescheduled_from: Option<Place>,
}

/// prost's limit on nesting (`DecodeContext`): a record is read at this depth,
/// each message inside it one deeper, and an unknown field nested in groups
/// deeper than what is left is refused.
const RECURSION_LIMIT: u32 = 100;

/// A field's value, by wire type.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A length-delimited value its message declares a string, checked UTF-8.
    Text(&'a str),
    /// A fixed-width value or a group: no field of ours is one, so it is skipped.
    Skipped,
}

/// The fields of one message, in the order they are written.
struct Fields<'a> {
    bytes: &'a [u8],
    /// prost's recursion count at this message (`RECURSION_LIMIT` at a record).
    limit: u32,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], limit: u32) -> Fields<'a> {
        Fields { bytes, limit }
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for (i, byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // The tenth byte may carry only the top bit of a u64.
                if i == 9 && *byte > 1 {
                    return Err(CodecError("invalid varint".into()));
                }
                self.bytes = &self.bytes[i + 1..];
                return Ok(value);
            }
        }
        Err(CodecError("invalid varint".into()))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if len > self.bytes.len() {
            return Err(CodecError("buffer underflow".into()));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], CodecError> {
        let len = usize::try_from(self.varint()?).map_err(|_| CodecError("buffer underflow".into()))?;
        self.take(len)
    }

    /// A field's number and wire type, refused as prost refuses them: a key
    /// beyond 32 bits, field number 0, wire types 6 and 7.
    fn key(&mut self) -> Result<(u32, u64), CodecError> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| CodecError(format!("invalid key value {key}")))?;
        let number = key >> 3;
        if number == 0 {
            return Err(CodecError("invalid field number 0".into()));
        }
        match key & 7 {
            6 | 7 => Err(CodecError(format!("invalid wire type {}", key & 7))),
            wire_type => Ok((number, u64::from(wire_type))),
        }
    }

    fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, CodecError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let (number, wire_type) = self.key()?;
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            2 => Value::Bytes(self.length_delimited()?),
            1 => {
                self.take(8)?;
                Value::Skipped
            }
            5 => {
                self.take(4)?;
                Value::Skipped
            }
            3 => {
                self.skip_group(number, self.limit)?;
                Value::Skipped
            }
            _ => return Err(end_group()),
        };
        Ok(Some((number, value)))
    }

    /// Skips a group field `number` up to its end (prost's `skip_field`, at
    /// recursion count `limit`), each field inside it one level deeper.
    fn skip_group(&mut self, number: u32, limit: u32) -> Result<(), CodecError> {
        loop {
            let (inner, wire_type) = self.key()?;
            if limit <= 1 && wire_type != 4 {
                return Err(CodecError("recursion limit reached".into()));
            }
            match wire_type {
                4 if inner == number => return Ok(()),
                4 => return Err(end_group()),
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    self.length_delimited()?;
                }
                5 => {
                    self.take(4)?;
                }
                _ => self.skip_group(inner, limit - 1)?,
            }
        }
    }
}

/// The last value of each of a small message's declared fields, every
/// occurrence checked against the message's schema as prost checks it.
struct Message<'a, const N: usize> {
    values: [Option<Value<'a>>; N],
    /// A message field occurred more than once (protobuf merges them).
    merged: bool,
}

impl<'a, const N: usize> Message<'a, N> {
    fn read(bytes: &'a [u8], schema: &Schema<N>, limit: u32) -> Result<Message<'a, N>, CodecError> {
        Message::read_all(&[bytes], schema, limit)
    }

    /// The occurrences of one message merged as protobuf merges them: each is
    /// checked, and a field's last value wins (none of the messages read so
    /// has a message field, whose occurrences would merge in turn: `merged`).
    fn read_all(occurrences: &[&'a [u8]], schema: &Schema<N>, limit: u32) -> Result<Message<'a, N>, CodecError> {
        let mut m = Message { values: [None; N], merged: false };
        for bytes in occurrences {
            m.read_more(bytes, schema, limit)?;
        }
        Ok(m)
    }

    fn read_more(&mut self, bytes: &'a [u8], schema: &Schema<N>, limit: u32) -> Result<(), CodecError> {
        let m = self;
        let mut fields = Fields::new(bytes, limit);
        while let Some((number, value)) = fields.next_field()? {
            let Some(&field) = schema.get(number as usize) else { continue };
            let slot = &mut m.values[number as usize];
            *slot = Some(match (field, value) {
                (Field::Undeclared, _) => continue,
                (Field::Varint, Value::Varint(_)) | (Field::Bytes, Value::Bytes(_)) => value,
                (Field::Text, Value::Bytes(b)) => Value::Text(utf8(b)?),
                (Field::Message, Value::Bytes(_)) => {
                    m.merged |= slot.is_some();
                    value
                }
                _ => return Err(wire_type(number)),
            });
        }
        Ok(())
    }

    /// A varint field's value, 0 when absent.
    fn varint(&self, field: Varint) -> u64 {
        self.optional_varint(OptionalVarint(field.0)).unwrap_or(0)
    }

    fn optional_varint(&self, field: OptionalVarint) -> Option<u64> {
        match self.values[field.0 as usize] {
            Some(Value::Varint(v)) => Some(v),
            _ => None,
        }
    }

    fn uint64(&self, field: Varint) -> u64 {
        self.varint(field)
    }

    fn uint32(&self, field: Varint) -> u32 {
        self.varint(field) as u32
    }

    fn optional_uint32(&self, field: OptionalVarint) -> Option<u32> {
        self.optional_varint(field).map(|v| v as u32)
    }

    fn int32(&self, field: Varint) -> i32 {
        self.varint(field) as i32
    }

    fn int64(&self, field: Varint) -> i64 {
        self.varint(field) as i64
    }

    /// A length-delimited field's bytes, if present.
    fn present(&self, number: u32) -> Option<&'a [u8]> {
        match self.values[number as usize] {
            Some(Value::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    fn bytes(&self, field: Bytes) -> &'a [u8] {
        self.present(field.0).unwrap_or_default()
    }

    /// An embedded message's bytes, if it is present (even empty).
    fn optional_message(&self, field: Msg) -> Option<&'a [u8]> {
        self.present(field.0)
    }

    fn message(&self, field: Msg) -> &'a [u8] {
        self.present(field.0).unwrap_or_default()
    }

    fn text(&self, field: TextField) -> &'a str {
        self.optional_text(OptionalText(field.0)).unwrap_or_default()
    }

    fn optional_text(&self, field: OptionalText) -> Option<&'a str> {
        match self.values[field.0 as usize] {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        }
    }
}

fn end_group() -> CodecError {
    CodecError("unexpected end group tag".into())
}

fn wire_type(number: u32) -> CodecError {
    CodecError(format!("field {number} has the wrong wire type"))
}

fn utf8(bytes: &[u8]) -> Result<&str, CodecError> {
    std::str::from_utf8(bytes).map_err(|_| CodecError("invalid string value: data is not UTF-8 encoded".into()))
}

fn optional(text: &str) -> Option<Text> {
    (!text.is_empty()).then(|| text.into())
}

pub(super) fn booking_kind(value: i32) -> Result<BookingKind, CodecError> {
    match pb::BookingKind::try_from(value) {
        Ok(pb::BookingKind::Advance) => Ok(BookingKind::Advance),
        Ok(pb::BookingKind::WalkIn) => Ok(BookingKind::WalkIn),
        Ok(pb::BookingKind::Unspecified) | Err(_) => Err(CodecError(format!("unknown booking kind {value}"))),
    }
}

/// An IANA zone name this build's tzdata knows.
pub(super) fn time_zone(name: &str) -> Result<crate::core::Tz, CodecError> {
    name.parse().map_err(|_| CodecError(format!("unknown time zone {name:?} (tzdata {})", crate::core::zones::TZDATA)))
}

pub(super) fn attendance(value: i32) -> Result<Attendance, CodecError> {
    match pb::Attendance::try_from(value) {
        Ok(pb::Attendance::Arrived) => Ok(Attendance::Arrived),
        Ok(pb::Attendance::NoShow) => Ok(Attendance::NoShow),
        Ok(pb::Attendance::Unspecified) | Err(_) => Err(CodecError(format!("unknown attendance {value}"))),
    }
}

/// A UUID's 16 bytes, or none when empty.
fn optional_uuid(bytes: &[u8]) -> Result<Option<Uuid>, CodecError> {
    if bytes.is_empty() { Ok(None) } else { uuid(bytes).map(Some) }
}

fn uuid(bytes: &[u8]) -> Result<Uuid, CodecError> {
    Uuid::from_slice(bytes).map_err(|_| CodecError("an id is not 16 bytes".into()))
}

fn from_micros(micros: i64, field: &str) -> Result<DateTime<Utc>, CodecError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| CodecError(format!("{field} out of range")))
}

/// `YYYY-MM-DD` read digit by digit (the form the encoder writes); anything
/// else goes through chrono's parser, as before.
fn parse_date(text: &str) -> Result<NaiveDate, CodecError> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    if b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10))
    {
        return NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(|| CodecError(format!("bad date {text:?}")));
    }
    text.parse().map_err(|_| CodecError(format!("bad date {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::codec;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Found by the `event` fuzz target: field 7 is not in the schema, so prost
    /// skips it whatever its wire type; this decoder refused it.
    #[test]
    fn an_unknown_field_between_known_ones_is_skipped_as_prost_skips_it() {
        let bytes = include_bytes!("../../fuzz/seeds/event/regression-unknown-field-7");
        assert_eq!(Decoder::default().decode_event(bytes).unwrap(), codec::decode_event_with_prost(bytes).unwrap());
    }

    /// Found by the `event` fuzz target: a record with two event members, the
    /// first (replaced by the second) with a field longer than itself. prost
    /// refuses it; this decoder used to decode the second and accept it.
    #[test]
    fn a_replaced_member_that_does_not_decode_is_refused_as_prost_refuses_it() {
        let bytes = include_bytes!("../../fuzz/seeds/event/regression-replaced-member-undecodable");
        assert!(codec::decode_event_with_prost(bytes).is_err());
        assert!(Decoder::default().decode_event(bytes).is_err());
        assert!(Decoder::for_recovery().decode_event(bytes).is_err());
    }

    /// Two records written one after the other are one record to protobuf,
    /// each field twice: the same event members merge, a different one
    /// replaces the first, the responses merge. Read in place as prost reads
    /// them, for every pair and triple of the example events.
    #[test]
    fn records_with_members_twice_merge_as_prost_merges_them() {
        let records: Vec<Vec<u8>> = events().iter().map(codec::encode_event).collect();
        for (i, first) in records.iter().enumerate() {
            for (j, second) in records.iter().enumerate() {
                let twice = [first.as_slice(), second].concat();
                assert_decoded_as_prost_decodes(&twice, &format!("records {i} and {j}"));
                let thrice = [first.as_slice(), second, first].concat();
                assert_decoded_as_prost_decodes(&thrice, &format!("records {i}, {j} and {i}"));
            }
        }
    }

    /// A field's key and a value of its wire type, as written on the wire.
    fn field(number: u32, wire_type: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(u64::from(number << 3 | wire_type), &mut out);
        if wire_type == 2 {
            prost::encoding::encode_varint(value.len() as u64, &mut out);
        }
        out.extend_from_slice(value);
        out
    }

    /// Field `number` in every wire type: strings of valid and invalid UTF-8,
    /// groups closed and not.
    fn extras(number: u32) -> Vec<Vec<u8>> {
        vec![
            field(number, 0, &[0x05]),
            field(number, 0, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            field(number, 1, &[1; 8]),
            field(number, 2, b""),
            field(number, 2, b"kochi"),
            field(number, 2, &[0xff]),
            field(number, 2, &[0xc3, 0x28]),
            field(number, 2, &[7; 16]),
            field(number, 2, &[7; 32]),
            [field(number, 3, b""), field(number, 4, b"")].concat(),
            [field(number, 3, b""), field(number + 1, 4, b"")].concat(),
            field(number, 3, b""),
            field(number, 4, b""),
            field(number, 5, &[1; 4]),
        ]
    }

    /// `record` with `extra` written into its member `member` (the event, or
    /// the stored response, 20): before the member's own fields, or after.
    fn with_member_field(record: &[u8], member: u32, extra: &[u8], before: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut fields = Fields::new(record, RECURSION_LIMIT);
        loop {
            let rest = fields.bytes;
            match fields.next_field().unwrap() {
                None => return out,
                Some((number, Value::Bytes(body))) if number == member => {
                    let body = if before { [extra, body].concat() } else { [body, extra].concat() };
                    out.extend(field(member, 2, &body));
                }
                Some(_) => out.extend_from_slice(&rest[..rest.len() - fields.bytes.len()]),
            }
        }
    }

    /// Both decoders (and the one for recovery) decode `bytes` to the same
    /// event, or all refuse it, as the `event` fuzz target checks.
    fn assert_decoded_as_prost_decodes(bytes: &[u8], what: &str) {
        let prost = codec::decode_event_with_prost(bytes);
        let ours = Decoder::default().decode_event(bytes);
        match (&ours, &prost) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}: {bytes:02x?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{what}: ours {ours:?}, prost {prost:?}: {bytes:02x?}"),
        }
        assert_eq!(Decoder::for_recovery().decode_event(bytes).is_ok(), prost.is_ok(), "{what}: {bytes:02x?}");
    }

    fn assert_refused_as_prost_refuses_it(bytes: &[u8]) {
        assert!(codec::decode_event_with_prost(bytes).is_err());
        assert!(Decoder::default().decode_event(bytes).is_err());
        assert!(Decoder::interning().decode_event(bytes).is_err());
        assert!(Decoder::for_recovery().decode_event(bytes).is_err());
    }

    /// Found by the `event` fuzz target: a field a member's message declares,
    /// written with another wire type (a schedule's `doctor`, a string, as a
    /// varint). prost refuses the record; this decoder took the field as
    /// absent and accepted it.
    #[test]
    fn a_member_field_of_the_wrong_wire_type_is_refused_as_prost_refuses_it() {
        assert_refused_as_prost_refuses_it(include_bytes!("../../fuzz/seeds/event/regression-member-field-wire-type"));
    }

    /// A string field of a member that is not UTF-8, replaced by a later
    /// occurrence of the same field: prost checks every occurrence, this
    /// decoder checked only the one it kept. (Written by hand: the fuzz runs
    /// found the wrong wire types first.)
    #[test]
    fn a_member_string_that_is_not_utf8_is_refused_as_prost_refuses_it() {
        assert_refused_as_prost_refuses_it(include_bytes!("../../fuzz/seeds/event/regression-member-string-not-utf8"));
    }

    /// Found by the `event` fuzz target: a field key beyond 32 bits (`ea 89 89
    /// 89 52`), whose field number still fitted a u32 here. prost refuses it.
    #[test]
    fn a_key_beyond_32_bits_is_refused_as_prost_refuses_it() {
        assert_refused_as_prost_refuses_it(include_bytes!("../../fuzz/seeds/event/regression-key-beyond-32-bits"));
    }

    /// An undeclared field written as a group (wire types 3 and 4), in the
    /// record and in its event: prost skips it, this decoder refused the
    /// record. (Written by hand, from reading prost's `skip_field`.)
    #[test]
    fn an_undeclared_group_is_skipped_as_prost_skips_it() {
        for bytes in [
            &include_bytes!("../../fuzz/seeds/event/regression-undeclared-group")[..],
            &include_bytes!("../../fuzz/seeds/event/regression-undeclared-group-in-record")[..],
        ] {
            let event = codec::decode_event_with_prost(bytes).unwrap();
            assert_eq!(Decoder::default().decode_event(bytes).unwrap(), event);
            assert_eq!(Decoder::interning().decode_event(bytes).unwrap(), event);
        }
    }

    /// Every field number from 1 to 16 in each member of every kind of event
    /// and in the stored response, in every wire type (with strings of valid
    /// and invalid UTF-8, groups closed and not), before or after the member's
    /// own fields: decoded as prost decodes it, or refused as prost refuses it.
    #[test]
    fn any_field_in_any_member_is_decoded_or_refused_as_prost_does() {
        let mut cases = 0;
        for event in events() {
            let record = codec::encode_event(&event);
            let (mut fields, mut member) = (Fields::new(&record, RECURSION_LIMIT), 0);
            while let Some((number, _)) = fields.next_field().unwrap() {
                if matches!(number, 10..=19 | 21..=24) {
                    member = number;
                }
            }
            let members = if event.response.is_some() { vec![member, 20] } else { vec![member] };
            for member in members {
                for number in 1..=16 {
                    let extras = extras(number);
                    for extra in &extras {
                        for before in [true, false] {
                            let bytes = with_member_field(&record, member, extra, before);
                            assert_decoded_as_prost_decodes(&bytes, &format!("field {number} in member {member}"));
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 10_000, "{cases} cases");
    }

    /// The record's own framing, as prost reads it: a key beyond 32 bits, wire
    /// types 6 and 7, field number 0, undeclared groups (skipped when closed
    /// by their own number, within prost's recursion limit of 100).
    #[test]
    fn keys_wire_types_and_groups_are_read_as_prost_reads_them() {
        let record = codec::encode_event(&events()[2]);
        let group = |depth: usize, number: u32| {
            let mut out = Vec::new();
            for _ in 0..depth {
                out.extend(field(number, 3, b""));
            }
            out.extend(field(number, 0, &[1]));
            for _ in 0..depth {
                out.extend(field(number, 4, b""));
            }
            out
        };
        let mut extras = vec![
            vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00],
            vec![0xfa, 0xff, 0xff, 0xff, 0x0f, 0x00],
            field(7, 6, b""),
            field(7, 7, b""),
            vec![0x00, 0x01],
            field(7, 4, b""),
        ];
        for depth in [1, 2, 97, 98, 99, 100, 101] {
            extras.push(group(depth, 7));
            extras.push(group(depth, 30));
        }
        for extra in extras {
            for bytes in [[&record[..], &extra].concat(), [&extra[..], &record].concat()] {
                assert_decoded_as_prost_decodes(&bytes, &format!("{extra:02x?} in the record"));
            }
            assert_decoded_as_prost_decodes(&with_member_field(&record, 11, &extra, false), &format!("{extra:02x?} in the event"));
        }
    }

    /// Snapshot booking entries with any field added to the booking or to its
    /// details, or in a second booking member: read in place as prost reads them, refused where prost refuses
    /// them, or left to prost.
    #[test]
    fn snapshot_bookings_with_any_field_are_read_as_prost_reads_them() {
        use crate::log::codec::pb;
        use prost::Message as _;
        let record = pb::EventRecord::decode(&*codec::encode_event(&events()[3])).unwrap();
        let Some(pb::event_record::Event::BookingCreated(booking)) = record.event else { unreachable!() };
        let entry = pb::SnapshotEntry {
            entry: Some(pb::snapshot_entry::Entry::Booking(pb::SnapshotBooking {
                booking: Some(booking),
                cancelled: true,
                created_at_micros: 1_700_000_000_000_001,
                position: 42,
                cancel_reason: Some("feeling better".into()),
                version: 3,
                attendance: pb::Attendance::NoShow.into(),
                rescheduled_from: Some(pb::SnapshotPlace {
                    doctor: "rao".into(),
                    date: "2026-03-01".into(),
                    slot: 2,
                    kind: pb::BookingKind::Advance.into(),
                    token_number: 7,
                }),
            })),
        }
        .encode_to_vec();
        let Some((3, Value::Bytes(snapshot_booking))) = Fields::new(&entry, RECURSION_LIMIT).next_field().unwrap() else { unreachable!() };
        let (mut read_in_place, mut cases) = (0, 0);
        for number in 1..=16 {
            for extra in extras(number) {
                for before in [true, false] {
                    let in_details = field(3, 2, &with_member_field(snapshot_booking, 1, &extra, before));
                    // The booking twice, the second holding only the field: protobuf merges them.
                    let twice =
                        if before { [field(3, 2, &extra), entry.clone()].concat() } else { [entry.clone(), field(3, 2, &extra)].concat() };
                    for bytes in [with_member_field(&entry, 3, &extra, before), in_details, twice] {
                        cases += 1;
                        let ours = Decoder::interning().snapshot_booking(&bytes);
                        let prost = pb::SnapshotEntry::decode(&*bytes).map_err(CodecError::from).and_then(|entry| match entry.entry {
                            Some(pb::snapshot_entry::Entry::Booking(b)) => {
                                let b = pb::SnapshotBooking { booking: Some(b.booking.unwrap_or_default()), ..b };
                                codec::snapshot_booking_from_pb(b).map(Some)
                            }
                            _ => Ok(None),
                        });
                        match (ours, prost) {
                            (Ok(None), _) => {}
                            (Ok(Some(a)), Ok(Some(b))) => {
                                assert_eq!(a, b, "{bytes:02x?}");
                                read_in_place += 1;
                            }
                            (Err(_), Err(_)) => {}
                            (ours, prost) => panic!("ours {ours:?}, prost {prost:?}: {bytes:02x?}"),
                        }
                    }
                }
            }
        }
        assert!(read_in_place > cases / 4, "{read_in_place} of {cases} read in place");
    }

    /// One event of every kind, with optional fields both set and unset.
    fn every_kind() -> Vec<EventKind> {
        let at = DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        let details = |external: bool, kind| BookingDetails {
            booking_id: id(7),
            clinic: "kochi".into(),
            doctor: "rao".into(),
            date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            slot: 999,
            patient: "Ásha ✓".into(),
            kind,
            external: crate::core::External {
                external_ref: external.then(|| "cal-8Fxv".into()),
                correlation_id: external.then(|| "call-687".into()),
                external_created_at: external.then_some(at),
                hold_id: external.then(|| id(13)),
                patient_id: external.then(|| "p-77".into()),
            }
            .boxed_if_any(),
        };
        let hold = |patient: bool| crate::core::HoldDetails {
            hold_id: id(13),
            clinic: "kochi".into(),
            doctor: "rao".into(),
            date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            slot: 0,
            // An empty name is still a name given: `optional` keeps it.
            patient: patient.then(|| "".into()),
            patient_id: patient.then(|| "p.1-A_z".into()),
            entry_id: patient.then(|| id(14)),
        };
        vec![
            EventKind::ScheduleSet {
                clinic: "kochi".into(),
                doctor: "rao".into(),
                schedule: Schedule { slots_per_day: 20, first_slot_minute: Some(0), slot_minutes: Some(15) },
            },
            EventKind::ScheduleSet {
                clinic: "kochi".into(),
                doctor: "rao".into(),
                schedule: Schedule { slots_per_day: 1000, first_slot_minute: None, slot_minutes: None },
            },
            EventKind::BookingCreated(BookingCreated { details: details(false, BookingKind::Advance), token_number: 1 }),
            EventKind::BookingCreated(BookingCreated { details: details(true, BookingKind::WalkIn), token_number: 4_000_000_000 }),
            EventKind::BookingCancelled { booking_id: id(7), reason: None },
            EventKind::BookingCancelled { booking_id: id(7), reason: Some("feeling better".into()) },
            EventKind::PhoneClaimed { business: "toms-garage".into(), claim_id: id(8), lease_expires_at: at },
            EventKind::PhoneCompleted {
                business: "toms-garage".into(),
                claim_id: id(8),
                phone_number: "+18285768205".into(),
                provider_sid: "PN8ebb".into(),
            },
            EventKind::PhoneClaimFailed { business: "b".into(), claim_id: id(9), reason: "carrier down".into() },
            EventKind::PhoneReleased { business: "b".into(), phone_number: "+18285768205".into(), reason: None },
            EventKind::PhoneReleased { business: "b".into(), phone_number: "+18285768205".into(), reason: Some("closed".into()) },
            EventKind::CallStarted { call_id: id(10), campaign: "outreach".into(), to: "+14243242113".into() },
            EventKind::CallOutcomeRecorded { call_id: id(10), outcome: CallState::Completed },
            EventKind::CallOutcomeRecorded { call_id: id(10), outcome: CallState::NoAnswer },
            EventKind::CallOutcomeRecorded { call_id: id(10), outcome: CallState::Failed },
            EventKind::CallOutcomeRecorded { call_id: id(10), outcome: CallState::BadNumber },
            EventKind::CallRefused { campaign: "outreach".into(), to: "+1".into(), duplicate: Duplicate::InProgress, call_id: id(10) },
            EventKind::CallRefused { campaign: "o".into(), to: "+1".into(), duplicate: Duplicate::RecentlyCalled, call_id: id(11) },
            EventKind::CampaignHalted { campaign: "outreach".into(), reason: "2 refused duplicate calls".into() },
            EventKind::CampaignResumed { campaign: "outreach".into(), reason: "webhook fixed".into() },
            EventKind::NumberBlocked { number: "+14243242113".into(), reason: "bad number".into() },
            EventKind::CommunityCreated {
                community_id: id(12),
                slug: "my-community-2".into(),
                name: "My Community".into(),
                owner: "asha".into(),
                plan: "pro".into(),
            },
            EventKind::HoldPlaced { details: hold(true), expires_at: at },
            EventKind::HoldPlaced { details: hold(false), expires_at: at },
            EventKind::HoldReleased { hold_id: id(13) },
            EventKind::HoldExpired { hold_id: id(13) },
            EventKind::BookingRescheduled {
                booking_id: id(7),
                clinic: "kochi".into(),
                doctor: "rao".into(),
                date: NaiveDate::from_ymd_opt(2026, 3, 3).unwrap(),
                slot: 0,
                kind: BookingKind::WalkIn,
                token_number: 1,
                patient: "".into(),
            },
            EventKind::AttendanceRecorded { booking_id: id(7), attendance: crate::core::Attendance::NoShow, corrected: false },
            EventKind::AttendanceRecorded { booking_id: id(7), attendance: crate::core::Attendance::Arrived, corrected: true },
            EventKind::ClinicZoneSet { clinic: "kochi".into(), zone: "Asia/Kolkata".parse().unwrap(), tzdata: "2025b".into() },
            EventKind::WaitlistJoined {
                details: EntryDetails {
                    entry_id: id(14),
                    clinic: "kochi".into(),
                    date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                    doctor: Some("".into()),
                    patient: "Ásha".into(),
                    patient_id: Some("p-1".into()),
                },
            },
            EventKind::WaitlistJoined {
                details: EntryDetails {
                    entry_id: id(15),
                    clinic: "kochi".into(),
                    date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                    doctor: None,
                    patient: "Ravi".into(),
                    patient_id: None,
                },
            },
            EventKind::WaitlistWithdrawn { entry_id: id(15) },
            EventKind::DaysClosed { clinic: "kochi".into(), through: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap() },
        ]
    }

    fn events() -> Vec<Event> {
        let response = StoredResponse {
            actor: "kloqo-web".into(),
            key: "asha-2026-03-02".into(),
            fingerprint: [3; 32],
            status: 201,
            body: Arc::from(&b"{\"booking_id\":\"...\"}"[..]),
        };
        every_kind()
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                position: 1 + i as u64 * 1_000_003,
                recorded_at: DateTime::from_timestamp_micros(1_700_000_000_000_000 + i as i64).unwrap(),
                tenant: "kloqo".into(),
                actor: if i % 2 == 0 { "kloqo-web".into() } else { "admin".into() },
                request_id: if i % 3 == 0 { "".into() } else { format!("req-{i}").into() },
                idempotency_key: (i % 2 == 1).then(|| format!("key-{i}").into()),
                kind,
                response: (i % 2 == 1).then(|| response.clone()),
            })
            .collect()
    }

    #[test]
    fn decodes_every_event_kind_as_prost_does() {
        let mut interning = Decoder::interning();
        for event in events() {
            let bytes = codec::encode_event(&event);
            let oracle = codec::decode_event_with_prost(&bytes).unwrap();
            assert_eq!(oracle, event, "the oracle round-trips");
            assert_eq!(Decoder::default().decode_event(&bytes).unwrap(), event);
            assert_eq!(interning.decode_event(&bytes).unwrap(), event, "interned names are the same names");
            let recovered = Decoder::for_recovery().decode_event(&bytes).unwrap();
            let without_provenance = Event { request_id: "".into(), idempotency_key: None, ..event.clone() };
            assert_eq!(recovered, without_provenance, "recovery leaves out only what apply never reads");
        }
    }

    /// The tests here go through every event the `.proto` declares: a member
    /// added to `EventRecord.event` without an example in `every_kind` fails.
    #[test]
    fn every_member_of_the_event_oneof_has_an_example() {
        let written: std::collections::BTreeSet<u32> = events().iter().map(|event| member_of(&codec::encode_event(event))).collect();
        let declared: std::collections::BTreeSet<u32> = wire::event_record::Event::ALL.iter().map(|m| m.number()).collect();
        assert_eq!(written, declared);
    }

    /// The field number of the event member in a record.
    fn member_of(bytes: &[u8]) -> u32 {
        let mut fields = Fields::new(bytes, RECURSION_LIMIT);
        std::iter::from_fn(|| fields.next_field().unwrap())
            .find_map(|(number, _)| wire::event_record::Event::from_number(number))
            .expect("a record has an event")
            .number()
    }

    /// Damaged records (a CRC would have caught them first) never panic the
    /// decoder, and whatever it accepts prost accepts too.
    #[test]
    fn damaged_records_never_panic_and_are_refused_where_prost_refuses_them() {
        for event in events() {
            let bytes = codec::encode_event(&event);
            for cut in 0..bytes.len() {
                let ours = Decoder::default().decode_event(&bytes[..cut]);
                if ours.is_ok() {
                    assert!(codec::decode_event_with_prost(&bytes[..cut]).is_ok(), "cut at {cut} of {event:?}");
                }
            }
            for byte in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = bytes.clone();
                    bad[byte] ^= flip;
                    let _ = Decoder::default().decode_event(&bad);
                }
            }
        }
    }

    #[test]
    fn the_hand_written_encoder_writes_prosts_bytes() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        for event in events() {
            out.clear();
            crate::log::encode::encode_event(&event, &mut out, &mut scratch);
            assert_eq!(out, codec::encode_event_with_prost(&event), "{event:?}");
        }
        let mut event = events().remove(2);
        for date in ["0001-01-01", "0999-12-31", "9999-12-31", "+10000-01-01", "-0001-01-01"] {
            let EventKind::BookingCreated(created) = &mut event.kind else { unreachable!() };
            created.details.date = date.parse().unwrap();
            out.clear();
            crate::log::encode::encode_event(&event, &mut out, &mut scratch);
            assert_eq!(out, codec::encode_event_with_prost(&event), "{date}");
        }
    }

    /// Booking entries of a snapshot, written by prost, read in place.
    #[test]
    fn snapshot_bookings_decode_in_place_as_prost_wrote_them() {
        use crate::log::codec::pb;
        use prost::Message as _;
        for event in events() {
            let EventKind::BookingCreated(created) = &event.kind else { continue };
            let booking = pb::EventRecord::decode(&*codec::encode_event(&event)).unwrap().event.unwrap();
            let pb::event_record::Event::BookingCreated(booking) = booking else { unreachable!() };
            for (cancelled, reason) in [(false, None), (true, None), (true, Some("")), (true, Some("feeling better"))] {
                let entry = pb::SnapshotEntry {
                    entry: Some(pb::snapshot_entry::Entry::Booking(pb::SnapshotBooking {
                        booking: Some(booking.clone()),
                        cancelled,
                        created_at_micros: 1_700_000_000_000_001,
                        position: 42,
                        cancel_reason: reason.map(str::to_owned),
                        version: 2,
                        attendance: if cancelled { 0 } else { pb::Attendance::Arrived.into() },
                        rescheduled_from: reason.map(|_| pb::SnapshotPlace {
                            doctor: "rao".into(),
                            date: "2026-03-01".into(),
                            slot: 0,
                            kind: pb::BookingKind::WalkIn.into(),
                            token_number: 1,
                        }),
                    })),
                };
                let decoded = Decoder::interning().snapshot_booking(&entry.encode_to_vec()).unwrap().unwrap();
                let expected = SnapshotBooking {
                    created: created.clone(),
                    cancelled,
                    created_at_micros: 1_700_000_000_000_001,
                    position: 42,
                    cancel_reason: reason.map(Text::from),
                    version: 2,
                    attendance: (!cancelled).then_some(crate::core::Attendance::Arrived),
                    rescheduled_from: reason.map(|_| Place {
                        doctor: "rao".into(),
                        date: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                        slot: 0,
                        kind: BookingKind::WalkIn,
                        token_number: 1,
                    }),
                };
                assert_eq!(decoded, expected);
            }
        }
        let tenant = pb::SnapshotEntry { entry: Some(pb::snapshot_entry::Entry::Tenant("kloqo".into())) };
        assert_eq!(Decoder::interning().snapshot_booking(&tenant.encode_to_vec()).unwrap(), None, "other entries are prost's");
    }

    #[test]
    fn dates_outside_the_encoders_form_still_parse_as_before() {
        for text in ["2026-03-02", "0001-01-01", "9999-12-31", "+10000-01-01", "2026-02-30", "2026-3-2", "", "abcd-ef-gh"] {
            let before: Result<NaiveDate, _> = text.parse();
            assert_eq!(parse_date(text).ok(), before.ok(), "{text:?}");
        }
    }

    #[test]
    fn the_interner_is_bounded() {
        let mut decoder = Decoder::interning();
        for i in 0..NAME_SLOTS * 3 {
            let name = format!("tenant-{i}");
            assert_eq!(*decoder.name(&name), *name);
        }
        assert_eq!(decoder.names.len(), NAME_SLOTS);
        let again = decoder.name("kloqo");
        assert!(Arc::ptr_eq(&again, &decoder.name("kloqo")), "a name seen last is shared");
    }
}
