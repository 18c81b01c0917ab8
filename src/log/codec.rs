//! The encoding of ledger events, stored responses, journaled rejections and
//! snapshots of the whole state as the protobuf messages of
//! `proto/ledger.proto`: the only place that knows both the core's types and
//! the wire schema. Every decode validates what the schema cannot express.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use uuid::Uuid;

use crate::core::{
    Attendance, Booking, BookingCreated, BookingDetails, BookingKind, BookingStatus, Business, Call, CallState, Campaign, Community, Day,
    Doctor, Duplicate, EntryDetails, EntryStatus, Event, EventKind, External, Hold, HoldDetails, HoldStatus, IdempotencyTable, NumberCalls,
    PhoneState, Place, RejectionRecord, Rules, Schedule, SlotMap, State, StoredResponse, TenantState, Text, format_date,
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

/// A booking's details and token number: what `BookingCreated` records, and
/// what a snapshot keeps of each booking.
fn to_pb_booking(details: &BookingDetails, token_number: u32) -> pb::BookingCreated {
    pb::BookingCreated {
        booking_id: details.booking_id.as_bytes().to_vec(),
        clinic: details.clinic.to_string(),
        doctor: details.doctor.to_string(),
        date: format_date(details.date),
        slot: details.slot,
        patient: details.patient.to_string(),
        kind: pb_kind(details.kind).into(),
        token_number,
        external_ref: details.external_ref().map(|r| r.to_string()).unwrap_or_default(),
        correlation_id: details.correlation_id().map(|c| c.to_string()).unwrap_or_default(),
        external_created_at_micros: details.external_created_at().map_or(0, micros),
        hold_id: details.hold_id().map(|id| id.as_bytes().to_vec()).unwrap_or_default(),
        patient_id: details.patient_id().map(|p| p.to_string()).unwrap_or_default(),
    }
}

pub(super) fn from_pb_booking(b: pb::BookingCreated) -> Result<BookingCreated, CodecError> {
    Ok(BookingCreated {
        details: BookingDetails {
            booking_id: uuid(&b.booking_id)?,
            kind: super::decode::booking_kind(b.kind)?,
            date: parse_date(&b.date)?,
            clinic: b.clinic.into(),
            doctor: b.doctor.into(),
            slot: b.slot,
            patient: b.patient.into(),
            external: External {
                external_ref: optional(&b.external_ref),
                correlation_id: optional(&b.correlation_id),
                external_created_at: match b.external_created_at_micros {
                    0 => None,
                    m => Some(from_micros(m, "external_created_at")?),
                },
                hold_id: if b.hold_id.is_empty() { None } else { Some(uuid(&b.hold_id)?) },
                patient_id: optional(&b.patient_id),
            }
            .boxed_if_any(),
        },
        token_number: b.token_number,
    })
}

/// What `WaitlistJoined` records, and what a snapshot keeps of each entry.
fn to_pb_entry(e: &EntryDetails) -> pb::WaitlistJoined {
    pb::WaitlistJoined {
        entry_id: e.entry_id.as_bytes().to_vec(),
        clinic: e.clinic.to_string(),
        date: format_date(e.date),
        doctor: e.doctor.as_ref().map(|d| d.to_string()),
        patient: e.patient.to_string(),
        patient_id: e.patient_id.as_ref().map(|p| p.to_string()),
    }
}

fn from_pb_entry(j: pb::WaitlistJoined) -> Result<EntryDetails, CodecError> {
    Ok(EntryDetails {
        entry_id: uuid(&j.entry_id)?,
        clinic: j.clinic.into(),
        date: parse_date(&j.date)?,
        doctor: j.doctor.map(Into::into),
        patient: j.patient.into(),
        patient_id: j.patient_id.map(Into::into),
    })
}

/// What `HoldPlaced` records, and what a snapshot keeps of each hold.
fn to_pb_hold(details: &HoldDetails, expires_at: DateTime<Utc>) -> pb::HoldPlaced {
    pb::HoldPlaced {
        hold_id: details.hold_id.as_bytes().to_vec(),
        clinic: details.clinic.to_string(),
        doctor: details.doctor.to_string(),
        date: format_date(details.date),
        slot: details.slot,
        patient: details.patient.as_ref().map(|p| p.to_string()),
        patient_id: details.patient_id.as_ref().map(|p| p.to_string()),
        expires_at_micros: micros(expires_at),
        entry_id: details.entry_id.map(|id| id.as_bytes().to_vec()).unwrap_or_default(),
    }
}

fn from_pb_hold(h: pb::HoldPlaced) -> Result<(HoldDetails, DateTime<Utc>), CodecError> {
    let details = HoldDetails {
        hold_id: uuid(&h.hold_id)?,
        clinic: h.clinic.into(),
        doctor: h.doctor.into(),
        date: parse_date(&h.date)?,
        slot: h.slot,
        patient: h.patient.map(Into::into),
        patient_id: h.patient_id.map(Into::into),
        entry_id: if h.entry_id.is_empty() { None } else { Some(uuid(&h.entry_id)?) },
    };
    Ok((details, from_micros(h.expires_at_micros, "expires_at")?))
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
        EventKind::BookingCreated(b) => E::BookingCreated(to_pb_booking(&b.details, b.token_number)),
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
        EventKind::HoldPlaced { details, expires_at } => E::HoldPlaced(to_pb_hold(details, *expires_at)),
        EventKind::HoldReleased { hold_id } => E::HoldReleased(pb::HoldReleased { hold_id: hold_id.as_bytes().to_vec() }),
        EventKind::HoldExpired { hold_id } => E::HoldExpired(pb::HoldExpired { hold_id: hold_id.as_bytes().to_vec() }),
        EventKind::BookingRescheduled { booking_id, clinic, doctor, date, slot, kind, token_number, patient } => {
            E::BookingRescheduled(pb::BookingRescheduled {
                booking_id: booking_id.as_bytes().to_vec(),
                clinic: clinic.to_string(),
                doctor: doctor.to_string(),
                date: format_date(*date),
                slot: *slot,
                kind: pb_kind(*kind).into(),
                token_number: *token_number,
                patient: patient.to_string(),
            })
        }
        EventKind::WaitlistJoined { details } => E::WaitlistJoined(to_pb_entry(details)),
        EventKind::WaitlistWithdrawn { entry_id } => E::WaitlistWithdrawn(pb::WaitlistWithdrawn { entry_id: entry_id.as_bytes().to_vec() }),
        EventKind::DaysClosed { clinic, through } => {
            E::DaysClosed(pb::DaysClosed { clinic: clinic.to_string(), through: format_date(*through) })
        }
        EventKind::ClinicZoneSet { clinic, zone, tzdata } => E::ClinicZoneSet(pb::ClinicZoneSet {
            clinic: clinic.to_string(),
            time_zone: zone.name().to_owned(),
            tzdata: tzdata.to_string(),
        }),
        EventKind::AttendanceRecorded { booking_id, attendance, corrected } => E::AttendanceRecorded(pb::AttendanceRecorded {
            booking_id: booking_id.as_bytes().to_vec(),
            attendance: pb_attendance(*attendance).into(),
            corrected: *corrected,
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
        E::BookingCreated(b) => EventKind::BookingCreated(from_pb_booking(b)?),
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
        E::HoldPlaced(h) => {
            let (details, expires_at) = from_pb_hold(h)?;
            EventKind::HoldPlaced { details, expires_at }
        }
        E::HoldReleased(h) => EventKind::HoldReleased { hold_id: uuid(&h.hold_id)? },
        E::HoldExpired(h) => EventKind::HoldExpired { hold_id: uuid(&h.hold_id)? },
        E::BookingRescheduled(r) => EventKind::BookingRescheduled {
            booking_id: uuid(&r.booking_id)?,
            clinic: r.clinic.into(),
            doctor: r.doctor.into(),
            date: parse_date(&r.date)?,
            slot: r.slot,
            kind: super::decode::booking_kind(r.kind)?,
            token_number: r.token_number,
            patient: r.patient.into(),
        },
        E::WaitlistJoined(j) => EventKind::WaitlistJoined { details: from_pb_entry(j)? },
        E::WaitlistWithdrawn(w) => EventKind::WaitlistWithdrawn { entry_id: uuid(&w.entry_id)? },
        E::DaysClosed(d) => EventKind::DaysClosed { clinic: d.clinic.into(), through: parse_date(&d.through)? },
        E::ClinicZoneSet(z) => {
            EventKind::ClinicZoneSet { clinic: z.clinic.into(), zone: super::decode::time_zone(&z.time_zone)?, tzdata: z.tzdata.into() }
        }
        E::AttendanceRecorded(a) => EventKind::AttendanceRecorded {
            booking_id: uuid(&a.booking_id)?,
            attendance: super::decode::attendance(a.attendance)?,
            corrected: a.corrected,
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
pub fn encode_rejection(rejected: &RejectionRecord) -> Vec<u8> {
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

pub fn decode_rejection(bytes: &[u8]) -> Result<RejectionRecord, CodecError> {
    let r = pb::RejectionRecord::decode(bytes)?;
    Ok(RejectionRecord {
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

/// The configured rules a snapshot's projection depends on: a snapshot taken
/// under other values is not the state the log gives under these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRules {
    pub idempotency_retention: chrono::Duration,
    pub duplicate_window: chrono::Duration,
}

impl SnapshotRules {
    pub fn of(rules: &Rules) -> SnapshotRules {
        SnapshotRules { idempotency_retention: rules.idempotency_retention, duplicate_window: rules.duplicate_window }
    }
}

impl std::fmt::Display for SnapshotRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "idempotency_retention_secs = {}, duplicate_window_secs = {}",
            self.idempotency_retention.num_seconds(),
            self.duplicate_window.num_seconds()
        )
    }
}

/// A snapshot's body, decoded.
#[derive(Debug)]
pub struct DecodedSnapshot {
    /// The state, with the rules it was decoded under.
    pub state: State,
    /// The responses journal position it includes.
    pub responses_position: u64,
    /// The rules it was taken under.
    pub rules: SnapshotRules,
}

fn duration_micros(duration: chrono::Duration) -> i64 {
    duration.num_microseconds().expect("configured durations are at most a year")
}

fn optional_text(text: &Option<Text>) -> Option<String> {
    text.as_deref().map(str::to_owned)
}

fn optional_uuid(id: &Option<Uuid>) -> Option<Vec<u8>> {
    id.map(|id| id.as_bytes().to_vec())
}

fn call_state(state: CallState) -> pb::CallState {
    match state {
        CallState::Calling => pb::CallState::Calling,
        CallState::Completed => pb::CallState::Completed,
        CallState::NoAnswer => pb::CallState::NoAnswer,
        CallState::Failed => pb::CallState::Failed,
        CallState::BadNumber => pb::CallState::BadNumber,
    }
}

/// The whole state as a snapshot's body, with the responses journal position
/// it includes: a `Snapshot`, then one `SnapshotEntry` per entry of each index,
/// each length-delimited. One state always gives the same bytes: entries come
/// in the order of the state's sorted indexes.
pub fn encode_snapshot(state: &State, responses_position: u64) -> Vec<u8> {
    use pb::snapshot_entry::Entry;
    let entries = state.tenants.values().map(|tenant| 1 + entry_count(tenant)).sum::<usize>() + state.idempotency.len();
    let mut out = Vec::new();
    pb::Snapshot {
        position: state.position,
        recorded_at_last_micros: micros(state.recorded_at_last),
        responses_position,
        idempotency_retention_micros: duration_micros(state.rules.idempotency_retention),
        duplicate_window_micros: duration_micros(state.rules.duplicate_window),
        entries: entries as u64,
        days_closed_last: state.days_closed_last,
    }
    .encode_length_delimited(&mut out)
    .expect("a Vec grows as needed");
    let mut written = 0;
    let mut put = |entry: Entry| {
        pb::SnapshotEntry { entry: Some(entry) }.encode_length_delimited(&mut out).expect("a Vec grows as needed");
        written += 1;
    };
    for (name, tenant) in &state.tenants {
        put(Entry::Tenant(name.to_string()));
        put_tenant(tenant, &mut put);
    }
    for (tenant, response, recorded_at) in state.idempotency.answers() {
        put(Entry::Answer(pb::SnapshotAnswer {
            tenant: tenant.to_string(),
            response: Some(to_pb_response(response)),
            recorded_at_micros: micros(recorded_at),
        }));
    }
    assert_eq!(written, entries, "the header counts the entries written");
    out
}

/// The entries of one tenant's indexes, doctors (with their days) first.
fn entry_count(tenant: &TenantState) -> usize {
    tenant.clinics.values().map(|clinic| clinic.doctors.len()).sum::<usize>()
        + tenant.bookings.len()
        + tenant.external_refs.len()
        + tenant.businesses.len()
        + tenant.phone_owners.len()
        + tenant.calls.len()
        + tenant.calling.len()
        + tenant.numbers.len()
        + tenant.campaigns.len()
        + tenant.communities.len()
        + tenant.slug_suffixes.len()
        + tenant.holds.len()
        + tenant.clinics.values().filter(|c| c.zone.is_some() || c.closed_through.is_some()).count()
        + tenant.waitlist.len()
}

fn put_tenant(tenant: &TenantState, put: &mut impl FnMut(pb::snapshot_entry::Entry)) {
    use pb::snapshot_entry::Entry;
    for (clinic, c) in &tenant.clinics {
        if c.zone.is_some() || c.closed_through.is_some() {
            put(Entry::Clinic(pb::SnapshotClinic {
                clinic: clinic.to_string(),
                time_zone: c.zone.as_ref().map(|z| z.zone.name().to_owned()).unwrap_or_default(),
                tzdata: c.zone.as_ref().map(|z| z.tzdata.to_string()).unwrap_or_default(),
                position: c.zone.as_ref().map_or(0, |z| z.position),
                closed_through: c.closed_through.map(format_date),
            }));
        }
    }
    for (clinic, c) in &tenant.clinics {
        for (doctor, d) in &c.doctors {
            put(Entry::Doctor(pb::SnapshotDoctor {
                clinic: clinic.to_string(),
                doctor: doctor.to_string(),
                slots_per_day: d.schedule.slots_per_day,
                first_slot_minute: d.schedule.first_slot_minute,
                slot_minutes: d.schedule.slot_minutes,
                schedule_position: d.schedule_position,
                days: d
                    .days
                    .iter()
                    .map(|(date, day)| pb::SnapshotDay {
                        date: format_date(*date),
                        slots: day
                            .slots
                            .iter()
                            .map(|(slot, id)| pb::SnapshotSlot { slot: *slot, booking_id: id.as_bytes().to_vec() })
                            .collect(),
                        tokens_issued_advance: day.tokens_issued_advance,
                        tokens_issued_walk_in: day.tokens_issued_walk_in,
                    })
                    .collect(),
            }));
        }
    }
    for (id, b) in &tenant.bookings {
        assert_eq!(*id, b.details.booking_id, "bookings are indexed by their id");
        put(Entry::Booking(pb::SnapshotBooking {
            booking: Some(to_pb_booking(&b.details, b.token_number)),
            cancelled: b.status == BookingStatus::Cancelled,
            created_at_micros: micros(b.created_at),
            position: b.position,
            cancel_reason: b.cancel_reason.as_deref().map(|r| r.to_string()),
            version: b.version,
            attendance: b.attendance.map_or(0, |a| pb_attendance(a).into()),
            rescheduled_from: b.rescheduled_from.as_deref().map(|p| pb::SnapshotPlace {
                doctor: p.doctor.to_string(),
                date: format_date(p.date),
                slot: p.slot,
                kind: pb_kind(p.kind).into(),
                token_number: p.token_number,
            }),
        }));
    }
    for (external_ref, id) in &tenant.external_refs {
        put(Entry::ExternalRef(pb::SnapshotExternalRef { external_ref: external_ref.to_string(), booking_id: id.as_bytes().to_vec() }));
    }
    for (business, b) in &tenant.businesses {
        let phone = b.phone.as_ref().map(|phone| match phone {
            PhoneState::Pending { claim_id, lease_expires_at } => pb::snapshot_business::Phone::Pending(pb::SnapshotPhonePending {
                claim_id: claim_id.as_bytes().to_vec(),
                lease_expires_at_micros: micros(*lease_expires_at),
            }),
            PhoneState::Active { claim_id, phone_number, provider_sid } => pb::snapshot_business::Phone::Active(pb::SnapshotPhoneActive {
                claim_id: claim_id.as_bytes().to_vec(),
                phone_number: phone_number.to_string(),
                provider_sid: provider_sid.to_string(),
            }),
        });
        put(Entry::Business(pb::SnapshotBusiness { business: business.to_string(), phone, failed_claim: optional_uuid(&b.failed_claim) }));
    }
    for (number, business) in &tenant.phone_owners {
        put(Entry::PhoneOwner(pb::SnapshotPhoneOwner { phone_number: number.to_string(), business: business.to_string() }));
    }
    for (id, call) in &tenant.calls {
        assert_eq!(*id, call.call_id, "calls are indexed by their id");
        put(Entry::Call(pb::SnapshotCall {
            call_id: id.as_bytes().to_vec(),
            campaign: call.campaign.to_string(),
            to: call.to.to_string(),
            state: call_state(call.state).into(),
            started_at_micros: micros(call.started_at),
            position: call.position,
        }));
    }
    for (at, id) in &tenant.calling {
        put(Entry::Calling(pb::SnapshotCalling { started_at_micros: micros(*at), call_id: id.as_bytes().to_vec() }));
    }
    for (number, n) in &tenant.numbers {
        put(Entry::Number(pb::SnapshotNumber {
            number: number.to_string(),
            last_call: n.last_call.map(|(id, at)| pb::SnapshotLastCall { call_id: id.as_bytes().to_vec(), started_at_micros: micros(at) }),
            in_progress: optional_uuid(&n.in_progress),
            blocked: optional_text(&n.blocked),
        }));
    }
    for (campaign, c) in &tenant.campaigns {
        put(Entry::Campaign(pb::SnapshotCampaign {
            campaign: campaign.to_string(),
            halt_reason: optional_text(&c.halt_reason),
            consecutive_failures: c.consecutive_failures,
            duplicates_micros: c.duplicates.iter().copied().map(micros).collect(),
        }));
    }
    for (slug, c) in &tenant.communities {
        assert_eq!(*slug, c.slug, "communities are indexed by their slug");
        put(Entry::Community(pb::SnapshotCommunity {
            community_id: c.community_id.as_bytes().to_vec(),
            slug: c.slug.to_string(),
            name: c.name.to_string(),
            owner: c.owner.to_string(),
            plan: c.plan.to_string(),
            created_at_micros: micros(c.created_at),
            position: c.position,
        }));
    }
    for (base, suffix) in &tenant.slug_suffixes {
        put(Entry::SlugSuffix(pb::SnapshotSlugSuffix { base: base.to_string(), suffix: *suffix }));
    }
    for (id, e) in &tenant.waitlist {
        assert_eq!(*id, e.details.entry_id, "entries are indexed by their id");
        let (status, hold_id, booking_id) = match e.status {
            EntryStatus::Waiting => (pb::EntryStatus::Waiting, None, None),
            EntryStatus::Offered(hold_id) => (pb::EntryStatus::Offered, Some(hold_id.as_bytes().to_vec()), None),
            EntryStatus::Booked(booking_id) => (pb::EntryStatus::Booked, None, Some(booking_id.as_bytes().to_vec())),
            EntryStatus::Expired => (pb::EntryStatus::Expired, None, None),
            EntryStatus::Withdrawn => (pb::EntryStatus::Withdrawn, None, None),
        };
        put(Entry::WaitlistEntry(pb::SnapshotWaitlistEntry {
            joined: Some(to_pb_entry(&e.details)),
            joined_position: e.joined,
            joined_at_micros: micros(e.joined_at),
            position: e.position,
            status: status.into(),
            hold_id,
            booking_id,
        }));
    }
    for (id, h) in &tenant.holds {
        assert_eq!(*id, h.details.hold_id, "holds are indexed by their id");
        let (status, booking_id) = match h.status {
            HoldStatus::Held => (pb::HoldStatus::Held, None),
            HoldStatus::Confirmed(booking_id) => (pb::HoldStatus::Confirmed, Some(booking_id.as_bytes().to_vec())),
            HoldStatus::Released => (pb::HoldStatus::Released, None),
            HoldStatus::Expired => (pb::HoldStatus::Expired, None),
        };
        put(Entry::Hold(pb::SnapshotHold {
            hold: Some(to_pb_hold(&h.details, h.expires_at)),
            created_at_micros: micros(h.created_at),
            position: h.position,
            status: status.into(),
            booking_id,
        }));
    }
}

/// Inserts into an index; a key given twice is an error naming `what` (a
/// snapshot is one state, whose indexes have unique keys).
fn insert_new<K: Ord, V>(index: &mut BTreeMap<K, V>, key: K, value: V, what: &str) -> Result<(), CodecError> {
    match index.entry(key) {
        std::collections::btree_map::Entry::Vacant(vacant) => {
            vacant.insert(value);
            Ok(())
        }
        std::collections::btree_map::Entry::Occupied(_) => Err(CodecError(format!("two {what} under one key"))),
    }
}

/// An index built at once from its entries, as a snapshot lists them (in key
/// order): a sorted run is bulk-loaded into full B-tree nodes, in linear time,
/// where inserting one key after another leaves nodes about half full. A key
/// given twice is an error naming `what`, as with [`insert_new`].
fn index_from<K: Ord, V>(entries: Vec<(K, V)>, what: &str) -> Result<BTreeMap<K, V>, CodecError> {
    let len = entries.len();
    let index = BTreeMap::from_iter(entries);
    if index.len() != len {
        return Err(CodecError(format!("two {what} under one key")));
    }
    Ok(index)
}

fn optional_uuid_from(bytes: Option<Vec<u8>>) -> Result<Option<Uuid>, CodecError> {
    bytes.as_deref().map(uuid).transpose()
}

fn duration_from_micros(micros: i64) -> chrono::Duration {
    chrono::Duration::microseconds(micros)
}

/// A snapshot's body back as the state, under `rules` (the configured ones;
/// [`DecodedSnapshot::rules`] says which the snapshot was taken under). Each
/// entry is decoded and put in the state before the next: the body is never
/// held as protobuf messages all at once.
pub fn decode_snapshot(bytes: &[u8], rules: Rules) -> Result<DecodedSnapshot, CodecError> {
    use pb::snapshot_entry::Entry;
    let mut body = bytes;
    let snapshot = pb::Snapshot::decode_length_delimited(&mut body)?;
    let taken_under = SnapshotRules {
        idempotency_retention: duration_from_micros(snapshot.idempotency_retention_micros),
        duplicate_window: duration_from_micros(snapshot.duplicate_window_micros),
    };
    let mut state = State::new(rules);
    state.position = snapshot.position;
    state.recorded_at_last = from_micros(snapshot.recorded_at_last_micros, "recorded_at_last")?;
    state.days_closed_last = snapshot.days_closed_last;
    let mut tenant: Option<(Text, TenantState)> = None;
    // The current tenant's bookings, indexed at once when its entries end.
    let mut bookings = Vec::new();
    let mut answers = Vec::new();
    let mut decoder = super::decode::Decoder::interning();
    for _ in 0..snapshot.entries {
        let len = usize::try_from(prost::encoding::decode_varint(&mut body)?).map_err(|_| CodecError("an entry too long".into()))?;
        let bytes = body.get(..len).ok_or_else(|| CodecError("a snapshot entry cut short".into()))?;
        body = &body[len..];
        // Bookings, nearly all of a snapshot, are decoded in place.
        if let Some(b) = decoder.snapshot_booking(bytes)? {
            let (_, t) = tenant.as_ref().ok_or_else(|| CodecError("a snapshot entry before its tenant".into()))?;
            let booking = booking_from_snapshot(t, b)?;
            bookings.push((booking.details.booking_id, Arc::new(booking)));
            continue;
        }
        let entry = pb::SnapshotEntry::decode(bytes)?;
        match entry.entry.ok_or_else(|| CodecError("an empty snapshot entry".into()))? {
            Entry::Tenant(name) => {
                if let Some((name, entries)) = tenant.take() {
                    insert_new(&mut state.tenants, name, with_bookings(entries, &mut bookings)?, "tenants")?;
                }
                tenant = Some((name.into(), TenantState::default()));
            }
            Entry::Answer(a) => {
                let response = a.response.ok_or_else(|| CodecError("an answer without its response".into()))?;
                answers.push((Text::from(a.tenant), from_pb_response(response)?, from_micros(a.recorded_at_micros, "recorded_at")?));
            }
            Entry::Booking(b) => {
                let (_, entries) = tenant.as_ref().ok_or_else(|| CodecError("a snapshot entry before its tenant".into()))?;
                let booking = from_pb_snapshot_booking(entries, b)?;
                bookings.push((booking.details.booking_id, Arc::new(booking)));
            }
            entry => {
                let (_, entries) = tenant.as_mut().ok_or_else(|| CodecError("a snapshot entry before its tenant".into()))?;
                add_entry(entries, entry)?;
            }
        }
    }
    if let Some((name, entries)) = tenant.take() {
        insert_new(&mut state.tenants, name, with_bookings(entries, &mut bookings)?, "tenants")?;
    }
    if !body.is_empty() {
        return Err(CodecError(format!("{} bytes after the last of {} entries", body.len(), snapshot.entries)));
    }
    state.idempotency = IdempotencyTable::from_answers(answers).ok_or_else(|| CodecError("two answers for one idempotency key".into()))?;
    Ok(DecodedSnapshot { state, responses_position: snapshot.responses_position, rules: taken_under })
}

/// A tenant's state with the bookings its entries listed (taken from `bookings`).
fn with_bookings(mut tenant: TenantState, bookings: &mut Vec<(Uuid, Arc<Booking>)>) -> Result<TenantState, CodecError> {
    tenant.bookings = index_from(std::mem::take(bookings), "bookings")?;
    tenant.rebuild_day_records();
    Ok(tenant)
}

fn from_pb_snapshot_booking(tenant: &TenantState, b: pb::SnapshotBooking) -> Result<Booking, CodecError> {
    booking_from_snapshot(tenant, snapshot_booking_from_pb(b)?)
}

/// prost's `SnapshotBooking` as the in-place decoder reads one (its test oracle too).
pub(super) fn snapshot_booking_from_pb(b: pb::SnapshotBooking) -> Result<super::decode::SnapshotBooking, CodecError> {
    let created = from_pb_booking(b.booking.ok_or_else(|| CodecError("a booking without its details".into()))?)?;
    let rescheduled_from = b
        .rescheduled_from
        .map(|p| {
            Ok::<_, CodecError>(Place {
                doctor: p.doctor.into(),
                date: parse_date(&p.date)?,
                slot: p.slot,
                kind: super::decode::booking_kind(p.kind)?,
                token_number: p.token_number,
            })
        })
        .transpose()?;
    let attendance = if b.attendance == 0 { None } else { Some(super::decode::attendance(b.attendance)?) };
    Ok(super::decode::SnapshotBooking {
        created,
        cancelled: b.cancelled,
        created_at_micros: b.created_at_micros,
        position: b.position,
        cancel_reason: b.cancel_reason.map(Text::from),
        version: b.version,
        attendance,
        rescheduled_from,
    })
}

/// A booking as a snapshot keeps it, back in the state, its names the schedule's.
fn booking_from_snapshot(tenant: &TenantState, b: super::decode::SnapshotBooking) -> Result<Booking, CodecError> {
    if b.version == 0 {
        return Err(CodecError("a booking without its version: a snapshot older than versions".into()));
    }
    let mut created = b.created;
    tenant.share_names(&mut created.details);
    let rescheduled_from = b.rescheduled_from.map(|mut place| {
        tenant.share_clinic_and_doctor(&mut created.details.clinic.clone(), &mut place.doctor);
        Box::new(place)
    });
    Ok(Booking {
        token_number: created.token_number,
        status: if b.cancelled { BookingStatus::Cancelled } else { BookingStatus::Confirmed },
        created_at: from_micros(b.created_at_micros, "created_at")?,
        position: b.position,
        cancel_reason: b.cancel_reason.map(Box::new),
        details: created.details,
        version: b.version,
        attendance: b.attendance,
        rescheduled_from,
    })
}

fn pb_kind(kind: BookingKind) -> pb::BookingKind {
    match kind {
        BookingKind::Advance => pb::BookingKind::Advance,
        BookingKind::WalkIn => pb::BookingKind::WalkIn,
    }
}

fn pb_attendance(attendance: Attendance) -> pb::Attendance {
    match attendance {
        Attendance::Arrived => pb::Attendance::Arrived,
        Attendance::NoShow => pb::Attendance::NoShow,
    }
}

fn from_pb_call_state(state: i32) -> Result<CallState, CodecError> {
    Ok(match pb::CallState::try_from(state) {
        Ok(pb::CallState::Calling) => CallState::Calling,
        Ok(pb::CallState::Completed) => CallState::Completed,
        Ok(pb::CallState::NoAnswer) => CallState::NoAnswer,
        Ok(pb::CallState::Failed) => CallState::Failed,
        Ok(pb::CallState::BadNumber) => CallState::BadNumber,
        _ => return Err(CodecError(format!("unknown call state {state}"))),
    })
}

fn from_pb_doctor(d: pb::SnapshotDoctor) -> Result<Doctor, CodecError> {
    let mut days = Vec::with_capacity(d.days.len());
    for day in d.days {
        let slots = day.slots.iter().map(|s| Ok((s.slot, uuid(&s.booking_id)?))).collect::<Result<Vec<_>, CodecError>>()?;
        let slots = SlotMap::from_entries(slots).ok_or_else(|| CodecError("two bookings of a slot under one key".into()))?;
        let tokens = Day {
            slots,
            held: SlotMap::default(),
            tokens_issued_advance: day.tokens_issued_advance,
            tokens_issued_walk_in: day.tokens_issued_walk_in,
        };
        days.push((parse_date(&day.date)?, tokens));
    }
    let days = index_from(days, "days of a doctor")?;
    Ok(Doctor {
        schedule: Schedule { slots_per_day: d.slots_per_day, first_slot_minute: d.first_slot_minute, slot_minutes: d.slot_minutes },
        schedule_position: d.schedule_position,
        days,
    })
}

/// Puts one entry of one tenant's indexes in its place.
fn add_entry(t: &mut TenantState, entry: pb::snapshot_entry::Entry) -> Result<(), CodecError> {
    use pb::snapshot_entry::Entry;
    match entry {
        Entry::Doctor(d) => {
            let (clinic, name) = (Text::from(d.clinic.as_str()), Text::from(d.doctor.as_str()));
            let doctor = from_pb_doctor(d)?;
            insert_new(&mut t.clinics.entry(clinic).or_default().doctors, name, doctor, "doctors of a clinic")
        }
        Entry::Booking(_) => unreachable!("bookings are indexed at once, by decode_snapshot"),
        Entry::ExternalRef(r) => insert_new(&mut t.external_refs, Text::from(r.external_ref), uuid(&r.booking_id)?, "external refs"),
        Entry::Business(b) => {
            use pb::snapshot_business::Phone;
            let phone = match b.phone {
                None => None,
                Some(Phone::Pending(p)) => Some(PhoneState::Pending {
                    claim_id: uuid(&p.claim_id)?,
                    lease_expires_at: from_micros(p.lease_expires_at_micros, "lease_expires_at")?,
                }),
                Some(Phone::Active(a)) => Some(PhoneState::Active {
                    claim_id: uuid(&a.claim_id)?,
                    phone_number: a.phone_number.into(),
                    provider_sid: a.provider_sid.into(),
                }),
            };
            let business = Business { phone, failed_claim: optional_uuid_from(b.failed_claim)? };
            insert_new(&mut t.businesses, Text::from(b.business), business, "businesses")
        }
        Entry::PhoneOwner(o) => insert_new(&mut t.phone_owners, Text::from(o.phone_number), Text::from(o.business), "phone owners"),
        Entry::Call(c) => {
            let call = Call {
                call_id: uuid(&c.call_id)?,
                campaign: c.campaign.into(),
                to: c.to.into(),
                state: from_pb_call_state(c.state)?,
                started_at: from_micros(c.started_at_micros, "started_at")?,
                position: c.position,
            };
            insert_new(&mut t.calls, call.call_id, Arc::new(call), "calls")
        }
        Entry::Calling(c) => {
            if t.calling.insert((from_micros(c.started_at_micros, "started_at")?, uuid(&c.call_id)?)) {
                Ok(())
            } else {
                Err(CodecError("a call in progress twice".into()))
            }
        }
        Entry::Number(n) => {
            let last_call = n.last_call.map(|l| Ok::<_, CodecError>((uuid(&l.call_id)?, from_micros(l.started_at_micros, "last_call")?)));
            let number = NumberCalls {
                last_call: last_call.transpose()?,
                in_progress: optional_uuid_from(n.in_progress)?,
                blocked: n.blocked.map(Text::from),
            };
            insert_new(&mut t.numbers, Text::from(n.number), number, "numbers")
        }
        Entry::Campaign(c) => {
            let duplicates = c.duplicates_micros.into_iter().map(|m| from_micros(m, "duplicate")).collect::<Result<_, _>>()?;
            let campaign =
                Campaign { halt_reason: c.halt_reason.map(Text::from), consecutive_failures: c.consecutive_failures, duplicates };
            insert_new(&mut t.campaigns, Text::from(c.campaign), campaign, "campaigns")
        }
        Entry::Community(c) => {
            let community = Community {
                community_id: uuid(&c.community_id)?,
                slug: c.slug.into(),
                name: c.name.into(),
                owner: c.owner.into(),
                plan: c.plan.into(),
                created_at: from_micros(c.created_at_micros, "created_at")?,
                position: c.position,
            };
            insert_new(&mut t.communities, community.slug.clone(), Arc::new(community), "communities")
        }
        Entry::SlugSuffix(s) => insert_new(&mut t.slug_suffixes, Text::from(s.base), s.suffix, "slug suffixes"),
        Entry::WaitlistEntry(w) => {
            let mut details = from_pb_entry(w.joined.ok_or_else(|| CodecError("an entry without its details".into()))?)?;
            let status = match (pb::EntryStatus::try_from(w.status), w.hold_id, w.booking_id) {
                (Ok(pb::EntryStatus::Waiting), None, None) => EntryStatus::Waiting,
                (Ok(pb::EntryStatus::Offered), Some(hold_id), None) => EntryStatus::Offered(uuid(&hold_id)?),
                (Ok(pb::EntryStatus::Booked), None, Some(booking_id)) => EntryStatus::Booked(uuid(&booking_id)?),
                (Ok(pb::EntryStatus::Expired), None, None) => EntryStatus::Expired,
                (Ok(pb::EntryStatus::Withdrawn), None, None) => EntryStatus::Withdrawn,
                _ => return Err(CodecError(format!("entry status {} with the wrong ids", w.status))),
            };
            t.share_entry_names(&mut details);
            if status == EntryStatus::Waiting {
                let line = t.waiting.entry((details.clinic.clone(), details.date)).or_default();
                if line.insert(w.joined_position, details.entry_id).is_some() {
                    return Err(CodecError("two entries joined at one position".into()));
                }
            }
            let entry = crate::core::Entry {
                details,
                status,
                joined: w.joined_position,
                joined_at: from_micros(w.joined_at_micros, "joined_at")?,
                position: w.position,
            };
            insert_new(&mut t.waitlist, entry.details.entry_id, Arc::new(entry), "waitlist entries")
        }
        Entry::Clinic(c) => {
            let clinic = t.clinics.entry(Text::from(c.clinic)).or_default();
            if clinic.zone.is_some() || clinic.closed_through.is_some() {
                return Err(CodecError("a clinic twice".into()));
            }
            if !c.time_zone.is_empty() {
                let zone = super::decode::time_zone(&c.time_zone)?;
                clinic.zone = Some(crate::core::ClinicZone { zone, tzdata: c.tzdata.into(), position: c.position });
            }
            clinic.closed_through = c.closed_through.as_deref().map(parse_date).transpose()?;
            if clinic.zone.is_none() && clinic.closed_through.is_none() {
                return Err(CodecError("a clinic with neither a zone nor closed days".into()));
            }
            Ok(())
        }
        Entry::Hold(h) => {
            let (details, expires_at) = from_pb_hold(h.hold.ok_or_else(|| CodecError("a hold without its details".into()))?)?;
            let status = match (pb::HoldStatus::try_from(h.status), h.booking_id) {
                (Ok(pb::HoldStatus::Held), None) => HoldStatus::Held,
                (Ok(pb::HoldStatus::Confirmed), Some(booking_id)) => HoldStatus::Confirmed(uuid(&booking_id)?),
                (Ok(pb::HoldStatus::Released), None) => HoldStatus::Released,
                (Ok(pb::HoldStatus::Expired), None) => HoldStatus::Expired,
                _ => return Err(CodecError(format!("hold status {} with a booking id or without one", h.status))),
            };
            if status == HoldStatus::Held {
                // The held slots and the expiries are derived from the active holds.
                let day = t
                    .clinics
                    .get_mut(&details.clinic)
                    .and_then(|c| c.doctors.get_mut(&details.doctor))
                    .ok_or_else(|| CodecError("a hold before its doctor".into()))?
                    .days
                    .entry(details.date)
                    .or_default();
                if day.held.insert(details.slot, details.hold_id).is_some() || !t.hold_expiries.insert((expires_at, details.hold_id)) {
                    return Err(CodecError("two active holds of one slot".into()));
                }
            }
            let mut details = details;
            t.share_clinic_and_doctor(&mut details.clinic, &mut details.doctor);
            let hold =
                Hold { details, expires_at, status, created_at: from_micros(h.created_at_micros, "created_at")?, position: h.position };
            insert_new(&mut t.holds, hold.details.hold_id, Arc::new(hold), "holds")
        }
        Entry::Tenant(_) | Entry::Answer(_) => unreachable!("tenants and answers are not a tenant's entries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::snapshot_entry::Entry;

    /// A snapshot body of these entries, as `encode_snapshot` lays one out.
    fn body(entries: Vec<Entry>) -> Vec<u8> {
        let mut out = Vec::new();
        pb::Snapshot { position: 1, entries: entries.len() as u64, ..Default::default() }.encode_length_delimited(&mut out).unwrap();
        for entry in entries {
            pb::SnapshotEntry { entry: Some(entry) }.encode_length_delimited(&mut out).unwrap();
        }
        out
    }

    fn booking(id: u128, slot: u32) -> Entry {
        let details = BookingDetails {
            booking_id: Uuid::from_u128(id),
            clinic: "kochi".into(),
            doctor: "rao".into(),
            date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            slot,
            patient: "Asha".into(),
            kind: BookingKind::Advance,
            external: crate::core::External::boxed(None, None, None),
        };
        Entry::Booking(pb::SnapshotBooking { booking: Some(to_pb_booking(&details, slot)), version: 1, ..Default::default() })
    }

    fn doctor(slots: &[(u32, u128)]) -> Entry {
        let slots = slots.iter().map(|(slot, id)| pb::SnapshotSlot { slot: *slot, booking_id: Uuid::from_u128(*id).as_bytes().to_vec() });
        Entry::Doctor(pb::SnapshotDoctor {
            clinic: "kochi".into(),
            doctor: "rao".into(),
            slots_per_day: 10,
            days: vec![pb::SnapshotDay { date: "2026-03-02".into(), slots: slots.collect(), ..Default::default() }],
            ..Default::default()
        })
    }

    fn decode(entries: Vec<Entry>) -> Result<State, CodecError> {
        decode_snapshot(&body(entries), Rules::default()).map(|decoded| decoded.state)
    }

    /// Indexes are bulk-loaded from the snapshot's entries; a key given twice
    /// is still refused, whatever the order the entries come in.
    #[test]
    fn a_snapshot_giving_one_key_twice_is_refused_in_any_order() {
        let tenant = || Entry::Tenant("kloqo".into());
        let state = decode(vec![tenant(), doctor(&[(1, 7), (2, 9)]), booking(7, 1), booking(9, 2)]).unwrap();
        let kloqo = state.tenant("kloqo").unwrap();
        assert_eq!(kloqo.bookings.keys().copied().collect::<Vec<_>>(), [Uuid::from_u128(7), Uuid::from_u128(9)]);
        let day = kloqo.clinics["kochi"].doctors["rao"].days.values().next().unwrap();
        assert_eq!(day.slots.iter().map(|(slot, id)| (*slot, *id)).collect::<Vec<_>>(), [(1, Uuid::from_u128(7)), (2, Uuid::from_u128(9))]);
        // Out of order: still the same state.
        let unsorted = decode(vec![tenant(), doctor(&[(2, 9), (1, 7)]), booking(9, 2), booking(7, 1)]).unwrap();
        assert_eq!(unsorted, state);

        for entries in [vec![tenant(), booking(7, 1), booking(7, 1)], vec![tenant(), booking(7, 1), booking(9, 2), booking(7, 1)]] {
            let error = decode(entries).unwrap_err();
            assert!(error.0.contains("two bookings under one key"), "{error:?}");
        }
        let error = decode(vec![tenant(), doctor(&[(1, 7), (1, 9)])]).unwrap_err();
        assert!(error.0.contains("two bookings of a slot under one key"), "{error:?}");
        // The same booking id in two tenants is two bookings.
        let two = decode(vec![tenant(), booking(7, 1), Entry::Tenant("other".into()), booking(7, 1)]).unwrap();
        assert_eq!(two.tenants.values().map(|t| t.bookings.len()).sum::<usize>(), 2);
    }
}

/// A record of a closed day as the closed-day store keeps it, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosedRecord {
    Booking(Arc<Booking>),
    Hold(Arc<Hold>),
    Entry(Arc<crate::core::Entry>),
    /// An external ref and the booking it is bound to.
    ExternalRef(Uuid),
}

/// What the closed-day store is asked for: a record's kind, with its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedKind {
    Booking = b'b' as isize,
    Hold = b'h' as isize,
    Entry = b'e' as isize,
    ExternalRef = b'r' as isize,
}

/// The records of `records` (a closed day's, `core::days::closing`), each
/// one `SnapshotEntry` as a snapshot writes it, with the kind and the id
/// (the external ref's text for a ref) it is found by.
pub fn encode_closed_records(records: &TenantState) -> Vec<(ClosedKind, Vec<u8>, Vec<u8>)> {
    use pb::snapshot_entry::Entry;
    let mut out = Vec::new();
    put_tenant(records, &mut |entry: Entry| {
        let (kind, id) = match &entry {
            Entry::Booking(b) => (ClosedKind::Booking, b.booking.as_ref().map(|b| b.booking_id.clone()).unwrap_or_default()),
            Entry::Hold(h) => (ClosedKind::Hold, h.hold.as_ref().map(|h| h.hold_id.clone()).unwrap_or_default()),
            Entry::WaitlistEntry(e) => (ClosedKind::Entry, e.joined.as_ref().map(|e| e.entry_id.clone()).unwrap_or_default()),
            Entry::ExternalRef(r) => (ClosedKind::ExternalRef, r.external_ref.as_bytes().to_vec()),
            other => unreachable!("a closed day holds bookings, holds, entries and refs only, not {other:?}"),
        };
        out.push((kind, id, pb::SnapshotEntry { entry: Some(entry) }.encode_to_vec()));
    });
    out
}

/// A record [`encode_closed_records`] wrote, its names shared with `tenant`'s.
pub fn decode_closed_record(tenant: &TenantState, bytes: &[u8]) -> Result<ClosedRecord, CodecError> {
    use pb::snapshot_entry::Entry;
    let entry = pb::SnapshotEntry::decode(bytes)?.entry.ok_or_else(|| CodecError("an empty closed record".into()))?;
    let mut scratch = TenantState::default();
    Ok(match entry {
        Entry::Booking(b) => ClosedRecord::Booking(Arc::new(from_pb_snapshot_booking(tenant, b)?)),
        Entry::ExternalRef(r) => ClosedRecord::ExternalRef(uuid(&r.booking_id)?),
        entry @ Entry::Hold(_) => {
            add_entry(&mut scratch, entry)?;
            ClosedRecord::Hold(scratch.holds.pop_first().expect("the hold added").1)
        }
        entry @ Entry::WaitlistEntry(_) => {
            add_entry(&mut scratch, entry)?;
            ClosedRecord::Entry(scratch.waitlist.pop_first().expect("the entry added").1)
        }
        other => return Err(CodecError(format!("not a closed day's record: {other:?}"))),
    })
}
