//! Deterministic simulation of the writer under storage faults and crashes.
//!
//! From a seed, each schedule runs a random sequence of batches of commands
//! (schedules, bookings, cancellations, communities, repeats of keyed
//! commands), with faults injected into the log's writes and syncs, re-opens
//! (some failing) and crashes (the writer dropped and the state recovered
//! from what is on the disk, sometimes after a power loss took the unsynced
//! bytes). After every recovery it checks: every acknowledged command is
//! there with its answer, no slot has two active bookings, no token or slug
//! was issued twice, and the published state is what the disk holds; a keyed
//! command caught in a failed batch, repeated, is replayed if and only if it
//! took effect, and executes once otherwise.
//!
//! Two disks: the in-memory log (fast, thousands of schedules) and the file
//! log on a `FaultyDisk` in a temporary directory (torn records, lost pages,
//! segment rolls). A failing schedule prints its seed:
//! `LEDGER_SIM_SEED=<seed> LEDGER_SIM_SCHEDULES=1 cargo test --lib simulation`
//! replays it. `LEDGER_SIM_SCHEDULES=N` runs N schedules per disk (defaults
//! below, a few seconds); without `LEDGER_SIM_SEED` the first seed is new each run.

use crate::replay::recover;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::core::{Action, BookingDetails, BookingKind, BookingStatus, Rules, Schedule};
use crate::log::{Fault, FaultyDisk, FileLog, FileLogOptions, MemoryLog};

const MEMORY_SCHEDULES: u64 = 2000;
const FILE_SCHEDULES: u64 = 40;
const STEPS_MAX: u64 = 40;

/// SplitMix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next(), self.next())
    }
}

struct SimClock;

thread_local! {
    /// Seconds since the simulation's start: each step moves its clock on
    /// (each simulation runs on its own thread, writer included).
    static SIM_SECONDS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// How far the clock moves each step: a 30 s hold outlives two steps, not three.
const STEP_SECS: i64 = 12;

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap() + chrono::Duration::seconds(SIM_SECONDS.with(std::cell::Cell::get))
    }
}

/// Answers that name what they did, so a stored answer can be checked against the state.
fn render(outcome: &Outcome) -> (u16, Vec<u8>) {
    match outcome {
        Ok(Reply::Booking { booking, .. }) => {
            (200, format!("booking {} {} {:?}", booking.details.booking_id, booking.token(), booking.status).into_bytes())
        }
        Ok(Reply::Community { community }) => (201, format!("community {} {}", community.community_id, community.slug).into_bytes()),
        Ok(_) => (200, b"ok".to_vec()),
        Err(rejection) => (409, rejection.code().as_bytes().to_vec()),
    }
}

/// Where the logs live, and how they fail.
trait Disk {
    /// Fresh handles on the ledger and the responses journal, as a start-up opens them.
    fn open(&mut self) -> (Box<dyn Log>, Box<dyn Log>);
    /// Handles to read what is on the disk with, faults aside.
    fn inspect(&mut self) -> (Box<dyn Log>, Box<dyn Log>) {
        self.open()
    }
    /// Arms a random fault in the writes, syncs or re-opens to come.
    fn arm(&mut self, rng: &mut Rng);
    fn disarm(&mut self);
    /// What a crash does to the disk beyond dropping the process.
    fn crash(&mut self, rng: &mut Rng);
}

#[derive(Default)]
struct Memory {
    ledger: MemoryLog,
    responses: MemoryLog,
}

impl Disk for Memory {
    fn open(&mut self) -> (Box<dyn Log>, Box<dyn Log>) {
        (Box::new(self.ledger.restart()), Box::new(self.responses.restart()))
    }

    fn arm(&mut self, rng: &mut Rng) {
        let log = if rng.chance(75) { &self.ledger } else { &self.responses };
        let mut faults = log.faults.lock();
        match rng.below(3) {
            0 => faults.fail_append_at = 1 + rng.below(6) as u32,
            _ => {
                faults.fail_sync_at = 1 + rng.below(3) as u32;
                faults.sync_keeps = rng.below(6) as usize;
            }
        }
        if rng.chance(30) {
            faults.reopen_fails = 1 + rng.below(3) as u32;
        }
    }

    fn disarm(&mut self) {
        for log in [&self.ledger, &self.responses] {
            *log.faults.lock() = Default::default();
        }
    }

    fn crash(&mut self, _: &mut Rng) {
        // The memory log's disk keeps exactly what a sync put there: a crash
        // loses what was appended and not synced, by dropping the handles.
    }
}

