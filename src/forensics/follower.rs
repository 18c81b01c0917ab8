//! The follower: one reader that tails the durable ledger beside the writer and
//! keeps the read side's indexes up to date: the clinic index (time travel) and
//! the live audit (so `GET /audit` answers without rescanning the ledger).
//!
//! It reads the files, never the writer's state, and holds its locks only to
//! fold one chunk of events in; queries copy what they need out and let go.
//! A record it cannot read stops it, and every query waiting on it is told
//! why (file and position) instead of waiting forever.
//!
//! Its memory follows the open days: a closed day's record list goes to the
//! read side's store (`forensics::disk`) before it leaves the index, and the
//! live audit forgets the day's facts. Its start-up follows them too: every
//! `CHECKPOINT_EVENTS` events, and when the writer stops, it checkpoints the
//! index and the audit there, and a start-up continues from the checkpoint.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::READ_CHUNK_LEN;
use super::audit::{AuditReport, Auditor};
use super::clinics::{ClinicDay, ClinicIndex, DayChange, DayKey, DayRecords};
use super::disk::ReadStore;
use crate::core::Event;
use crate::core::Rules;
use crate::log::events::{EventReader, Fed, ReadError};
use crate::log::{Durable, Location, LogError, Position};

/// Events between two checkpoints of the read side: a start-up reads at most
/// about this many events past the newest (plus those since the last stop).
pub const CHECKPOINT_EVENTS: u64 = 250_000;

pub struct Indexes {
    dir: PathBuf,
    rules: Rules,
    store: Arc<ReadStore>,
    clinics: RwLock<ClinicIndex>,
    /// A `parking_lot` mutex, not a tokio one: nothing awaits while it is held.
    audit: Mutex<Auditor>,
    /// Every position up to this one is indexed and audited.
    indexed: watch::Sender<Position>,
    /// Why the follower stopped, if it did, and the position it could not read.
    failure: OnceLock<(String, Option<Position>)>,
    /// Events indexed from the writer's feed, and from the files.
    fed_events: AtomicU64,
    read_events: AtomicU64,
}

/// Why a query of the indexes cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("the read side stopped at a record it cannot read: {reason}")]
    Stopped { reason: String, position: Option<Position> },
}

impl IndexError {
    /// The position of the record the follower could not read, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            IndexError::Stopped { position, .. } => *position,
        }
    }
}

impl Indexes {
    /// Empty indexes of the log in `dir`, with a store in memory: they index it from its first record.
    pub fn new(dir: &Path, rules: Rules) -> Arc<Indexes> {
        Indexes::with_store(dir, rules, Arc::new(ReadStore::in_memory()))
    }

    /// Empty indexes of the log in `dir` with `store`: [`follow`] starts
    /// them from the store's checkpoint when it can.
    pub fn with_store(dir: &Path, rules: Rules, store: Arc<ReadStore>) -> Arc<Indexes> {
        Arc::new(Indexes {
            dir: dir.to_owned(),
            rules,
            store,
            clinics: RwLock::default(),
            audit: Mutex::new(Auditor::new(rules, None).forgetting_closed_days()),
            indexed: watch::Sender::new(0),
            failure: OnceLock::new(),
            fed_events: AtomicU64::new(0),
            read_events: AtomicU64::new(0),
        })
    }

    /// Starts the (still empty) indexes from the store's checkpoint, when it
    /// has one this build can use for this log: reads the checkpoint's
    /// record in the log to confirm it. Blocking. The position it starts at.
    pub fn restore(&self) -> Position {
        assert_eq!(self.indexed(), 0, "restored before any indexing");
        let hash_at = |position| crate::log::record_hash_at(&self.dir, position).ok().flatten();
        match self.store.checkpoint(self.rules, hash_at) {
            Ok(Ok(checkpoint)) => {
                tracing::info!(
                    position = checkpoint.position,
                    "the read side starts from its checkpoint at position {}",
                    checkpoint.position
                );
                *self.clinics.write() = checkpoint.clinics;
                *self.audit.lock() = checkpoint.audit;
                self.indexed.send_replace(checkpoint.position);
            }
            Ok(Err(why)) => self.start_over(&why),
            Err(error) => self.start_over(&error.to_string()),
        }
        self.indexed()
    }

    /// Indexing from the log's first record: the store's lists go too.
    fn start_over(&self, why: &str) {
        tracing::info!("the read side's checkpoint is not used ({why}): it indexes the ledger from its first record");
        if let Err(error) = self.store.clear() {
            tracing::warn!(%error, "the read side's store cannot be emptied; its closed days' lists are written again as the ledger is indexed");
        }
    }

