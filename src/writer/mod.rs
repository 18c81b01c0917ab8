//! The single writer: the only code that calls both the core and the log, and
//! the only code that changes the projection.
//!
//! Commands arrive on a bounded queue. The writer thread takes every command
//! waiting (up to `batch_len_max`), decides each against a *working* copy of
//! the state that already holds the batch's earlier events, appends the events,
//! makes them durable with one fdatasync, and only then applies them to the
//! *published* copy that readers see and answers. Nothing is answered, and
//! nothing becomes visible to readers, before it is durable.
//!
//! It runs on its own OS thread, not a tokio task: it blocks in fdatasync.
//!
//! A booking the published state alone refuses is answered by the handle on
//! the caller's task, and only journaled by the writer, in bulk
//! ([`WriterHandle::submit_from`], [`core::refusal_on_sight`], [`JOURNAL_DELAY`]).
//!
//! When a write or sync fails, the batch's commands are answered "outcome
//! unknown" and later ones are refused (storage down) while the writer
//! re-opens its logs every so often ([`Log::reopen`]: new descriptors, the
//! tails re-verified). Once that works it publishes what of the failed batch
//! reached the disk, rebuilds the working copy from the published one (it held
//! the failed batch's events), and resumes.

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use crate::closed::ClosedStore;
use crate::core::{self, Command, Context, IdempotencyCheck, Rejection, Reply, Scope, State, StoredResponse};
use crate::log::decode::Decoder;
use crate::log::{Log, LogError, Position, ReopenError, codec, events};
use crate::metrics::Metrics;
use crate::rejections;
use crate::replay::{self, Replay};

pub type Outcome = Result<Reply, Rejection>;

/// Renders an outcome as the status and body the client receives. The writer
/// calls it only for commands with an Idempotency-Key, whose answers it stores.
pub type Render = fn(&Outcome) -> (u16, Vec<u8>);

/// The writer's answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Decided now, without an Idempotency-Key: the caller renders it.
    Fresh(Outcome),
    /// The stored answer of a keyed command: this execution's, or (`repeated`) an earlier one's.
    Stored { status: u16, body: Arc<[u8]>, repeated: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the writer's queue is full")]
    Overloaded,
    #[error("the writer is not accepting commands")]
    Stopped,
    /// The command was in a batch whose write or sync failed: it may or may
    /// not be on disk. A repeat with its Idempotency-Key after recovery
    /// returns its stored answer, or executes it if it was lost.
    #[error("the ledger could not make the batch durable, so its outcome is unknown: {cause}")]
    OutcomeUnknown { cause: String, retry_after_secs: u32 },
    /// Storage is down since a write or sync failed: the command was not executed.
    #[error("the ledger's storage is unavailable; the command was not executed: {cause}")]
    StorageDown { cause: String, retry_after_secs: u32 },
    /// A command with a new Idempotency-Key met a full idempotency table: it was
    /// not executed. The oldest answer held expires in about `retry_after_secs`.
    #[error("the idempotency table holds its maximum of keys")]
    IdempotencyFull { retry_after_secs: u32 },
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The writer as readiness reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Accepting commands.
    Writing,
    /// A write or sync failed with `cause`. Commands are refused; with
    /// `retrying` the writer re-opens its logs every few seconds and resumes
    /// once that works, without it a restart is needed.
    StorageDown { cause: String, since: DateTime<Utc>, retrying: bool },
    /// The writer thread ended: shut down, or a bug stopped it.
    Stopped,
}

/// What the writer tells its handles about itself.
#[derive(Debug)]
struct Status {
    /// `health == Writing`, read on every submission without a lock.
    writable: AtomicBool,
    health: Mutex<Health>,
    /// What a refused command's `Retry-After` says: the writer's next re-open.
    retry_after_secs: AtomicU32,
}

impl Status {
    fn set(&self, health: Health, metrics: &Metrics) {
        metrics.storage_down.set(matches!(health, Health::StorageDown { .. }) as i64);
        let mut held = self.health.lock();
        self.writable.store(health == Health::Writing, Ordering::Release);
        *held = health;
    }

    /// Why a command is refused now that the writer does not take it.
    fn refusal(&self) -> SubmitError {
        match &*self.health.lock() {
            Health::StorageDown { cause, .. } => {
                SubmitError::StorageDown { cause: cause.clone(), retry_after_secs: self.retry_after_secs.load(Ordering::Relaxed) }
            }
            Health::Writing | Health::Stopped => SubmitError::Stopped,
        }
    }
}

/// Why [`Writer::reopen`] could not resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{cause}")]
pub struct ReopenFailure {
    pub cause: String,
    /// Not worth trying again in this process: a restart (or an operator) must.
    pub permanent: bool,
}

impl ReopenFailure {
    fn permanent(cause: impl Into<String>) -> ReopenFailure {
        ReopenFailure { cause: cause.into(), permanent: true }
    }
}