struct Files {
    dir: tempfile::TempDir,
    disk: Arc<FaultyDisk>,
}

impl Files {
    const OPTIONS: FileLogOptions = FileLogOptions { segment_bytes_max: 2048 };

    fn new() -> Files {
        Files { dir: tempfile::tempdir().unwrap(), disk: Arc::new(FaultyDisk::new()) }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Disk for Files {
    fn open(&mut self) -> (Box<dyn Log>, Box<dyn Log>) {
        let open =
            |name: &str| -> Box<dyn Log> { Box::new(FileLog::open_on(&self.path(name), Files::OPTIONS, self.disk.clone()).unwrap().0) };
        (open("ledger"), open("responses"))
    }

    fn inspect(&mut self) -> (Box<dyn Log>, Box<dyn Log>) {
        let open = |name: &str| -> Box<dyn Log> { Box::new(FileLog::open(&self.path(name), Files::OPTIONS).unwrap().0) };
        (open("ledger"), open("responses"))
    }

    fn arm(&mut self, rng: &mut Rng) {
        const EIO: i32 = 5;
        const ENOSPC: i32 = 28;
        let errno = if rng.chance(50) { EIO } else { ENOSPC };
        let fault = match rng.below(4) {
            0 => Fault::ShortWrite { bytes: 1 + rng.below(200) as usize },
            1 => Fault::FailWrite { bytes: rng.below(400) as usize, errno },
            _ => Fault::FailSync { errno, kept: if rng.chance(30) { None } else { Some(rng.below(500)) } },
        };
        self.disk.arm(fault, rng.below(3) as u32);
    }

    fn disarm(&mut self) {
        self.disk.disarm();
    }

    fn crash(&mut self, rng: &mut Rng) {
        if rng.chance(50) {
            // A power loss: of each segment's unsynced bytes, a random prefix stays.
            let mut keep = Rng(rng.next());
            self.disk.lose_unsynced(|_, unsynced| keep.below(unsynced + 1));
        }
    }
}

/// A keyed command's scope and fingerprint, and the status and body it was answered.
type StoredAnswer = (Scope, [u8; 32], u16, Arc<[u8]>);

/// What the clients were told, and so what must hold after any recovery.
#[derive(Default)]
struct Acknowledged {
    /// Bookings acknowledged as created: their token and where they are.
    booked: BTreeMap<Uuid, String>,
    /// Bookings acknowledged as cancelled.
    cancelled: BTreeSet<Uuid>,
    /// Communities acknowledged, by id: their slug.
    communities: BTreeMap<Uuid, String>,
    /// Stored answers acknowledged to keyed commands.
    stored: Vec<StoredAnswer>,
    commands: u64,
}

impl Acknowledged {
    fn record(&mut self, command: &Command, answer: &Answer) {
        self.commands += 1;
        let body = match answer {
            Answer::Fresh(outcome) => render(outcome).1,
            Answer::Stored { status, body, .. } => {
                let key = command.idempotency.as_ref().expect("a stored answer has a key");
                let scope = Scope { tenant: command.tenant.clone(), actor: command.actor.clone(), key: key.key.clone() };
                self.stored.push((scope, key.fingerprint, *status, body.clone()));
                body.to_vec()
            }
        };
        let body = String::from_utf8(body).unwrap();
        let words: Vec<&str> = body.split(' ').collect();
        match (&command.action, &words[..]) {
            (Action::Book(_), ["booking", id, token, "Confirmed"]) => {
                self.booked.insert(id.parse().unwrap(), token.to_string());
            }
            (Action::ConfirmHold { .. }, ["booking", id, token, "Confirmed"]) => {
                self.booked.insert(id.parse().unwrap(), token.to_string());
            }
            (Action::Cancel { .. }, ["booking", id, _, "Cancelled"]) => {
                self.cancelled.insert(id.parse().unwrap());
            }
            (Action::CreateCommunity { .. }, ["community", id, slug]) => {
                self.communities.insert(id.parse().unwrap(), slug.to_string());
            }
            _ => {}
        }
    }

    /// The invariants, checked against a state recovered or re-opened.
    fn check(&self, state: &State, when: &str) {
        let now = SimClock.now();
        let tenant = state.tenants.get("t");
        let bookings = tenant.map(|t| &t.bookings);
        for (id, token) in &self.booked {
            let booking = bookings.and_then(|b| b.get(id)).unwrap_or_else(|| panic!("{when}: acknowledged booking {id} lost"));
            assert_eq!(&booking.token(), token, "{when}: booking {id} changed its token");
            if self.cancelled.contains(id) {
                assert_eq!(booking.status, BookingStatus::Cancelled, "{when}: acknowledged cancellation of {id} lost");
            }
        }
        let mut held = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        for booking in bookings.into_iter().flat_map(|b| b.values()) {
            let d = &booking.details;
            if booking.status == BookingStatus::Confirmed {
                let slot = (d.clinic.clone(), d.doctor.clone(), d.date, d.slot);
                assert!(held.insert(slot.clone()), "{when}: two active bookings of {slot:?}");
            }
            let token = (d.clinic.clone(), d.doctor.clone(), d.date, booking.token());
            assert!(tokens.insert(token.clone()), "{when}: token {token:?} issued twice");
        }
        let communities = tenant.map(|t| &t.communities);
        for (id, slug) in &self.communities {
            let community = communities.and_then(|c| c.get(slug.as_str())).unwrap_or_else(|| panic!("{when}: community {slug} lost"));
            assert_eq!(&community.community_id, id, "{when}: slug {slug} given to another community");
        }
        let ids: BTreeSet<_> = communities.into_iter().flat_map(|c| c.values()).map(|c| c.community_id).collect();
        assert_eq!(ids.len(), communities.map_or(0, |c| c.len()), "{when}: a community holds two slugs");
        for (scope, fingerprint, status, body) in &self.stored {
            match state.idempotency.check(scope, fingerprint, now, state.rules.idempotency_retention) {
                IdempotencyCheck::Repeat(stored) => {
                    assert_eq!((stored.status, &stored.body), (*status, body), "{when}: the stored answer of {scope:?} changed")
                }
                other => panic!("{when}: the acknowledged answer of {scope:?} is gone: {other:?}"),
            }
        }
    }
}

struct Sim<D: Disk> {
    rng: Rng,
    disk: D,
    writer: Writer,
    acknowledged: Acknowledged,
    /// Keyed commands whose batch failed: their outcome is unknown until repeated.
    unknown: Vec<Command>,
    /// Keyed commands acknowledged, to repeat.
    keyed: Vec<Command>,
    bookings: Vec<Uuid>,
    /// Holds asked for (placed or not), to confirm or release.
    holds: Vec<Uuid>,
    keys: u64,
    /// Counts, for the report.
    faults: u64,
    recoveries: u64,
    crashes: u64,
}

fn new_writer(log: Box<dyn Log>, responses: Box<dyn Log>) -> Writer {
    let now = SimClock.now();
    let state = recover(log.as_ref(), responses.as_ref(), Rules::default(), now).expect("recovering from the disk").state;
    Writer::new(log, responses, state, render, Arc::new(SimClock), WriterConfig::default(), Arc::new(Metrics::new()))
}

fn date(day: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 2 + day as u32).unwrap()
}

impl<D: Disk> Sim<D> {
    fn new(seed: u64, mut disk: D) -> Sim<D> {
        SIM_SECONDS.with(|s| s.set(0));
        let (log, responses) = disk.open();
        Sim {
            rng: Rng(seed),
            disk,
            writer: new_writer(log, responses),
            acknowledged: Acknowledged::default(),
            unknown: Vec::new(),
            keyed: Vec::new(),
            bookings: Vec::new(),
            holds: Vec::new(),
            keys: 0,
            faults: 0,
            recoveries: 0,
            crashes: 0,
        }
    }

