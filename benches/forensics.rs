//! Forensics at scale: `as_of` latency on one clinic as the ledger grows, and
//! the throughput of `ledger replay --format json`.
//!
//! Builds one ledger in a temporary directory, growing it to 100k, 1M and 10M
//! events (`FORENSICS_EVENTS_MAX` overrides the largest size): bookings spread
//! over 1000 clinics, and one clinic ("target") with a fixed history of 60
//! events written among the first 100k. At each size it times `as_of` queries on
//! the target clinic's busy day through the clinic index (the server's path:
//! plan from the index, then read that day's records by location) and prints the
//! median and p99 next to the same figures at the first size: a flat ratio
//! means the cost grows with the clinic, not with the ledger. At the largest
//! size it then times the JSON export of every event (decode and render, as
//! `ledger replay --format json` does, written to a sink) next to a plain read
//! with CRC checks (`log::Tail`) of the same log, and the decode alone
//! (`log::events::EventReader`, as `ledger replay` reads), which no rendering can beat.

use std::io::Write;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use booking_ledger::core::{BookingCreated, BookingDetails, BookingKind, Event, EventKind, Schedule};
use booking_ledger::forensics::clinics::ClinicIndex;
use booking_ledger::forensics::json;
use booking_ledger::log::events::EventReader;
use booking_ledger::log::{FileLog, FileLogOptions, Log, Tail, codec};
use chrono::{NaiveDate, Utc};

const SIZES: [u64; 3] = [100_000, 1_000_000, 10_000_000];
const CLINICS: u64 = 1000;
const TARGET_EVENTS: u64 = 60;
const QUERIES: usize = 200;

fn event(position: u64, clinic: String, slot: u64) -> Event {
    let kind = if slot == u64::MAX {
        EventKind::ScheduleSet {
            clinic: clinic.into(),
            doctor: "d1".into(),
            schedule: Schedule { slots_per_day: 1000, first_slot_minute: Some(540), slot_minutes: Some(10) },
        }
    } else {
        EventKind::BookingCreated(BookingCreated {
            details: BookingDetails {
                booking_id: uuid::Uuid::now_v7(),
                clinic: clinic.into(),
                doctor: "d1".into(),
                date: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap() + chrono::Days::new(slot / 1000),
                slot: (slot % 1000) as u32,
                patient: format!("Patient {position}").into(),
                kind: BookingKind::Advance,
                external: booking_ledger::core::External::boxed(None, None, None),
            },
            token_number: (slot % 1000) as u32 + 1,
        })
    };
    Event {
        position,
        recorded_at: Utc::now(),
        tenant: "bench".into(),
        actor: "bench".into(),
        request_id: format!("req-{position}").into(),
        idempotency_key: None,
        kind,
        response: None,
    }
}

/// The event at `position`: the target clinic's schedule and bookings at fixed
/// early positions, every other position a booking in one of the other clinics.
fn nth(position: u64) -> Event {
    let target_every = 1000;
    if position % target_every == 1 && position / target_every < TARGET_EVENTS {
        let n = position / target_every;
        return event(position, "target".into(), if n == 0 { u64::MAX } else { n - 1 });
    }
    let clinic = position % CLINICS;
    let n = position / CLINICS;
    if n == 0 {
        return event(position, format!("clinic-{clinic}"), u64::MAX);
    }
    event(position, format!("clinic-{clinic}"), n)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let largest: u64 = std::env::var("FORENSICS_EVENTS_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(SIZES[2]);
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let (mut log, _) = FileLog::open(&ledger, FileLogOptions::default()).unwrap();
    let mut index = ClinicIndex::default();
    let mut reader = EventReader::new(&ledger, 1);
    let target_day = NaiveDate::from_ymd_opt(2030, 1, 1).unwrap();
    let mut buffer = Vec::new();
    let mut first: Option<(Duration, Duration)> = None;
    println!("as_of on one clinic ({TARGET_EVENTS} events) as the ledger grows; {QUERIES} queries at random positions each");
    println!("{:>12} {:>12} {:>12} {:>14} {:>14}", "events", "median µs", "p99 µs", "median/first", "p99/first");
    for size in SIZES.into_iter().filter(|s| *s <= largest) {
        let started = Instant::now();
        for position in log.position_next()..=size {
            buffer.clear();
            codec::encode_event_into(&nth(position), &mut buffer);
            log.append(&buffer).unwrap();
            if position % 4096 == 0 {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
        while reader.next_position() <= size {
            reader
                .read(size, 4096, &mut |event, location| {
                    index.index(&event, location);
                    ControlFlow::Continue(())
                })
                .unwrap();
        }
        let built = started.elapsed();
        let mut latencies = Vec::with_capacity(QUERIES);
        for q in 0..QUERIES {
            let as_of = 1 + (q as u64 * 7919) % size;
            let started = Instant::now();
            let day = index.plan("bench", "target", target_day, None, as_of).run(&ledger).unwrap();
            latencies.push(started.elapsed());
            assert_eq!(day.position, as_of);
        }
        latencies.sort();
        let (median, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        let (first_median, first_p99) = *first.get_or_insert((median, p99));
        println!(
            "{size:>12} {:>12.1} {:>12.1} {:>14.2} {:>14.2}   (built and indexed in {:.1} s)",
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            median.as_secs_f64() / first_median.as_secs_f64(),
            p99.as_secs_f64() / first_p99.as_secs_f64(),
            built.as_secs_f64()
        );
    }
    let last = log.position_next() - 1;
    drop(log);

    let started = Instant::now();
    let mut read = 0u64;
    let mut plain_tail = Tail::new(&ledger, 1);
    while plain_tail
        .read(last, 4096, &mut |_, _, payload| {
            read += u64::from(!payload.is_empty());
            ControlFlow::Continue(())
        })
        .unwrap()
        > 0
    {}
    let plain = started.elapsed();
    let started = Instant::now();
    let mut decoded = 0u64;
    let mut decode = EventReader::new(&ledger, 1);
    while decode
        .read(last, 4096, &mut |event, _| {
            std::hint::black_box(event);
            decoded += 1;
            ControlFlow::Continue(())
        })
        .unwrap()
        > 0
    {}
    let decode_time = started.elapsed();
    let started = Instant::now();
    let mut sink = std::io::BufWriter::new(std::io::sink());
    let mut exported = 0u64;
    let mut export = EventReader::new(&ledger, 1);
    let mut line = Vec::new();
    while export
        .read(last, 4096, &mut |event, _| {
            line.clear();
            json::write_event(&mut line, &event, true);
            line.push(b'\n');
            sink.write_all(&line).unwrap();
            exported += 1;
            ControlFlow::Continue(())
        })
        .unwrap()
        > 0
    {}
    let json_time = started.elapsed();
    assert_eq!((read, decoded, exported), (last, last, last));
    println!();
    println!("over {last} events (page cache):");
    println!("  read + CRC only           {:>12.0} events/s", last as f64 / plain.as_secs_f64());
    println!(
        "  decode only               {:>12.0} events/s   ({:.3} of the plain read: the export's bound)",
        last as f64 / decode_time.as_secs_f64(),
        plain.as_secs_f64() / decode_time.as_secs_f64()
    );
    println!(
        "  replay --format json      {:>12.0} events/s   ({:.3} of the plain read)",
        last as f64 / json_time.as_secs_f64(),
        plain.as_secs_f64() / json_time.as_secs_f64()
    );
}