impl From<ReopenError> for ReopenFailure {
    fn from(error: ReopenError) -> ReopenFailure {
        match error {
            ReopenError::Later(error) => ReopenFailure { cause: error.to_string(), permanent: false },
            ReopenError::Never(error) => ReopenFailure::permanent(error.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Commands waiting beyond this are refused as overloaded.
    pub queue_len_max: usize,
    /// At most this many commands share one fdatasync.
    pub batch_len_max: usize,
    /// Idempotency answers held at most. A command with a new key beyond this is
    /// refused (503 overloaded) rather than evicting an answer inside its
    /// retention window: each key costs about 1 KB for the whole window.
    pub idempotency_keys_max: usize,
    /// After a storage failure the logs are re-opened this long after it,
    /// twice as long after each failure in a row (a disk still full fails the
    /// next batch too)...
    pub reopen_interval_min: Duration,
    /// ...but never longer than this apart.
    pub reopen_interval_max: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_len_max: 4096,
            batch_len_max: 1024,
            idempotency_keys_max: 10_000_000,
            reopen_interval_min: Duration::from_millis(250),
            reopen_interval_max: Duration::from_secs(5),
        }
    }
}

impl WriterConfig {
    /// Expired idempotency answers forgotten per batch, at most. Bounded, so a
    /// batch never pays for a whole day's expiry at once; twice what one batch can
    /// record, so expiry outpaces insertion and works off any backlog. (A fixed
    /// 256 against up to 1,024 recorded per batch let the table outgrow its
    /// retention window without bound.)
    pub fn expire_len_max(&self) -> usize {
        2 * self.batch_len_max
    }

    /// How long to wait before re-opening after `failures` failures in a row.
    fn reopen_interval(&self, failures: u32) -> Duration {
        let doubled = self.reopen_interval_min.saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(self.reopen_interval_max)
    }
}

/// What the writer's queue carries.
// Commands are the common case: boxing them to shrink the wake-up would cost
// an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Work {
    /// A command to decide, and where its answer goes.
    Command {
        command: Command,
        /// The request, journaled if the command is refused.
        origin: Option<rejections::Origin>,
        reply: oneshot::Sender<Result<Answer, SubmitError>>,
    },
    /// Refusals on sight wait in [`RefusedOnSight`]: sent by the one that found it empty.
    Journal,
    /// The writer's own timer went off: nothing to decide, only a look at the
    /// clock (holds due to expire, refusals on sight to journal).
    Tick,
}

/// How long refusals on sight may wait for the writer to journal them when no
/// command comes to wake it: one wake-up of the writer per this long at most,
/// not one per refusal (a wake-up per refusal cost a third of a refusal's CPU).
const JOURNAL_DELAY: Duration = Duration::from_millis(5);

/// An idle writer looks at the clock at least this often while a hold is
/// active, so that a hold's `hold_expired` is appended at most this long
/// after its `expires_at` (by the ledger's clock, which a test may move).
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// How often the writer looks for clinic days that closed (API.md "Open and
/// closed days"): a day's holds and waiting entries expire at most this long
/// after it closes. Commands are refused from the very instant, by `decide`.
const CLOSING_TICK: chrono::Duration = chrono::Duration::seconds(1);

/// The journal records of commands refused on sight, encoded by the callers
/// that answered them, waiting for the writer to append them: at the start of
/// its next batch, or [`JOURNAL_DELAY`] after the first of them arrived.
type RefusedOnSight = Arc<Mutex<Vec<Vec<u8>>>>;

/// What HTTP handlers hold: a way to submit commands and to read the published state.
#[derive(Clone)]
pub struct WriterHandle {
    queue: mpsc::Sender<Work>,
    published: Arc<RwLock<State>>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    /// The writer's clock, for the time a refusal on sight is journaled with.
    clock: Arc<dyn Clock>,
    refused_on_sight: RefusedOnSight,
    /// Refusals on sight waiting at most (`queue_len_max`); beyond, `Overloaded`.
    refused_on_sight_max: usize,
    /// The last durable ledger position, for readers that follow the log.
    durable: watch::Receiver<u64>,
    /// Closed days' records, which the published state no longer holds.
    closed: Arc<ClosedStore>,
}

impl WriterHandle {
    /// The closed-day store: what reads of closed days find (the published
    /// state holds open days only).
    pub fn closed(&self) -> &ClosedStore {
        &self.closed
    }

    /// Queues `command` and waits for its durable answer.
    pub async fn submit(&self, command: Command) -> Result<Answer, SubmitError> {
        self.submit_from(command, None).await
    }

