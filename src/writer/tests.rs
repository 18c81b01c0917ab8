//! The writer's promises, checked against logs that can be held or made to fail.

use crate::replay::recover;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use super::*;
use crate::core::{Action, BookingDetails, BookingKind, Rules, Schedule};
use crate::log::{MemoryLog, Position, Visit};

/// The integration tests' one bounded poll, the same file.
#[path = "../../tests/it/eventually.rs"]
mod eventually;
use eventually::{WAIT_MAX, eventually};

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

    fn close(&self) {
        *self.open.0.lock() = false;
    }

    /// Returns once the writer is inside `sync`, held by the closed gate.
    async fn syncing(&self) {
        self.syncing_at_least(1).await;
    }

    /// Returns once the writer has entered `sync` `times` times.
    async fn syncing_at_least(&self, times: u32) {
        let entered = || self.syncing.load(Ordering::Acquire);
        eventually(format!("the writer has entered sync {times} times"), WAIT_MAX, async || {
            if entered() >= times { Ok(()) } else { Err(entered()) }
        })
        .await;
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
        external: crate::core::External::boxed(None, None, None),
    }))
}

fn code(answer: &Result<Answer, SubmitError>) -> &'static str {
    match answer {
        Ok(Answer::Fresh(Ok(_))) => "accepted",
        Ok(Answer::Fresh(Err(rejection))) => rejection.code(),
        Ok(Answer::Stored { repeated: false, .. }) => "stored",
        Ok(Answer::Stored { repeated: true, .. }) => "repeated",
        Err(SubmitError::IdempotencyFull { .. }) => "idempotency_full",
        Err(_) => "submit_error",
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
    assert_eq!(code(&submitted.await.unwrap()), "accepted");
    assert_eq!(handle.read(|s| s.position), 1);
    drop(handle);
    thread.join().unwrap();
}

#[tokio::test]
async fn a_full_queue_is_overloaded_and_appends_nothing() {
    let gate = Gate::default();
    let config = WriterConfig { queue_len_max: 1, batch_len_max: 1, ..WriterConfig::default() };
    let (handle, thread) = writer(Box::new(GatedLog { inner: MemoryLog::new(), gate: gate.clone() }), config).spawn();
    gate.open();
    handle.submit(schedule()).await.unwrap();
    gate.close();
    // The first command holds the writer in its sync, the second fills the queue.
    let first = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(book(0)).await }
    });
    gate.syncing_at_least(2).await;
    let second = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(book(1)).await }
    });
    eventually("the second command waits in the queue", WAIT_MAX, async || {
        if handle.queue_depth() >= 1 { Ok(()) } else { Err(handle.queue_depth()) }
    })
    .await;
    assert_eq!(handle.submit(book(2)).await, Err(SubmitError::Overloaded));
    // A refusal on sight does not wait for the writer, so a full queue does
    // not stop it; as many journal records as the queue holds may wait, no more.
    assert_eq!(code(&handle.submit(book(9)).await), "slot_out_of_range");
    assert_eq!(handle.submit(book(9)).await, Err(SubmitError::Overloaded));
    gate.open();
    assert_eq!(code(&first.await.unwrap()), "accepted");
    assert_eq!(code(&second.await.unwrap()), "accepted");
    assert_eq!(handle.read(|s| s.position), 3, "the overloaded commands appended nothing");
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

