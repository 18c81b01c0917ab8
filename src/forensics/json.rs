//! Events and rejections as JSON, the one shape that `GET /events`, the event
//! stream, `GET /rejections` and `ledger export` all print: any tool can read
//! it without the protobuf schema.
//!
//! The text is written straight from the borrowed event into a byte buffer the
//! caller reuses: no `serde_json::Value`, no map, no `String` per field, and
//! keys are static bytes rather than strings escaped on every event (serde
//! views over the borrowed event, tried first, still rendered at half this
//! speed: serde_json escapes every key and writes each string in three calls).
//! Strings are escaped exactly as serde_json escapes them, and every object's
//! keys come in sorted order, the order `serde_json::Map` (a `BTreeMap` without
//! the `preserve_order` feature) printed them in when events went through a
//! `Value`: the output is byte for byte what it was.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::core::{BookingCreated, BookingKind, Duplicate, Event, EventKind, Position, RejectionRecord};

/// Appends `event` to `out` as one line of JSON (without the newline), as
/// `GET /events` lists it; with `with_tenant`, the event's tenant too (for
/// exports across tenants).
pub fn write_event(out: &mut Vec<u8>, event: &Event, with_tenant: bool) {
    let mut object = Object::new(out);
    object.entry("actor", &event.actor);
    if !event.request_id.is_empty() {
        object.entry("correlation_id", &event.request_id);
    }
    object.entry("data", &Data(&event.kind));
    if let Some(key) = &event.idempotency_key {
        object.entry("idempotency_key", key);
    }
    object.entry("position", &event.position).entry("recorded_at", &Rfc3339(event.recorded_at));
    if with_tenant {
        object.entry("tenant", &event.tenant);
    }
    object.entry("type", event.kind.name()).end();
}

/// `GET /events`'s body: `{"events": [...], "next": next}`.
pub fn events_page(events: &[Event], next: Position) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 320 * events.len());
    Object::new(&mut out)
        .entry("events", &Array(events, |out: &mut Vec<u8>, event: &Event| write_event(out, event, false)))
        .entry("next", &next)
        .end();
    out
}

/// Appends the journaled rejection `seq` to `out`, as `GET /rejections` lists
/// it; with `with_tenant`, its tenant too (for `ledger rejections` across tenants).
pub fn write_rejection(out: &mut Vec<u8>, seq: u64, rejected: &RejectionRecord, with_tenant: bool) {
    // The request body goes through a `Value` on purpose: it is the client's
    // bytes, and printing them parsed (keys sorted, no whitespace, invalid JSON
    // as a string) is what the journal has always shown. One per rejection, a
    // page at most: not the export's path.
    let body = serde_json::from_slice::<Value>(&rejected.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&rejected.body).into_owned()));
    let command = Command { body: &body, method: &rejected.method, path: &rejected.path };
    let mut object = Object::new(out);
    object.entry("actor", &rejected.actor).entry("code", &rejected.code).entry("command", &command);
    if let Some(conflict) = &rejected.conflicts_with {
        object.entry("conflicts_with", conflict);
    }
    object.entry("correlation_id", &rejected.request_id).entry("detail", &rejected.detail);
    if let Some(key) = &rejected.idempotency_key {
        object.entry("idempotency_key", key);
    }
    object.entry("recorded_at", &Rfc3339(rejected.recorded_at)).entry("seq", &seq);
    if with_tenant {
        object.entry("tenant", &rejected.tenant);
    }
    object.end();
}

/// `GET /rejections`'s body: `{"next": next, "rejections": [...]}`.
pub fn rejections_page(rejections: &[(u64, RejectionRecord)], next: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 512 * rejections.len());
    let write = |out: &mut Vec<u8>, (seq, rejected): &(u64, RejectionRecord)| write_rejection(out, *seq, rejected, false);
    Object::new(&mut out).entry("next", &next).entry("rejections", &Array(rejections, write)).end();
    out
}

/// What happened, without the envelope. Absent optional fields are `null`.
struct Data<'a>(&'a EventKind);

