//! An in-memory [`Log`] for tests, with failures that can be injected. Its
//! "disk" is shared by the logs [`Log::reopen`] makes of it, so a test can
//! fail a sync, re-open, and find what of the batch reached the disk; and
//! dropping a log is a crash (what was appended and not synced is lost).

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Log, LogError, Position, ReopenError, Visit};

/// Failures to inject. Shared, so a test can arm them after handing the log to a writer.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next `n`th sync fails (1 = the very next one). 0 = never.
    pub fail_sync_at: u32,
    /// The next `n`th append fails. 0 = never.
    pub fail_append_at: u32,
    /// Of the records a failing sync had to write, this many (the first ones)
    /// reach the disk anyway; the rest are lost.
    pub sync_keeps: usize,
    /// The next this many re-opens fail (`ReopenError::Later`).
    pub reopen_fails: u32,
    /// Every re-open fails for good (`ReopenError::Never`).
    pub reopen_never: bool,
}

#[derive(Debug, Default)]
pub struct MemoryLog {
    /// The records that reached the disk: what a crash keeps.
    disk: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Appended, not yet synced.
    pending: Vec<Vec<u8>>,
    /// How many of the disk's records this handle knows durable: readers see these.
    synced: usize,
    poisoned: bool,
    pub faults: Arc<Mutex<Faults>>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// The durable records, as a crash would leave them.
    pub fn durable(&self) -> Vec<Vec<u8>> {
        self.disk.lock().clone()
    }

    /// A log on the same disk and faults, as a restart after a crash opens it.
    pub fn restart(&self) -> MemoryLog {
        let synced = self.disk.lock().len();
        MemoryLog { disk: self.disk.clone(), pending: Vec::new(), synced, poisoned: false, faults: self.faults.clone() }
    }
}

fn fires(counter: &mut u32) -> bool {
    match *counter {
        0 => false,
        1 => {
            *counter = 0;
            true
        }
        _ => {
            *counter -= 1;
            false
        }
    }
}

impl Log for MemoryLog {
    fn append(&mut self, payload: &[u8]) -> Result<Position, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if fires(&mut self.faults.lock().fail_append_at) {
            self.poisoned = true;
            return Err(LogError::Injected("append"));
        }
        self.pending.push(payload.to_vec());
        Ok(self.position_next() - 1)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let mut faults = self.faults.lock();
        let mut disk = self.disk.lock();
        if fires(&mut faults.fail_sync_at) {
            // Like a failed fdatasync: some of what was not durable may have got there.
            let kept = faults.sync_keeps.min(self.pending.len());
            disk.extend(self.pending.drain(..kept));
            self.pending.clear();
            self.poisoned = true;
            return Err(LogError::Injected("sync"));
        }
        disk.append(&mut self.pending);
        self.synced = disk.len();
        Ok(())
    }

    fn position_next(&self) -> Position {
        (self.synced + self.pending.len()) as Position + 1
    }

    fn read_from(&self, from: Position, visit: &mut Visit<'_>) -> Result<(), LogError> {
        let start = from.max(1) as usize - 1;
        let disk = self.disk.lock();
        for (index, record) in disk[..self.synced].iter().enumerate().skip(start) {
            if visit(index as Position + 1, record).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn reopen(&self) -> Result<Box<dyn Log>, ReopenError> {
        let mut faults = self.faults.lock();
        if faults.reopen_never {
            return Err(ReopenError::Never(LogError::Injected("reopen for good")));
        }
        if fires(&mut faults.reopen_fails) || faults.reopen_fails > 0 {
            return Err(ReopenError::Later(LogError::Injected("reopen")));
        }
        Ok(Box::new(self.restart()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::ControlFlow;

    #[test]
    fn unsynced_records_are_invisible_and_a_failed_sync_loses_them() {
        let mut log = MemoryLog::new();
        assert_eq!(log.append(b"a").unwrap(), 1);
        log.sync().unwrap();
        assert_eq!(log.append(b"b").unwrap(), 2);
        let mut seen = Vec::new();
        log.read_from(1, &mut |p, r| {
            seen.push((p, r.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, vec![(1, b"a".to_vec())]);

        log.faults.lock().fail_sync_at = 1;
        assert!(matches!(log.sync(), Err(LogError::Injected("sync"))));
        assert_eq!(log.durable().len(), 1);
        assert!(matches!(log.append(b"c"), Err(LogError::Poisoned)));
    }

    #[test]
    fn a_reopen_finds_what_a_failed_sync_left_on_the_disk() {
        let mut log = MemoryLog::new();
        log.append(b"a").unwrap();
        log.sync().unwrap();
        for payload in [b"b", b"c", b"d"] {
            log.append(payload).unwrap();
        }
        {
            let mut faults = log.faults.lock();
            faults.fail_sync_at = 1;
            faults.sync_keeps = 2;
            faults.reopen_fails = 1;
        }
        assert!(log.sync().is_err());
        assert!(matches!(log.reopen(), Err(ReopenError::Later(_))), "the first re-open fails as armed");
        let reopened = log.reopen().unwrap();
        assert_eq!(reopened.position_next(), 4, "a, and the two records that got there: b, c");
        log.faults.lock().reopen_never = true;
        assert!(matches!(reopened.reopen(), Err(ReopenError::Never(_))));
    }
}