#[test]
fn keyed_commands_store_the_rendered_answer_with_the_event_or_in_the_responses_journal() {
    let mut writer = writer(Box::new(MemoryLog::new()), WriterConfig::default());
    let keyed = |mut command: Command, key: &str| {
        command.idempotency = Some(core::IdempotencyKey { key: key.into(), fingerprint: [1; 32] });
        command
    };
    let answers = writer.commit(&[schedule(), keyed(book(0), "a"), keyed(book(0), "b"), keyed(book(0), "a")]).unwrap();
    assert_eq!(answers[1], Ok(Answer::Stored { status: 200, body: Arc::from(&b"ok"[..]), repeated: false }));
    assert_eq!(answers[2], Ok(Answer::Stored { status: 409, body: Arc::from(&b"slot_taken"[..]), repeated: false }));
    assert_eq!(answers[3], Ok(Answer::Stored { status: 200, body: Arc::from(&b"ok"[..]), repeated: true }), "a repeat in the same batch");
    assert_eq!(writer.responses.position_next(), 2, "the keyed rejection went to the responses journal");
    assert_eq!(writer.log.position_next(), 3, "two events: the schedule and one booking");

    let mut state_from_log = recover(writer.log.as_ref(), writer.responses.as_ref(), Rules::default(), FixedClock.now()).unwrap().state;
    state_from_log.rules = writer.working.rules;
    assert_eq!(state_from_log, *writer.published.read(), "recovering from the log and journal rebuilds the published state");
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
    // Table equality compares the answers; the expiry queues must agree too.
    assert!(writer.published.read().idempotency.expiry_order().eq(writer.working.idempotency.expiry_order()));
}

#[test]
#[should_panic(expected = "must reopen before it commits again")]
fn a_failed_writer_refuses_to_commit_again() {
    let log = MemoryLog::new();
    let faults = log.faults.clone();
    let mut writer = writer(Box::new(log), WriterConfig::default());
    faults.lock().fail_sync_at = 1;
    assert!(writer.commit(&[schedule()]).is_err());
    let _ = writer.commit(&[book(0)]);
}

/// A clock the test moves forward.
struct SetClock(Mutex<DateTime<Utc>>);

impl Clock for SetClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

fn keyed(mut command: Command, key: &str) -> Command {
    command.idempotency = Some(core::IdempotencyKey { key: key.into(), fingerprint: [3; 32] });
    command
}

/// API.md: "when it is full a new key gets 503 `overloaded` rather than
/// evicting an answer inside its retention window".
#[test]
fn a_full_idempotency_table_refuses_new_keys_executes_nothing_and_still_answers_stored_ones() {
    let config = WriterConfig { idempotency_keys_max: 5, ..WriterConfig::default() };
    let mut writer = writer(Box::new(MemoryLog::new()), config);
    let keys: Vec<Command> = (0..5).map(|slot| keyed(book(slot), &format!("key-{slot}"))).collect();
    let answers = writer.commit(&[&[schedule()], &keys[..]].concat()).unwrap();
    assert_eq!(answers.iter().map(code).collect::<Vec<_>>(), ["accepted", "stored", "stored", "stored", "stored", "stored"]);
    assert_eq!(writer.working.idempotency.len(), 5);
    let (events, responses) = (writer.log.position_next(), writer.responses.position_next());

    let answers = writer.commit(&[keyed(book(2), "key-6"), keys[0].clone(), keyed(book(9), "key-7"), keys[4].clone()]).unwrap();
    assert_eq!(answers.iter().map(code).collect::<Vec<_>>(), ["idempotency_full", "repeated", "idempotency_full", "repeated"]);
    assert!(
        matches!(answers[0], Err(SubmitError::IdempotencyFull { retry_after_secs }) if retry_after_secs >= 1),
        "a full table says when to retry: {:?}",
        answers[0]
    );
    assert_eq!(
        (writer.log.position_next(), writer.responses.position_next()),
        (events, responses),
        "the refused commands appended nothing, to the ledger or the responses journal"
    );
    assert_eq!(writer.working.idempotency.len(), 5, "no answer was evicted to make room");
    assert_eq!(*writer.published.read(), writer.working);

    let answers = writer.commit(&[book(2)]).unwrap();
    assert_eq!(code(&answers[0]), "slot_taken", "a command without a key does not use the table and is still decided");
}

