//! The writer and start-up recovery, without HTTP, each next to the ceiling it cannot beat.
//!
//! - `commit/writer/{1,64,1024}`: `Writer::commit` of that many bookings on a real
//!   `FileLog` in a temporary directory: decide, append, one fdatasync, publish.
//!   Every booking takes its own (doctor, date, slot), so every one is accepted.
//! - `commit/raw_fsync/{1,64,1024}`: the same bytes the writer appended for one
//!   batch, written to a plain file with one `write_all` and one `sync_data`: the
//!   fdatasync ceiling for that batch size, counted in the commands it stands for.
//! - `recover/recover`: `replay::recover` of a ledger of `RECOVER_BOOKINGS` bookings
//!   (written once by the writer at batch 1024): read, CRC-check, decode, apply.
//! - `recover/read_only`: `log::Tail` of the same segments: read and CRC-check only.
//!
//! Criterion reports each as time per iteration (one batch, or one whole recovery) and
//! elements (commands or events) per second. The summary printed last divides all
//! the elements by all the time spent in every timed iteration criterion ran (its
//! warm-up and its samples), so its figures come from this run. Read `writer/raw` as
//! the share of the disk's fdatasync ceiling the writer reaches at that batch size,
//! and `recover/read-only` as the share of plain reading that recovery keeps once it
//! decodes and applies. Both read from the page cache: the ledger has just
//! been written.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use booking_ledger::core::{Action, BookingDetails, BookingKind, Command, Rules, Schedule, State};
use booking_ledger::http::views;
use booking_ledger::log::{self, FileLog, FileLogOptions, Log};
use booking_ledger::metrics::Metrics;
use booking_ledger::replay;
use booking_ledger::writer::{Answer, SystemClock, Writer, WriterConfig};
use chrono::{Days, NaiveDate, Utc};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tempfile::TempDir;
use uuid::Uuid;

const TENANT: &str = "bench";
const DOCTORS: u64 = 100;
/// Doctors `d000` to `d049` work at clinic `c0`, `d050` to `d099` at `c1`: a clinic
/// has at most 64 (`doctors_per_clinic_max`).
const DOCTORS_PER_CLINIC: u64 = 50;
const SLOTS_PER_DAY: u32 = 1000;
const BATCHES: [u64; 3] = [1, 64, 1024];
const RECOVER_BOOKINGS: u64 = 1_000_000;
const RECOVER_BATCH: u64 = 1024;

/// Hands out bookings that never conflict: the n-th takes doctor `n % DOCTORS`,
/// then each slot of the day, then the next day.
struct Bookings {
    next: u64,
    first_date: NaiveDate,
}

impl Bookings {
    fn new() -> Bookings {
        Bookings { next: 0, first_date: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap() }
    }

    fn batch(&mut self, len: u64) -> Vec<Command> {
        (0..len).map(|_| self.booking()).collect()
    }

    fn booking(&mut self) -> Command {
        let n = self.next;
        self.next += 1;
        let slots = u64::from(SLOTS_PER_DAY);
        let request = BookingDetails {
            booking_id: Uuid::now_v7(),
            clinic: clinic_name(n % DOCTORS).into(),
            doctor: doctor_name(n % DOCTORS).into(),
            date: self.first_date + Days::new(n / (DOCTORS * slots)),
            slot: ((n / DOCTORS) % slots) as u32,
            patient: format!("Patient {n}").into(),
            kind: BookingKind::Advance,
            external: booking_ledger::core::External::boxed(None, None, None),
        };
        command(Action::Book(request))
    }
}

fn doctor_name(doctor: u64) -> String {
    format!("d{doctor:03}")
}

fn clinic_name(doctor: u64) -> String {
    format!("c{}", doctor / DOCTORS_PER_CLINIC)
}

/// A command as the HTTP layer builds it, without an Idempotency-Key.
fn command(action: Action) -> Command {
    Command { tenant: TENANT.into(), actor: "bench".into(), request_id: Uuid::new_v4().to_string().into(), idempotency: None, action }
}

fn open_log(dir: &Path) -> FileLog {
    FileLog::open(dir, FileLogOptions::default()).expect("opening a log").0
}

/// A writer on an empty ledger in `dir`, with every doctor's schedule set.
fn open_writer(dir: &Path) -> Writer {
    let mut writer = Writer::new(
        Box::new(open_log(&dir.join("ledger"))),
        Box::new(open_log(&dir.join("responses"))),
        State::new(Rules::default()),
        views::render,
        Arc::new(SystemClock),
        WriterConfig::default(),
        Arc::new(Metrics::new()),
    );
    let schedule = Schedule { slots_per_day: SLOTS_PER_DAY, first_slot_minute: None, slot_minutes: None };
    let schedules: Vec<Command> = (0..DOCTORS)
        .map(|d| command(Action::SetSchedule { clinic: clinic_name(d).into(), doctor: doctor_name(d).into(), schedule }))
        .collect();
    commit(&mut writer, &schedules);
    writer
}

/// Commits `commands`, checks that every one was accepted, and returns the time `commit` took.
fn commit(writer: &mut Writer, commands: &[Command]) -> Duration {
    let started = Instant::now();
    let answers = writer.commit(commands).expect("committing a batch");
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|a| matches!(a, Ok(Answer::Fresh(Ok(_))))), "a benchmark command was refused");
    elapsed
}

/// The bytes of every segment in the log directory `dir`.
fn log_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir).expect("listing the log").map(|e| e.expect("listing the log").metadata().expect("a segment's size").len()).sum()
}