    fn command(&mut self, action: Action) -> Command {
        let idempotency = self.rng.chance(50).then(|| {
            self.keys += 1;
            core::IdempotencyKey { key: format!("k{}", self.keys).into(), fingerprint: [self.rng.below(256) as u8; 32] }
        });
        Command { tenant: "t".into(), actor: "web".into(), request_id: "r".into(), idempotency, action }
    }

    fn random_command(&mut self) -> Command {
        let rng = &mut self.rng;
        match rng.below(13) {
            0 => {
                let doctor = format!("d{}", rng.below(2));
                let slots_per_day = 3 + rng.below(4) as u32;
                self.command(Action::SetSchedule {
                    clinic: "c".into(),
                    doctor: doctor.into(),
                    schedule: Schedule { slots_per_day, first_slot_minute: None, slot_minutes: None },
                })
            }
            1..=5 => {
                let booking_id = rng.uuid();
                self.bookings.push(booking_id);
                let kind = if rng.chance(20) { BookingKind::WalkIn } else { BookingKind::Advance };
                let details = BookingDetails {
                    booking_id,
                    clinic: "c".into(),
                    doctor: format!("d{}", rng.below(2)).into(),
                    date: date(rng.below(2)),
                    slot: rng.below(6) as u32,
                    patient: "p".into(),
                    kind,
                    external: crate::core::External::boxed(None, None, None),
                };
                self.command(Action::Book(details))
            }
            6 | 7 if !self.bookings.is_empty() => {
                let booking_id = self.bookings[rng.below(self.bookings.len() as u64) as usize];
                self.command(Action::Cancel { booking_id, reason: None })
            }
            8 if !self.keyed.is_empty() => self.keyed[rng.below(self.keyed.len() as u64) as usize].clone(),
            10 => {
                let hold_id = rng.uuid();
                self.holds.push(hold_id);
                let hold = crate::core::HoldDetails {
                    hold_id,
                    clinic: "c".into(),
                    doctor: format!("d{}", rng.below(2)).into(),
                    date: date(rng.below(2)),
                    slot: rng.below(6) as u32,
                    patient: Some("h".into()),
                    patient_id: None,
                    entry_id: None,
                };
                self.command(Action::Hold { hold, ttl_secs: 30 })
            }
            11 | 12 if !self.holds.is_empty() => {
                let hold_id = self.holds[rng.below(self.holds.len() as u64) as usize];
                if rng.chance(70) {
                    let booking_id = rng.uuid();
                    self.bookings.push(booking_id);
                    self.command(Action::ConfirmHold { hold_id, booking_id, patient: None, patient_id: None, kind: None })
                } else {
                    self.command(Action::ReleaseHold { hold_id })
                }
            }
            _ => {
                let name = format!("Club {}", rng.below(3));
                let community_id = rng.uuid();
                self.command(Action::CreateCommunity { community_id, name: name.into(), owner: "o".into(), plan: "p".into() })
            }
        }
    }

