//! `ledger verify`'s engine over a ledger of `VERIFY_EVENTS` events (default
//! 10,000,000), next to what it cannot beat, all measured in this run.
//!
//! The ledger is built first through `FileLog`: real `BookingCreated` events
//! with their provenance (about 150 bytes each), appended in batches of 4096
//! with one fdatasync per batch, in default-sized segments in a temporary
//! directory. Then, `RUNS` times each, in turn:
//!
//! - `verify`: `log::verify::verify_dir`, every checksum, position and link of
//!   the hash chain (BLAKE3 of every record), on every core it finds;
//! - `read_dir`: `log::Tail`, recovery's read: checksums and positions
//!   only, no chain, on one thread. The baseline the issue asks for;
//! - `read files`: every segment read into memory with no check at all: the
//!   ceiling for anything that reads the whole ledger.
//!
//! All three read from the page cache: the ledger has just been written. On a
//! cold cache the disk's sequential read speed caps all three.
//!
//! `cargo bench --bench verify`; `VERIFY_EVENTS=1000000 cargo bench --bench verify` for a quick run.

use std::fs;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use booking_ledger::core::{BookingCreated, BookingDetails, BookingKind, Event, EventKind};
use booking_ledger::log::verify::{self, Origin, Verdict};
use booking_ledger::log::{self, FileLog, FileLogOptions, Log, codec};
use chrono::{DateTime, Days, NaiveDate, Utc};
use uuid::Uuid;

const EVENTS_DEFAULT: u64 = 10_000_000;
const BATCH: u64 = 4096;
const RUNS: usize = 3;
/// Building should leave time for the measurements within about two minutes.
const BUILD_SECONDS_BUDGET: u64 = 90;