/// Elements processed and time spent over every timed iteration of one benchmark.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    elements: u64,
    elapsed: Duration,
}

impl Tally {
    /// Counts `elements` done in `elapsed`, and returns `elapsed` for criterion.
    fn add(&mut self, elements: u64, elapsed: Duration) -> Duration {
        self.elements += elements;
        self.elapsed += elapsed;
        elapsed
    }

    fn per_second(&self) -> Option<f64> {
        (!self.elapsed.is_zero()).then(|| self.elements as f64 / self.elapsed.as_secs_f64())
    }
}

struct CommitTallies {
    batch: u64,
    writer: Tally,
    raw_fsync: Tally,
}

fn bench_commit(criterion: &mut Criterion) -> Vec<CommitTallies> {
    let mut group = criterion.benchmark_group("commit");
    let mut tallies = Vec::new();
    for batch in BATCHES {
        let mut tally = CommitTallies { batch, writer: Tally::default(), raw_fsync: Tally::default() };
        let dir = TempDir::new().expect("a temporary directory");
        let mut writer = open_writer(dir.path());
        let mut bookings = Bookings::new();

        // One batch first, to learn how many bytes the writer appends for it.
        let before = log_bytes(&dir.path().join("ledger"));
        commit(&mut writer, &bookings.batch(batch));
        let batch_bytes = log_bytes(&dir.path().join("ledger")) - before;

        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::new("writer", batch), |b| {
            b.iter_custom(|iters| {
                let elapsed = (0..iters).map(|_| commit(&mut writer, &bookings.batch(batch))).sum();
                tally.writer.add(iters * batch, elapsed)
            })
        });
        drop(writer);

        let payload = vec![0xA5; batch_bytes as usize];
        let path = dir.path().join("raw");
        let mut file = OpenOptions::new().create(true).append(true).open(&path).expect("creating the raw file");
        group.bench_function(BenchmarkId::new("raw_fsync", batch), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    file.write_all(&payload).and_then(|()| file.sync_data()).expect("writing the raw file");
                }
                tally.raw_fsync.add(iters * batch, started.elapsed())
            })
        });
        tallies.push(tally);
    }
    group.finish();
    tallies
}

struct RecoverTallies {
    events: u64,
    built_in: Duration,
    recover: Tally,
    read_only: Tally,
}

fn bench_recover(criterion: &mut Criterion) -> RecoverTallies {
    let dir = TempDir::new().expect("a temporary directory");
    let started = Instant::now();
    let mut writer = open_writer(dir.path());
    let mut bookings = Bookings::new();
    while bookings.next < RECOVER_BOOKINGS {
        commit(&mut writer, &bookings.batch(RECOVER_BATCH.min(RECOVER_BOOKINGS - bookings.next)));
    }
    drop(writer);
    let built_in = started.elapsed();

    let ledger_dir = dir.path().join("ledger");
    let (log, responses) = (open_log(&ledger_dir), open_log(&dir.path().join("responses")));
    let events = log.position_next() - 1;
    let mut tallies = RecoverTallies { events, built_in, recover: Tally::default(), read_only: Tally::default() };

    let mut group = criterion.benchmark_group("recover");
    // One recovery of a million events takes seconds: each sample is one recovery, and
    // criterion warns that its 10 samples overrun the window. That is expected.
    group.sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(events)).measurement_time(Duration::from_secs(15));
    group.bench_function("recover", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let recovered = replay::recover(&log, &responses, Rules::default(), Utc::now()).expect("recovering the ledger");
                elapsed += started.elapsed();
                assert_eq!(recovered.events, events);
            }
            tallies.recover.add(iters * events, elapsed)
        })
    });
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("read_only", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let mut read = 0;
                let mut tail = log::Tail::new(&ledger_dir, 1);
                while tail
                    .read(events, 1 << 16, &mut |_, _, _| {
                        read += 1;
                        ControlFlow::Continue(())
                    })
                    .expect("reading the ledger")
                    > 0
                {}
                assert_eq!(read, events);
            }
            tallies.read_only.add(iters * events, started.elapsed())
        })
    });
    group.finish();
    tallies
}

fn rate(tally: &Tally) -> String {
    tally.per_second().map_or("-".into(), |r| format!("{r:.0}"))
}

fn ratio(numerator: &Tally, denominator: &Tally) -> String {
    numerator.per_second().zip(denominator.per_second()).map_or("-".into(), |(n, d)| format!("{:.3}", n / d))
}

fn print_summary(commits: &[CommitTallies], replay: &RecoverTallies) {
    println!();
    println!("summary: all elements / all time over every timed iteration above (warm-up included)");
    println!();
    println!("{:>6}  {:>14}  {:>16}  {:>10}", "batch", "writer cmd/s", "raw fsync cmd/s", "writer/raw");
    for c in commits {
        println!("{:>6}  {:>14}  {:>16}  {:>10}", c.batch, rate(&c.writer), rate(&c.raw_fsync), ratio(&c.writer, &c.raw_fsync));
    }
    println!();
    println!("recovery of {} events (ledger written at batch {RECOVER_BATCH} in {:.1} s)", replay.events, replay.built_in.as_secs_f64());
    println!("{:>24}  {:>12}", "recover events/s", rate(&replay.recover));
    println!("{:>24}  {:>12}", "read-only events/s", rate(&replay.read_only));
    println!("{:>24}  {:>12}", "recover/read-only", ratio(&replay.recover, &replay.read_only));
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let commits = bench_commit(&mut criterion);
    let replay = bench_recover(&mut criterion);
    criterion.final_summary();
    print_summary(&commits, &replay);
}
