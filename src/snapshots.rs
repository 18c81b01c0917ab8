//! Snapshots of the state, so that start-up applies only the events after the
//! newest one (API.md "Snapshots"; the file format is `log::snapshot`).
//!
//! One function takes a snapshot, [`take`]: the newest snapshot that passes
//! every check (or an empty state), plus the events after it from the durable
//! log and the stored answers after it from the responses journal, through the
//! same `EventReader` and `apply` as start-up, written as the snapshot of that
//! position; then the snapshots beyond `snapshots_kept` are deleted. The
//! server's snapshot thread ([`spawn`]) calls it every `snapshot_every_events`
//! events, `ledger snapshot` calls it offline. It reads the logs' files up to
//! the durable position the writer publishes, never the writer's state or
//! locks, and never writes a log: it cannot hold the writer up. Its memory is
//! one state, freed after each snapshot.
//!
//! [`recover`] is start-up: the newest snapshot that passes every check and
//! the records after it, or the whole log. A snapshot that fails a check is
//! reported and skipped, so deleting every snapshot loses nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::closed::ClosedStore;
use crate::core::{Rules, State};
use crate::log::codec;
use crate::log::events::EventReader;
use crate::log::snapshot::{self, Logs, SnapshotHeader};
use crate::log::{Durable, Log, LogError, Position, Tail, location_path, record_hash_at};
use crate::metrics::Metrics;
use crate::replay::{RecoverError, Recovered, Replay, Start};

use crate::log::events::READ_CHUNK_LEN;

/// How often snapshots are taken and how many are kept (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// A snapshot is taken once the ledger has grown this many events past the last one.
    pub every_events: u64,
    /// Snapshots beyond the newest this many are deleted.
    pub kept: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig { every_events: 1_000_000, kept: 2 }
    }
}

/// Where a data directory keeps the logs a snapshot is taken from, and its snapshots.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub ledger: PathBuf,
    pub responses: PathBuf,
    pub snapshots: PathBuf,
}

/// How far a snapshot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// Through this position, which the writer made durable.
    Durable(Position),
    /// Through the log's last intact record (offline, with no writer to ask).
    Available,
}

