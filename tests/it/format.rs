//! Golden vectors: the exact bytes of a small ledger segment, committed in
//! `proto/golden/`, so that the on-disk format cannot drift silently. A change
//! that alters them must be a deliberate format change (run with
//! `UPDATE_GOLDEN=1`, bump the format version, say so in FORMAT.md).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use booking_ledger::core::{BookingCreated, BookingDetails, BookingKind, Event, EventKind, Rules, Schedule, StoredResponse};
use booking_ledger::log::frame::{self, GENESIS_HASH, SegmentHeader};
use booking_ledger::log::{FileLog, FileLogOptions, Log, MemoryLog, codec};
use chrono::{NaiveDate, TimeZone, Utc};
use uuid::Uuid;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/golden/00000000000000000001.seg.hex")
}

fn events() -> Vec<Event> {
    let at = |s| Utc.timestamp_opt(1_767_225_600 + s, 123_456_000).unwrap();
    let envelope = |position, kind, key: Option<&str>| Event {
        position,
        recorded_at: at(position as i64),
        tenant: "kloqo".into(),
        actor: "kloqo-web".into(),
        request_id: format!("req-{position}").into(),
        idempotency_key: key.map(Into::into),
        kind,
        response: None,
    };
    let booking_id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let mut booked = envelope(
        2,
        EventKind::BookingCreated(BookingCreated {
            details: BookingDetails {
                booking_id,
                clinic: "c1".into(),
                doctor: "d1".into(),
                date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                slot: 5,
                patient: "Asha".into(),
                kind: BookingKind::WalkIn,
                external_ref: Some("cal-77".into()),
                correlation_id: Some("call-1".into()),
                external_created_at: Some(at(0)),
            },
            token_number: 1,
        }),
        Some("onboarding-42"),
    );
    booked.response = Some(StoredResponse {
        actor: "kloqo-web".into(),
        key: "onboarding-42".into(),
        fingerprint: [7; 32],
        status: 201,
        body: Arc::from(&b"{\"token\":\"W001\"}"[..]),
    });
    vec![
        envelope(
            1,
            EventKind::ScheduleSet {
                clinic: "c1".into(),
                doctor: "d1".into(),
                schedule: Schedule { slots_per_day: 20, first_slot_minute: Some(540), slot_minutes: Some(15) },
            },
            None,
        ),
        booked,
        envelope(3, EventKind::BookingCancelled { booking_id, reason: Some("feeling better".into()) }, None),
    ]
}

fn segment(events: &[Event]) -> Vec<u8> {
    let mut bytes = frame::encode_segment_header(&SegmentHeader { first_position: 1, prev_hash: GENESIS_HASH }).to_vec();
    let mut hash = GENESIS_HASH;
    for event in events {
        hash = frame::encode_record(&mut bytes, event.position, &hash, &codec::encode_event(event));
    }
    bytes
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.chunks(32).map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n").collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

#[test]
fn the_segment_format_matches_the_golden_vectors() {
    let encoded = segment(&events());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_path().parent().unwrap()).unwrap();
        std::fs::write(golden_path(), to_hex(&encoded)).unwrap();
    }
    let golden = from_hex(&std::fs::read_to_string(golden_path()).expect("proto/golden is committed"));
    assert_eq!(to_hex(&encoded), to_hex(&golden), "the encoding drifted from proto/golden");

    // The golden bytes decode to the same events, through the real file log.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000001.seg"), &golden).unwrap();
    let (log, report) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
    assert_eq!(report.truncated, None);
    let mut decoded = Vec::new();
    log.read_from(1, &mut |_, payload| {
        decoded.push(codec::decode_event(payload).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(decoded, events());
    let recovered = booking_ledger::writer::recover(&log, &MemoryLog::new(), Rules::default(), Utc::now()).unwrap();
    assert_eq!(recovered.events, 3);
}
