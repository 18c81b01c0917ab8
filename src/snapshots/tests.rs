//! Snapshots against the recovery they shortcut: a ledger with every event
//! type and stored answers in both logs, written by the real writer to real
//! files; a snapshot taken at every position, loaded and followed by the tail,
//! gives the state a recovery from the whole log gives. The read side's
//! checkpoint likewise gives the answers indexing the whole log gives.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Duration, TimeZone, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use super::*;
use crate::core::{Action, BookingDetails, BookingKind, CallState, Command, IdempotencyKey, Schedule, Text};
use crate::log::events::EventReader;
use crate::log::{FileLog, FileLogOptions};
use crate::writer::{Clock, Outcome, Writer, WriterConfig};

/// A clock the test moves.
struct SetClock(Mutex<DateTime<Utc>>);

impl Clock for SetClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

/// Every answer distinct per outcome, so that stored answers are told apart.
fn render(outcome: &Outcome) -> (u16, Vec<u8>) {
    let status = if outcome.is_ok() { 200 } else { 409 };
    (status, format!("{outcome:?}").into_bytes())
}

fn dirs(root: &Path) -> Dirs {
    Dirs { ledger: root.join("ledger"), responses: root.join("responses"), snapshots: root.join("snapshots") }
}

/// Small segments, so that snapshots end in every part of a segment.
const LOG_OPTIONS: FileLogOptions = FileLogOptions { segment_bytes_max: 4096 };

fn open(dir: &Path) -> FileLog {
    FileLog::open(dir, LOG_OPTIONS).unwrap().0
}

/// A deterministic mix of every command, in two tenants, some keyed (so that
/// answers are stored with events, in the responses journal, repeated and
/// refused), the clock moving minutes to hours between batches.
struct Script {
    seed: u64,
    next_id: u128,
    /// Booking ids, claim ids (with their business), call ids, handed out so far.
    bookings: Vec<(Text, Uuid)>,
    claims: Vec<(Text, Text, Uuid)>,
    calls: Vec<(Text, Uuid)>,
    holds: Vec<(Text, Uuid)>,
    entries: Vec<(Text, Uuid)>,
}

