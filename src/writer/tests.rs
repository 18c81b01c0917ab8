//! The writer's promises, checked against logs that can be held or made to fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use super::*;
use crate::core::{Action, BookingDetails, BookingKind, Rules, Schedule};
use crate::log::{MemoryLog, Position, Visit};

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
    }
}

/// A memory log whose `sync` waits until the test opens the gate, and counts syncs.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    syncs: Arc<AtomicU32>,
    syncing: Arc<AtomicU32>,
}

impl Gate {
    fn open(&self) {
        *self.open.0.lock() = true;
        self.open.1.notify_all();
    }

    /// Returns once the writer is inside `sync`, held by the closed gate.
    async fn syncing(&self) {
        while self.syncing.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

struct GatedLog {
    inner: MemoryLog,
    gate: Gate,
}

impl Log for GatedLog {
    fn append(&mut self, payload: &[u8]) -> Result<Position, LogError> {
        self.inner.append(payload)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        self.gate.syncing.fetch_add(1, Ordering::AcqRel);
        let mut open = self.gate.open.0.lock();
        while !*open {
            self.gate.open.1.wait(&mut open);
        }
        self.gate.syncs.fetch_add(1, Ordering::AcqRel);
        self.inner.sync()
    }

    fn position_next(&self) -> Position {
        self.inner.position_next()
    }

    fn read_from(&self, from: Position, visit: &mut Visit<'_>) -> Result<(), LogError> {
        self.inner.read_from(from, visit)
    }
}

fn render(outcome: &Outcome) -> (u16, Vec<u8>) {
    match outcome {
        Ok(_) => (200, b"ok".to_vec()),
        Err(rejection) => (409, rejection.code().as_bytes().to_vec()),
    }
}

fn writer(log: Box<dyn Log>, config: WriterConfig) -> Writer {
    Writer::new(log, Box::new(MemoryLog::new()), State::default(), render, Arc::new(FixedClock), config, Arc::new(Metrics::new()))
}

fn command(action: Action) -> Command {
    Command { tenant: "t".into(), actor: "web".into(), request_id: "r".into(), idempotency: None, action }
}

fn schedule() -> Command {
    command(Action::SetSchedule {
        clinic: "c".into(),
        doctor: "d".into(),
        schedule: Schedule { slots_per_day: 4, first_slot_minute: None, slot_minutes: None },
    })
}

fn book(slot: u32) -> Command {
    command(Action::Book(BookingDetails {
        booking_id: Uuid::new_v4(),
        clinic: "c".into(),
        doctor: "d".into(),
        date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
        slot,
        patient: "p".into(),
        kind: BookingKind::Advance,
        external_ref: None,
        correlation_id: None,
        external_created_at: None,
    }))
}

fn code(answer: &Answer) -> &'static str {
    match answer {
        Answer::Fresh(Ok(_)) => "accepted",
        Answer::Fresh(Err(rejection)) => rejection.code(),
        Answer::Stored { .. } => "stored",
    }
}

#[test]
fn one_batch_decides_in_order_and_syncs_once() {
    let gate = Gate::default();
    gate.open();
    let mut writer = writer(Box::new(GatedLog { inner: MemoryLog::new(), gate: gate.clone() }), WriterConfig::default());
    let answers = writer.commit(&[schedule(), book(0), book(0), book(1), book(9)]).unwrap();
    let codes: Vec<_> = answers.iter().map(code).collect();
    assert_eq!(codes, ["accepted", "accepted", "slot_taken", "accepted", "slot_out_of_range"]);
    assert_eq!(gate.syncs.load(Ordering::Acquire), 1, "one fdatasync for the whole batch");
    assert_eq!(writer.published.read().position, 3);
    assert_eq!(*writer.published.read(), writer.working, "published and working copies agree after a batch");

    let answers = writer.commit(&[book(0), book(5)]).unwrap();
    assert_eq!(answers.iter().map(code).collect::<Vec<_>>(), ["slot_taken", "slot_out_of_range"]);
    assert_eq!(gate.syncs.load(Ordering::Acquire), 1, "a batch of rejections appends and syncs nothing");
    assert_eq!(writer.log.position_next(), 4);
}

#[tokio::test]
async fn nothing_is_answered_or_visible_before_the_sync() {
    let gate = Gate::default();
    let (handle, thread) = writer(Box::new(GatedLog { inner: MemoryLog::new(), gate: gate.clone() }), WriterConfig::default()).spawn();
    let submitted = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(schedule()).await }
    });
    gate.syncing().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!submitted.is_finished(), "answered before the sync completed");
    assert_eq!(handle.read(|s| s.position), 0, "readers saw an event that is not durable");
    gate.open();
    assert_eq!(code(&submitted.await.unwrap().unwrap()), "accepted");
    assert_eq!(handle.read(|s| s.position), 1);
    drop(handle);
    thread.join().unwrap();
}

