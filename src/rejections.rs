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

pub use crate::core::Rejected;
use crate::core::Text;
use crate::log::{self, FileLog, Log, Position, codec};

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
        let written = batch.iter().try_for_each(|record| log.append(&codec::encode_rejection(record)).map(drop)).and_then(|()| log.sync());
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
pub fn decode(bytes: &[u8]) -> Result<Rejected, codec::CodecError> {
    codec::decode_rejection(bytes)
}