impl Script {
    fn random(&mut self, below: u64) -> u64 {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.seed >> 33) % below
    }

    fn id(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(self.next_id)
    }

    fn command(&mut self, now: DateTime<Utc>) -> Command {
        let tenant: Text = if self.random(4) == 0 { "other".into() } else { "kloqo".into() };
        let pick = |s: &mut Script, items: usize| s.random(items.max(1) as u64) as usize;
        let action = match self.random(24) {
            0 => Action::SetSchedule {
                clinic: format!("c{}", self.random(2)).into(),
                doctor: format!("d{}", self.random(2)).into(),
                schedule: Schedule { slots_per_day: 2 + self.random(3) as u32, first_slot_minute: Some(540), slot_minutes: Some(15) },
            },
            1..=4 => {
                let id = self.id();
                let external = self.random(3) == 0;
                let details = BookingDetails {
                    booking_id: id,
                    clinic: format!("c{}", self.random(2)).into(),
                    doctor: format!("d{}", self.random(2)).into(),
                    date: chrono::NaiveDate::from_ymd_opt(2026, 3, 2 + self.random(2) as u32).unwrap(),
                    slot: self.random(4) as u32,
                    patient: format!("patient {id}").into(),
                    kind: if self.random(2) == 0 { BookingKind::Advance } else { BookingKind::WalkIn },
                    external: crate::core::External::boxed(
                        external.then(|| format!("ext-{}", self.random(3)).into()),
                        external.then(|| format!("corr-{}", self.random(2)).into()),
                        external.then(|| now - Duration::seconds(self.random(40) as i64)),
                    ),
                };
                self.bookings.push((tenant.clone(), id));
                Action::Book(details)
            }
            5 => {
                let index = pick(self, self.bookings.len());
                let (_, booking_id) = self.bookings.get(index).cloned().unwrap_or(("".into(), Uuid::nil()));
                Action::Cancel { booking_id, reason: (self.random(2) == 0).then(|| "moved".into()) }
            }
            6 => {
                let business: Text = format!("b{}", self.random(3)).into();
                let claim_id = self.id();
                self.claims.push((tenant.clone(), business.clone(), claim_id));
                Action::ClaimPhone { business, claim_id }
            }
            7 | 8 => {
                let index = pick(self, self.claims.len());
                let (_, business, claim_id) = self.claims.get(index).cloned().unwrap_or(("".into(), "b0".into(), Uuid::nil()));
                if self.random(3) == 0 {
                    Action::FailPhone { business, claim_id, reason: "carrier down".into() }
                } else {
                    let number = self.random(3);
                    Action::CompletePhone {
                        business,
                        claim_id,
                        phone_number: format!("+1424324211{number}").into(),
                        provider_sid: format!("PN{number}").into(),
                    }
                }
            }
            9 => Action::ReleasePhone { business: format!("b{}", self.random(3)).into(), reason: None },
            10 | 11 => {
                let call_id = self.id();
                self.calls.push((tenant.clone(), call_id));
                Action::StartCall {
                    call_id,
                    campaign: format!("camp{}", self.random(2)).into(),
                    to: format!("+1646555000{}", self.random(3)).into(),
                }
            }
            12 => {
                let index = pick(self, self.calls.len());
                let (_, call_id) = self.calls.get(index).cloned().unwrap_or(("".into(), Uuid::nil()));
                let outcome = [CallState::Failed, CallState::Failed, CallState::BadNumber, CallState::Completed, CallState::NoAnswer]
                    [self.random(5) as usize];
                Action::RecordOutcome { call_id, outcome }
            }
            13 => Action::ResumeCampaign { campaign: format!("camp{}", self.random(2)).into(), reason: "checked".into() },
            14 => Action::BlockNumber { number: format!("+1646555000{}", self.random(4)).into(), reason: "asked".into() },
            16 => {
                let hold_id = self.id();
                self.holds.push((tenant.clone(), hold_id));
                let named = self.random(2) == 0;
                let hold = crate::core::HoldDetails {
                    hold_id,
                    clinic: format!("c{}", self.random(2)).into(),
                    doctor: format!("d{}", self.random(2)).into(),
                    date: chrono::NaiveDate::from_ymd_opt(2026, 3, 2 + self.random(2) as u32).unwrap(),
                    slot: self.random(4) as u32,
                    patient: named.then(|| format!("patient {hold_id}").into()),
                    patient_id: named.then(|| format!("p-{}", self.random(3)).into()),
                    entry_id: None,
                };
                // Some expire before the next batch (5 minutes on at least), some outlive it.
                Action::Hold { hold, ttl_secs: [30, 300, 3600][self.random(3) as usize] }
            }
            17 => {
                let index = pick(self, self.holds.len());
                let (_, hold_id) = self.holds.get(index).cloned().unwrap_or(("".into(), Uuid::nil()));
                let patient = (self.random(2) == 0).then(|| "walk-in patient".into());
                Action::ConfirmHold { hold_id, booking_id: self.id(), patient, patient_id: None, kind: None }
            }
            18 => {
                let index = pick(self, self.holds.len());
                let (_, hold_id) = self.holds.get(index).cloned().unwrap_or(("".into(), Uuid::nil()));
                Action::ReleaseHold { hold_id }
            }
            19 => {
                let index = pick(self, self.bookings.len());
                let (_, booking_id) = self.bookings.get(index).cloned().unwrap_or(("".into(), Uuid::nil()));
                let to = crate::core::Move {
                    doctor: (self.random(2) == 0).then(|| format!("d{}", self.random(2)).into()),
                    date: (self.random(2) == 0).then(|| chrono::NaiveDate::from_ymd_opt(2026, 3, 2 + self.random(2) as u32).unwrap()),
                    slot: self.random(4) as u32,
                    expected_version: (self.random(3) == 0).then(|| 1 + self.random(3) as u32),
                };
                Action::Reschedule { booking_id, to }
            }
            20 => {
                let index = pick(self, self.bookings.len());
                let (_, booking_id) = self.bookings.get(index).cloned().unwrap_or(("".into(), Uuid::nil()));
                let attendance = if self.random(2) == 0 { crate::core::Attendance::Arrived } else { crate::core::Attendance::NoShow };
                Action::MarkAttendance { booking_id, attendance, correct: self.random(2) == 0 }
            }
            22 => {
                let entry_id = self.id();
                self.entries.push((tenant.clone(), entry_id));
                Action::JoinWaitlist(crate::core::EntryDetails {
                    entry_id,
                    clinic: format!("c{}", self.random(2)).into(),
                    date: chrono::NaiveDate::from_ymd_opt(2026, 3, 2 + self.random(2) as u32).unwrap(),
                    doctor: (self.random(2) == 0).then(|| format!("d{}", self.random(2)).into()),
                    patient: format!("waiting {entry_id}").into(),
                    patient_id: None,
                })
            }
            23 => {
                let index = pick(self, self.entries.len());
                let (_, entry_id) = self.entries.get(index).cloned().unwrap_or(("".into(), Uuid::nil()));
                Action::WithdrawEntry { entry_id }
            }
            21 => {
                let zone = ["Asia/Kolkata", "Europe/Berlin", "UTC"][self.random(3) as usize];
                Action::SetClinicZone { clinic: format!("c{}", self.random(2)).into(), zone: zone.parse().unwrap() }
            }
            _ => {
                let name = ["My Club", "my club!", "My Club 1", "Other"][self.random(4) as usize];
                Action::CreateCommunity { community_id: self.id(), name: name.into(), owner: "asha".into(), plan: "pro".into() }
            }
        };
        let idempotency = (self.random(3) == 0)
            .then(|| IdempotencyKey { key: format!("key-{}", self.random(12)).into(), fingerprint: [self.random(2) as u8; 32] });
        Command { tenant, actor: "web".into(), request_id: format!("req-{}", self.next_id).into(), idempotency, action }
    }
}