    fn step(&mut self, when: &str) {
        SIM_SECONDS.with(|s| s.set(s.get() + STEP_SECS));
        let mut commands: Vec<Command> = std::mem::take(&mut self.unknown);
        let repeats = commands.len();
        for _ in 0..1 + self.rng.below(8) {
            let command = self.random_command();
            commands.push(command);
        }
        if self.rng.chance(15) {
            self.disk.arm(&mut self.rng);
        }
        let before = self.writer.published.read().clone();
        match self.writer.commit(&commands) {
            Ok(answers) => {
                for (index, (command, answer)) in commands.iter().zip(answers).enumerate() {
                    let answer = answer.unwrap_or_else(|e| panic!("{when}: {e}"));
                    if index < repeats {
                        self.check_resolved(&before, command, &answer, when);
                    }
                    if command.idempotency.is_some() {
                        self.keyed.push(command.clone());
                    }
                    self.acknowledged.record(command, &answer);
                }
                assert_eq!(*self.writer.published.read(), self.writer.working, "{when}: the copies agree after a batch");
                // The batch began by expiring every hold due by its clock: none outlives it.
                let now = SimClock.now();
                for hold in self.writer.working.tenants.values().flat_map(|t| t.holds.values()) {
                    assert!(
                        hold.status != crate::core::HoldStatus::Held || hold.expires_at > now,
                        "{when}: hold {} held past its expiry",
                        hold.details.hold_id
                    );
                }
            }
            Err(_) => {
                self.faults += 1;
                // Nothing was acknowledged; the keyed ones are repeated (each
                // key once) once storage is back.
                let mut keys = BTreeSet::new();
                self.unknown =
                    commands.into_iter().filter(|c| c.idempotency.as_ref().is_some_and(|key| keys.insert(key.key.clone()))).collect();
                assert_eq!(*self.writer.published.read(), before, "{when}: nothing of a failed batch is published");
                if self.rng.chance(70) { self.reopen(when) } else { self.crash(when) }
            }
        }
    }

    /// A keyed command of a failed batch, repeated: replayed if and only if
    /// it took effect, executed now otherwise; either way there once.
    fn check_resolved(&self, before: &State, command: &Command, answer: &Answer, when: &str) {
        let Answer::Stored { repeated, .. } = answer else { panic!("{when}: a keyed command answered {answer:?}") };
        let key = command.idempotency.as_ref().unwrap();
        let scope = Scope { tenant: command.tenant.clone(), actor: command.actor.clone(), key: key.key.clone() };
        let held = matches!(
            before.idempotency.check(&scope, &key.fingerprint, SimClock.now(), before.rules.idempotency_retention),
            IdempotencyCheck::Repeat(_)
        );
        if let Action::Book(details) = &command.action {
            let existed = before.tenants.get("t").is_some_and(|t| t.bookings.contains_key(&details.booking_id));
            if existed {
                assert!(*repeated, "{when}: booking {} reached the disk but its keyed repeat executed again", details.booking_id);
            }
        }
        assert_eq!(*repeated, held, "{when}: a repeat is replayed exactly when its answer is stored");
    }