/// A snapshot written.
#[derive(Debug)]
pub struct Taken {
    pub path: PathBuf,
    pub header: SnapshotHeader,
    /// The position of the snapshot it started from, if any.
    pub base: Option<Position>,
    /// Events applied after the base.
    pub events: u64,
    /// Stored answers recorded after the base's responses position.
    pub responses: u64,
    /// Snapshots deleted beyond `kept`.
    pub deleted: Vec<PathBuf>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Recover(#[from] RecoverError),
    #[error("stopped: the server is shutting down")]
    Stopped,
}

impl From<crate::log::events::ReadError> for SnapshotError {
    fn from(error: crate::log::events::ReadError) -> SnapshotError {
        SnapshotError::Recover(RecoverError::Read(error))
    }
}

/// Takes a snapshot of the state through `through`, from the newest snapshot
/// that passes every check (or from an empty state), then deletes the
/// snapshots beyond the newest `kept`. Checks `stop` between chunks of records.
pub fn take(dirs: &Dirs, rules: Rules, through: Through, kept: usize, stop: &AtomicBool) -> Result<Taken, SnapshotError> {
    take_with(dirs, rules, through, None, kept, stop)
}

/// [`take`], with the stored answers read through `responses_through` (all
/// there are when None): tests take snapshots of every position as it stood.
fn take_with(
    dirs: &Dirs,
    rules: Rules,
    through: Through,
    responses_through: Option<Position>,
    kept: usize,
    stop: &AtomicBool,
) -> Result<Taken, SnapshotError> {
    let started = Instant::now();
    let last = match through {
        Through::Durable(position) => position,
        Through::Available => crate::log::last_position(&dirs.ledger)?.unwrap_or(0),
    };
    let logs = Logs { ledger: &dirs.ledger, ledger_last: last, responses: &dirs.responses };
    let (mut state, base, responses_base) = match snapshot::load_newest(&dirs.snapshots, &logs, rules) {
        Some(loaded) => (loaded.state, Some(loaded.header.position), loaded.header.responses_position),
        None => (State::new(rules), None, 0),
    };

    let mut reader = EventReader::for_recovery(&dirs.ledger, state.position + 1);
    let mut replay = Replay::new(&mut state);
    let stopped = || if stop.load(Ordering::Relaxed) { Err(SnapshotError::Stopped) } else { Ok(()) };
    stopped()?;
    reader.read_through(Some(last), &mut |event, _| replay.event(&event), |_| stopped())?;
    replay.check()?;
    let events = replay.events;
    assert_eq!(state.position, last, "the snapshot's state is the log's through its position");

    let (responses_position, responses) = record_responses(&dirs.responses, responses_base, responses_through, &mut state, stop)?;
    // Deterministic, and never later than the writer's clock (which starts at
    // the last event's time): a recovery from this snapshot forgets at least
    // what it forgot.
    state.idempotency.settle(state.recorded_at_last, rules.idempotency_retention);

    let vanished = |dir: &Path, position| LogError::Corrupt {
        path: dir.to_owned(),
        position,
        offset: 0,
        reason: "the record a snapshot was just taken through is gone".into(),
    };
    let link = record_hash_at(&dirs.ledger, last)?.ok_or_else(|| vanished(&dirs.ledger, last))?;
    let responses_link =
        record_hash_at(&dirs.responses, responses_position)?.ok_or_else(|| vanished(&dirs.responses, responses_position))?;
    let body = codec::encode_snapshot(&state, responses_position);
    debug_assert_eq!(codec::decode_snapshot(&body, rules).map(|d| d.state).as_ref(), Ok(&state), "a snapshot decodes to its state");
    drop(state);
    let (path, header) = snapshot::write_snapshot(&dirs.snapshots, last, link, responses_position, responses_link, &body)?;
    drop(body);
    let deleted = snapshot::prune(&dirs.snapshots, last, kept)?;
    Ok(Taken { path, header, base, events, responses, deleted, elapsed: started.elapsed() })
}

/// Records the stored answers of the responses journal after `from` (through
/// `through`, or all there are) into `state`; returns the journal position read
/// through and how many it read.
/// The journal has no durable position of its own, so what was read is made
/// durable here (an fsync of the segment it ends in) before a snapshot names
/// it: a snapshot is never the only copy of an answer.
fn record_responses(
    dir: &Path,
    from: Position,
    through: Option<Position>,
    state: &mut State,
    stop: &AtomicBool,
) -> Result<(Position, u64), SnapshotError> {
    let mut tail = Tail::new(dir, from + 1);
    let mut replay = Replay::new(state);
    let mut last_read = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(SnapshotError::Stopped);
        }
        let mut visit = |position, location, payload: &[u8]| {
            last_read = Some(location);
            replay.answer(position, payload, |_| true)
        };
        let read = match through {
            None => tail.read_available(READ_CHUNK_LEN, &mut visit)?,
            Some(last) => tail.read(last, READ_CHUNK_LEN, &mut visit)?,
        };
        replay.check()?;
        if read == 0 {
            break;
        }
    }
    let recorded = replay.answers;
    if let Some(location) = last_read {
        let path = location_path(dir, location);
        std::fs::File::open(&path).and_then(|file| file.sync_data()).map_err(LogError::io(&path))?;
    }
    Ok((tail.next_position() - 1, recorded))
}