impl Json for Data<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = Object::new(out);
        match self.0 {
            EventKind::ScheduleSet { clinic, doctor, schedule } => object
                .entry("clinic", clinic)
                .entry("doctor", doctor)
                .entry("first_slot_minute", &schedule.first_slot_minute)
                .entry("slot_minutes", &schedule.slot_minutes)
                .entry("slots_per_day", &schedule.slots_per_day),
            EventKind::BookingCreated(BookingCreated { details: b, token_number }) => object
                .entry("booking_id", &b.booking_id)
                .entry("clinic", &b.clinic)
                .entry("correlation_id", &b.correlation_id().cloned())
                .entry("date", &Date(b.date))
                .entry("doctor", &b.doctor)
                .entry("external_created_at", &b.external_created_at().map(Rfc3339))
                .entry("external_ref", &b.external_ref().cloned())
                .entry("hold_id", &b.hold_id())
                .entry("kind", kind_name(b.kind))
                .entry("patient", b.patient.as_str())
                .entry("patient_id", &b.patient_id().cloned())
                .entry("slot", &b.slot)
                .entry("token", &Token(b.kind, *token_number)),
            EventKind::BookingCancelled { booking_id, reason } => object.entry("booking_id", booking_id).entry("reason", reason),
            EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => {
                object.entry("business", business).entry("claim_id", claim_id).entry("lease_expires_at", &Rfc3339(*lease_expires_at))
            }
            EventKind::PhoneCompleted { business, claim_id, phone_number, provider_sid } => object
                .entry("business", business)
                .entry("claim_id", claim_id)
                .entry("phone_number", phone_number)
                .entry("provider_sid", provider_sid),
            EventKind::PhoneClaimFailed { business, claim_id, reason } => {
                object.entry("business", business).entry("claim_id", claim_id).entry("reason", reason)
            }
            EventKind::PhoneReleased { business, phone_number, reason } => {
                object.entry("business", business).entry("phone_number", phone_number).entry("reason", reason)
            }
            EventKind::CallStarted { call_id, campaign, to } => {
                object.entry("call_id", call_id).entry("campaign", campaign).entry("to", to)
            }
            EventKind::CallOutcomeRecorded { call_id, outcome } => object.entry("call_id", call_id).entry("outcome", outcome.name()),
            EventKind::CallRefused { campaign, to, duplicate, call_id } => {
                object.entry("call_id", call_id).entry("campaign", campaign).entry("refused_as", refused_as(*duplicate)).entry("to", to)
            }
            EventKind::CampaignHalted { campaign, reason } | EventKind::CampaignResumed { campaign, reason } => {
                object.entry("campaign", campaign).entry("reason", reason)
            }
            EventKind::NumberBlocked { number, reason } => object.entry("number", number).entry("reason", reason),
            EventKind::CommunityCreated { community_id, slug, name, owner, plan } => object
                .entry("community_id", community_id)
                .entry("membership", &Membership { user: owner })
                .entry("name", name)
                .entry("owner", owner)
                .entry("slug", slug)
                .entry("subscription", &Subscription { plan }),
            EventKind::HoldPlaced { details: h, expires_at } => object
                .entry("clinic", &h.clinic)
                .entry("date", &Date(h.date))
                .entry("doctor", &h.doctor)
                .entry("entry_id", &h.entry_id)
                .entry("expires_at", &Rfc3339(*expires_at))
                .entry("hold_id", &h.hold_id)
                .entry("patient", &h.patient.as_ref().map(|p| p.to_string()))
                .entry("patient_id", &h.patient_id)
                .entry("slot", &h.slot),
            EventKind::HoldReleased { hold_id } | EventKind::HoldExpired { hold_id } => object.entry("hold_id", hold_id),
            EventKind::BookingRescheduled { booking_id, clinic, doctor, date, slot, kind, token_number, patient } => object
                .entry("booking_id", booking_id)
                .entry("clinic", clinic)
                .entry("date", &Date(*date))
                .entry("doctor", doctor)
                .entry("kind", kind_name(*kind))
                .entry("patient", patient.as_str())
                .entry("slot", slot)
                .entry("token", &Token(*kind, *token_number)),
            EventKind::WaitlistJoined { details: e } => object
                .entry("clinic", &e.clinic)
                .entry("date", &Date(e.date))
                .entry("doctor", &e.doctor)
                .entry("entry_id", &e.entry_id)
                .entry("patient", e.patient.as_str())
                .entry("patient_id", &e.patient_id),
            EventKind::WaitlistWithdrawn { entry_id } => object.entry("entry_id", entry_id),
            EventKind::DaysClosed { clinic, through } => object.entry("clinic", clinic).entry("through", &Date(*through)),
            EventKind::ClinicZoneSet { clinic, zone, tzdata } => {
                object.entry("clinic", clinic).entry("time_zone", zone.name()).entry("tzdata", tzdata)
            }
            EventKind::AttendanceRecorded { booking_id, attendance, corrected } => {
                object.entry("attendance", attendance.name()).entry("booking_id", booking_id).entry("corrected", corrected)
            }
        }
        .end();
    }
}