/// Expiry must keep up with insertion: batches of `batch_len_max` new keys,
/// with the clock moving a quarter of the retention window per batch, keep the
/// table at what one window admits. (256 expiries per batch against 1,024 new
/// keys grew it by 768 keys a batch, without bound.)
#[test]
fn sustained_keyed_load_keeps_the_idempotency_table_within_one_retention_window() {
    const BATCH_LEN: usize = 1024;
    const BATCHES_PER_WINDOW: usize = 4;
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let clock = Arc::new(SetClock(Mutex::new(start)));
    let rules = Rules { idempotency_retention: chrono::Duration::seconds(1), ..Rules::default() };
    let metrics = Arc::new(Metrics::new());
    let config = WriterConfig { batch_len_max: BATCH_LEN, ..WriterConfig::default() };
    let mut writer = Writer::new(
        Box::new(MemoryLog::new()),
        Box::new(MemoryLog::new()),
        State::new(rules),
        render,
        clock.clone(),
        config,
        metrics.clone(),
    );
    let step = rules.idempotency_retention / BATCHES_PER_WINDOW as i32;
    let mut held_max = 0;
    for batch in 0..10 * BATCHES_PER_WINDOW {
        // Refused bookings (no schedule): each stores its answer under a new key.
        let commands: Vec<Command> = (0..BATCH_LEN).map(|i| keyed(book(0), &format!("{batch}-{i}"))).collect();
        let answers = writer.commit(&commands).unwrap();
        assert!(answers.iter().all(|a| code(a) == "stored"), "every new key is taken while the table has room");
        let held = writer.working.idempotency.len();
        assert!(
            held <= (BATCHES_PER_WINDOW + 1) * BATCH_LEN,
            "batch {batch}: {held} answers held, more than one retention window ({BATCHES_PER_WINDOW} batches) and one batch"
        );
        assert_eq!(metrics.idempotency_keys.get(), held as i64, "the gauge follows the table");
        held_max = held_max.max(held);
        *clock.0.lock() += step;
    }
    assert_eq!(held_max, BATCHES_PER_WINDOW * BATCH_LEN, "the window was filled: the bound was tested, not avoided");
    assert_eq!(*writer.published.read(), writer.working);
}

/// A rejection journal in `dir`, with the handle its readers use.
fn journal_in(dir: &std::path::Path) -> (crate::rejections::Journal, crate::rejections::JournalHandle) {
    let (log, _) = crate::log::FileLog::open(dir, crate::log::FileLogOptions::default()).unwrap();
    crate::rejections::Journal::new(log, dir, Default::default())
}

