//! Golden vectors: the exact bytes of a small ledger segment and of a snapshot,
//! committed in `proto/golden/`, so that the on-disk format cannot drift
//! silently. A change that alters them must be a deliberate format change (run
//! with `UPDATE_GOLDEN=1`, bump the format version, say so in FORMAT.md).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use booking_ledger::core::{
    BookingCreated, BookingDetails, BookingKind, CallState, Duplicate, Event, EventKind, Rules, Schedule, State, StoredResponse,
};
use booking_ledger::log::frame::{self, GENESIS_HASH, SegmentHeader};
use booking_ledger::log::snapshot::{self, Logs};
use booking_ledger::log::{FileLog, FileLogOptions, Log, MemoryLog, codec};
use booking_ledger::snapshots::{self, Dirs};
use chrono::{NaiveDate, TimeZone, Utc};
use uuid::Uuid;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/golden/00000000000000000001.seg.hex")
}

fn golden_snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/golden/00000000000000000017.snap.hex")
}

fn at(seconds: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + seconds, 123_456_000).unwrap()
}

fn envelope(position: u64, kind: EventKind, key: Option<&str>) -> Event {
    Event {
        position,
        recorded_at: at(position as i64),
        tenant: "kloqo".into(),
        actor: "kloqo-web".into(),
        request_id: format!("req-{position}").into(),
        idempotency_key: key.map(Into::into),
        kind,
        response: None,
    }
}

fn events() -> Vec<Event> {
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
                external: booking_ledger::core::External::boxed(Some("cal-77".into()), Some("call-1".into()), Some(at(0))),
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
    let recovered = booking_ledger::replay::recover(&log, &MemoryLog::new(), Rules::default(), Utc::now()).unwrap();
    assert_eq!(recovered.events, 3);
}

/// The golden segment's events and more, so that every index of the state is
/// in the golden snapshot: phones (active, pending, a failed claim), calls
/// (finished, in progress, refused), a halted campaign, a blocked number,
/// communities with a slug suffix, a confirmed and a cancelled booking.
fn snapshot_events() -> Vec<Event> {
    let id = |n: u128| Uuid::from_u128(0xfeed_0000_0000_0000_0000_0000_0000_0000 | n);
    let mut events = events();
    let community = |n, slug: &str| EventKind::CommunityCreated {
        community_id: id(n),
        slug: slug.into(),
        name: "My Community".into(),
        owner: "asha".into(),
        plan: "pro".into(),
    };
    let kinds = [
        EventKind::PhoneClaimed { business: "garage".into(), claim_id: id(1), lease_expires_at: at(600) },
        EventKind::PhoneClaimFailed { business: "garage".into(), claim_id: id(1), reason: "carrier down".into() },
        EventKind::PhoneClaimed { business: "garage".into(), claim_id: id(2), lease_expires_at: at(606) },
        EventKind::PhoneCompleted {
            business: "garage".into(),
            claim_id: id(2),
            phone_number: "+14243242113".into(),
            provider_sid: "PN8e".into(),
        },
        EventKind::PhoneClaimed { business: "bakery".into(), claim_id: id(3), lease_expires_at: at(608) },
        EventKind::CallStarted { call_id: id(4), campaign: "outreach".into(), to: "+14243242113".into() },
        EventKind::CallRefused { campaign: "outreach".into(), to: "+14243242113".into(), duplicate: Duplicate::InProgress, call_id: id(4) },
        EventKind::CampaignHalted { campaign: "outreach".into(), reason: "2 refused duplicate call attempts".into() },
        EventKind::CallStarted { call_id: id(5), campaign: "follow-up".into(), to: "+16465550001".into() },
        EventKind::CallOutcomeRecorded { call_id: id(4), outcome: CallState::BadNumber },
        EventKind::NumberBlocked { number: "+14243242113".into(), reason: "bad_number".into() },
        community(6, "my-community"),
        community(7, "my-community-1"),
        EventKind::BookingCreated(BookingCreated {
            details: BookingDetails {
                booking_id: id(8),
                clinic: "c1".into(),
                doctor: "d1".into(),
                date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                slot: 1,
                patient: "Ravi".into(),
                kind: BookingKind::Advance,
                external: booking_ledger::core::External::boxed(None, None, None),
            },
            token_number: 1,
        }),
    ];
    for kind in kinds {
        events.push(envelope(events.len() as u64 + 1, kind, None));
    }
    events
}

fn applied(events: &[Event]) -> State {
    let mut state = State::new(Rules::default());
    for event in events {
        booking_ledger::core::apply(&mut state, event);
    }
    state
}

/// The golden snapshot: the state of `snapshot_events()` at position 17, its
/// header naming the hash of record 17 of those events' segment.
#[test]
fn the_snapshot_format_matches_the_golden_vectors() {
    let events = snapshot_events();
    assert_eq!(events.len(), 17);
    let state = applied(&events);
    for tenant in state.tenants.values() {
        assert!(
            [
                tenant.clinics.len(),
                tenant.bookings.len(),
                tenant.external_refs.len(),
                tenant.businesses.len(),
                tenant.phone_owners.len(),
                tenant.calls.len(),
                tenant.calling.len(),
                tenant.numbers.len(),
                tenant.campaigns.len(),
                tenant.communities.len(),
                tenant.slug_suffixes.len(),
            ]
            .iter()
            .all(|len| *len > 0),
            "every index of the state is in the golden snapshot"
        );
    }
    assert_eq!(state.idempotency.len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let dirs = Dirs { ledger: dir.path().join("ledger"), responses: dir.path().join("responses"), snapshots: dir.path().join("snapshots") };
    std::fs::create_dir_all(&dirs.ledger).unwrap();
    std::fs::write(dirs.ledger.join("00000000000000000001.seg"), segment(&events)).unwrap();
    let link = booking_ledger::log::record_hash_at(&dirs.ledger, 17).unwrap().unwrap();
    let body = codec::encode_snapshot(&state, 0);
    let (path, _) = snapshot::write_snapshot(&dirs.snapshots, 17, link, 0, GENESIS_HASH, &body).unwrap();
    let encoded = std::fs::read(&path).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_snapshot_path(), to_hex(&encoded)).unwrap();
    }
    let golden = from_hex(&std::fs::read_to_string(golden_snapshot_path()).expect("proto/golden is committed"));
    assert_eq!(to_hex(&encoded), to_hex(&golden), "the snapshot encoding drifted from proto/golden");

    // The golden bytes pass every check against that ledger, load as the
    // state, and start-up loads them and applies nothing after them.
    std::fs::write(&path, &golden).unwrap();
    let (ledger, _) = FileLog::open(&dirs.ledger, FileLogOptions::default()).unwrap();
    let (responses, _) = FileLog::open(&dirs.responses, FileLogOptions::default()).unwrap();
    let logs = Logs { ledger: &dirs.ledger, ledger_last: 17, responses: &dirs.responses };
    assert!(snapshot::check(&path, 17, &logs, Some(Rules::default())).is_ok());
    let loaded = snapshot::load_newest(&dirs.snapshots, &logs, Rules::default()).expect("the golden snapshot loads");
    assert_eq!(loaded.state, state);
    let now = at(60);
    let started = snapshots::recover(&ledger, &responses, &dirs, Rules::default(), now).unwrap();
    assert_eq!(started.snapshot.map(|(position, _)| position), Some(17));
    assert_eq!(started.recovered.events, 0);
    let full = booking_ledger::replay::recover(&ledger, &responses, Rules::default(), now).unwrap().state;
    assert_eq!(started.recovered.state, full);
}