    /// Like `submit`, with the request it came from, for the rejection journal.
    ///
    /// A command the published state alone refuses ([`core::refusal_on_sight`])
    /// is answered here, on the caller's task, without waiting for the writer:
    /// its journal record is left for the writer, and nobody waits for that.
    /// At most `queue_len_max` records wait; beyond, a refusal is `Overloaded`
    /// as a command meeting a full queue is.
    pub async fn submit_from(&self, command: Command, origin: Option<rejections::Origin>) -> Result<Answer, SubmitError> {
        if !self.is_writable() {
            return Err(self.status.refusal());
        }
        let now = self.clock.now();
        if let Some(rejection) = self.read(|state| core::refusal_on_sight(state, &command, now)) {
            // Encoded here, so the writer only appends bytes (and the request's
            // buffer is let go of on this thread, as soon as it is copied).
            let record = codec::encode_rejection(&rejected(in_micros(now), &command, origin, &rejection));
            let first = {
                let mut waiting = self.refused_on_sight.lock();
                if waiting.len() >= self.refused_on_sight_max {
                    return Err(SubmitError::Overloaded);
                }
                waiting.push(record);
                waiting.len() == 1
            };
            if first {
                // Wakes the writer, which gives the records JOURNAL_DELAY to
                // gather. A full queue needs no wake-up: the writer is busy and
                // journals them before its next batch.
                let _ = self.queue.try_send(Work::Journal);
            }
            self.metrics.command(rejection.code());
            return Ok(Answer::Fresh(Err(rejection)));
        }
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Work::Command { command, origin, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => self.status.refusal(),
        })?;
        answer.await.map_err(|_| self.status.refusal())?
    }

    /// Runs `read` against the published state: every acknowledged command, and
    /// nothing that is not yet durable. Keep it short: the writer waits for it
    /// to publish the next batch.
    pub fn read<R>(&self, read: impl FnOnce(&State) -> R) -> R {
        read(&self.published.read())
    }

    /// False while storage is down, and once the writer has stopped.
    pub fn is_writable(&self) -> bool {
        self.status.writable.load(Ordering::Acquire)
    }

    pub fn health(&self) -> Health {
        self.status.health.lock().clone()
    }

    /// Follows the last durable position: changes after every batch that appended.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// One batch's worth of work, kept until it is durable.
#[derive(Default)]
struct Batch {
    events: Vec<core::Event>,
    /// Stored answers of keyed commands that appended no event, each with the
    /// number of events the batch had before it, so the published copy records
    /// them in the same order as the working copy.
    responses: Vec<(usize, core::Text, StoredResponse)>,
    /// What the batch's `days_closed` events take out of memory, for the
    /// closed-day store once they are durable.
    closed: Vec<(core::Text, core::days::ClosedDays)>,
    /// Where each event's record is, for the read side's feed...
    locations: Vec<crate::log::Location>,
    /// ...unless the log could not say for one of them.
    unlocated: bool,
}

pub struct Writer {
    log: Box<dyn Log>,
    /// The journal of stored answers to keyed commands that appended nothing.
    responses: Box<dyn Log>,
    working: State,
    published: Arc<RwLock<State>>,
    render: Render,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
    metrics: Arc<Metrics>,
    /// The last `now` handed to the core; the writer's time never runs backwards,
    /// not even across a restart (it starts at the last event's time).
    now_last: DateTime<Utc>,
    /// Set when a batch failed: its events may or may not be on disk, and the
    /// working copy holds them. Cleared by a successful [`Writer::reopen`].
    failed: bool,
    /// Storage failures (of batches or re-opens) since the last batch that committed.
    failures_in_a_row: u32,
    /// The responses journal's last position published.
    responses_published: Position,
    /// The commands of the last batch that were refused, by index, for the journal.
    refused: Vec<(usize, Rejection)>,
    /// Refused commands are appended here after they are answered.
    journal: Option<rejections::Journal>,
    refused_on_sight: RefusedOnSight,
    durable: watch::Sender<u64>,
    encoded: Vec<u8>,
    /// The encoder's buffer for nested messages, reused like `encoded`.
    scratch: Vec<u8>,
    /// When the writer last looked for closed days (none yet: the first batch does).
    closings_checked: Option<DateTime<Utc>>,
    /// Where closed days' records go, and are read back from for commands
    /// that name them; made in memory when first needed if none is given.
    closed: Option<Arc<ClosedStore>>,
    /// The read side's feed of durable batches, if it has one.
    feed: Option<crate::log::events::Feed>,
}

/// Records read back from the closed-day store kept in the working state's
/// cache at most; beyond, the cache starts again.
const CLOSED_CACHE_MAX: usize = 4096;