    pub fn indexed(&self) -> Position {
        *self.indexed.borrow()
    }

    /// Indexes the log through `last` (durable), continuing from where
    /// `reader` stopped (which must be where the indexes stopped).
    pub fn index_through(&self, reader: &mut EventReader, last: Position) -> Result<(), ReadError> {
        while reader.next_position() <= last {
            let mut events = Vec::with_capacity(READ_CHUNK_LEN.min(1024));
            let mut locations = Vec::with_capacity(READ_CHUNK_LEN.min(1024));
            reader.read(last, READ_CHUNK_LEN, &mut |event, location| {
                events.push(event);
                locations.push(location);
                ControlFlow::Continue(())
            })?;
            self.fold(&events, &locations);
            self.read_events.fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Indexes through `last` from the writer's batches in `fed` where they
    /// follow on from what is indexed, and from the files (through
    /// `reader`, moved where needed) where they do not.
    pub fn index_fed(&self, fed: &Fed, reader: &mut EventReader, last: Position) -> Result<(), ReadError> {
        while let Ok(batch) = fed.try_recv() {
            let Some(first) = batch.events.first().map(|event| event.position) else { continue };
            let batch_last = first + batch.events.len() as u64 - 1;
            if batch_last <= self.indexed() {
                continue;
            }
            if first > self.indexed() + 1 {
                // Batches the feed had no room for, or records the writer re-read after a failure.
                self.index_files(reader, first - 1)?;
            }
            let skip = (self.indexed() + 1 - first) as usize;
            self.fold(&batch.events[skip..], &batch.locations[skip..]);
            self.fed_events.fetch_add((batch.events.len() - skip) as u64, Ordering::Relaxed);
        }
        self.index_files(reader, last)
    }

    /// [`Indexes::index_through`], the reader first moved to where the indexes stopped.
    fn index_files(&self, reader: &mut EventReader, last: Position) -> Result<(), ReadError> {
        let next = self.indexed() + 1;
        if next > last {
            return Ok(());
        }
        if reader.next_position() != next {
            *reader = EventReader::new(&self.dir, next);
        }
        self.index_through(reader, last)
    }

    /// Folds events (in position order, right after those indexed) into the
    /// clinic index and the audit, then says they are indexed.
    fn fold(&self, events: &[Event], locations: &[Location]) {
        let Some(last) = events.last() else { return };
        {
            let mut clinics = self.clinics.write();
            for (event, location) in events.iter().zip(locations) {
                clinics.index(event, *location);
            }
            self.store_closing(&mut clinics);
        }
        let mut audit = self.audit.lock();
        for event in events {
            audit.check(event);
        }
        drop(audit);
        self.indexed.send_replace(last.position);
    }

    /// Events indexed as the writer handed them, and as read from the files.
    pub fn events_fed_and_read(&self) -> (u64, u64) {
        (self.fed_events.load(Ordering::Relaxed), self.read_events.load(Ordering::Relaxed))
    }

    /// Moves the record lists of the days closed to the store, then out of
    /// memory; on a failure they stay (reads of them are still right) and
    /// are tried again after the next chunk.
    fn store_closing(&self, clinics: &mut ClinicIndex) {
        if !clinics.has_closing() {
            return;
        }
        match self.store.put_days(&clinics.closing()) {
            Ok(()) => clinics.forget_closing(),
            Err(error) => tracing::error!(%error, "closed days' record lists stay in memory until the store takes them"),
        }
    }

    /// Checkpoints the indexes at the position indexed (the follower's own,
    /// between two chunks); the checkpoint's size in bytes.
    pub fn checkpoint(&self) -> Result<usize, String> {
        let position = self.indexed();
        let hash = crate::log::record_hash_at(&self.dir, position)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the log has no record at position {position}"))?;
        let clinics = self.clinics.read();
        if clinics.has_closing() {
            return Err("closed days' record lists are not in the store yet".into());
        }
        let audit = self.audit.lock();
        let bytes = super::disk::encode_checkpoint(position, hash, &clinics, &audit, self.rules).map_err(|e| e.to_string())?;
        // Queries go on while the checkpoint is written and fsynced.
        drop((audit, clinics));
        self.store.put_encoded(&bytes).map_err(|e| e.to_string())
    }

    /// Waits until everything through `position` is indexed.
    pub async fn wait_for(&self, position: Position) -> Result<(), IndexError> {
        let mut indexed = self.indexed.subscribe();
        loop {
            if let Some((reason, position)) = self.failure.get() {
                return Err(IndexError::Stopped { reason: reason.clone(), position: *position });
            }
            if *indexed.borrow_and_update() >= position {
                return Ok(());
            }
            if indexed.changed().await.is_err() {
                return Err(IndexError::Stopped { reason: "the follower is gone".into(), position: None });
            }
        }
    }

    /// The audit of `tenant`'s events so far.
    pub fn audit(&self, tenant: &str) -> AuditReport {
        self.audit.lock().report_for(tenant)
    }

    /// One clinic day as of `as_of` (which must be indexed): the index is held
    /// only to plan the read; the day's records are read without it.
    pub fn clinic_day(
        &self,
        tenant: &str,
        clinic: &str,
        date: NaiveDate,
        doctor: Option<&str>,
        as_of: Position,
    ) -> Result<ClinicDay, ReadError> {
        assert!(as_of <= self.indexed(), "query position {as_of} is not indexed yet");
        let plan = self.clinics.read().plan(tenant, clinic, date, doctor, as_of);
        let plan = match plan.stored().map(|day| self.stored_day(day)) {
            Some(records) => plan.with_stored(records?),
            None => plan,
        };
        plan.run(&self.dir)
    }

    /// A closed day's records from the store (none for a day never booked).
    fn stored_day(&self, (tenant, clinic, date): &DayKey) -> Result<DayRecords, ReadError> {
        let stored = self.store.day(tenant, clinic, *date).map_err(|error| {
            ReadError::Log(LogError::Io { path: self.dir.join(super::disk::FILE), source: std::io::Error::other(error.to_string()) })
        })?;
        Ok(stored.unwrap_or_default())
    }

    /// Every change of one clinic day through `upto` (which must be indexed).
    pub fn clinic_history(
        &self,
        tenant: &str,
        clinic: &str,
        date: NaiveDate,
        doctor: Option<&str>,
        upto: Position,
    ) -> Result<Vec<DayChange>, ReadError> {
        assert!(upto <= self.indexed(), "history position {upto} is not indexed yet");
        let plan = self.clinics.read().history_plan(tenant, clinic, date, doctor, upto);
        let plan = match plan.stored().map(|day| self.stored_day(day)) {
            Some(records) => plan.with_stored(records?),
            None => plan,
        };
        plan.run(&self.dir)
    }

    fn stop(&self, error: &ReadError) {
        let _ = self.failure.set((error.to_string(), error.position()));
        // Wake the waiters so they see the failure.
        self.indexed.send_modify(|_| {});
    }
}

/// Keeps `indexes` up to date with the durable log until the writer goes
/// away, checkpointing them every [`CHECKPOINT_EVENTS`] and at the end.
/// With `fed`, the writer's feed, it reads the files only where the feed
/// does not follow on (after a restart, or when it fell behind).
pub async fn follow(indexes: Arc<Indexes>, mut durable: Durable, fed: Option<Fed>) {
    let restoring = indexes.clone();
    let Ok(from) = tokio::task::spawn_blocking(move || restoring.restore()).await else { return };
    let mut reader = Some((EventReader::new(&indexes.dir, from + 1), fed));
    let mut tried = indexes.indexed();
    loop {
        let last = *durable.borrow_and_update();
        let (indexes_, (mut follower, fed)) = (indexes.clone(), reader.take().expect("put back after every pass"));
        let result = tokio::task::spawn_blocking(move || {
            let result = match &fed {
                Some(fed) => indexes_.index_fed(fed, &mut follower, last),
                None => indexes_.index_files(&mut follower, last),
            };
            ((follower, fed), result)
        })
        .await;
        match result {
            Ok((follower, Ok(()))) => reader = Some(follower),
            Ok((_, Err(error))) => {
                tracing::error!(%error, "the read side's follower stopped; time travel and the audit report it");
                return indexes.stop(&error);
            }
            Err(_) => return,
        }
        let ended = durable.changed().await.is_err();
        if (ended && indexes.indexed() > tried) || indexes.indexed() >= tried + CHECKPOINT_EVENTS {
            tried = indexes.indexed();
            checkpoint(&indexes).await;
        }
        if ended {
            return;
        }
    }
}

/// Checkpoints `indexes` where they are. A failure is logged: a start-up
/// then reads more of the log, nothing else.
async fn checkpoint(indexes: &Arc<Indexes>) {
    let position = indexes.indexed();
    let indexes = indexes.clone();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || indexes.checkpoint()).await {
        Ok(Ok(bytes)) => {
            tracing::info!(
                position,
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "the read side checkpointed at position {position}"
            )
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, position, "the read side's checkpoint failed; the next is tried {CHECKPOINT_EVENTS} events later")
        }
        Err(_) => {}
    }
}