/// The writer journals refusals itself, after answering them: once a later
/// command is answered, the earlier batch's refusals are readable, with no
/// thread of their own; and they are on disk after the writer stops.
#[tokio::test]
async fn refusals_are_journaled_by_the_writer_after_their_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, handle) = journal_in(dir.path());
    let (writer_handle, thread) = writer(Box::new(MemoryLog::new()), WriterConfig::default()).with_journal(journal).spawn();
    writer_handle.submit(schedule()).await.unwrap();
    writer_handle.submit(book(0)).await.unwrap();
    let refused = writer_handle.submit(book(0)).await.unwrap();
    assert!(matches!(refused, Answer::Fresh(Err(Rejection::SlotTaken { .. }))), "{refused:?}");
    writer_handle.submit(book(9)).await.unwrap();
    // Both refused on sight; a later command's answer means the writer has
    // taken them from its queue and journaled them before deciding it.
    writer_handle.submit(book(1)).await.unwrap();
    let written = handle.written();
    assert!(written >= 1, "the refusal was written before the next batch was answered");
    let page = crate::forensics::feed::rejections_page(&handle.dir, "t", 1, written, 10).unwrap();
    let codes: Vec<&str> = page.items.iter().map(|(_, r)| &*r.code).collect();
    assert_eq!(codes[0], "slot_taken");
    drop(writer_handle);
    thread.join().unwrap();
    let mut reopened = 0;
    let (log, _) = crate::log::FileLog::open(dir.path(), crate::log::FileLogOptions::default()).unwrap();
    log.read_from(1, &mut |_, _| {
        reopened += 1;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(reopened, 2, "both refusals (slot_taken, slot_out_of_range) are durable after the writer stopped");
    assert_eq!(handle.dropped(), 0);
}

/// A booking the published state already refuses is answered on the caller's
/// task, while the writer is held in a sync, and the writer journals it after;
/// a slot held by a batch not yet durable is the writer's to refuse.
#[tokio::test]
async fn a_refusal_on_sight_does_not_wait_for_the_writer_and_is_journaled_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, journal_handle) = journal_in(dir.path());
    let gate = Gate::default();
    gate.open();
    let metrics = Arc::new(Metrics::new());
    let ledger = GatedLog { inner: MemoryLog::new(), gate: gate.clone() };
    let writer = Writer::new(
        Box::new(ledger),
        Box::new(MemoryLog::new()),
        State::default(),
        render,
        Arc::new(FixedClock),
        WriterConfig::default(),
        metrics.clone(),
    );
    let (handle, thread) = writer.with_journal(journal).spawn();
    handle.submit(schedule()).await.unwrap();
    let (first, second) = (book(0), book(1));
    let id = |command: &Command| match &command.action {
        Action::Book(details) => details.booking_id,
        _ => unreachable!(),
    };
    let (first_id, second_id) = (id(&first), id(&second));
    handle.submit(first).await.unwrap();

    gate.close();
    let held = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(second).await }
    });
    gate.syncing_at_least(3).await;
    // The writer is inside the sync of slot 1's booking: only an answer that
    // does not wait for it can come back (a hang here is the failure).
    let on_sight = tokio::time::timeout(Duration::from_secs(60), handle.submit(book(0))).await.expect("answered without the writer");
    assert!(
        matches!(&on_sight, Ok(Answer::Fresh(Err(Rejection::SlotTaken { booking_id, .. }))) if *booking_id == first_id),
        "{on_sight:?}"
    );
    let behind = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(book(1)).await }
    });
    gate.open();
    assert_eq!(code(&held.await.unwrap()), "accepted");
    let behind = behind.await.unwrap();
    assert!(matches!(&behind, Ok(Answer::Fresh(Err(Rejection::SlotTaken { booking_id, .. }))) if *booking_id == second_id), "{behind:?}");
    assert_eq!(metrics.commands.with_label_values(&["slot_taken"]).get(), 2, "each refusal counted once");
    drop(handle);
    thread.join().unwrap();
    let page = crate::forensics::feed::rejections_page(&journal_handle.dir, "t", 1, journal_handle.written(), 10).unwrap();
    let conflicts: Vec<String> = page.items.iter().map(|(_, r)| r.conflicts_with.clone().unwrap_or_default()).collect();
    assert_eq!(
        conflicts,
        [format!("booking:{first_id}"), format!("booking:{second_id}")],
        "both journaled, in the order they were answered"
    );
}

/// With no command to wake the writer, a refusal on sight is still journaled:
/// the writer, woken once, journals what gathered after `JOURNAL_DELAY`.
#[tokio::test]
async fn a_refusal_on_sight_is_journaled_with_no_command_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, journal_handle) = journal_in(dir.path());
    let (handle, thread) = writer(Box::new(MemoryLog::new()), WriterConfig::default()).with_journal(journal).spawn();
    handle.submit(schedule()).await.unwrap();
    handle.submit(book(0)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(code(&handle.submit(book(0)).await), "slot_taken");
    }
    eventually("the refusals are journaled without another command", WAIT_MAX, async || {
        if journal_handle.written() >= 3 { Ok(()) } else { Err(journal_handle.written()) }
    })
    .await;
    drop(handle);
    thread.join().unwrap();
}

/// After a restart the two copies share each booking's data as well: the
/// recovered bookings, and one made after the restart.
#[test]
fn after_a_restart_both_copies_share_each_bookings_data() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(crate::log::FaultyDisk::new());
    let mut writer = file_writer(dir.path(), &disk, WriterConfig::default());
    writer.commit(&[schedule(), book(0), book(1)]).unwrap();
    drop(writer);
    let state = recovered_from(dir.path());
    let (log, responses) = reopened_files(dir.path());
    let metrics = Arc::new(Metrics::new());
    let mut restarted =
        Writer::new(Box::new(log), Box::new(responses), state, render, Arc::new(FixedClock), WriterConfig::default(), metrics);
    restarted.commit(&[book(2)]).unwrap();
    let published = restarted.published.read();
    let (ours, theirs) = (&published.tenants["t"].bookings, &restarted.working.tenants["t"].bookings);
    assert_eq!(ours.len(), 3);
    let shared = ours.iter().filter(|(id, booking)| Arc::ptr_eq(booking, &theirs[*id])).count();
    assert_eq!(shared, 3, "every booking is one allocation shared by both copies");
}