fn kind_name(kind: BookingKind) -> &'static str {
    match kind {
        BookingKind::Advance => "advance",
        BookingKind::WalkIn => "walk_in",
    }
}

fn refused_as(duplicate: Duplicate) -> &'static str {
    match duplicate {
        Duplicate::InProgress => "call_in_progress",
        Duplicate::RecentlyCalled => "recently_called",
    }
}

/// A community's first membership: its owner, an admin.
struct Membership<'a> {
    user: &'a str,
}

impl Json for Membership<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        Object::new(out).entry("role", "admin").entry("user", self.user).end();
    }
}

struct Subscription<'a> {
    plan: &'a str,
}

impl Json for Subscription<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        Object::new(out).entry("plan", self.plan).end();
    }
}

/// The refused request.
struct Command<'a> {
    body: &'a Value,
    method: &'a str,
    path: &'a str,
}

impl Json for Command<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        Object::new(out).entry("body", self.body).entry("method", self.method).entry("path", self.path).end();
    }
}

/// A value that appends itself to a buffer as JSON text.
trait Json {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// A JSON object being written. Keys are static, need no escaping, and must
/// come in sorted order: asserted, because the order is part of the output.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    /// The key written last; `None` before the first.
    key_last: Option<&'static str>,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, key_last: None }
    }

    fn entry<T: Json + ?Sized>(&mut self, key: &'static str, value: &T) -> &mut Object<'a> {
        debug_assert!(self.key_last.is_none_or(|last| last < key), "{key} written after {:?}: keys go in sorted order", self.key_last);
        debug_assert!(key.bytes().all(|byte| !escaped(byte)), "{key} needs no escaping");
        if self.key_last.is_some() {
            self.out.push(b',');
        }
        self.key_last = Some(key);
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        value.write_json(self.out);
        self
    }

    fn end(&mut self) {
        self.out.push(b'}');
    }
}

/// A JSON array of `items`, each written by the function.
struct Array<'a, T, F>(&'a [T], F);

impl<T, F: Fn(&mut Vec<u8>, &T)> Json for Array<'_, T, F> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (n, item) in self.0.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            (self.1)(out, item);
        }
        out.push(b']');
    }
}

/// Whether serde_json escapes `byte` in a string: quote, backslash and the
/// ASCII controls. Everything else, `/`, DEL and non-ASCII included, is copied.
fn escaped(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

impl Json for str {
    /// Quoted and escaped as serde_json does: the short escapes it has, `\u00XX`
    /// (lowercase hex) for the other controls.
    fn write_json(&self, out: &mut Vec<u8>) {
        let bytes = self.as_bytes();
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        let mut copied = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            if !escaped(byte) {
                continue;
            }
            out.extend_from_slice(&bytes[copied..i]);
            copied = i + 1;
            let short = match byte {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
                    continue;
                }
            };
            out.extend_from_slice(&[b'\\', short]);
        }
        out.extend_from_slice(&bytes[copied..]);
        out.push(b'"');
    }
}

impl Json for String {
    fn write_json(&self, out: &mut Vec<u8>) {
        self.as_str().write_json(out);
    }
}

impl<T: Json + ?Sized> Json for std::sync::Arc<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        (**self).write_json(out);
    }
}

impl<T: Json> Json for Option<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Some(value) => value.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

impl Json for bool {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl Json for u64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        let mut n = *self;
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&buf[start..]);
    }
}

impl Json for u32 {
    fn write_json(&self, out: &mut Vec<u8>) {
        u64::from(*self).write_json(out);
    }
}

impl Json for Value {
    fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a Value renders into a Vec");
    }
}