impl Writer {
    pub fn new(
        log: Box<dyn Log>,
        responses: Box<dyn Log>,
        state: State,
        render: Render,
        clock: Arc<dyn Clock>,
        config: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> Writer {
        assert_eq!(log.position_next(), state.position + 1, "the state must be the log recovered");
        metrics.idempotency_keys.set(state.idempotency.len() as i64);
        Writer {
            responses_published: responses.position_next() - 1,
            log,
            responses,
            now_last: state.recorded_at_last,
            durable: watch::Sender::new(state.position),
            published: Arc::new(RwLock::new(state.clone())),
            working: state,
            render,
            clock,
            config,
            metrics,
            failed: false,
            failures_in_a_row: 0,
            closings_checked: None,
            closed: None,
            feed: None,
            refused: Vec::new(),
            refused_on_sight: RefusedOnSight::default(),
            journal: None,
            encoded: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Refused commands go to this journal from now on.
    pub fn with_journal(mut self, journal: rejections::Journal) -> Writer {
        self.journal = Some(journal);
        self
    }

    fn now(&mut self) -> DateTime<Utc> {
        self.now_last = self.now_last.max(in_micros(self.clock.now()));
        self.now_last
    }

    /// Decides, appends, makes durable and publishes one batch. Returns one
    /// answer per command, in order: decided, or refused undecided (a full
    /// idempotency table). On a storage error nothing is published, and the
    /// writer must [`Writer::reopen`] before it commits again.
    pub fn commit(&mut self, commands: &[Command]) -> Result<Vec<Result<Answer, SubmitError>>, LogError> {
        assert!(!self.failed, "a writer whose log failed must reopen before it commits again");
        let result = self.commit_batch(commands);
        self.failed = result.is_err();
        if self.failed {
            self.failures_in_a_row += 1;
            self.metrics.storage_failures.inc();
        } else {
            self.failures_in_a_row = 0;
        }
        result
    }

    /// After a failed batch: re-opens both logs (new descriptors, tails
    /// re-verified, torn tails cut), publishes what of the failed batch reached
    /// the disk (it is durable now, and a keyed repeat must find its answer),
    /// and rebuilds the working copy from the published one, since it holds
    /// the failed batch's events. On failure the writer stays failed.
    pub fn reopen(&mut self) -> Result<(), ReopenFailure> {
        assert!(self.failed, "only a failed writer re-opens");
        let result = self.reopen_logs();
        let outcome = match &result {
            Ok(()) => "ok",
            Err(failure) if failure.permanent => "never",
            Err(_) => "later",
        };
        self.metrics.storage_reopens.with_label_values(&[outcome]).inc();
        match &result {
            // The rejection journal, given up if the disk failed it too, is tried again.
            Ok(()) => {
                if let Some(journal) = &mut self.journal {
                    journal.revive();
                }
            }
            Err(failure) => {
                self.failures_in_a_row += 1;
                tracing::warn!(cause = %failure.cause, permanent = failure.permanent, "re-opening the logs failed");
            }
        }
        result
    }

    fn reopen_logs(&mut self) -> Result<(), ReopenFailure> {
        let log = self.log.reopen()?;
        let responses = self.responses.reopen()?;
        let published_position = self.published.read().position;
        if log.position_next() <= published_position {
            return Err(ReopenFailure::permanent(format!(
                "the re-opened ledger ends at position {} but position {published_position} was acknowledged",
                log.position_next() - 1
            )));
        }
        if responses.position_next() <= self.responses_published {
            return Err(ReopenFailure::permanent(format!(
                "the re-opened responses journal ends at position {} but position {} was acknowledged",
                responses.position_next() - 1,
                self.responses_published
            )));
        }
        // Read what got there before taking the lock: readers go on meanwhile.
        let mut arrived = Vec::new();
        let mut failure = None;
        let mut decoder = Decoder::for_recovery();
        log.read_from(published_position + 1, &mut |position, payload| match events::decode_at(&mut decoder, position, payload) {
            Ok(event) => {
                arrived.push(event);
                std::ops::ControlFlow::Continue(())
            }
            Err(fault) => {
                failure = Some(format!("{}: position {position}: {fault}", log.path_of(position).display()));
                std::ops::ControlFlow::Break(())
            }
        })
        .map_err(|error| ReopenFailure { cause: error.to_string(), permanent: false })?;
        let mut answers = Vec::new();
        responses
            .read_from(self.responses_published + 1, &mut |position, payload| match replay::decode_answer(position, payload) {
                Ok(answer) => {
                    answers.push(answer);
                    std::ops::ControlFlow::Continue(())
                }
                Err(error) => {
                    failure = Some(error.to_string());
                    std::ops::ControlFlow::Break(())
                }
            })
            .map_err(|error| ReopenFailure { cause: error.to_string(), permanent: false })?;
        if let Some(failure) = failure {
            return Err(ReopenFailure::permanent(failure));
        }

        let mut published = self.published.write();
        // What reached the disk of a batch that failed may close days the store lacks.
        let closes = arrived.iter().any(|event| matches!(event.kind, core::EventKind::DaysClosed { .. }));
        let store = if closes { Some(self.closed.get_or_insert_with(|| Arc::new(ClosedStore::in_memory())).clone()) } else { None };
        let mut replay = Replay::new(&mut published);
        if let Some(store) = &store {
            replay = replay.storing(store).map_err(|error| ReopenFailure { cause: error.to_string(), permanent: false })?;
        }
        for event in &arrived {
            if replay.event(event).is_break() {
                break;
            }
        }
        replay.check().map_err(|error| ReopenFailure::permanent(error.to_string()))?;
        if let Some(store) = &store {
            store.sync().map_err(|error| ReopenFailure { cause: error.to_string(), permanent: false })?;
        }
        for (tenant, response, recorded_at) in answers {
            published.idempotency.record(&tenant, response, recorded_at);
        }
        let position = published.position;
        drop(published);
        // The working copy goes first, so the two copies never coexist with a third.
        self.working = State::new(self.working.rules);
        self.working = self.published.read().clone();
        self.log = log;
        self.responses = responses;
        self.responses_published = self.responses.position_next() - 1;
        self.failed = false;
        self.metrics.idempotency_keys.set(self.working.idempotency.len() as i64);
        self.metrics.events_appended.inc_by(arrived.len() as u64);
        self.durable.send_replace(position);
        tracing::info!(position, recovered_events = arrived.len(), "re-opened the logs after a storage failure; writing again");
        Ok(())
    }

    fn commit_batch(&mut self, commands: &[Command]) -> Result<Vec<Result<Answer, SubmitError>>, LogError> {
        let now = self.now();
        let retention = self.working.rules.idempotency_retention;
        self.working.idempotency.expire(now, retention, self.config.expire_len_max());
        let mut batch = Batch::default();
        self.refused.clear();
        // Holds past their expiry end first, so that this batch finds their slots free.
        let context = Context { now, position_next: self.working.position + 1 };
        let expired = core::holds::expiries_due(&self.working, &context);
        self.append(expired, &mut batch)?;
        // Then the days that closed, with the holds still active on them.
        if self.closing_check_due(now) {
            self.closings_checked = Some(now);
            let context = Context { now, position_next: self.working.position + 1 };
            let closings = core::days::closings_due(&self.working, &context);
            for event in &closings {
                if let core::EventKind::DaysClosed { clinic, through } = &event.kind {
                    let tenant = self.working.tenant(&event.tenant).expect("a tenant with days to close");
                    batch.closed.push((event.tenant.clone(), core::days::closing(tenant, clinic, *through, event.position)));
                }
                core::apply(&mut self.working, event);
            }
            self.append_decided(closings, &mut batch)?;
        }
        let mut answers = Vec::with_capacity(commands.len());
        for (index, command) in commands.iter().enumerate() {
            let (answer, refused) = self.decide_one(command, now, &mut batch)?;
            if let Some(rejection) = refused {
                self.refused.push((index, rejection));
            }
            answers.push(answer);
        }

        let started = Instant::now();
        if !batch.events.is_empty() {
            self.log.sync()?;
        }
        // Durable in the ledger, then in the closed-day store (one commit), then published.
        if !batch.closed.is_empty() {
            let store = self.closed.get_or_insert_with(|| Arc::new(ClosedStore::in_memory()));
            store
                .put_all(&batch.closed, true)
                .map_err(|error| LogError::Io { path: crate::closed::FILE.into(), source: std::io::Error::other(error.to_string()) })?;
        }
        if !batch.responses.is_empty() {
            for (_, tenant, response) in &batch.responses {
                self.responses.append(&codec::encode_rejected_response(tenant, response, now))?;
            }
            self.responses.sync()?;
        }
        if !batch.events.is_empty() || !batch.responses.is_empty() {
            self.metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
        }

        let mut published = self.published.write();
        published.idempotency.expire(now, retention, self.config.expire_len_max());
        let mut responses = batch.responses.into_iter().peekable();
        for (index, event) in batch.events.iter().enumerate() {
            while let Some((_, tenant, response)) = responses.next_if(|(before, _, _)| *before == index) {
                published.idempotency.record(&tenant, response, now);
            }
            core::apply(&mut published, event);
            if let core::EventKind::BookingCreated(created) = &event.kind {
                published.share_booking(&self.working, &event.tenant, &created.details.booking_id);
            }
        }
        for (_, tenant, response) in responses {
            published.idempotency.record(&tenant, response, now);
        }
        let position = published.position;
        drop(published);
        self.responses_published = self.responses.position_next() - 1;
        self.metrics.idempotency_keys.set(self.working.idempotency.len() as i64);
        self.metrics.events_appended.inc_by(batch.events.len() as u64);
        // The read side gets the events before the position that covers them.
        if let Some(feed) = &self.feed
            && !batch.events.is_empty()
            && !batch.unlocated
        {
            let durable = crate::log::events::DurableBatch { events: batch.events, locations: batch.locations };
            // Full, or gone: the read side reads these events from the files.
            let _ = feed.try_send(Arc::new(durable));
        }
        self.durable.send_replace(position);
        self.metrics.batch_len.observe(commands.len() as f64);
        Ok(answers)
    }

    /// One command's answer, and its rejection if it was refused now (not repeated).
    fn decide_one(
        &mut self,
        command: &Command,
        now: DateTime<Utc>,
        batch: &mut Batch,
    ) -> Result<(Result<Answer, SubmitError>, Option<Rejection>), LogError> {
        if let Some(key) = &command.idempotency {
            let scope = Scope { tenant: command.tenant.clone(), actor: command.actor.clone(), key: key.key.clone() };
            let retention = self.working.rules.idempotency_retention;
            let table = &self.working.idempotency;
            match table.check(&scope, &key.fingerprint, now, retention) {
                IdempotencyCheck::New => {
                    // A key already held (expired, not yet forgotten) is replaced in place.
                    if table.len() >= self.config.idempotency_keys_max && !table.holds(&scope) {
                        self.metrics.command("overloaded");
                        let expires_first = table.recorded_first().map_or(now, |at| at + retention);
                        let retry_after_secs = ((expires_first - now).num_seconds() + 1).clamp(1, u32::MAX as i64) as u32;
                        return Ok((Err(SubmitError::IdempotencyFull { retry_after_secs }), None));
                    }
                }
                IdempotencyCheck::Repeat(stored) => {
                    self.metrics.command("repeated");
                    return Ok((Ok(Answer::Stored { status: stored.status, body: stored.body, repeated: true }), None));
                }
                IdempotencyCheck::Reused => {
                    let rejection = Rejection::IdempotencyKeyReused;
                    self.metrics.command(rejection.code());
                    let refused = self.journal.is_some().then(|| rejection.clone());
                    return Ok((Ok(Answer::Fresh(Err(rejection))), refused));
                }
            }
        }
        if let Err(error) = self.prefetch(command) {
            // Not knowing a closed day's record, the writer cannot decide: nothing is executed.
            let cause = error.to_string();
            return Ok((Err(SubmitError::StorageDown { cause, retry_after_secs: 1 }), None));
        }
        let context = Context { now, position_next: self.working.position + 1 };
        let (outcome, mut events) = match core::decide(&self.working, command, &context) {
            Ok(events) => {
                for event in &events {
                    core::apply(&mut self.working, event);
                }
                self.metrics.command("accepted");
                (Ok(core::reply(&self.working, command, &events)), events)
            }
            Err(rejection) => {
                let events = core::decide_refusal(&self.working, command, &rejection, &context);
                for event in &events {
                    core::apply(&mut self.working, event);
                }
                self.metrics.command(rejection.code());
                (Err(rejection), events)
            }
        };
        let stored = self.store(command, &outcome, now);
        if let Some(stored) = &stored {
            match events.last_mut() {
                Some(last) => last.response = Some(stored.clone()),
                None => batch.responses.push((batch.events.len(), command.tenant.clone(), stored.clone())),
            }
        }
        self.append_decided(events, batch)?;
        // Kept only for the rejection journal, if there is one.
        let refused = if self.journal.is_some() { outcome.as_ref().err().cloned() } else { None };
        let answer = match stored {
            Some(stored) => Answer::Stored { status: stored.status, body: stored.body, repeated: false },
            None => Answer::Fresh(outcome),
        };
        Ok((Ok(answer), refused))
    }

    /// Reads back from the closed-day store what `command` names that the
    /// working state no longer holds (a booking, hold or entry of a closed
    /// day, an external ref bound on one), into the state's cache, so that
    /// `decide` finds it without I/O.
    fn prefetch(&mut self, command: &Command) -> Result<(), crate::closed::StoreError> {
        use core::Action;
        let name = &command.tenant;
        let Some(tenant) = self.working.tenants.get_mut(name) else { return Ok(()) };
        if tenant.closed.len() >= CLOSED_CACHE_MAX {
            tenant.closed = core::ClosedCache::default();
        }
        let Some(store) = &self.closed else { return Ok(()) };
        let booking = |tenant: &mut core::TenantState, id: &uuid::Uuid| -> Result<(), crate::closed::StoreError> {
            if tenant.find_booking(id).is_none()
                && let Some(found) = store.booking(tenant, name, id)?
            {
                let day = (found.details.clinic.clone(), found.details.date);
                if let Some((_, zone)) = store.closed_day(name, &day.0, day.1)? {
                    tenant.closed.zones.insert(day, zone);
                }
                tenant.closed.bookings.insert(*id, found);
            }
            Ok(())
        };
        match &command.action {
            Action::Cancel { booking_id, .. } | Action::Reschedule { booking_id, .. } | Action::MarkAttendance { booking_id, .. } => {
                booking(tenant, booking_id)?;
            }
            Action::ConfirmHold { hold_id, .. } | Action::ReleaseHold { hold_id } => {
                if tenant.find_hold(hold_id).is_none()
                    && let Some(hold) = store.hold(tenant, name, hold_id)?
                {
                    if let core::HoldStatus::Confirmed(id) = hold.status {
                        booking(tenant, &id)?;
                    }
                    tenant.closed.holds.insert(*hold_id, hold);
                }
            }
            Action::WithdrawEntry { entry_id } => {
                if tenant.find_entry(entry_id).is_none()
                    && let Some(entry) = store.entry(tenant, name, entry_id)?
                {
                    tenant.closed.entries.insert(*entry_id, entry);
                }
            }
            Action::Book(details) => {
                if let Some(external_ref) = details.external_ref()
                    && tenant.find_external_ref(external_ref).is_none()
                    && let Some(id) = store.external_ref(name, external_ref)?
                {
                    booking(tenant, &id)?;
                    tenant.closed.external_refs.insert(external_ref.clone(), id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies the ledger's own events (not a client's command) to the working
    /// state and appends them to the batch.
    fn append(&mut self, events: Vec<core::Event>, batch: &mut Batch) -> Result<(), LogError> {
        for event in &events {
            core::apply(&mut self.working, event);
        }
        self.append_decided(events, batch)
    }

    /// Whether it is time to look for closed days again.
    fn closing_check_due(&self, now: DateTime<Utc>) -> bool {
        self.closings_checked.is_none_or(|at| now - at >= CLOSING_TICK)
    }

    /// Whether the clock has work for an idle writer: a hold past its expiry,
    /// or a day that closed with something still open on it.
    fn clock_work_due(&mut self) -> bool {
        let now = self.now();
        if core::holds::next_expiry(&self.working).is_some_and(|at| at <= now) {
            return true;
        }
        if !self.closing_check_due(now) {
            return false;
        }
        let context = Context { now, position_next: self.working.position + 1 };
        let due = !core::days::closings_due(&self.working, &context).is_empty();
        if !due {
            self.closings_checked = Some(now);
        }
        due
    }

    /// Appends events already applied to the working state to the log and the batch.
    fn append_decided(&mut self, mut events: Vec<core::Event>, batch: &mut Batch) -> Result<(), LogError> {
        for event in &events {
            self.encoded.clear();
            crate::log::encode::encode_event(event, &mut self.encoded, &mut self.scratch);
            let position = self.log.append(&self.encoded)?;
            assert_eq!(position, event.position, "the log and the core agree on positions");
            match self.log.last_location() {
                Some(location) => batch.locations.push(location),
                None => batch.unlocated = true,
            }
        }
        batch.events.append(&mut events);
        Ok(())
    }

    /// For a keyed command, renders its answer and records it in the working
    /// state (the published state gets it when the batch is durable).
    fn store(&mut self, command: &Command, outcome: &Outcome, now: DateTime<Utc>) -> Option<StoredResponse> {
        let key = command.idempotency.as_ref()?;
        let (status, body) = (self.render)(outcome);
        let stored = StoredResponse {
            actor: command.actor.clone(),
            key: key.key.clone(),
            fingerprint: key.fingerprint,
            status,
            body: Arc::from(body),
        };
        self.working.idempotency.record(&command.tenant, stored.clone(), now);
        Some(stored)
    }

    /// Keeps closed days' records in `store` (an in-memory one by default).
    pub fn with_closed_store(mut self, store: Arc<ClosedStore>) -> Writer {
        self.closed = Some(store);
        self
    }

    /// Hands each durable batch's events to the read side through `feed`.
    pub fn with_feed(mut self, feed: crate::log::events::Feed) -> Writer {
        self.feed = Some(feed);
        self
    }

    /// Starts the writer thread. Dropping every handle stops it once the queue is drained.
    pub fn spawn(mut self) -> (WriterHandle, JoinHandle<()>) {
        let closed = self.closed.get_or_insert_with(|| Arc::new(ClosedStore::in_memory())).clone();
        let (queue, receiver) = mpsc::channel(self.config.queue_len_max);
        let status =
            Arc::new(Status { writable: AtomicBool::new(true), health: Mutex::new(Health::Writing), retry_after_secs: AtomicU32::new(1) });
        let handle = WriterHandle {
            queue,
            published: self.published.clone(),
            status: status.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            refused_on_sight: self.refused_on_sight.clone(),
            refused_on_sight_max: self.config.queue_len_max,
            durable: self.durable.subscribe(),
            closed,
        };
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || self.run(receiver, &status))
            .expect("spawning the writer thread");
        (handle, thread)
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Work>, status: &Status) {
        // However the thread ends (drained, given up on its storage, or a
        // panic in an assertion), readiness must say the writer is gone.
        struct Ended<'a>(&'a Status);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                let mut health = self.0.health.lock();
                self.0.writable.store(false, Ordering::Release);
                if *health == Health::Writing {
                    *health = Health::Stopped;
                }
            }
        }
        let _ended = Ended(status);
        let mut commands = Vec::with_capacity(self.config.batch_len_max);
        let mut origins = Vec::with_capacity(self.config.batch_len_max);
        let mut replies = Vec::with_capacity(self.config.batch_len_max);
        // Only to wait for the queue with a deadline, while refusals on sight wait.
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a timer for the writer thread");
        loop {
            // Refusals on sight wait for company, JOURNAL_DELAY at most; a hold
            // expires at most EXPIRY_TICK after its time.
            let journal_wait = (!self.refused_on_sight.lock().is_empty()).then_some(JOURNAL_DELAY);
            let expiry_wait = core::holds::next_expiry(&self.working)
                .map(|at| (at - self.clock.now()).to_std().unwrap_or(Duration::ZERO).min(EXPIRY_TICK));
            // A ledger with clinics looks for closed days every CLOSING_TICK.
            let closing_wait = (!self.working.tenants.values().all(|t| t.clinics.is_empty() && t.waiting.is_empty())).then(|| {
                let next = self.closings_checked.map_or(self.clock.now(), |at| at + CLOSING_TICK);
                (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO)
            });
            let first = match journal_wait.into_iter().chain(expiry_wait).chain(closing_wait).min() {
                None => receiver.blocking_recv(),
                // The timeout made inside the runtime: its timer needs the runtime's clock.
                Some(wait) => match timer.block_on(async { tokio::time::timeout(wait, receiver.recv()).await }) {
                    Ok(first) => first,
                    Err(_elapsed) => {
                        self.journal_refused_on_sight();
                        Some(Work::Tick)
                    }
                },
            };
            let Some(first) = first else { break };
            let mut next = Some(first);
            while let Some(work) = next.take() {
                if let Work::Command { command, origin, reply } = work {
                    commands.push(command);
                    origins.push(origin);
                    replies.push(reply);
                }
                if commands.len() < self.config.batch_len_max {
                    next = receiver.try_recv().ok();
                }
            }
            self.metrics.queue_depth.set(receiver.len() as i64);
            if commands.is_empty() && !self.clock_work_due() {
                // Only a wake-up for refusals on sight, or for a hold or a closing not due yet.
                continue;
            }
            // Answered already, and before this batch's commands arrived: journaled first.
            self.journal_refused_on_sight();
            match self.commit(&commands) {
                Ok(answers) => {
                    for (reply, answer) in replies.drain(..).zip(answers) {
                        let _ = reply.send(answer);
                    }
                    self.journal_refused(&commands, &mut origins);
                }
                Err(error) => {
                    let cause = error.to_string();
                    tracing::error!(%cause, "a write or sync of the log failed: the batch's outcome is unknown; refusing commands until the logs re-open");
                    let retry_after_secs = self.retry_after_secs();
                    status.retry_after_secs.store(retry_after_secs, Ordering::Relaxed);
                    status.set(Health::StorageDown { cause: cause.clone(), since: self.clock.now(), retrying: true }, &self.metrics);
                    let unknown = SubmitError::OutcomeUnknown { cause, retry_after_secs };
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(unknown.clone()));
                    }
                    if !self.wait_for_storage(&mut receiver, status) {
                        break;
                    }
                }
            }
            commands.clear();
            origins.clear();
        }
        self.journal_refused_on_sight();
        if let Some(journal) = &mut self.journal {
            journal.sync();
        }
        tracing::info!(position = self.working.position, "writer drained its queue and stopped");
    }

    /// The next re-open's delay, in whole seconds for `Retry-After`.
    fn retry_after_secs(&self) -> u32 {
        self.config.reopen_interval(self.failures_in_a_row).as_secs_f64().ceil().max(1.0) as u32
    }

    /// While storage is down: refuses every command that arrives (not
    /// executed) and re-opens the logs every so often. True once the writer
    /// writes again; false when it gives up for good or every handle is gone.
    fn wait_for_storage(&mut self, receiver: &mut mpsc::Receiver<Work>, status: &Status) -> bool {
        /// How often commands that slipped into the queue are refused.
        const REFUSE_EVERY: Duration = Duration::from_millis(10);
        let mut reopen_at = Instant::now() + self.config.reopen_interval(self.failures_in_a_row);
        loop {
            loop {
                match receiver.try_recv() {
                    Ok(Work::Command { reply, .. }) => {
                        let _ = reply.send(Err(status.refusal()));
                    }
                    // Storage is down, so nothing is refused on sight: only
                    // what waited from before it failed, journaled as usual.
                    Ok(Work::Journal) => self.journal_refused_on_sight(),
                    Ok(Work::Tick) => {}
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                }
            }
            let now = Instant::now();
            if now < reopen_at {
                std::thread::sleep(REFUSE_EVERY.min(reopen_at - now));
                continue;
            }
            match self.reopen() {
                Ok(()) => {
                    status.set(Health::Writing, &self.metrics);
                    return true;
                }
                Err(failure) => {
                    let retrying = !failure.permanent;
                    let since = match &*status.health.lock() {
                        Health::StorageDown { since, .. } => *since,
                        _ => self.clock.now(),
                    };
                    status.retry_after_secs.store(self.retry_after_secs(), Ordering::Relaxed);
                    status.set(Health::StorageDown { cause: failure.cause, since, retrying }, &self.metrics);
                    if !retrying {
                        tracing::error!("the logs cannot be re-opened: commands are refused until a restart");
                        return false;
                    }
                    reopen_at = Instant::now() + self.config.reopen_interval(self.failures_in_a_row);
                }
            }
        }
    }
}

impl Writer {
    /// Appends the last batch's refused commands to the rejection journal
    /// (after their answers went out: a refusal never waits for it).
    fn journal_refused(&mut self, commands: &[Command], origins: &mut [Option<rejections::Origin>]) {
        let Some(journal) = &mut self.journal else { return };
        let recorded_at = self.now_last;
        let records =
            self.refused.drain(..).map(|(index, rejection)| rejected(recorded_at, &commands[index], origins[index].take(), &rejection));
        let dropped = journal.dropped();
        journal.write(records);
        self.metrics.rejections_dropped.inc_by(journal.dropped() - dropped);
    }