/// The working and published copies hold one allocation per booking, not two;
/// a booking cancelled later in the same batch is not shared early.
#[test]
fn working_and_published_copies_share_each_bookings_data() {
    let mut writer = writer(Box::new(MemoryLog::new()), WriterConfig::default());
    let (first, second) = (book(0), book(1));
    let second_id = match &second.action {
        Action::Book(details) => details.booking_id,
        _ => unreachable!(),
    };
    writer.commit(&[schedule(), first, second]).unwrap();
    let cancel = command(Action::Cancel { booking_id: second_id, reason: None });
    writer.commit(&[book(2), cancel]).unwrap();
    let published = writer.published.read();
    let (ours, theirs) = (&published.tenants["t"].bookings, &writer.working.tenants["t"].bookings);
    assert_eq!(ours.len(), 3);
    let shared = ours.iter().filter(|(id, booking)| Arc::ptr_eq(booking, &theirs[*id])).count();
    assert_eq!(shared, 2, "the two bookings never cancelled are shared");
    assert_eq!(*published, writer.working, "and the copies still agree");
    let (clinic, _) = published.tenants["t"].clinics.get_key_value("c").unwrap();
    assert!(ours.values().all(|b| Arc::ptr_eq(&b.details.clinic, clinic)), "every booking shares its clinic's name");
}

// Storage faults (API.md, "Limits and hostile clients" -> Storage).

/// A writer on two file logs (the ledger and the responses journal) whose
/// writes and syncs go through `disk`.
fn file_writer(dir: &std::path::Path, disk: &Arc<crate::log::FaultyDisk>, config: WriterConfig) -> Writer {
    let options = crate::log::FileLogOptions { segment_bytes_max: 4096 };
    let (log, _) = crate::log::FileLog::open_on(&dir.join("ledger"), options, disk.clone()).unwrap();
    let (responses, _) = crate::log::FileLog::open_on(&dir.join("responses"), options, disk.clone()).unwrap();
    Writer::new(Box::new(log), Box::new(responses), State::default(), render, Arc::new(FixedClock), config, Arc::new(Metrics::new()))
}

/// The ledger and responses journal `file_writer` wrote in `dir`, opened as a restart opens them.
fn reopened_files(dir: &std::path::Path) -> (crate::log::FileLog, crate::log::FileLog) {
    let options = crate::log::FileLogOptions { segment_bytes_max: 4096 };
    let (log, _) = crate::log::FileLog::open(&dir.join("ledger"), options).unwrap();
    let (responses, _) = crate::log::FileLog::open(&dir.join("responses"), options).unwrap();
    (log, responses)
}

/// The state a restart on `dir` would recover, from the files alone.
fn recovered_from(dir: &std::path::Path) -> State {
    let (log, responses) = reopened_files(dir);
    recover(&log, &responses, Rules::default(), FixedClock.now()).unwrap().state
}

fn booking_ids(state: &State) -> Vec<Uuid> {
    state.tenants.get("t").map(|t| t.bookings.keys().copied().collect()).unwrap_or_default()
}

fn booking_id(command: &Command) -> Uuid {
    match &command.action {
        Action::Book(details) => details.booking_id,
        _ => unreachable!(),
    }
}

/// After a re-open the writer is whole again: both copies agree with each
/// other and with what a restart would recover from the files.
fn assert_consistent(writer: &Writer, dir: &std::path::Path, case: &str) {
    assert!(!writer.failed, "{case}: the writer re-opened");
    assert_eq!(*writer.published.read(), writer.working, "{case}: the working copy is rebuilt from the published one");
    assert_eq!(recovered_from(dir), *writer.published.read(), "{case}: published is exactly what reached the disk");
}