/// Batches that make sure every event type is in the ledger, whatever the script does.
fn prologue() -> Vec<Vec<Command>> {
    let command = |action, key: Option<&str>| Command {
        tenant: "kloqo".into(),
        actor: "web".into(),
        request_id: "prologue".into(),
        idempotency: key.map(|key| IdempotencyKey { key: key.into(), fingerprint: [9; 32] }),
        action,
    };
    let id = |n: u128| Uuid::from_u128(1 << 100 | n);
    let booking = BookingDetails {
        booking_id: id(1),
        clinic: "c0".into(),
        doctor: "d0".into(),
        date: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
        slot: 0,
        patient: "Asha".into(),
        kind: BookingKind::Advance,
        external: crate::core::External::boxed(None, None, None),
    };
    let call = |n, to: &str| Action::StartCall { call_id: id(n), campaign: "prologue".into(), to: to.into() };
    let join = |n, patient: &str| {
        Action::JoinWaitlist(crate::core::EntryDetails {
            entry_id: id(n),
            clinic: "c0".into(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            doctor: None,
            patient: patient.into(),
            patient_id: None,
        })
    };
    let hold = |n, slot| Action::Hold {
        hold: crate::core::HoldDetails {
            hold_id: id(n),
            clinic: "c0".into(),
            doctor: "d0".into(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            slot,
            patient: Some("Ravi".into()),
            patient_id: None,
            entry_id: None,
        },
        ttl_secs: 60,
    };
    vec![
        vec![command(
            Action::SetSchedule {
                clinic: "c0".into(),
                doctor: "d0".into(),
                schedule: Schedule { slots_per_day: 3, first_slot_minute: None, slot_minutes: None },
            },
            None,
        )],
        vec![
            command(Action::Book(booking.clone()), Some("prologue-book")),
            command(Action::Book(booking.clone()), Some("prologue-refused")),
        ],
        vec![command(Action::Cancel { booking_id: id(1), reason: Some("moved".into()) }, None)],
        vec![
            command(Action::ClaimPhone { business: "px".into(), claim_id: id(2) }, None),
            command(Action::FailPhone { business: "px".into(), claim_id: id(2), reason: "carrier down".into() }, None),
            command(Action::ClaimPhone { business: "py".into(), claim_id: id(3) }, None),
            command(
                Action::CompletePhone {
                    business: "py".into(),
                    claim_id: id(3),
                    phone_number: "+15550001".into(),
                    provider_sid: "PN1".into(),
                },
                None,
            ),
        ],
        vec![command(Action::ReleasePhone { business: "py".into(), reason: None }, None)],
        vec![command(call(4, "+15550002"), None), command(call(5, "+15550002"), None), command(call(6, "+15550002"), None)],
        vec![
            command(Action::ResumeCampaign { campaign: "prologue".into(), reason: "checked".into() }, None),
            command(Action::RecordOutcome { call_id: id(4), outcome: CallState::BadNumber }, Some("prologue-outcome")),
        ],
        vec![command(
            Action::CreateCommunity { community_id: id(7), name: "My Club".into(), owner: "asha".into(), plan: "pro".into() },
            None,
        )],
        // Held and confirmed; held and released; held and left to expire (the clock moves 5 minutes or more a batch).
        vec![
            command(hold(8, 1), None),
            command(Action::ConfirmHold { hold_id: id(8), booking_id: id(9), patient: None, patient_id: None, kind: None }, None),
            command(hold(10, 2), None),
            command(Action::ReleaseHold { hold_id: id(10) }, None),
            command(hold(11, 2), None),
        ],
        // Moved (to slot 0, freed by the cancellation above); a booking of a past day marked.
        vec![
            command(
                Action::Reschedule {
                    booking_id: id(9),
                    to: crate::core::Move { doctor: None, date: None, slot: 0, expected_version: Some(1) },
                },
                None,
            ),
            command(
                Action::Book(BookingDetails {
                    booking_id: id(12),
                    date: chrono::NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
                    ..booking.clone()
                }),
                None,
            ),
            command(Action::MarkAttendance { booking_id: id(12), attendance: crate::core::Attendance::Arrived, correct: false }, None),
            command(Action::SetClinicZone { clinic: "c0".into(), zone: "Asia/Kolkata".parse().unwrap() }, None),
        ],
        // Three join the day's waitlist (offered what is free, or waiting); one withdraws.
        vec![
            command(join(13, "Kiran"), None),
            command(join(14, "Lena"), None),
            command(join(15, "Mo"), None),
            command(Action::WithdrawEntry { entry_id: id(15) }, None),
        ],
    ]
}

/// Writes a ledger of `batches` batches through the real writer; returns, for
/// each ledger position, the responses journal position as it stood when that
/// position became durable.
fn write_ledger(root: &Path, seed: u64, batches: usize) -> Vec<Position> {
    write_ledger_feeding(root, seed, batches, None, |_| {})
}

/// [`write_ledger`], the writer handing its batches to `feed`, and `after`
/// called after each batch with its number.
fn write_ledger_feeding(
    root: &Path,
    seed: u64,
    batches: usize,
    feed: Option<crate::log::events::Feed>,
    mut after: impl FnMut(usize),
) -> Vec<Position> {
    let dirs = dirs(root);
    let clock = Arc::new(SetClock(Mutex::new(t0())));
    let rules = Rules::default();
    let config = WriterConfig::default();
    let mut writer = Writer::new(
        Box::new(open(&dirs.ledger)),
        Box::new(open(&dirs.responses)),
        State::new(rules),
        render,
        clock.clone(),
        config,
        Arc::default(),
    );
    if let Some(feed) = feed {
        writer = writer.with_feed(feed);
    }
    let mut script =
        Script { seed, next_id: 0, bookings: Vec::new(), claims: Vec::new(), calls: Vec::new(), holds: Vec::new(), entries: Vec::new() };
    let mut responses_at = vec![0];
    let mut prologue = prologue().into_iter();
    for number in 0..batches {
        let now = clock.now();
        let commands = match prologue.next() {
            Some(commands) => commands,
            None => (0..1 + script.random(3)).map(|_| script.command(now)).collect(),
        };
        writer.commit(&commands).unwrap();
        let ledger_last = crate::log::last_position(&dirs.ledger).unwrap().unwrap_or(0);
        let responses_last = crate::log::last_position(&dirs.responses).unwrap().unwrap_or(0);
        responses_at.resize(ledger_last as usize + 1, responses_last);
        *clock.0.lock() += Duration::minutes(5 + script.random(120) as i64);
        after(number);
    }
    responses_at
}

fn full_recovery(dirs: &Dirs, now: DateTime<Utc>) -> State {
    crate::replay::recover(&open(&dirs.ledger), &open(&dirs.responses), Rules::default(), now).unwrap().state
}

fn start_up(dirs: &Dirs, now: DateTime<Utc>) -> StartUp {
    recover(&open(&dirs.ledger), &open(&dirs.responses), dirs, Rules::default(), now).unwrap()
}

fn event_kinds(dirs: &Dirs) -> BTreeSet<&'static str> {
    let mut kinds = BTreeSet::new();
    EventReader::new(&dirs.ledger, 1)
        .read_available(usize::MAX, &mut |event, _| {
            kinds.insert(event.kind.name());
            ControlFlow::Continue(())
        })
        .unwrap();
    kinds
}

#[test]
fn a_snapshot_at_every_position_plus_the_tail_is_the_state_of_the_whole_log() {
    for seed in [1] {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        let responses_at = write_ledger(root.path(), seed, 80);
        let last = responses_at.len() as Position - 1;
        assert_eq!(event_kinds(&dirs).len(), 23, "seed {seed}: every event type is in the ledger: {:?}", event_kinds(&dirs));
        let responses_last = *responses_at.last().unwrap();
        assert!(responses_last > 5, "seed {seed}: stored answers in the responses journal");
        // Just after the last batch, and a month later: answers expire at
        // different points of the ledger.
        let end = full_recovery(&dirs, t0()).recorded_at_last;
        let nows = [end + Duration::hours(1), end + Duration::days(30)];
        let full: Vec<State> = nows.iter().map(|now| full_recovery(&dirs, *now)).collect();
        assert!(!full[0].idempotency.is_empty() && full[1].idempotency.is_empty(), "seed {seed}: answers held, then expired");
        let stop = AtomicBool::new(false);

        // Each position on its own, with the responses journal as it stood then.
        for position in 0..=last {
            let responses = responses_at[position as usize];
            let taken = take_with(&dirs, Rules::default(), Through::Durable(position), Some(responses), 2, &stop).unwrap();
            assert_eq!((taken.base, taken.header.responses_position), (None, responses), "seed {seed}: position {position}");
            for (now, full) in nows.iter().zip(&full) {
                let started = start_up(&dirs, *now);
                assert_eq!(started.snapshot.as_ref().map(|(p, _)| *p), Some(position), "seed {seed}: position {position}");
                assert_eq!(started.recovered.events, last - position);
                assert_eq!(&started.recovered.state, full, "seed {seed}: snapshot at {position} plus the tail");
            }
            std::fs::remove_file(&taken.path).unwrap();
        }

        // Each from the one before, with every answer there is.
        for position in 0..=last {
            let taken = take(&dirs, Rules::default(), Through::Durable(position), 2, &stop).unwrap();
            assert_eq!(taken.base, position.checked_sub(1), "seed {seed}: built on the snapshot before");
            assert_eq!(taken.header.responses_position, responses_last);
            assert_eq!(snapshot::list_snapshots(&dirs.snapshots).unwrap().len(), (position as usize + 1).min(2), "two kept");
            let started = start_up(&dirs, nows[0]);
            assert_eq!(started.snapshot.map(|(p, _)| p), Some(position));
            assert_eq!(started.recovered.state, full[0], "seed {seed}: chained snapshot at {position} plus the tail");
        }
        // A state loaded from a snapshot shares each clinic's and doctor's name
        // among its bookings, as one built by `apply` does.
        let started = start_up(&dirs, nows[0]);
        let shared = started.recovered.state.tenants.values().flat_map(|t| {
            t.bookings.values().map(move |b| {
                let (clinic, c) = t.clinics.get_key_value(&b.details.clinic).unwrap();
                let (doctor, _) = c.doctors.get_key_value(&b.details.doctor).unwrap();
                Arc::ptr_eq(clinic, &b.details.clinic) && Arc::ptr_eq(doctor, &b.details.doctor)
            })
        });
        let (all, shared) = shared.fold((0, 0), |(all, shared), s| (all + 1, shared + usize::from(s)));
        assert!(all > 0 && shared == all, "seed {seed}: {shared} of {all} bookings share their names");
    }
}

#[test]
fn a_bad_snapshot_is_skipped_for_the_next_older_one() {
    let root = tempfile::tempdir().unwrap();
    let dirs = dirs(root.path());
    let responses_at = write_ledger(root.path(), 3, 40);
    let last = responses_at.len() as Position - 1;
    let now = t0() + Duration::days(30);
    let full = full_recovery(&dirs, now);
    let stop = AtomicBool::new(false);
    let older = take(&dirs, Rules::default(), Through::Durable(last / 2), 5, &stop).unwrap();
    let newer = take(&dirs, Rules::default(), Through::Durable(last - 1), 5, &stop).unwrap();
    let mut bytes = std::fs::read(&newer.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&newer.path, &bytes).unwrap();
    let started = start_up(&dirs, now);
    assert_eq!(started.snapshot.map(|(p, _)| p), Some(older.header.position));
    assert_eq!(started.recovered.state, full);
    let logs = Logs { ledger: &dirs.ledger, ledger_last: last, responses: &dirs.responses };
    assert_eq!(snapshot::check(&newer.path, last - 1, &logs, None), Err(snapshot::Fault::BodyChecksum));

    // Taken under another duplicate window: skipped, since `apply` counts refusals within it.
    let other = Rules { duplicate_window: Duration::minutes(5), ..Rules::default() };
    let state = recover(&open(&dirs.ledger), &open(&dirs.responses), &dirs, other, now).unwrap();
    assert_eq!(state.snapshot, None);
    assert_eq!(state.recovered.state, crate::replay::recover(&open(&dirs.ledger), &open(&dirs.responses), other, now).unwrap().state);
}

/// A snapshot that is not the state of its position (written by a bug) makes
/// the events after it break an invariant: start-up recovers from the first
/// event instead of refusing to serve a ledger that is fine.
#[test]
fn a_snapshot_that_is_not_its_positions_state_is_not_mistaken_for_a_bad_ledger() {
    let root = tempfile::tempdir().unwrap();
    let dirs = dirs(root.path());
    write_ledger(root.path(), 4, 40);
    let now = t0() + Duration::days(30);
    let full = full_recovery(&dirs, now);
    // An empty state under the position and links of the event before a
    // booking or a cancellation, which an empty state cannot take.
    let mut position = None;
    EventReader::new(&dirs.ledger, 2)
        .read_available(usize::MAX, &mut |event, _| {
            if matches!(event.kind.name(), "booking_created" | "booking_cancelled") {
                position = Some(event.position - 1);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let position = position.expect("a booking after the first event");
    let mut empty = State::new(Rules::default());
    empty.position = position;
    let link = record_hash_at(&dirs.ledger, position).unwrap().unwrap();
    let body = codec::encode_snapshot(&empty, 0);
    snapshot::write_snapshot(&dirs.snapshots, position, link, 0, crate::log::frame::GENESIS_HASH, &body).unwrap();
    let started = start_up(&dirs, now);
    assert_eq!(started.snapshot, None);
    assert_eq!(started.recovered.state, full);
}

/// The read side's checkpoint (`forensics::disk`) against the indexing it
/// shortcuts: started from a checkpoint at any position and fed the rest, the
/// clinic index and the live audit answer as those fed the whole log do:
/// every clinic day as of several positions, every day's history, every
/// tenant's audit; closed days' records read from the store.
#[test]
fn the_read_sides_checkpoint_plus_the_tail_answers_as_the_whole_log() {
    use crate::forensics::disk::ReadStore;
    use crate::forensics::follower::Indexes;
    let root = tempfile::tempdir().unwrap();
    let dirs = dirs(root.path());
    write_ledger(root.path(), 2, 80);
    let last = crate::log::last_position(&dirs.ledger).unwrap().unwrap();
    let rules = Rules::default();
    let days = clinic_days(&dirs);
    assert!(event_kinds(&dirs).contains("days_closed") && days.len() > 3, "{} days", days.len());
    let index = |indexes: &Indexes, upto| {
        let mut reader = EventReader::new(&dirs.ledger, indexes.indexed() + 1);
        indexes.index_through(&mut reader, upto).unwrap();
    };
    // The same reads of an index that keeps every day's records in memory
    // (`ledger slots`'s, offline), and of an audit of the whole log.
    let offline = crate::forensics::clinics::index_dir(&dirs.ledger, last).unwrap();
    let mut auditor = crate::forensics::audit::Auditor::new(rules, None).forgetting_closed_days();
    EventReader::new(&dirs.ledger, 1)
        .read_available(usize::MAX, &mut |event, _| {
            auditor.check(&event);
            ControlFlow::Continue(())
        })
        .unwrap();
    let mut expected = Vec::new();
    for (tenant, clinic, date) in &days {
        for as_of in [last / 3, last / 2, last] {
            expected.push(format!("{:?}", offline.plan(tenant, clinic, *date, None, as_of).run(&dirs.ledger).unwrap()));
        }
        expected.push(format!("{:?}", offline.history_plan(tenant, clinic, *date, None, last).run(&dirs.ledger).unwrap()));
    }
    expected.extend(["kloqo", "other"].map(|tenant| format!("{:?}", auditor.report_for(tenant))));
    let whole = Indexes::new(&dirs.ledger, rules);
    index(&whole, last);
    assert_eq!(read_side_answers(&whole, &days, last), expected, "the whole log indexed, closed days' records in the store");
    for at in (0..=last).step_by(3).chain([last]) {
        let store = Arc::new(ReadStore::in_memory());
        let first = Indexes::with_store(&dirs.ledger, rules, store.clone());
        index(&first, at);
        first.checkpoint().unwrap();
        let second = Indexes::with_store(&dirs.ledger, rules, store.clone());
        assert_eq!(second.restore(), at, "started from the checkpoint");
        index(&second, last);
        assert_eq!(read_side_answers(&second, &days, last), expected, "checkpoint at {at} plus the tail");
        let stored = days.iter().filter(|(tenant, clinic, date)| store.day(tenant, clinic, *date).unwrap().is_some()).count();
        assert!(stored > 0, "closed days' records are in the store");
    }
}

/// The read side fed by the writer (`log::events::DurableBatch`) against the
/// read side reading the files: the same answers, whether every batch comes
/// through the feed or the feed drops some (then read from the files).
#[test]
fn the_read_side_fed_by_the_writer_answers_as_the_one_reading_the_files() {
    use crate::forensics::follower::Indexes;
    let rules = Rules::default();
    for (capacity, drain_every) in [(crate::log::events::FEED_BATCHES, 1), (1, 3)] {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        let (feed, fed) = std::sync::mpsc::sync_channel(capacity);
        let indexes = Indexes::new(&dirs.ledger, rules);
        let mut reader = EventReader::new(&dirs.ledger, 1);
        let ledger = dirs.ledger.clone();
        write_ledger_feeding(root.path(), 3, 80, Some(feed), |number| {
            if number % drain_every == 0 {
                let last = crate::log::last_position(&ledger).unwrap().unwrap_or(0);
                indexes.index_fed(&fed, &mut reader, last).unwrap();
            }
        });
        let last = crate::log::last_position(&dirs.ledger).unwrap().unwrap();
        indexes.index_fed(&fed, &mut reader, last).unwrap();
        assert_eq!(indexes.indexed(), last);
        let (fed_events, read_events) = indexes.events_fed_and_read();
        assert_eq!(fed_events + read_events, last, "each event indexed once");
        if drain_every == 1 {
            assert_eq!(read_events, 0, "every event came through the feed");
        } else {
            assert!(fed_events > 0 && read_events > 0, "fed {fed_events}, read {read_events}: both ways");
        }
        let files = Indexes::new(&dirs.ledger, rules);
        files.index_through(&mut EventReader::new(&dirs.ledger, 1), last).unwrap();
        let days = clinic_days(&dirs);
        assert_eq!(read_side_answers(&indexes, &days, last), read_side_answers(&files, &days, last), "capacity {capacity}");
    }
}

/// Every clinic day the ledger in `dirs` names: (tenant, clinic, date).
fn clinic_days(dirs: &Dirs) -> BTreeSet<(Text, Text, chrono::NaiveDate)> {
    use crate::core::EventKind;
    let mut days = BTreeSet::new();
    EventReader::new(&dirs.ledger, 1)
        .read_available(usize::MAX, &mut |event, _| {
            let day = match &event.kind {
                EventKind::BookingCreated(created) => Some((created.details.clinic.clone(), created.details.date)),
                EventKind::HoldPlaced { details, .. } => Some((details.clinic.clone(), details.date)),
                EventKind::BookingRescheduled { clinic, date, .. } => Some((clinic.clone(), *date)),
                _ => None,
            };
            days.extend(day.map(|(clinic, date)| (event.tenant.clone(), clinic, date)));
            ControlFlow::Continue(())
        })
        .unwrap();
    days
}

/// What the read side answers about `days` and the audit, as text to compare.
fn read_side_answers(
    indexes: &crate::forensics::follower::Indexes,
    days: &BTreeSet<(Text, Text, chrono::NaiveDate)>,
    last: Position,
) -> Vec<String> {
    let mut answers = Vec::new();
    for (tenant, clinic, date) in days {
        for as_of in [last / 3, last / 2, last] {
            answers.push(format!("{:?}", indexes.clinic_day(tenant, clinic, *date, None, as_of).unwrap()));
        }
        answers.push(format!("{:?}", indexes.clinic_history(tenant, clinic, *date, None, last).unwrap()));
    }
    answers.extend(["kloqo", "other"].map(|tenant| format!("{:?}", indexes.audit(tenant))));
    answers
}
