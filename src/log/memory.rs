//! An in-memory [`Log`] for tests, with failures that can be injected.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Log, LogError, Position, Visit};

/// Failures to inject. Shared, so a test can arm them after handing the log to a writer.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next `n`th sync fails (1 = the very next one). 0 = never.
    pub fail_sync_at: u32,
    /// The next `n`th append fails. 0 = never.
    pub fail_append_at: u32,
}

#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Vec<Vec<u8>>,
    /// How many of `records` are durable.
    synced: usize,
    poisoned: bool,
    pub faults: Arc<Mutex<Faults>>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// The durable records, as a crash would leave them.
    pub fn durable(&self) -> &[Vec<u8>] {
        &self.records[..self.synced]
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
        self.records.push(payload.to_vec());
        Ok(self.records.len() as Position)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if fires(&mut self.faults.lock().fail_sync_at) {
            // Like a failed fdatasync: what was not durable is lost.
            self.records.truncate(self.synced);
            self.poisoned = true;
            return Err(LogError::Injected("sync"));
        }
        self.synced = self.records.len();
        Ok(())
    }

    fn position_next(&self) -> Position {
        self.records.len() as Position + 1
    }

    fn read_from(&self, from: Position, visit: &mut Visit<'_>) -> Result<(), LogError> {
        let start = from.max(1) as usize - 1;
        for (index, record) in self.durable().iter().enumerate().skip(start) {
            if visit(index as Position + 1, record).is_break() {
                break;
            }
        }
        Ok(())
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
}