/// Each kind of fault at the file boundary fails the batch (a short write
/// alone does not: the log writes the rest), publishes nothing of it, and a
/// re-open publishes exactly what reached the disk; the writer then commits
/// again, and keyed commands caught in the batch resolve on repeat: their
/// stored answer if they got there, one execution if not.
#[test]
fn each_fault_at_the_file_boundary_is_survived_without_a_restart() {
    use crate::log::Fault;
    const EIO: i32 = 5;
    const ENOSPC: i32 = 28;
    let faults = [
        ("failed write", Fault::FailWrite { bytes: 0, errno: EIO }),
        ("torn write", Fault::FailWrite { bytes: 150, errno: EIO }),
        ("ENOSPC mid-write", Fault::FailWrite { bytes: 300, errno: ENOSPC }),
        ("EIO on fdatasync, all data there", Fault::FailSync { errno: EIO, kept: None }),
        ("EIO on fdatasync, pages lost", Fault::FailSync { errno: EIO, kept: Some(0) }),
        ("EIO on fdatasync, some pages kept", Fault::FailSync { errno: EIO, kept: Some(200) }),
        ("ENOSPC on fdatasync", Fault::FailSync { errno: ENOSPC, kept: Some(90) }),
    ];
    for (case, fault) in faults {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(crate::log::FaultyDisk::new());
        let mut writer = file_writer(dir.path(), &disk, WriterConfig::default());
        writer.commit(&[schedule(), keyed(book(0), "before")]).unwrap();
        let before = writer.published.read().clone();
        let batch: Vec<Command> = (1..4).map(|slot| keyed(book(slot), &format!("caught-{slot}"))).collect();
        disk.arm(fault, 0);
        assert!(writer.commit(&batch).is_err(), "{case}: the batch fails");
        assert_eq!(disk.fired(), 1, "{case}");
        assert_eq!(*writer.published.read(), before, "{case}: nothing of the failed batch is published");

        writer.reopen().unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_consistent(&writer, dir.path(), case);
        let arrived = writer.published.read().position - before.position;
        assert!(arrived <= 3, "{case}");
        if matches!(fault, Fault::FailSync { kept: None, .. }) {
            assert_eq!(arrived, 3, "{case}: everything written was kept");
        }
        if matches!(fault, Fault::FailWrite { bytes: 0, .. } | Fault::FailSync { kept: Some(0), .. }) {
            assert_eq!(arrived, 0, "{case}: nothing reached the disk");
        }

        // The same requests again, with their keys: what got there is answered
        // from its stored answer, the rest executes now, once.
        let answers = writer.commit(&batch).unwrap();
        for (index, answer) in answers.iter().enumerate() {
            let repeated = (index as u64) < arrived;
            assert_eq!(answer, &Ok(Answer::Stored { status: 200, body: Arc::from(&b"ok"[..]), repeated }), "{case}: command {index}");
        }
        let ids = booking_ids(&writer.published.read());
        assert!(batch.iter().all(|c| ids.contains(&booking_id(c))), "{case}: every caught booking exists once resolved");
        assert_eq!(writer.published.read().position, before.position + 3, "{case}: each booking was appended exactly once");
        assert_consistent(&writer, dir.path(), case);
    }
}

/// A short write is not a failure: the log writes the rest, and nothing is lost.
#[test]
fn a_short_write_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(crate::log::FaultyDisk::new());
    let mut writer = file_writer(dir.path(), &disk, WriterConfig::default());
    disk.arm(crate::log::Fault::ShortWrite { bytes: 7 }, 0);
    let answers = writer.commit(&[schedule(), book(0), book(1)]).unwrap();
    assert_eq!(answers.iter().map(code).collect::<Vec<_>>(), ["accepted", "accepted", "accepted"]);
    assert_eq!(disk.fired(), 0, "a short write is not a fault the log reports");
    assert_eq!(recovered_from(dir.path()), *writer.published.read());
}