#[tokio::test]
async fn a_full_queue_is_overloaded_and_appends_nothing() {
    let gate = Gate::default();
    let config = WriterConfig { queue_len_max: 1, batch_len_max: 1, ..WriterConfig::default() };
    let (handle, thread) = writer(Box::new(GatedLog { inner: MemoryLog::new(), gate: gate.clone() }), config).spawn();
    // The first command holds the writer in its sync, the second fills the queue.
    let first = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(schedule()).await }
    });
    gate.syncing().await;
    let second = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(book(0)).await }
    });
    while handle.queue_depth() < 1 {
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.submit(book(1)).await, Err(SubmitError::Overloaded));
    gate.open();
    assert_eq!(code(&first.await.unwrap().unwrap()), "accepted");
    assert_eq!(code(&second.await.unwrap().unwrap()), "accepted");
    assert_eq!(handle.read(|s| s.position), 2, "the overloaded command appended nothing");
    drop(handle);
    thread.join().unwrap();
}

#[test]
fn a_failed_sync_fails_the_whole_batch_and_publishes_nothing() {
    let log = MemoryLog::new();
    let faults = log.faults.clone();
    let mut writer = writer(Box::new(log), WriterConfig::default());
    writer.commit(&[schedule()]).unwrap();
    faults.lock().fail_sync_at = 1;
    assert!(writer.commit(&[book(0), book(1), book(2)]).is_err());
    assert_eq!(writer.published.read().position, 1, "nothing of the failed batch was published");
}

#[tokio::test]
async fn after_a_failed_sync_the_writer_answers_an_error_and_stops() {
    let log = MemoryLog::new();
    let faults = log.faults.clone();
    let (handle, thread) = writer(Box::new(log), WriterConfig::default()).spawn();
    assert_eq!(code(&handle.submit(schedule()).await.unwrap()), "accepted");
    faults.lock().fail_sync_at = 1;
    assert!(matches!(handle.submit(book(0)).await, Err(SubmitError::Storage(_))));
    assert!(!handle.is_writable());
    assert_eq!(handle.submit(book(1)).await, Err(SubmitError::Stopped));
    assert_eq!(handle.read(|s| s.position), 1);
    thread.join().unwrap();
}

#[test]
fn keyed_commands_store_the_rendered_answer_with_the_event_or_in_the_responses_journal() {
    let mut writer = writer(Box::new(MemoryLog::new()), WriterConfig::default());
    let keyed = |mut command: Command, key: &str| {
        command.idempotency = Some(core::IdempotencyKey { key: key.into(), fingerprint: [1; 32] });
        command
    };
    let answers = writer.commit(&[schedule(), keyed(book(0), "a"), keyed(book(0), "b"), keyed(book(0), "a")]).unwrap();
    assert_eq!(answers[1], Answer::Stored { status: 200, body: Arc::from(&b"ok"[..]), replayed: false });
    assert_eq!(answers[2], Answer::Stored { status: 409, body: Arc::from(&b"slot_taken"[..]), replayed: false });
    assert_eq!(answers[3], Answer::Stored { status: 200, body: Arc::from(&b"ok"[..]), replayed: true }, "a repeat in the same batch");
    assert_eq!(writer.responses.position_next(), 2, "the keyed rejection went to the responses journal");
    assert_eq!(writer.log.position_next(), 3, "two events: the schedule and one booking");

    let mut state_from_log = recover(writer.log.as_ref(), writer.responses.as_ref(), Rules::default(), FixedClock.now()).unwrap().state;
    state_from_log.rules = writer.working.rules;
    assert_eq!(state_from_log, *writer.published.read(), "replaying the log and journal rebuilds the published state");
}

/// A keyed rejection before a keyed booking in one batch: the published copy
/// records the stored answers in the same order as the working copy.
#[test]
fn published_and_working_copies_agree_after_mixed_keyed_batches() {
    let mut writer = writer(Box::new(MemoryLog::new()), WriterConfig::default());
    let keyed = |mut command: Command, key: &str| {
        command.idempotency = Some(core::IdempotencyKey { key: key.into(), fingerprint: [2; 32] });
        command
    };
    writer.commit(&[schedule(), book(0)]).unwrap();
    writer
        .commit(&[keyed(book(0), "refused"), keyed(book(1), "booked"), keyed(book(9), "out-of-range"), keyed(book(2), "booked-too")])
        .unwrap();
    assert_eq!(*writer.published.read(), writer.working);
}

#[test]
#[should_panic(expected = "must not commit again")]
fn a_failed_writer_refuses_to_commit_again() {
    let log = MemoryLog::new();
    let faults = log.faults.clone();
    let mut writer = writer(Box::new(log), WriterConfig::default());
    faults.lock().fail_sync_at = 1;
    assert!(writer.commit(&[schedule()]).is_err());
    let _ = writer.commit(&[book(0)]);
}