    /// Appends the journal records of the commands refused on sight that wait.
    fn journal_refused_on_sight(&mut self) {
        let records = std::mem::take(&mut *self.refused_on_sight.lock());
        let Some(journal) = &mut self.journal else { return };
        if records.is_empty() {
            return;
        }
        let dropped = journal.dropped();
        journal.write_encoded(records);
        self.metrics.rejections_dropped.inc_by(journal.dropped() - dropped);
    }
}

/// `time` to the microsecond: the precision the logs keep, so recovery sees the same instants.
fn in_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).expect("a representable clock")
}

/// A refused command as the rejection journal keeps it.
fn rejected(
    recorded_at: DateTime<Utc>,
    command: &Command,
    origin: Option<rejections::Origin>,
    rejection: &Rejection,
) -> rejections::RejectionRecord {
    rejections::RejectionRecord {
        recorded_at,
        tenant: command.tenant.clone(),
        actor: command.actor.clone(),
        request_id: command.request_id.clone(),
        idempotency_key: command.idempotency.as_ref().map(|k| k.key.clone()),
        code: rejection.code().into(),
        detail: rejection.to_string(),
        conflicts_with: rejection.conflicts_with(),
        method: origin.as_ref().map_or_else(|| "".into(), |o| o.method.clone()),
        path: origin.as_ref().map_or_else(|| "".into(), |o| o.path.clone()),
        body: origin.map(|o| o.body).unwrap_or_default(),
    }
}