/// The ledger's fdatasync succeeds and the responses journal's fails: the
/// events are durable and a re-open publishes them with whatever stored
/// answers got to the journal.
#[test]
fn a_failed_responses_journal_after_a_durable_ledger_publishes_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(crate::log::FaultyDisk::new());
    let mut writer = file_writer(dir.path(), &disk, WriterConfig::default());
    writer.commit(&[schedule(), book(0)]).unwrap();
    // The second sync of the batch is the responses journal's.
    disk.arm(crate::log::Fault::FailSync { errno: 5, kept: Some(0) }, 1);
    let batch = [keyed(book(1), "booked"), keyed(book(0), "refused")];
    assert!(writer.commit(&batch).is_err());
    writer.reopen().unwrap();
    assert_consistent(&writer, dir.path(), "responses failed");
    let answers = writer.commit(&batch).unwrap();
    assert_eq!(answers[0], Ok(Answer::Stored { status: 200, body: Arc::from(&b"ok"[..]), repeated: true }), "the booking was durable");
    assert_eq!(
        answers[1],
        Ok(Answer::Stored { status: 409, body: Arc::from(&b"slot_taken"[..]), repeated: false }),
        "the refusal's stored answer was lost with the journal's pages: decided again, the same way"
    );
}

/// A failed fdatasync is never retried on the descriptor it failed on: the
/// failed log refuses to sync again, and the writer goes on with a re-opened one.
#[test]
fn a_failed_fsync_is_never_retried_on_the_same_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(crate::log::FaultyDisk::new());
    let options = crate::log::FileLogOptions::default();
    let (mut log, _) = crate::log::FileLog::open_on(dir.path(), options, disk.clone()).unwrap();
    log.append(b"one").unwrap();
    disk.arm(crate::log::Fault::FailSync { errno: 5, kept: None }, 0);
    assert!(log.sync().is_err());
    disk.arm(crate::log::Fault::FailSync { errno: 5, kept: None }, 0);
    assert!(matches!(log.sync(), Err(LogError::Poisoned)), "the failed log does not sync again");
    assert!(matches!(log.append(b"two"), Err(LogError::Poisoned)));
    assert_eq!(disk.fired(), 1, "no sync reached the disk after the failed one");
    disk.disarm();
    let mut reopened = log.reopen().unwrap();
    assert_eq!(reopened.position_next(), 2, "the record whose sync failed got there (kept: None) and is now durable");
    reopened.append(b"two").unwrap();
    reopened.sync().unwrap();
}

/// A full disk: the batch fails; while the disk stays full each re-open
/// works but the next batch fails again; once space returns the writer goes on.
#[test]
fn a_full_disk_fails_batches_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(crate::log::FaultyDisk::new());
    let mut writer = file_writer(dir.path(), &disk, WriterConfig::default());
    writer.commit(&[schedule()]).unwrap();
    disk.set_space(Some(100));
    assert!(writer.commit(&[book(0), book(1), book(2)]).is_err(), "a batch larger than the space left fails");
    for _ in 0..3 {
        writer.reopen().unwrap();
        assert!(writer.commit(&[book(3)]).is_err(), "the disk is still full");
    }
    disk.set_space(None);
    writer.reopen().unwrap();
    assert_consistent(&writer, dir.path(), "after the full disk");
    let answers = writer.commit(&[book(3)]).unwrap();
    assert_eq!(code(&answers[0]), "accepted");
    assert!(writer.failures_in_a_row == 0);
}