/// Appends `text`, which needs no escaping (digits, dashes, hex), in quotes.
fn quoted_ascii(out: &mut Vec<u8>, text: &[u8]) {
    debug_assert!(text.iter().all(|byte| byte.is_ascii() && !escaped(*byte)));
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

impl Json for Uuid {
    /// Hyphenated lowercase, as uuid's serde impl writes it.
    fn write_json(&self, out: &mut Vec<u8>) {
        quoted_ascii(out, self.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    }
}

/// Two ASCII digits of `n` (< 100).
fn two_digits(digits: &mut [u8], n: u32) {
    debug_assert!(n < 100);
    digits[0] = b'0' + (n / 10) as u8;
    digits[1] = b'0' + (n % 10) as u8;
}

/// `digits.len()` ASCII digits of `n`, zero-padded; `n` must fit.
fn padded_digits(digits: &mut [u8], mut n: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    debug_assert_eq!(n, 0, "the number fits its digits");
}

/// A UTC time as `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes it
/// (`2030-01-01T09:00:00.123Z`, a leap second as `:60`), formatted on the stack:
/// chrono's allocates a `String` per time. Years outside 0..=9999 take chrono's
/// path, sign and all.
#[derive(Debug, Clone, Copy)]
struct Rfc3339(DateTime<Utc>);

impl Json for Rfc3339 {
    fn write_json(&self, out: &mut Vec<u8>) {
        // The fields of the naive time, once: each of `DateTime`'s accessors adds the offset again.
        let (date, time) = (self.0.naive_utc().date(), self.0.naive_utc().time());
        let year = date.year();
        if !(0..=9999).contains(&year) {
            return self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).write_json(out);
        }
        let (mut second, mut nano) = (time.second(), time.nanosecond());
        if nano >= 1_000_000_000 {
            // A leap second: chrono keeps it as nanoseconds past :59.
            second += 1;
            nano -= 1_000_000_000;
        }
        let mut buf = *b"0000-00-00T00:00:00.000000000Z";
        padded_digits(&mut buf[0..4], year as u32);
        two_digits(&mut buf[5..7], date.month());
        two_digits(&mut buf[8..10], date.day());
        two_digits(&mut buf[11..13], time.hour());
        two_digits(&mut buf[14..16], time.minute());
        two_digits(&mut buf[17..19], second);
        // As few fraction digits as say it exactly: none, milli, micro or nano.
        let fraction = match nano {
            0 => 0,
            _ if nano % 1_000_000 == 0 => 3,
            _ if nano % 1_000 == 0 => 6,
            _ => 9,
        };
        padded_digits(&mut buf[20..20 + fraction], nano / 10u32.pow(9 - fraction as u32));
        let len = if fraction == 0 { 19 } else { 20 + fraction };
        buf[len] = b'Z';
        quoted_ascii(out, &buf[..=len]);
    }
}

/// A date as `core::format_date` writes it, on the stack.
#[derive(Debug, Clone, Copy)]
struct Date(NaiveDate);

impl Json for Date {
    fn write_json(&self, out: &mut Vec<u8>) {
        let date = self.0;
        if !(0..=9999).contains(&date.year()) {
            return crate::core::format_date(date).write_json(out);
        }
        let mut buf = *b"0000-00-00";
        padded_digits(&mut buf[0..4], date.year() as u32);
        two_digits(&mut buf[5..7], date.month());
        two_digits(&mut buf[8..10], date.day());
        quoted_ascii(out, &buf);
    }
}

/// A token as `core::token` writes it (`A005`: the kind's letter and at least
/// three digits), on the stack.
#[derive(Debug, Clone, Copy)]
struct Token(BookingKind, u32);

impl Json for Token {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Token(kind, number) = *self;
        let width = (number.checked_ilog10().unwrap_or(0) as usize + 1).max(3);
        let mut buf = [0u8; 11];
        buf[0] = kind.token_prefix() as u8;
        padded_digits(&mut buf[1..=width], number);
        quoted_ascii(out, &buf[..=width]);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chrono::{NaiveDate, TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::core::{BookingDetails, CallState, Schedule};

    fn at(nano: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 5, 7).unwrap() + chrono::Duration::nanoseconds(i64::from(nano))
    }

    /// Which variant `kind` is: a new variant fails to compile here until the
    /// lists below cover it.
    fn variant(kind: &EventKind) -> usize {
        match kind {
            EventKind::ScheduleSet { .. } => 0,
            EventKind::BookingCreated(_) => 1,
            EventKind::BookingCancelled { .. } => 2,
            EventKind::PhoneClaimed { .. } => 3,
            EventKind::PhoneCompleted { .. } => 4,
            EventKind::PhoneClaimFailed { .. } => 5,
            EventKind::PhoneReleased { .. } => 6,
            EventKind::CallStarted { .. } => 7,
            EventKind::CallOutcomeRecorded { .. } => 8,
            EventKind::CallRefused { .. } => 9,
            EventKind::CampaignHalted { .. } => 10,
            EventKind::CampaignResumed { .. } => 11,
            EventKind::NumberBlocked { .. } => 12,
            EventKind::CommunityCreated { .. } => 13,
            EventKind::HoldPlaced { .. } => 14,
            EventKind::HoldReleased { .. } => 15,
            EventKind::HoldExpired { .. } => 16,
            EventKind::BookingRescheduled { .. } => 17,
            EventKind::AttendanceRecorded { .. } => 18,
            EventKind::ClinicZoneSet { .. } => 19,
            EventKind::WaitlistJoined { .. } => 20,
            EventKind::WaitlistWithdrawn { .. } => 21,
            EventKind::DaysClosed { .. } => 22,
        }
    }
    const VARIANTS: usize = 23;

    /// Every kind, each optional field both present and absent, and text that
    /// needs escaping.
    fn every_kind() -> Vec<EventKind> {
        let id = Uuid::parse_str("0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d").unwrap();
        let booking = |kind, token_number, optional: bool| {
            EventKind::BookingCreated(BookingCreated {
                details: BookingDetails {
                    booking_id: id,
                    clinic: "c1".into(),
                    doctor: "d1".into(),
                    date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                    slot: 7,
                    patient: "Ásha \"A\" \\ Rao\n\u{1}".into(),
                    kind,
                    external: crate::core::External {
                        external_ref: optional.then(|| "cal-1".into()),
                        correlation_id: optional.then(|| "corr-1".into()),
                        external_created_at: optional.then(|| at(123_456_789)),
                        hold_id: optional.then_some(id),
                        patient_id: optional.then(|| "p-1".into()),
                    }
                    .boxed_if_any(),
                },
                token_number,
            })
        };
        vec![
            EventKind::ScheduleSet {
                clinic: "c1".into(),
                doctor: "d1".into(),
                schedule: Schedule { slots_per_day: 40, first_slot_minute: Some(540), slot_minutes: Some(15) },
            },
            EventKind::ScheduleSet {
                clinic: "c1".into(),
                doctor: "d1".into(),
                schedule: Schedule { slots_per_day: 1, first_slot_minute: None, slot_minutes: None },
            },
            booking(BookingKind::Advance, 5, true),
            booking(BookingKind::WalkIn, 12345, false),
            booking(BookingKind::WalkIn, u32::MAX, false),
            EventKind::BookingCancelled { booking_id: id, reason: Some("patient called".into()) },
            EventKind::BookingCancelled { booking_id: id, reason: None },
            EventKind::PhoneClaimed { business: "b1".into(), claim_id: id, lease_expires_at: at(5_000_000) },
            EventKind::PhoneCompleted {
                business: "b1".into(),
                claim_id: id,
                phone_number: "+14155550100".into(),
                provider_sid: "PN1".into(),
            },
            EventKind::PhoneClaimFailed { business: "b1".into(), claim_id: id, reason: "provider down".into() },
            EventKind::PhoneReleased { business: "b1".into(), phone_number: "+14155550100".into(), reason: Some("churn".into()) },
            EventKind::PhoneReleased { business: "b1".into(), phone_number: "+14155550100".into(), reason: None },
            EventKind::CallStarted { call_id: id, campaign: "spring".into(), to: "+14155550100".into() },
            EventKind::CallOutcomeRecorded { call_id: id, outcome: CallState::NoAnswer },
            EventKind::CallRefused { campaign: "spring".into(), to: "+1".into(), duplicate: Duplicate::InProgress, call_id: id },
            EventKind::CallRefused { campaign: "spring".into(), to: "+1".into(), duplicate: Duplicate::RecentlyCalled, call_id: id },
            EventKind::CampaignHalted { campaign: "spring".into(), reason: "too many refusals".into() },
            EventKind::CampaignResumed { campaign: "spring".into(), reason: "fixed".into() },
            EventKind::NumberBlocked { number: "+1".into(), reason: "bad_number".into() },
            EventKind::CommunityCreated {
                community_id: id,
                slug: "chess-club".into(),
                name: "Chess \u{2654} Club".into(),
                owner: "u1".into(),
                plan: "free".into(),
            },
            EventKind::HoldPlaced {
                details: crate::core::HoldDetails {
                    hold_id: id,
                    clinic: "c1".into(),
                    doctor: "d1".into(),
                    date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                    slot: 7,
                    patient: Some("Ásha".into()),
                    patient_id: Some("p-1".into()),
                    entry_id: None,
                },
                expires_at: at(0) + chrono::Duration::minutes(5),
            },
            EventKind::HoldPlaced {
                details: crate::core::HoldDetails {
                    hold_id: id,
                    clinic: "c1".into(),
                    doctor: "d1".into(),
                    date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                    slot: 0,
                    patient: None,
                    patient_id: None,
                    entry_id: None,
                },
                expires_at: at(1_000),
            },
            EventKind::HoldReleased { hold_id: id },
            EventKind::HoldExpired { hold_id: id },
            EventKind::BookingRescheduled {
                booking_id: id,
                clinic: "c1".into(),
                doctor: "d2".into(),
                date: NaiveDate::from_ymd_opt(2026, 3, 3).unwrap(),
                slot: 4,
                kind: BookingKind::WalkIn,
                token_number: 2,
                patient: "Asha".into(),
            },
            EventKind::AttendanceRecorded { booking_id: id, attendance: crate::core::Attendance::Arrived, corrected: false },
            EventKind::AttendanceRecorded { booking_id: id, attendance: crate::core::Attendance::NoShow, corrected: true },
            EventKind::ClinicZoneSet { clinic: "c1".into(), zone: "Asia/Kolkata".parse().unwrap(), tzdata: "2025b".into() },
            EventKind::WaitlistJoined {
                details: crate::core::EntryDetails {
                    entry_id: id,
                    clinic: "c1".into(),
                    date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                    doctor: None,
                    patient: "Asha".into(),
                    patient_id: Some("p-1".into()),
                },
            },
            EventKind::WaitlistWithdrawn { entry_id: id },
            EventKind::DaysClosed { clinic: "c1".into(), through: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap() },
        ]
    }

    fn envelope(kind: EventKind, request_id: &str, idempotency_key: Option<&str>) -> Event {
        Event {
            position: 42,
            recorded_at: at(0),
            tenant: "kloqo".into(),
            actor: "kloqo-web".into(),
            request_id: request_id.into(),
            idempotency_key: idempotency_key.map(Into::into),
            kind,
            response: None,
        }
    }

    /// What `every_kind()` renders to, with `envelope(kind, "req-1", Some("click-1"))`
    /// and the tenant: the bytes the `Value` renderers printed before this writer.
    const EVERY_KIND_JSON: [&str; 31] = [
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"clinic":"c1","doctor":"d1","first_slot_minute":540,"slot_minutes":15,"slots_per_day":40},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"schedule_set"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"clinic":"c1","doctor":"d1","first_slot_minute":null,"slot_minutes":null,"slots_per_day":1},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"schedule_set"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","clinic":"c1","correlation_id":"corr-1","date":"2026-03-02","doctor":"d1","external_created_at":"2026-03-01T09:05:07.123456789Z","external_ref":"cal-1","hold_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","kind":"advance","patient":"Ásha \"A\" \\ Rao\n\u0001","patient_id":"p-1","slot":7,"token":"A005"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"booking_created"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","clinic":"c1","correlation_id":null,"date":"2026-03-02","doctor":"d1","external_created_at":null,"external_ref":null,"hold_id":null,"kind":"walk_in","patient":"Ásha \"A\" \\ Rao\n\u0001","patient_id":null,"slot":7,"token":"W12345"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"booking_created"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","clinic":"c1","correlation_id":null,"date":"2026-03-02","doctor":"d1","external_created_at":null,"external_ref":null,"hold_id":null,"kind":"walk_in","patient":"Ásha \"A\" \\ Rao\n\u0001","patient_id":null,"slot":7,"token":"W4294967295"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"booking_created"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","reason":"patient called"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"booking_cancelled"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","reason":null},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"booking_cancelled"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"business":"b1","claim_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","lease_expires_at":"2026-03-01T09:05:07.005Z"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"phone_claimed"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"business":"b1","claim_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","phone_number":"+14155550100","provider_sid":"PN1"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"phone_completed"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"business":"b1","claim_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","reason":"provider down"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"phone_claim_failed"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"business":"b1","phone_number":"+14155550100","reason":"churn"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"phone_released"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"business":"b1","phone_number":"+14155550100","reason":null},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"phone_released"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"call_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","campaign":"spring","to":"+14155550100"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"call_started"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"call_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","outcome":"no_answer"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"call_outcome_recorded"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"call_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","campaign":"spring","refused_as":"call_in_progress","to":"+1"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"call_refused"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"call_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","campaign":"spring","refused_as":"recently_called","to":"+1"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"call_refused"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"campaign":"spring","reason":"too many refusals"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"campaign_halted"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"campaign":"spring","reason":"fixed"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"campaign_resumed"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"number":"+1","reason":"bad_number"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"number_blocked"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"community_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","membership":{"role":"admin","user":"u1"},"name":"Chess ♔ Club","owner":"u1","slug":"chess-club","subscription":{"plan":"free"}},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"community_created"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"clinic":"c1","date":"2026-03-02","doctor":"d1","entry_id":null,"expires_at":"2026-03-01T09:10:07Z","hold_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","patient":"Ásha","patient_id":"p-1","slot":7},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"hold_placed"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"clinic":"c1","date":"2026-03-02","doctor":"d1","entry_id":null,"expires_at":"2026-03-01T09:05:07.000001Z","hold_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","patient":null,"patient_id":null,"slot":0},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"hold_placed"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"hold_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"hold_released"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"hold_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"hold_expired"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","clinic":"c1","date":"2026-03-03","doctor":"d2","kind":"walk_in","patient":"Asha","slot":4,"token":"W002"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"booking_rescheduled"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"attendance":"arrived","booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","corrected":false},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"attendance_recorded"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"attendance":"no_show","booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","corrected":true},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"attendance_recorded"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"clinic":"c1","time_zone":"Asia/Kolkata","tzdata":"2025b"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"clinic_zone_set"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"clinic":"c1","date":"2026-03-02","doctor":null,"entry_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","patient":"Asha","patient_id":"p-1"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"waitlist_joined"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"entry_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"waitlist_withdrawn"}"#,
        r#"{"actor":"kloqo-web","correlation_id":"req-1","data":{"clinic":"c1","through":"2026-03-02"},"idempotency_key":"click-1","position":42,"recorded_at":"2026-03-01T09:05:07Z","tenant":"kloqo","type":"days_closed"}"#,
    ];

    fn line(event: &Event, with_tenant: bool) -> String {
        let mut out = Vec::new();
        write_event(&mut out, event, with_tenant);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_event_kind_renders_as_it_always_has() {
        let kinds = every_kind();
        assert_eq!(kinds.len(), EVERY_KIND_JSON.len());
        let mut seen = [false; VARIANTS];
        for (kind, expected) in kinds.into_iter().zip(EVERY_KIND_JSON) {
            seen[variant(&kind)] = true;
            let line = line(&envelope(kind, "req-1", Some("click-1")), true);
            assert_eq!(line, expected);
            serde_json::from_str::<Value>(&line).expect("the line is JSON");
        }
        assert_eq!(seen, [true; VARIANTS], "every kind is rendered");
    }

    #[test]
    fn the_envelope_leaves_out_an_empty_correlation_id_a_missing_key_and_the_tenant_unless_asked() {
        // A cancellation without a reason.
        let cancelled = || every_kind().remove(6);
        assert_eq!(
            line(&envelope(cancelled(), "", None), false),
            r#"{"actor":"kloqo-web","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","reason":null},"position":42,"recorded_at":"2026-03-01T09:05:07Z","type":"booking_cancelled"}"#
        );
        assert_eq!(
            line(&envelope(cancelled(), "req-2", None), false),
            r#"{"actor":"kloqo-web","correlation_id":"req-2","data":{"booking_id":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","reason":null},"position":42,"recorded_at":"2026-03-01T09:05:07Z","type":"booking_cancelled"}"#
        );
    }

    fn rejected(body: &'static [u8], optional: bool) -> RejectionRecord {
        RejectionRecord {
            recorded_at: at(1_000),
            tenant: "kloqo".into(),
            actor: "kloqo-web".into(),
            request_id: if optional { "req-1".into() } else { "".into() },
            idempotency_key: optional.then(|| "click-1".into()),
            code: "slot_taken".into(),
            detail: "slot 3 is \"taken\"".into(),
            conflicts_with: optional.then(|| "0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d".into()),
            method: "POST".into(),
            path: "/v1/kloqo/bookings".into(),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn a_rejection_shows_its_body_parsed_or_as_text_and_its_optional_fields_only_when_present() {
        let json_body = rejected(br#"{ "slot": 3, "clinic": "c1", "n": [1.5, null, true] }"#, true);
        let mut out = Vec::new();
        write_rejection(&mut out, 9, &json_body, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"actor":"kloqo-web","code":"slot_taken","command":{"body":{"clinic":"c1","n":[1.5,null,true],"slot":3},"method":"POST","path":"/v1/kloqo/bookings"},"conflicts_with":"0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","correlation_id":"req-1","detail":"slot 3 is \"taken\"","idempotency_key":"click-1","recorded_at":"2026-03-01T09:05:07.000001Z","seq":9}"#
        );
        let mut out = Vec::new();
        write_rejection(&mut out, 9, &rejected(b"not json \xff", false), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"actor":"kloqo-web","code":"slot_taken","command":{"body":"not json �","method":"POST","path":"/v1/kloqo/bookings"},"correlation_id":"","detail":"slot 3 is \"taken\"","recorded_at":"2026-03-01T09:05:07.000001Z","seq":9}"#
        );
    }

    #[test]
    fn pages_list_their_items_and_where_to_go_on() {
        let events: Vec<Event> = every_kind().into_iter().take(2).map(|kind| envelope(kind, "req-1", None)).collect();
        let (first, second) = (line(&events[0], false), line(&events[1], false));
        assert_eq!(String::from_utf8(events_page(&events, 43)).unwrap(), format!(r#"{{"events":[{first},{second}],"next":43}}"#));
        assert_eq!(String::from_utf8(events_page(&[], 43)).unwrap(), r#"{"events":[],"next":43}"#);

        let rejections = [(3, rejected(b"{}", false)), (5, rejected(b"{}", true))];
        let items: Vec<String> = rejections
            .iter()
            .map(|(seq, rejected)| {
                let mut out = Vec::new();
                write_rejection(&mut out, *seq, rejected, false);
                String::from_utf8(out).unwrap()
            })
            .collect();
        assert_eq!(
            String::from_utf8(rejections_page(&rejections, 6)).unwrap(),
            format!(r#"{{"next":6,"rejections":[{}]}}"#, items.join(","))
        );
        assert_eq!(String::from_utf8(rejections_page(&[], 6)).unwrap(), r#"{"next":6,"rejections":[]}"#);
    }

    #[test]
    fn times_dates_and_tokens_print_as_chrono_and_core_print_them() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap().and_utc();
        let mut times: Vec<DateTime<Utc>> =
            [0, 1, 999, 1_000, 120_000, 5_000_000, 123_456_789, 999_999_999, 100_000_000].into_iter().map(at).collect();
        times.push(leap);
        times.push(leap + chrono::Duration::nanoseconds(-500_000_000));
        for year in [-1, 0, 1, 999, 1970, 9999, 10_000] {
            times.push(Utc.with_ymd_and_hms(year, 12, 31, 23, 59, 58).unwrap() + chrono::Duration::microseconds(7));
        }
        for time in times {
            let expected = time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert_eq!(text(&Rfc3339(time)), Value::String(expected).to_string());
            let date = time.date_naive();
            assert_eq!(text(&Date(date)), Value::String(crate::core::format_date(date)).to_string());
        }
        for number in [0, 1, 9, 10, 99, 100, 999, 1000, 123_456, u32::MAX] {
            for kind in [BookingKind::Advance, BookingKind::WalkIn] {
                assert_eq!(text(&Token(kind, number)), Value::String(crate::core::token(kind, number)).to_string());
            }
        }
        for number in [0, 7, 10, 4_294_967_295, u64::MAX] {
            assert_eq!(text(&number), number.to_string());
        }
    }

    fn text(value: &(impl Json + ?Sized)) -> String {
        let mut out = Vec::new();
        value.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii = String::new();
        for c in (0u8..=0x7f).map(char::from).chain(['é', '\u{2028}', '\u{feff}', '😀']) {
            let alone = c.to_string();
            assert_eq!(text(alone.as_str()), serde_json::to_string(&alone).unwrap(), "{c:?}");
            let among = format!("a{c}b{c}{c}");
            assert_eq!(text(among.as_str()), serde_json::to_string(&among).unwrap(), "{c:?}");
            every_ascii.push(c);
        }
        assert_eq!(text(every_ascii.as_str()), serde_json::to_string(&every_ascii).unwrap());
        assert_eq!(text(""), "\"\"");
    }
}