fn main() {
    let events = match std::env::var("VERIFY_EVENTS") {
        Ok(text) => text.replace('_', "").parse().expect("VERIFY_EVENTS is a number of events"),
        Err(_) => EVENTS_DEFAULT,
    };
    assert!(events >= 1, "VERIFY_EVENTS must be at least 1");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ledger = dir.path().join("ledger");

    let started = Instant::now();
    let payload_bytes = build(&ledger, events);
    let built = started.elapsed();
    let (segments, ledger_bytes) = segments(&ledger);
    println!(
        "built a ledger of {events} events in {:.1} s ({:.0} events/s): payloads {:.0} bytes on average, \
         {:.0} MiB in {segments} segments, in {}",
        built.as_secs_f64(),
        events as f64 / built.as_secs_f64(),
        payload_bytes as f64 / events as f64,
        ledger_bytes as f64 / (1 << 20) as f64,
        dir.path().display()
    );
    if built > Duration::from_secs(BUILD_SECONDS_BUDGET) {
        println!("NOTE: building took over {BUILD_SECONDS_BUDGET} s on this machine; the whole run exceeds its two-minute budget");
    }

    let mut verify_times = Vec::new();
    let mut read_dir_times = Vec::new();
    let mut read_files_times = Vec::new();
    for run in 1..=RUNS {
        let verify = time(|| {
            let report = verify::verify_dir(&ledger, Origin::Genesis, &mut |_| {}).expect("verifying");
            assert_eq!((report.records, report.position_last, &report.verdict), (events, events, &Verdict::Clean));
        });
        let read_dir = time(|| {
            let mut records = 0u64;
            let mut tail = log::Tail::new(&ledger, 1);
            while tail
                .read(events, 1 << 16, &mut |_, _, _| {
                    records += 1;
                    ControlFlow::Continue(())
                })
                .expect("reading")
                > 0
            {}
            assert_eq!(records, events);
        });
        let read_files = time(|| {
            let mut bytes = 0;
            for entry in fs::read_dir(&ledger).expect("listing") {
                bytes += fs::read(entry.expect("listing").path()).expect("reading").len() as u64;
            }
            assert_eq!(bytes, ledger_bytes);
        });
        println!(
            "run {run}: verify {:.3} s, read_dir {:.3} s, read files {:.3} s",
            verify.as_secs_f64(),
            read_dir.as_secs_f64(),
            read_files.as_secs_f64()
        );
        verify_times.push(verify);
        read_dir_times.push(read_dir);
        read_files_times.push(read_files);
    }

    let best = |times: &[Duration]| times.iter().min().copied().expect("at least one run");
    let (verify, read_dir, read_files) = (best(&verify_times), best(&read_dir_times), best(&read_files_times));
    let rate = |elapsed: Duration| events as f64 / elapsed.as_secs_f64();
    let mib_per_second = |elapsed: Duration| ledger_bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
    println!("best of {RUNS}, {events} events, {threads} cores, page cache:");
    println!("  verify      {:>12.0} events/s  {:>6.0} MiB/s  (checksums, positions, hash chain)", rate(verify), mib_per_second(verify));
    println!("  read_dir    {:>12.0} events/s  {:>6.0} MiB/s  (checksums, positions)", rate(read_dir), mib_per_second(read_dir));
    println!("  read files  {:>12.0} events/s  {:>6.0} MiB/s  (no checks)", rate(read_files), mib_per_second(read_files));
    println!("  verify / read_dir = {:.2}", rate(verify) / rate(read_dir));
    println!("  verify / read files = {:.2}", rate(verify) / rate(read_files));
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// Appends `events` bookings to a new log in `dir`; returns their payload bytes.
fn build(dir: &Path, events: u64) -> u64 {
    let (mut log, _) = FileLog::open(dir, FileLogOptions::default()).expect("opening a new log");
    let recorded_at_first = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).expect("a valid time");
    let date_first = NaiveDate::from_ymd_opt(2030, 1, 1).expect("a valid date");
    let mut payload = Vec::with_capacity(512);
    let mut payload_bytes = 0;
    for position in 1..=events {
        payload.clear();
        codec::encode_event_into(&event(position, recorded_at_first, date_first), &mut payload);
        payload_bytes += payload.len() as u64;
        assert_eq!(log.append(&payload).expect("appending"), position);
        if position.is_multiple_of(BATCH) {
            log.sync().expect("syncing");
        }
    }
    log.sync().expect("syncing");
    payload_bytes
}

/// The `position`-th booking: 100 doctors, 1000 slots a day each, with the
/// provenance an HTTP request gives it (a request id; every tenth one keyed).
fn event(position: u64, recorded_at_first: DateTime<Utc>, date_first: NaiveDate) -> Event {
    let n = position - 1;
    let booking = BookingCreated {
        details: BookingDetails {
            booking_id: Uuid::now_v7(),
            clinic: "clinic-01".into(),
            doctor: format!("d{:03}", n % 100).into(),
            date: date_first + Days::new(n / 100_000),
            slot: ((n / 100) % 1000) as u32,
            patient: format!("Patient {n}").into(),
            kind: if n.is_multiple_of(3) { BookingKind::WalkIn } else { BookingKind::Advance },
            external: booking_ledger::core::External::boxed(None, None, None),
        },
        token_number: ((n / 100) % 1000) as u32 + 1,
    };
    Event {
        position,
        recorded_at: recorded_at_first + chrono::Duration::microseconds(position as i64 * 50),
        tenant: "kloqo".into(),
        actor: "kloqo-web".into(),
        request_id: Uuid::new_v4().to_string().into(),
        idempotency_key: n.is_multiple_of(10).then(|| format!("key-{n}").into()),
        kind: EventKind::BookingCreated(booking),
        response: None,
    }
}

/// The segment files in `dir` and their total size.
fn segments(dir: &Path) -> (usize, u64) {
    let lens: Vec<u64> = fs::read_dir(dir).expect("listing").map(|e| e.expect("listing").metadata().expect("a size").len()).collect();
    (lens.len(), lens.iter().sum())
}
