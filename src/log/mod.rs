//! The append-only log, in two layers.
//!
//! The bytes layer (this file, `frame`, `walk`, `file`, `disk`, `memory`,
//! `tail`, `verify`, `copy`): records of opaque bytes at gap-free positions, made
//! durable in batches, with framing, checksums and the hash chain. It does not
//! know what the payloads mean: it uses nothing of `core` nor of the codec
//! layer (`make layers` checks it). [`FileLog`] is the segmented on-disk
//! format described in `proto/FORMAT.md`; its file operations can be put
//! behind a [`SegmentIo`] ([`FaultyDisk`] fails them on demand, for tests).
//! [`MemoryLog`] keeps records in memory and can be told to fail, for tests.
//!
//! The codec layer (`wire`, `decode`, `encode`, `codec`, `events`,
//! `snapshot`): payloads to and from `core`'s types, as `proto/ledger.proto`
//! declares them; [`snapshot`] is the file format of the state at a position,
//! checked against the log it was taken from.

pub mod codec;
pub mod copy;
pub mod decode;
mod disk;
pub mod encode;
pub mod events;
mod file;
pub mod frame;
mod memory;
pub mod snapshot;
mod tail;
pub mod verify;
mod walk;
pub mod wire;

use std::ops::ControlFlow;
use std::path::PathBuf;

pub use disk::{Fault, FaultyDisk, SegmentIo};
pub use file::{FileLog, FileLogOptions, OpenReport, TornTail, first_position, last_position, remove_oldest_segments};
pub use memory::{Faults, MemoryLog};
pub use tail::{Location, RecordVisit, Tail, location_path, read_many, record_hash_at};

pub type Position = u64;

/// Called for each record read: its position and payload. Returning
/// `ControlFlow::Break` stops the read early.
pub type Visit<'a> = dyn FnMut(Position, &[u8]) -> ControlFlow<()> + 'a;

pub trait Log: Send {
    /// Frames one record after the ones before it and returns its position.
    /// The record is not durable until [`Log::sync`] returns `Ok`.
    fn append(&mut self, payload: &[u8]) -> Result<Position, LogError>;

    /// Makes every appended record durable (one fdatasync for the file log).
    /// After an error the log refuses all further appends and syncs.
    fn sync(&mut self) -> Result<(), LogError>;

    /// The position the next appended record will get.
    fn position_next(&self) -> Position;

    /// Reads the durable records from `from` on, in order.
    fn read_from(&self, from: Position, visit: &mut Visit<'_>) -> Result<(), LogError>;

    /// A fresh handle on the same log after an append or sync failed, for the
    /// writer to go on with: a new file descriptor (a failed fsync is never
    /// retried on the one that failed), the tail re-verified, a torn tail cut,
    /// and everything it holds durable. Records the failed handle appended may
    /// or may not be in it. `ReopenError::Never` means this log will not be
    /// written again by this process (a replica fenced off by its successor,
    /// say); the default, for logs that cannot re-open.
    fn reopen(&self) -> Result<Box<dyn Log>, ReopenError> {
        Err(ReopenError::Never(LogError::Poisoned))
    }

    /// Where the record at `position` is kept, to name it in an error.
    fn path_of(&self, position: Position) -> PathBuf {
        PathBuf::from(format!("<in-memory log, position {position}>"))
    }

    /// Where the last record appended is in the log's files, as a reader of
    /// them (`Tail`) reports it; None for a log whose records are not there
    /// (in memory, or not yet in files).
    fn last_location(&self) -> Option<Location> {
        None
    }
}

/// Follows the last durable position of the ledger: what readers beside the
/// writer may read up to. The writer sends; the read side only receives.
pub type Durable = tokio::sync::watch::Receiver<Position>;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: corruption at position {position} (byte offset {offset}): {reason}")]
    Corrupt { path: PathBuf, position: Position, offset: u64, reason: String },
    #[error("the log failed earlier and accepts no more writes")]
    Poisoned,
    #[error("injected failure: {0}")]
    Injected(&'static str),
    /// A replicated log refused the append because another writer appended
    /// first: this writer lost its partition and must stop writing it.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A replicated log did not acknowledge the append (no quorum, timeout,
    /// connection lost): the records may or may not be stored.
    #[error("not replicated: {0}")]
    Unreplicated(String),
}

/// Why [`Log::reopen`] gave no log.
#[derive(Debug, thiserror::Error)]
pub enum ReopenError {
    /// Not now (the disk still fails): try again later.
    #[error("{0}")]
    Later(LogError),
    /// Never, in this process: stop writing; a restart recovers, or an operator must.
    #[error("{0}")]
    Never(LogError),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}
