//! The read side's own file (`read.redb`, in the data directory), so that its
//! memory and start-up follow the open days, not the years behind them:
//! - **closed days' record lists**: where each closed clinic day's events are
//!   in the log, moved here from the clinic index when the day closes (a
//!   closed day never changes again), for `as_of` reads and histories of it;
//! - **a checkpoint**: the clinic index and the live audit as of a position,
//!   with that record's hash-chain link, so that a start-up reads the
//!   checkpoint and the log after it instead of the whole log.
//!
//! Derived from the log like every index beside it, and written by the
//! follower only. A file that does not open is set aside and started empty;
//! a checkpoint written by another build (`READ_SIDE_FINGERPRINT`, a hash of
//! the sources of the types it holds), under another `call_cooldown`, or for
//! another log (its position missing or holding another record) is not used:
//! the follower then starts from the log's first record, as it always can.

use std::path::Path;

use chrono::NaiveDate;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use super::audit::{Auditor, Interner, SavedAudit};
use super::clinics::ClinicIndex;
use crate::closed::day_key;
use crate::core::Rules;
use crate::log::frame::Hash;
use crate::log::{Location, Position};

/// The file's name in the data directory.
pub const FILE: &str = "read.redb";

/// `tenant \0 clinic \0 YYYY-MM-DD` -> the day's records in position order,
/// 24 bytes each: position, segment, offset (big-endian).
const DAYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("days");
/// `checkpoint` -> a [`Header`] then the clinic index and the audit (postcard).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CHECKPOINT: &str = "checkpoint";

/// Closed days are read rarely; the kernel's page cache holds the file.
const CACHE_BYTES: usize = 4 << 20;

/// What says whether a checkpoint may be used, read before the rest.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    fingerprint: String,
    call_cooldown_ms: i64,
    position: Position,
    hash: Hash,
}

/// A clinic day's records: (position, where).
pub type DayRecords = Vec<(Position, Location)>;

#[derive(Debug, thiserror::Error)]
#[error("the read side's store ({FILE}): {0}")]
pub struct StoreError(String);

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(error: E) -> StoreError {
        StoreError(error.into().to_string())
    }
}

/// A checkpoint read back: the indexes as of `position`.
pub struct Checkpoint {
    pub position: Position,
    pub clinics: ClinicIndex,
    pub audit: Auditor,
}

pub struct ReadStore {
    db: Database,
}

impl std::fmt::Debug for ReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadStore").finish_non_exhaustive()
    }
}

impl ReadStore {
    /// Opens the store at `path`, created when missing and set aside
    /// (`.redb.damaged`) and started empty when it does not open. Says which.
    pub fn open_or_rebuild(path: &Path) -> Result<(ReadStore, bool), StoreError> {
        let (db, rebuilt) = crate::closed::open_or_set_aside(path, CACHE_BYTES)?;
        Ok((ReadStore::init(db)?, rebuilt))
    }

    /// A store in memory (tests, and a read side without a data directory).
    pub fn in_memory() -> ReadStore {
        ReadStore::init(crate::closed::in_memory_database(CACHE_BYTES)).expect("an in-memory store")
    }

    fn init(db: Database) -> Result<ReadStore, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(DAYS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(ReadStore { db })
    }

    /// Empties the store, for indexing the log from its first record again:
    /// what it held may be of another log (one restored from a backup).
    pub fn clear(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.delete_table(DAYS)?;
        txn.open_table(DAYS)?;
        txn.open_table(META)?.remove(CHECKPOINT)?;
        txn.commit()?;
        Ok(())
    }

    /// Stores closed days' record lists in one commit, made durable by the
    /// next checkpoint (a crash before it replays their events again, and
    /// this writes the same lists again).
    pub fn put_days(&self, days: &[((&str, &str, NaiveDate), &DayRecords)]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut table = txn.open_table(DAYS)?;
            for ((tenant, clinic, date), records) in days {
                let mut value = Vec::with_capacity(records.len() * 24);
                for (position, location) in records.iter() {
                    value.extend_from_slice(&position.to_be_bytes());
                    value.extend_from_slice(&location.segment.to_be_bytes());
                    value.extend_from_slice(&location.offset.to_be_bytes());
                }
                table.insert(day_key(tenant, clinic, *date).as_slice(), value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A closed day's record lists, if stored.
    pub fn day(&self, tenant: &str, clinic: &str, date: NaiveDate) -> Result<Option<DayRecords>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DAYS)?;
        let Some(value) = table.get(day_key(tenant, clinic, date).as_slice())? else { return Ok(None) };
        let value = value.value();
        if value.len() % 24 != 0 {
            return Err(StoreError(format!("the records of {clinic} on {date} are {} bytes, not a multiple of 24", value.len())));
        }
        let word = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
        Ok(Some(value.chunks_exact(24).map(|c| (word(&c[..8]), Location { segment: word(&c[8..16]), offset: word(&c[16..]) })).collect()))
    }

    /// Writes a checkpoint of `clinics` and `audit` as of `position`, whose
    /// record's chain link is `hash`, durably (with every commit before it).
    pub fn put_checkpoint(
        &self,
        position: Position,
        hash: Hash,
        clinics: &ClinicIndex,
        audit: &Auditor,
        rules: Rules,
    ) -> Result<usize, StoreError> {
        self.put_encoded(&encode_checkpoint(position, hash, clinics, audit, rules)?)
    }

    /// Writes a checkpoint [`encode_checkpoint`] made, durably (with every commit before it).
    pub fn put_encoded(&self, bytes: &[u8]) -> Result<usize, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(META)?.insert(CHECKPOINT, bytes)?;
        txn.commit()?;
        Ok(bytes.len())
    }