/// The writer thread: the failed batch is "outcome unknown", commands while
/// storage is down are refused (not executed), readiness names the cause; the
/// thread re-opens by itself and writes again, and a keyed command of the
/// failed batch resolves on repeat.
#[tokio::test]
async fn the_writer_thread_refuses_while_storage_is_down_and_resumes_by_itself() {
    let log = MemoryLog::new();
    let faults = log.faults.clone();
    let config = WriterConfig { reopen_interval_min: Duration::from_millis(20), ..WriterConfig::default() };
    let (handle, thread) = writer(Box::new(log), config).spawn();
    assert_eq!(code(&handle.submit(schedule()).await), "accepted");
    {
        let mut faults = faults.lock();
        faults.fail_sync_at = 1;
        faults.sync_keeps = 1;
        faults.reopen_fails = 5;
    }
    let caught = keyed(book(0), "caught");
    let answer = handle.submit(caught.clone()).await;
    assert!(matches!(&answer, Err(SubmitError::OutcomeUnknown { retry_after_secs: 1, .. })), "{answer:?}");
    assert!(matches!(handle.health(), Health::StorageDown { retrying: true, .. }), "{:?}", handle.health());
    assert!(!handle.is_writable());
    let refused = handle.submit(book(1)).await;
    assert!(matches!(&refused, Err(SubmitError::StorageDown { .. })), "{refused:?}");
    assert_eq!(handle.read(|s| s.position), 1, "nothing of the failed batch is published while storage is down");

    eventually("the writer is writable again", WAIT_MAX, async || if handle.is_writable() { Ok(()) } else { Err(handle.health()) }).await;
    assert_eq!(handle.health(), Health::Writing, "the writer re-opened by itself after five failed attempts");
    assert_eq!(handle.read(|s| s.position), 2, "the caught booking reached the disk and is published");
    let repeated = handle.submit(caught).await;
    assert_eq!(repeated, Ok(Answer::Stored { status: 200, body: Arc::from(&b"ok"[..]), repeated: true }));
    assert_eq!(code(&handle.submit(book(1)).await), "accepted");
    drop(handle);
    thread.join().unwrap();
}

/// A log that cannot re-open for good: the writer stops, readiness says a
/// restart is needed, and commands are refused as storage unavailable.
#[tokio::test]
async fn a_log_that_can_never_reopen_stops_the_writer_for_good() {
    let log = MemoryLog::new();
    let faults = log.faults.clone();
    let config = WriterConfig { reopen_interval_min: Duration::from_millis(5), ..WriterConfig::default() };
    let (handle, thread) = writer(Box::new(log), config).spawn();
    {
        let mut faults = faults.lock();
        faults.fail_sync_at = 1;
        faults.reopen_never = true;
    }
    assert!(matches!(handle.submit(schedule()).await, Err(SubmitError::OutcomeUnknown { .. })));
    thread.join().unwrap();
    match handle.health() {
        Health::StorageDown { retrying, cause, .. } => {
            assert!(!retrying);
            assert!(cause.contains("reopen for good"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(handle.submit(book(0)).await, Err(SubmitError::StorageDown { .. })));
}

/// The rejection journal on a disk that filled up is given up (its losses
/// counted) and re-opened with the ledger once space returns: refusals are
/// journaled again without a restart.
#[test]
fn a_journal_failed_by_a_full_disk_revives_when_the_ledger_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(crate::log::FaultyDisk::new());
    let (journal_log, _) = crate::log::FileLog::open_on(dir.path(), crate::log::FileLogOptions::default(), disk.clone()).unwrap();
    let (journal, handle) = crate::rejections::Journal::new(journal_log, dir.path(), Default::default());
    let ledger = MemoryLog::new();
    let faults = ledger.faults.clone();
    let mut writer = writer(Box::new(ledger), WriterConfig::default()).with_journal(journal);
    let commit = |writer: &mut Writer, commands: &[Command]| {
        let answers = writer.commit(commands)?;
        writer.journal_refused(commands, &mut vec![None; commands.len()]);
        Ok::<_, LogError>(answers)
    };
    commit(&mut writer, &[schedule(), book(0)]).unwrap();
    disk.set_space(Some(0));
    commit(&mut writer, &[book(0)]).unwrap();
    assert_eq!((handle.dropped(), handle.written()), (1, 0), "the refusal could not be journaled: the journal gave up");
    assert_eq!(writer.metrics.rejections_dropped.get(), 1, "ledger_rejections_dropped_total counts it");

    disk.set_space(None);
    faults.lock().fail_sync_at = 1;
    assert!(commit(&mut writer, &[book(1)]).is_err());
    writer.reopen().unwrap();
    commit(&mut writer, &[book(0)]).unwrap();
    assert_eq!((handle.dropped(), handle.written()), (1, 1), "the journal re-opened with the ledger and took the next refusal");
    assert_eq!(writer.metrics.rejections_dropped.get(), 1);
    let page = crate::forensics::feed::rejections_page(&handle.dir, "t", 1, handle.written(), 10).unwrap();
    assert_eq!(page.items.len(), 1);
}
