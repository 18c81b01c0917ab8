//! The seam at the file boundary: every write and sync of a log segment goes
//! through a [`SegmentIo`] when the log is given one, so tests can make them
//! fail the ways disks do (a short write, a failed write, EIO from fdatasync,
//! ENOSPC) without LD_PRELOAD. Production gives none, and the log calls the
//! file directly: one branch on an `Option` per write and per sync.
//!
//! [`FaultyDisk`] is the implementation tests use. It models durability
//! itself rather than calling fsync: it remembers how long each segment was
//! at its last successful sync, so a test can take a power loss
//! ([`FaultyDisk::lose_unsynced`]) and a failed sync can drop pages.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// The file operations of a log segment that can fail mid-flight.
pub trait SegmentIo: Send + Sync + fmt::Debug {
    /// One write(2) of `bytes` to the end of the segment at `path`: returns how
    /// many were written, which may be fewer (the log writes the rest).
    fn write(&self, file: &mut File, path: &Path, bytes: &[u8]) -> io::Result<usize>;

    /// fdatasync(2) of the segment at `path`, or fsync(2) with `all`.
    fn sync(&self, file: &File, path: &Path, all: bool) -> io::Result<()>;
}

/// A fault to inject into the next write or sync (see [`FaultyDisk::arm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write takes only `bytes` of what it is given and returns: a short
    /// write, after which the log writes the rest.
    ShortWrite { bytes: usize },
    /// The write takes `bytes` of what it is given, then fails with `errno`
    /// (EIO, ENOSPC): the file ends in a torn record.
    FailWrite { bytes: usize, errno: i32 },
    /// The sync fails with `errno`. Of the bytes written since the segment was
    /// last synced, `kept` stay in the file and the rest are lost, as when the
    /// kernel drops the pages it could not write back; `None` keeps them all
    /// (the data got there, only the report failed).
    FailSync { errno: i32, kept: Option<u64> },
}

impl Fault {
    fn is_write(&self) -> bool {
        !matches!(self, Fault::FailSync { .. })
    }
}

/// A disk that fails on demand (see the module docs). Shared by every log
/// opened on it, and by the logs re-opened after a failure.
#[derive(Debug, Default)]
pub struct FaultyDisk {
    state: Mutex<DiskState>,
}

#[derive(Debug, Default)]
struct DiskState {
    /// The next write fault, and how many writes to let pass before it.
    write: Option<(u32, Fault)>,
    /// The next sync fault, and how many syncs to let pass before it.
    sync: Option<(u32, Fault)>,
    /// Bytes the disk can still take (`None`: unbounded). A write that does
    /// not fit is short; the next one fails with ENOSPC.
    space: Option<u64>,
    /// Every sync fails with this errno (keeping what was written) until cleared.
    failing_syncs: Option<i32>,
    /// Each segment's length at its last sync: what a power loss keeps.
    synced: HashMap<PathBuf, u64>,
    /// Faults that fired, for tests to check that they did.
    fired: u64,
}

impl FaultyDisk {
    pub fn new() -> FaultyDisk {
        FaultyDisk::default()
    }

    /// Injects `fault` into the write or sync (whichever it is for) that comes
    /// after `after` others of its kind. Replaces a fault of that kind not yet fired.
    pub fn arm(&self, fault: Fault, after: u32) {
        let mut state = self.state.lock();
        if fault.is_write() {
            state.write = Some((after, fault));
        } else {
            state.sync = Some((after, fault));
        }
    }

    /// Forgets faults armed and not yet fired.
    pub fn disarm(&self) {
        let mut state = self.state.lock();
        state.write = None;
        state.sync = None;
    }

    /// Bytes the disk can still take (`None`: unbounded). `Some(0)` is a full disk.
    pub fn set_space(&self, space: Option<u64>) {
        self.state.lock().space = space;
    }

    /// Every sync fails with `errno` until this is called with `None`: a
    /// device that stays broken for a while.
    pub fn fail_every_sync(&self, errno: Option<i32>) {
        self.state.lock().failing_syncs = errno;
    }

    /// Faults fired so far (armed ones and ENOSPC from a full disk).
    pub fn fired(&self) -> u64 {
        self.state.lock().fired
    }

    /// A power loss: each segment written since its last sync keeps
    /// `keep(path, unsynced_bytes)` of those bytes (at most all) and loses the
    /// rest. Segments since deleted are skipped.
    pub fn lose_unsynced(&self, mut keep: impl FnMut(&Path, u64) -> u64) {
        let state = self.state.lock();
        for (path, synced) in &state.synced {
            let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else { continue };
            if len > *synced {
                let kept = keep(path, len - synced).min(len - synced);
                let file = std::fs::OpenOptions::new().write(true).open(path).expect("opening a segment to cut it");
                file.set_len(synced + kept).expect("cutting a segment");
            }
        }
    }
}

fn fires(slot: &mut Option<(u32, Fault)>) -> Option<Fault> {
    match slot {
        Some((0, fault)) => {
            let fault = *fault;
            *slot = None;
            Some(fault)
        }
        Some((after, _)) => {
            *after -= 1;
            None
        }
        None => None,
    }
}

impl SegmentIo for FaultyDisk {
    fn write(&self, file: &mut File, path: &Path, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock();
        if !state.synced.contains_key(path) {
            // A segment first written now was durable as it stood.
            let len = file.metadata()?.len();
            state.synced.insert(path.to_owned(), len);
        }
        let (mut len, mut error) = (bytes.len(), None);
        match fires(&mut state.write) {
            Some(Fault::ShortWrite { bytes }) => len = bytes.clamp(1, len.max(1)),
            Some(Fault::FailWrite { bytes, errno }) => (len, error) = (bytes.min(len), Some(errno)),
            _ => {}
        }
        if let Some(space) = state.space {
            if space == 0 {
                state.fired += 1;
                return Err(io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()));
            }
            len = len.min(space as usize);
        }
        let written = file.write(&bytes[..len])?;
        if let Some(space) = &mut state.space {
            *space -= written as u64;
        }
        if let Some(errno) = error {
            state.fired += 1;
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(written)
    }

    fn sync(&self, file: &File, path: &Path, _all: bool) -> io::Result<()> {
        let mut state = self.state.lock();
        let len = file.metadata()?.len();
        if let Some(errno) = state.failing_syncs {
            state.fired += 1;
            return Err(io::Error::from_raw_os_error(errno));
        }
        if let Some(Fault::FailSync { errno, kept }) = fires(&mut state.sync) {
            state.fired += 1;
            let synced = state.synced.get(path).copied().unwrap_or(0).min(len);
            if let Some(kept) = kept {
                file.set_len(synced + kept.min(len - synced))?;
            }
            return Err(io::Error::from_raw_os_error(errno));
        }
        // Bookkeeping only: what a power loss keeps is modeled, not the device's cache.
        state.synced.insert(path.to_owned(), len);
        Ok(())
    }
}