/// The server's snapshot thread, stopped and joined at shutdown.
pub struct SnapshotThread {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl SnapshotThread {
    /// Stops a snapshot in progress at its next chunk of records (before it
    /// writes anything) and waits for the thread, which otherwise ends with the writer.
    pub fn stop(self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join()
    }
}

/// Starts the snapshot thread: it follows `durable` and takes a snapshot each
/// time the ledger has grown `every_events` past the last one (`taken_last`
/// at first). Ends when the writer does (its `durable` sender goes) or when
/// stopped. Must be called within a tokio runtime, whose handle it waits with.
pub fn spawn(
    dirs: Dirs,
    rules: Rules,
    config: SnapshotConfig,
    mut durable: Durable,
    taken_last: Position,
    metrics: Arc<Metrics>,
) -> SnapshotThread {
    let runtime = tokio::runtime::Handle::current();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ledger-snapshots".into())
        .spawn(move || {
            let mut next = taken_last.saturating_add(config.every_events);
            loop {
                // The watch's value is copied out at once: a borrow held would hold the writer's send up.
                let waited = runtime.block_on(async { durable.wait_for(|position| *position >= next).await.map(|position| *position) });
                let Ok(position) = waited else { return };
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                match take(&dirs, rules, Through::Durable(position), config.kept, &stopping) {
                    Ok(taken) => {
                        metrics.snapshot_position.set(position as i64);
                        metrics.snapshot_seconds.observe(taken.elapsed.as_secs_f64());
                        tracing::info!(
                            path = %taken.path.display(),
                            position,
                            base = taken.base.unwrap_or(0),
                            events = taken.events,
                            elapsed_ms = taken.elapsed.as_millis() as u64,
                            "wrote snapshot {} ({} events after the last) in {:.3} s",
                            taken.path.display(),
                            taken.events,
                            taken.elapsed.as_secs_f64()
                        );
                    }
                    Err(SnapshotError::Stopped) => return,
                    Err(error) => {
                        metrics.snapshot_failures.inc();
                        tracing::error!(
                            %error, position,
                            "the snapshot at position {position} failed; the next one is tried {} events later", config.every_events
                        );
                    }
                }
                next = position.saturating_add(config.every_events);
            }
        })
        .expect("spawning the snapshot thread");
    SnapshotThread { stop, thread }
}

/// What start-up recovered, and from which snapshot.
#[derive(Debug)]
pub struct StartUp {
    pub recovered: Recovered,
    /// The snapshot it started from (its position and file), if any.
    pub snapshot: Option<(Position, PathBuf)>,
}

/// Start-up: the state from the newest snapshot that passes every check and
/// the records of `log` and `responses` after it, or from the whole log.
/// Deletes what interrupted snapshot writes left first. A recovery from a
/// snapshot that meets a broken invariant is done again from the first event,
/// so that a bad snapshot is never mistaken for a bad ledger.
pub fn recover(log: &dyn Log, responses: &dyn Log, dirs: &Dirs, rules: Rules, now: DateTime<Utc>) -> Result<StartUp, RecoverError> {
    recover_storing(log, responses, dirs, rules, now, None)
}

/// [`recover`], with the closed-day store: a snapshot is used only if the
/// store holds every closed day it left out, and the records of each
/// `days_closed` replayed past the store's `through` are put into it.
pub fn recover_storing(
    log: &dyn Log,
    responses: &dyn Log,
    dirs: &Dirs,
    rules: Rules,
    now: DateTime<Utc>,
    closed: Option<&ClosedStore>,
) -> Result<StartUp, RecoverError> {
    let started = Instant::now();
    let mut start_up = recover_newest(log, responses, dirs, rules, now, closed)?;
    // The time to load the snapshot counts too.
    start_up.recovered.elapsed = started.elapsed();
    Ok(start_up)
}

fn recover_newest(
    log: &dyn Log,
    responses: &dyn Log,
    dirs: &Dirs,
    rules: Rules,
    now: DateTime<Utc>,
    closed: Option<&ClosedStore>,
) -> Result<StartUp, RecoverError> {
    let whole_log = || crate::replay::recover_storing(log, responses, Start::empty(rules), now, closed);
    match snapshot::remove_temporary(&dirs.snapshots) {
        Ok(removed) => {
            for path in removed {
                tracing::warn!(path = %path.display(), "deleted {}: a snapshot whose writing was interrupted", path.display());
            }
        }
        Err(error) => tracing::warn!(%error, "cannot delete the snapshots whose writing was interrupted"),
    }
    let logs = Logs { ledger: &dirs.ledger, ledger_last: log.position_next() - 1, responses: &dirs.responses };
    let Some(loaded) = snapshot::load_newest(&dirs.snapshots, &logs, rules) else {
        return Ok(StartUp { recovered: whole_log()?, snapshot: None });
    };
    if let Some(store) = closed
        && loaded.state.days_closed_last > store.through()?
    {
        tracing::warn!(
            path = %loaded.path.display(), days_closed = loaded.state.days_closed_last,
            "skipped snapshot {}: the closed-day store lacks days it leaves out; recovering from the first event",
            loaded.path.display()
        );
        return Ok(StartUp { recovered: whole_log()?, snapshot: None });
    }
    let position = loaded.header.position;
    let start = Start { state: loaded.state, responses_position: loaded.header.responses_position };
    match crate::replay::recover_storing(log, responses, start, now, closed) {
        Ok(recovered) => Ok(StartUp { recovered, snapshot: Some((position, loaded.path)) }),
        Err(RecoverError::Violation { position: at, reason }) => {
            tracing::warn!(
                path = %loaded.path.display(), at, %reason,
                "the events after snapshot {} break an invariant at position {at}; recovering from the first event to tell a bad snapshot from a bad ledger",
                loaded.path.display()
            );
            let recovered = whole_log()?;
            tracing::warn!(path = %loaded.path.display(), "skipped snapshot {}: it is not the state of its position", loaded.path.display());
            Ok(StartUp { recovered, snapshot: None })
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests;