    /// Re-opens until it works (some re-opens are armed to fail); a permanent
    /// failure is left to a restart.
    fn reopen(&mut self, when: &str) {
        for _ in 0..8 {
            if self.rng.chance(20) {
                self.disk.disarm();
            }
            match self.writer.reopen() {
                Ok(()) => {
                    self.recoveries += 1;
                    assert_eq!(*self.writer.published.read(), self.writer.working, "{when}: working rebuilt from published");
                    let (log, responses) = self.disk.inspect();
                    let on_disk = recover(log.as_ref(), responses.as_ref(), Rules::default(), SimClock.now()).unwrap().state;
                    assert_eq!(on_disk, *self.writer.published.read(), "{when}: the re-opened writer publishes what the disk holds");
                    self.acknowledged.check(&self.writer.published.read(), when);
                    return;
                }
                Err(failure) if failure.permanent => break,
                Err(_) => {}
            }
        }
        self.crash(when);
    }

    /// Drops the writer (and what it had not synced), does to the disk what a
    /// crash may, and starts again from what is there.
    fn crash(&mut self, when: &str) {
        self.crashes += 1;
        self.disk.disarm();
        self.disk.crash(&mut self.rng);
        let (log, responses) = self.disk.open();
        self.writer = new_writer(log, responses);
        self.acknowledged.check(&self.writer.published.read(), &format!("{when} (after a crash)"));
    }

    fn run(&mut self) {
        let steps = 5 + self.rng.below(STEPS_MAX);
        for step in 0..steps {
            let when = format!("step {step}");
            if self.rng.chance(5) {
                self.crash(&when);
            }
            self.step(&when);
        }
        self.disk.disarm();
        if self.writer.failed {
            self.reopen("the end");
        }
        let before = self.writer.published.read().clone();
        let unknown = std::mem::take(&mut self.unknown);
        let answers = self.writer.commit(&unknown).expect("a disarmed disk");
        for (command, answer) in unknown.iter().zip(answers) {
            let answer = answer.unwrap();
            self.check_resolved(&before, command, &answer, "the end");
            self.acknowledged.record(command, &answer);
        }
        self.crash("the end");
    }
}

struct Totals {
    schedules: u64,
    commands: u64,
    faults: u64,
    recoveries: u64,
    crashes: u64,
}

fn simulate<D: Disk>(name: &str, schedules_default: u64, disk: impl Fn() -> D) {
    let schedules = std::env::var("LEDGER_SIM_SCHEDULES").ok().map_or(schedules_default, |n| n.parse().expect("LEDGER_SIM_SCHEDULES"));
    let first = std::env::var("LEDGER_SIM_SEED").ok().map_or_else(
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        |s| s.parse().expect("LEDGER_SIM_SEED"),
    );
    let mut totals = Totals { schedules: 0, commands: 0, faults: 0, recoveries: 0, crashes: 0 };
    for seed in first..first.wrapping_add(schedules) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sim = Sim::new(seed, disk());
            sim.run();
            (sim.acknowledged.commands, sim.faults, sim.recoveries, sim.crashes)
        }));
        match ran {
            Ok((commands, faults, recoveries, crashes)) => {
                totals.schedules += 1;
                totals.commands += commands;
                totals.faults += faults;
                totals.recoveries += recoveries;
                totals.crashes += crashes;
            }
            Err(panic) => {
                eprintln!(
                    "simulation on the {name} disk failed at seed {seed}; replay it with \
                     LEDGER_SIM_SEED={seed} LEDGER_SIM_SCHEDULES=1 cargo test --lib writer::simulation::{name}"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "simulation on the {name} disk: {} schedules from seed {first}, {} commands acknowledged, {} failed batches, \
         {} re-opens, {} crashes",
        totals.schedules, totals.commands, totals.faults, totals.recoveries, totals.crashes
    );
    assert!(totals.faults > 0 && totals.recoveries > 0 && totals.crashes > 0, "the simulation exercised no fault");
}

#[test]
fn memory() {
    simulate("memory", MEMORY_SCHEDULES, Memory::default);
}

#[test]
fn files() {
    simulate("files", FILE_SCHEDULES, Files::new);
}