    /// The checkpoint, if there is one this build wrote under `rules` and
    /// `hash_at` (the log's chain link at a position, None past its end)
    /// confirms; why not otherwise, for the log.
    pub fn checkpoint(
        &self,
        rules: Rules,
        hash_at: impl FnOnce(Position) -> Option<Hash>,
    ) -> Result<Result<Checkpoint, String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let Some(value) = table.get(CHECKPOINT)? else { return Ok(Err("there is none".into())) };
        let bytes = value.value();
        let Ok((header, rest)) = postcard::take_from_bytes::<Header>(bytes) else { return Ok(Err("its header does not decode".into())) };
        if header.fingerprint != fingerprint() {
            return Ok(Err("another build wrote it".into()));
        }
        if header.call_cooldown_ms != rules.call_cooldown.num_milliseconds() {
            return Ok(Err("it was audited under another call_cooldown".into()));
        }
        if hash_at(header.position) != Some(header.hash) {
            return Ok(Err(format!("the log does not hold its record at position {}", header.position)));
        }
        let Ok((clinics, saved)) = postcard::from_bytes::<(ClinicIndex, SavedAudit)>(rest) else {
            return Ok(Err("it does not decode".into()));
        };
        let mut names = Interner::default();
        let Some(audit) = Auditor::restore(rules, saved, &mut names) else {
            return Ok(Err("it names a rule this build does not check".into()));
        };
        Ok(Ok(Checkpoint { position: header.position, clinics: clinics.interned(&mut names), audit }))
    }
}

/// A checkpoint of `clinics` and `audit` as of `position`, whose record's
/// chain link is `hash`, encoded: done while they are held still, the write
/// after they are let go.
pub fn encode_checkpoint(
    position: Position,
    hash: Hash,
    clinics: &ClinicIndex,
    audit: &Auditor,
    rules: Rules,
) -> Result<Vec<u8>, StoreError> {
    let header = Header { fingerprint: fingerprint().into(), call_cooldown_ms: rules.call_cooldown.num_milliseconds(), position, hash };
    let encode = |e: postcard::Error| StoreError(format!("encoding the checkpoint: {e}"));
    let bytes = postcard::to_extend(&header, Vec::new()).map_err(encode)?;
    postcard::to_extend(&(clinics, audit.saving()), bytes).map_err(encode)
}

/// This build's fingerprint of the checkpoint's types.
fn fingerprint() -> &'static str {
    env!("READ_SIDE_FINGERPRINT")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(store: &ReadStore, rules: Rules, hash: Option<Hash>) -> Result<Position, String> {
        store.checkpoint(rules, |_| hash).unwrap().map(|checkpoint| checkpoint.position)
    }

    /// A checkpoint is used only for the log and the rules it was written
    /// for; a cleared store has none and no day.
    #[test]
    fn a_checkpoint_is_used_only_for_its_log_and_rules() {
        let store = ReadStore::in_memory();
        let rules = Rules::default();
        assert_eq!(saved(&store, rules, Some([1; 32])), Err("there is none".into()));
        let auditor = Auditor::new(rules, None).forgetting_closed_days();
        store.put_checkpoint(7, [1; 32], &ClinicIndex::default(), &auditor, rules).unwrap();
        assert_eq!(saved(&store, rules, Some([1; 32])), Ok(7));
        assert_eq!(saved(&store, rules, Some([2; 32])), Err("the log does not hold its record at position 7".into()));
        assert_eq!(saved(&store, rules, None), Err("the log does not hold its record at position 7".into()));
        let other = Rules { call_cooldown: rules.call_cooldown + chrono::Duration::seconds(1), ..rules };
        assert_eq!(saved(&store, other, Some([1; 32])), Err("it was audited under another call_cooldown".into()));

        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        let records = vec![(3, Location { segment: 1, offset: 40 }), (9, Location { segment: 8, offset: 0 })];
        store.put_days(&[(("t", "c", date), &records)]).unwrap();
        assert_eq!(store.day("t", "c", date).unwrap(), Some(records));
        assert_eq!(store.day("t", "c", date.succ_opt().unwrap()).unwrap(), None);
        store.clear().unwrap();
        assert_eq!((store.day("t", "c", date).unwrap(), saved(&store, rules, Some([1; 32]))), (None, Err("there is none".into())));
    }
}
