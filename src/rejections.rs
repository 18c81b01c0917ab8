//! The rejection journal: every command the writer refused, with who sent it
//! and what it ran into, kept beside the ledger as evidence ("the same number
//! was asked for 48 more times").
//!
//! It is evidence, not the source of truth, and it must cost a refusal next to
//! nothing: the writer itself appends a batch's refusals after it has answered
//! them, and those answered on sight by `WriterHandle::submit_from` (encoded
//! by the caller, gathered for at most 5 ms), with one `write` and no fsync of
//! its own (no thread of its own, no client waiting on it). A process crash
//! loses nothing written (the page cache survives it), only refusals answered
//! in the moments before it and not yet written (as before: a refusal is
//! answered first); a power loss can lose what was written since the last sync, which
//! happens every [`SYNC_EVERY_RECORDS`] records, when a segment closes and at
//! shutdown. Old segments are deleted beyond a configured number, so its size
//! is bounded. A journal that fails is given up (and its losses counted) and
//! re-opened later (when the ledger re-opens, or a few seconds on); the
//! ledger goes on without it meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

pub use crate::core::RejectionRecord;
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
    pub segment_bytes_max: u64,
    /// Older segments beyond this many are deleted.
    pub segments_max: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { segment_bytes_max: 16 << 20, segments_max: 64 }
    }
}

/// Records written between two fsyncs of the journal, at most.
pub const SYNC_EVERY_RECORDS: u64 = 65_536;
/// A journal that failed tries to re-open at most this often.
const REVIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Records written between two checks for segments to delete.
const ROTATE_EVERY_RECORDS: u64 = 4096;

/// What readers of the journal need: where it is and how far it is written.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    pub dir: PathBuf,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl JournalHandle {
    /// The last journal position (sequence number) written whole: readers may read up to it.
    pub fn written(&self) -> Position {
        self.written.load(Ordering::Acquire)
    }

    /// Records lost because the journal failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The journal as the writer holds it.
#[derive(Debug)]
pub struct Journal {
    /// None once it failed.
    log: Option<FileLog>,
    /// The log that failed, until [`Journal::revive`] re-opens it.
    broken: Option<FileLog>,
    /// When the journal last tried to revive itself.
    revived_at: Option<std::time::Instant>,
    dir: PathBuf,
    config: JournalConfig,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    unsynced_records: u64,
    unrotated_records: u64,
}

impl Journal {
    /// The journal on `log` (in `dir`), and the handle its readers use.
    pub fn new(log: FileLog, dir: &Path, config: JournalConfig) -> (Journal, JournalHandle) {
        let written = Arc::new(AtomicU64::new(log.position_next() - 1));
        let dropped = Arc::new(AtomicU64::new(0));
        let handle = JournalHandle { dir: dir.to_owned(), written: written.clone(), dropped: dropped.clone() };
        let journal = Journal {
            log: Some(log),
            broken: None,
            revived_at: None,
            dir: dir.to_owned(),
            config,
            written,
            dropped,
            unsynced_records: 0,
            unrotated_records: 0,
        };
        (journal, handle)
    }

    /// Records lost because the journal failed, so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Appends `records` and writes them in one `write`, without waiting for the disk.
    pub fn write(&mut self, records: impl IntoIterator<Item = RejectionRecord>) {
        self.write_encoded(records.into_iter().map(|record| codec::encode_rejection(&record)));
    }

    /// Like [`Journal::write`], with records already encoded (`codec::encode_rejection`).
    pub fn write_encoded(&mut self, records: impl IntoIterator<Item = Vec<u8>>) {
        if self.log.is_none() && self.revived_at.is_none_or(|at| at.elapsed() >= REVIVE_EVERY) {
            self.revive();
        }
        let Some(log) = &mut self.log else {
            self.dropped.fetch_add(records.into_iter().count() as u64, Ordering::Relaxed);
            return;
        };
        let mut count = 0;
        let mut result = Ok(());
        for record in records {
            count += 1;
            if result.is_ok() {
                result = log.append(&record).map(drop);
            }
        }
        if count == 0 {
            return;
        }
        self.unsynced_records += count;
        self.unrotated_records += count;
        let result = result.and_then(|()| {
            if self.unsynced_records >= SYNC_EVERY_RECORDS {
                self.unsynced_records = 0;
                log.sync()?;
                return Ok(log.position_next() - 1);
            }
            log.write_without_sync()
        });
        match result {
            Ok(written) => self.written.store(written, Ordering::Release),
            Err(error) => return self.fail(&error, count),
        }
        if self.unrotated_records >= ROTATE_EVERY_RECORDS {
            self.unrotated_records = 0;
            if let Err(error) = log::remove_oldest_segments(&self.dir, self.config.segments_max) {
                tracing::warn!(%error, "rotating the rejection journal failed");
            }
        }
    }

    /// Makes everything written durable (at shutdown).
    pub fn sync(&mut self) {
        if let Some(log) = &mut self.log
            && let Err(error) = log.sync()
        {
            self.fail(&error, 0);
        }
    }

    fn fail(&mut self, error: &log::LogError, lost: u64) {
        // Evidence, not truth: the ledger goes on without it, until it re-opens.
        tracing::error!(%error, "the rejection journal failed; refused commands are not journaled until it re-opens");
        self.dropped.fetch_add(lost, Ordering::Relaxed);
        self.broken = self.log.take();
        self.revived_at = Some(std::time::Instant::now());
    }

    /// Re-opens a journal that failed (a new descriptor, its tail re-verified):
    /// after the ledger re-opens, and every [`REVIVE_EVERY`] while refusals come.
    pub fn revive(&mut self) {
        let Some(broken) = &self.broken else { return };
        self.revived_at = Some(std::time::Instant::now());
        match broken.reopen_file() {
            Ok(log) => {
                tracing::info!("the rejection journal re-opened; refused commands are journaled again");
                self.written.store(log.position_next() - 1, Ordering::Release);
                self.log = Some(log);
                self.broken = None;
                self.unsynced_records = 0;
            }
            Err(error) => tracing::warn!(%error, "the rejection journal could not re-open yet"),
        }
    }
}
