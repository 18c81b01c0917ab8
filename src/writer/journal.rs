//! The rejection journal: every command the writer refused, with who sent it
//! and what it ran into, kept beside the ledger as evidence ("the same number
//! was asked for 48 more times").
//!
//! It is evidence, not the source of truth. The writer hands records to this
//! thread through a bounded queue and never waits: when the queue is full the
//! record is dropped (and counted). The thread appends and syncs in batches of
//! its own, so a crash can lose its last entries. Old segments are deleted
//! beyond a configured number, so its size is bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message;

use crate::core::Text;
use crate::log::codec::pb;
use crate::log::{self, FileLog, Log, Position};

/// A refused command, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub recorded_at: DateTime<Utc>,
    pub tenant: Text,
    pub actor: Text,
    pub request_id: Text,
    pub idempotency_key: Option<Text>,
    pub code: Text,
    pub detail: String,
    pub conflicts_with: Option<String>,
    pub method: Text,
    pub path: Text,
    pub body: Bytes,
}

impl Rejected {
    pub fn encode(&self) -> Vec<u8> {
        pb::RejectionRecord {
            recorded_at_micros: self.recorded_at.timestamp_micros(),
            tenant: self.tenant.to_string(),
            actor: self.actor.to_string(),
            request_id: self.request_id.to_string(),
            idempotency_key: self.idempotency_key.as_deref().unwrap_or_default().to_owned(),
            code: self.code.to_string(),
            detail: self.detail.clone(),
            conflicts_with: self.conflicts_with.clone().unwrap_or_default(),
            method: self.method.to_string(),
            path: self.path.to_string(),
            body: self.body.to_vec(),
        }
        .encode_to_vec()
    }
}

/// The request a command came from, kept only to journal it if it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub method: Text,
    pub path: Text,
    pub body: Bytes,
}

#[derive(Debug, Clone, Copy)]
pub struct JournalConfig {
    /// Records waiting for the journal thread beyond this are dropped.
    pub queue_len_max: usize,
    pub segment_bytes_max: u64,
    /// Older segments beyond this many are deleted.
    pub segments_max: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { queue_len_max: 16_384, segment_bytes_max: 16 << 20, segments_max: 64 }
    }
}

/// Records appended per sync, at most.
const JOURNAL_BATCH_LEN_MAX: usize = 4096;

/// What readers of the journal need: where it is and how far it is durable.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    pub dir: PathBuf,
    synced: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl JournalHandle {
    /// The last journal position (sequence number) known durable.
    pub fn synced(&self) -> Position {
        self.synced.load(Ordering::Acquire)
    }

    /// Records dropped because the queue was full or the journal failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where the writer sends refused commands.
#[derive(Debug, Clone)]
pub struct JournalSender {
    queue: SyncSender<Rejected>,
    dropped: Arc<AtomicU64>,
}

impl JournalSender {
    /// Queues `record`; never blocks. A full queue drops it.
    pub fn send(&self, record: Rejected) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(record) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the journal thread on `log` (in `dir`). It stops once every sender is dropped.
pub fn spawn(log: FileLog, dir: &Path, config: JournalConfig) -> (JournalSender, JournalHandle, JoinHandle<()>) {
    let (queue, receiver) = mpsc::sync_channel(config.queue_len_max);
    let synced = Arc::new(AtomicU64::new(log.position_next() - 1));
    let dropped = Arc::new(AtomicU64::new(0));
    let handle = JournalHandle { dir: dir.to_owned(), synced: synced.clone(), dropped: dropped.clone() };
    let sender = JournalSender { queue, dropped: dropped.clone() };
    let dir = dir.to_owned();
    let thread = std::thread::Builder::new()
        .name("ledger-journal".into())
        .spawn(move || run(log, &dir, receiver, &synced, &dropped, config))
        .expect("spawning the journal thread");
    (sender, handle, thread)
}

fn run(mut log: FileLog, dir: &Path, receiver: Receiver<Rejected>, synced: &AtomicU64, dropped: &AtomicU64, config: JournalConfig) {
    let mut batch = Vec::with_capacity(JOURNAL_BATCH_LEN_MAX);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        batch.extend(receiver.try_iter().take(JOURNAL_BATCH_LEN_MAX - 1));
        let written = batch.iter().try_for_each(|record| log.append(&record.encode()).map(drop)).and_then(|()| log.sync());
        match written {
            Ok(()) => synced.store(log.position_next() - 1, Ordering::Release),
            Err(error) => {
                // Evidence, not truth: the ledger goes on without it.
                tracing::error!(%error, "the rejection journal failed; refused commands are no longer journaled");
                dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for _ in receiver.iter() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        batch.clear();
        if let Err(error) = log::remove_oldest_segments(dir, config.segments_max) {
            tracing::warn!(%error, "rotating the rejection journal failed");
        }
    }
}

/// Decodes one journal record.
pub fn decode(bytes: &[u8]) -> Result<Rejected, log::codec::CodecError> {
    let r = pb::RejectionRecord::decode(bytes)?;
    Ok(Rejected {
        recorded_at: DateTime::from_timestamp_micros(r.recorded_at_micros)
            .ok_or_else(|| log::codec::CodecError("time out of range".into()))?,
        tenant: r.tenant.into(),
        actor: r.actor.into(),
        request_id: r.request_id.into(),
        idempotency_key: (!r.idempotency_key.is_empty()).then(|| r.idempotency_key.into()),
        code: r.code.into(),
        detail: r.detail,
        conflicts_with: (!r.conflicts_with.is_empty()).then_some(r.conflicts_with),
        method: r.method.into(),
        path: r.path.into(),
        body: Bytes::from(r.body),
    })
}
