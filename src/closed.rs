//! The closed-day store (API.md "Open and closed days"): what a clinic's
//! closed days hold (bookings, holds, waitlist entries, the external refs
//! bound to those bookings) out of memory and on disk, so that memory follows
//! the open days, not the years behind them.
//!
//! It is derived from the ledger like every index beside it: the writer puts
//! a `days_closed`'s records here after the event is durable and before it
//! publishes it (`core::days::closing` says what they are), and a start-up
//! puts those of any `days_closed` past the store's `through`. A store that is
//! missing or does not open is started empty, which makes start-up replay the
//! whole log (a snapshot is used only when the store holds every day it
//! left out); `ledger reindex` does that on purpose.
//!
//! One redb file (`closed.redb`): B-trees of checksummed pages with
//! crash-safe, fsynced commits. Records are stored as the snapshot codec
//! writes them (`SnapshotEntry`), each under `tenant \0 kind id`.

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use crate::core::days::ClosedDays;
use crate::core::{Entry, Position, TenantState, Tz, format_date};
use crate::log::codec::{self, ClosedKind, ClosedRecord};

/// `tenant \0 kind id` -> the record, a `SnapshotEntry`.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// `tenant \0 clinic \0 YYYY-MM-DD` -> the `days_closed` position (8 bytes,
/// big-endian), then the clinic's zone then.
const DAYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("days");
/// `tenant \0 clinic \0 YYYY-MM-DD \0 joined entry_id`: a day's waitlist in join order.
const DAY_ENTRIES: TableDefinition<&[u8], ()> = TableDefinition::new("day_entries");
/// `through`: the position of the last `days_closed` stored.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// redb's page cache: closed days are read rarely, one record at a time, and
/// the kernel's page cache holds the file; the server's memory is for open days.
const CACHE_BYTES: usize = 4 << 20;

/// The file's name in the data directory.
pub const FILE: &str = "closed.redb";

#[derive(Debug, thiserror::Error)]
#[error("the closed-day store: {0}")]
pub struct StoreError(String);

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(error: E) -> StoreError {
        StoreError(error.into().to_string())
    }
}

/// Opens the redb database at `path` (created when missing) with
/// `cache_bytes` of page cache. One that does not open (damaged, truncated,
/// not a database) is set aside as `<path>.damaged` and created anew: what
/// this crate keeps in redb is derived from the ledger, so it is rebuilt from
/// it. Says whether it was set aside.
pub fn open_or_set_aside(path: &Path, cache_bytes: usize) -> Result<(Database, bool), redb::Error> {
    match Database::builder().set_cache_size(cache_bytes).create(path) {
        Ok(db) => Ok((db, false)),
        // Open elsewhere in this process: not damaged.
        Err(error @ redb::DatabaseError::DatabaseAlreadyOpen) => Err(error.into()),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "{} does not open: it is set aside and rebuilt from the ledger", path.display());
            std::fs::rename(path, path.with_extension("redb.damaged")).map_err(redb::Error::Io)?;
            Ok((Database::builder().set_cache_size(cache_bytes).create(path)?, true))
        }
    }
}

/// A redb database in memory, with `cache_bytes` of page cache (tests, and
/// stores of a server without a data directory).
pub fn in_memory_database(cache_bytes: usize) -> Database {
    Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .expect("an in-memory database")
}

fn codec_error(error: codec::CodecError) -> StoreError {
    StoreError(format!("a record does not decode: {error}"))
}

pub struct ClosedStore {
    db: Database,
}

impl std::fmt::Debug for ClosedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosedStore").finish_non_exhaustive()
    }
}

impl ClosedStore {
    /// Opens the store at `path`, creating it when missing.
    pub fn open(path: &Path) -> Result<ClosedStore, StoreError> {
        ClosedStore::init(Database::builder().set_cache_size(CACHE_BYTES).create(path)?)
    }

    /// Opens the store at `path`; one that does not open (damaged, truncated,
    /// not a store) is set aside as `<path>.damaged` and started empty, which
    /// makes the start-up replay the whole log into it. Says which it did.
    pub fn open_or_rebuild(path: &Path) -> Result<(ClosedStore, bool), StoreError> {
        let (db, rebuilt) = open_or_set_aside(path, CACHE_BYTES)?;
        Ok((ClosedStore::init(db)?, rebuilt))
    }

    /// A store in memory, for a writer without a data directory (tests).
    pub fn in_memory() -> ClosedStore {
        ClosedStore::init(in_memory_database(CACHE_BYTES)).expect("an in-memory store")
    }

    fn init(db: Database) -> Result<ClosedStore, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(DAYS)?;
        txn.open_table(DAY_ENTRIES)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(ClosedStore { db })
    }

    /// The position of the last `days_closed` whose records are stored (0: none).
    pub fn through(&self) -> Result<Position, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get("through")?.map_or(0, |v| v.value()))
    }

    /// Stores what several `days_closed` took out of memory, in one commit (a
    /// crash leaves all of it or none): durable (fsynced) when `durable`, else
    /// made durable by the next durable commit or [`ClosedStore::sync`] (a
    /// replay's, which a crash makes run again).
    pub fn put_all(&self, closed: &[(crate::core::Text, ClosedDays)], durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        for (tenant, days) in closed {
            Self::write(&txn, tenant, days)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes every commit so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    fn write(txn: &redb::WriteTransaction, tenant: &str, days: &ClosedDays) -> Result<(), StoreError> {
        {
            let mut records = txn.open_table(RECORDS)?;
            for (kind, id, bytes) in codec::encode_closed_records(&days.records) {
                records.insert(record_key(tenant, kind, &id).as_slice(), bytes.as_slice())?;
            }
            let mut table = txn.open_table(DAYS)?;
            let mut value = days.position.to_be_bytes().to_vec();
            value.extend_from_slice(days.zone.name().as_bytes());
            for date in &days.dates {
                table.insert(day_key(tenant, &days.clinic, *date).as_slice(), value.as_slice())?;
            }
            let mut entries = txn.open_table(DAY_ENTRIES)?;
            for entry in days.records.waitlist.values() {
                let mut key = day_key(tenant, &days.clinic, entry.details.date);
                key.push(0);
                key.extend_from_slice(&entry.joined.to_be_bytes());
                key.extend_from_slice(entry.details.entry_id.as_bytes());
                entries.insert(key.as_slice(), ())?;
            }
            let mut meta = txn.open_table(META)?;
            let through = meta.get("through")?.map_or(0, |v| v.value());
            meta.insert("through", through.max(days.position))?;
        }
        Ok(())
    }

    /// A record of `tenant`'s closed days, its names shared with `names`'.
    pub fn get(&self, names: &TenantState, tenant: &str, kind: ClosedKind, id: &[u8]) -> Result<Option<ClosedRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let Some(bytes) = table.get(record_key(tenant, kind, id).as_slice())? else { return Ok(None) };
        codec::decode_closed_record(names, bytes.value()).map(Some).map_err(codec_error)
    }

    pub fn booking(&self, names: &TenantState, tenant: &str, booking_id: &Uuid) -> Result<Option<Arc<crate::core::Booking>>, StoreError> {
        Ok(match self.get(names, tenant, ClosedKind::Booking, booking_id.as_bytes())? {
            Some(ClosedRecord::Booking(booking)) => Some(booking),
            _ => None,
        })
    }

    pub fn hold(&self, names: &TenantState, tenant: &str, hold_id: &Uuid) -> Result<Option<Arc<crate::core::Hold>>, StoreError> {
        Ok(match self.get(names, tenant, ClosedKind::Hold, hold_id.as_bytes())? {
            Some(ClosedRecord::Hold(hold)) => Some(hold),
            _ => None,
        })
    }

    pub fn entry(&self, names: &TenantState, tenant: &str, entry_id: &Uuid) -> Result<Option<Arc<Entry>>, StoreError> {
        Ok(match self.get(names, tenant, ClosedKind::Entry, entry_id.as_bytes())? {
            Some(ClosedRecord::Entry(entry)) => Some(entry),
            _ => None,
        })
    }

    pub fn external_ref(&self, tenant: &str, external_ref: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(match self.get(&TenantState::default(), tenant, ClosedKind::ExternalRef, external_ref.as_bytes())? {
            Some(ClosedRecord::ExternalRef(id)) => Some(id),
            _ => None,
        })
    }

    /// When a closed day of `clinic` closed (the `days_closed` position) and
    /// the clinic's zone then; none for a day with no records or not closed.
    pub fn closed_day(&self, tenant: &str, clinic: &str, date: NaiveDate) -> Result<Option<(Position, Tz)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DAYS)?;
        let Some(value) = table.get(day_key(tenant, clinic, date).as_slice())? else { return Ok(None) };
        let value = value.value();
        let position = Position::from_be_bytes(value[..8].try_into().map_err(|_| StoreError("a day's value is short".into()))?);
        let zone = std::str::from_utf8(&value[8..]).ok().and_then(|z| z.parse().ok()).ok_or_else(|| StoreError("a day's zone".into()))?;
        Ok(Some((position, zone)))
    }

    /// A closed day's waitlist, in the order its entries joined.
    pub fn entries_of(&self, names: &TenantState, tenant: &str, clinic: &str, date: NaiveDate) -> Result<Vec<Arc<Entry>>, StoreError> {
        let mut from = day_key(tenant, clinic, date);
        from.push(0);
        let mut to = from.clone();
        to.extend_from_slice(&[0xff; 24]);
        let ids: Vec<Uuid> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(DAY_ENTRIES)?;
            let mut ids = Vec::new();
            for item in table.range(from.as_slice()..=to.as_slice())? {
                let (key, _) = item?;
                let key = key.value();
                ids.push(Uuid::from_slice(&key[key.len() - 16..]).map_err(|e| StoreError(e.to_string()))?);
            }
            ids
        };
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            entries.extend(self.entry(names, tenant, &id)?);
        }
        Ok(entries)
    }
}

fn record_key(tenant: &str, kind: ClosedKind, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 2 + id.len());
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.push(kind as u8);
    key.extend_from_slice(id);
    key
}

/// `tenant \0 clinic \0 YYYY-MM-DD`: a clinic day's key.
pub fn day_key(tenant: &str, clinic: &str, date: NaiveDate) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + clinic.len() + 12);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.extend_from_slice(clinic.as_bytes());
    key.push(0);
    key.extend_from_slice(format_date(date).as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Action, Command, Context, EntryDetails, EntryStatus, Rules, State, days};
    use chrono::{TimeZone, Utc};

    /// A tenant with a booking (with an external ref), a hold and two entries
    /// on 2026-03-02, closed through that day by the core's own events.
    fn closed_state() -> (State, ClosedDays) {
        let mut state = State::new(Rules::default());
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        let id = |n: u128| Uuid::from_u128(n);
        let schedule = crate::core::Schedule { slots_per_day: 1, first_slot_minute: Some(540), slot_minutes: Some(15) };
        let book = crate::core::BookingDetails {
            booking_id: id(1),
            clinic: "c".into(),
            doctor: "d".into(),
            date,
            slot: 0,
            patient: "Asha".into(),
            kind: crate::core::BookingKind::Advance,
            external: crate::core::External::boxed(Some("cal-1".into()), None, None),
        };
        let join = |n: u128, patient: &str| {
            Action::JoinWaitlist(EntryDetails {
                entry_id: id(n),
                clinic: "c".into(),
                date,
                doctor: None,
                patient: patient.into(),
                patient_id: None,
            })
        };
        let actions =
            [Action::SetSchedule { clinic: "c".into(), doctor: "d".into(), schedule }, Action::Book(book), join(3, "Wen"), join(2, "Xi")];
        for action in actions {
            let command = Command { tenant: "t".into(), actor: "a".into(), request_id: "r".into(), idempotency: None, action };
            for event in crate::core::decide(&state, &command, &Context { now, position_next: state.position + 1 }).unwrap() {
                crate::core::apply(&mut state, &event);
            }
        }
        let later = Context { now: now + chrono::Duration::days(3), position_next: state.position + 1 };
        let mut closing = None;
        for event in days::closings_due(&state, &later) {
            if let crate::core::EventKind::DaysClosed { clinic, through } = &event.kind {
                closing = Some(days::closing(state.tenant("t").unwrap(), clinic, *through, event.position));
            }
            crate::core::apply(&mut state, &event);
        }
        (state, closing.expect("the day closed"))
    }

    #[test]
    fn what_a_closed_day_held_is_read_back_as_it_left_memory_across_a_reopen() {
        let (state, closed) = closed_state();
        assert!(state.tenant("t").unwrap().bookings.is_empty(), "the closed day left memory");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        ClosedStore::open(&path).unwrap().put_all(&[("t".into(), closed.clone())], true).unwrap();
        let store = ClosedStore::open(&path).unwrap();
        assert_eq!(store.through().unwrap(), closed.position);
        let names = TenantState::default();
        let booking = store.booking(&names, "t", &Uuid::from_u128(1)).unwrap().unwrap();
        assert_eq!(booking, closed.records.bookings[&Uuid::from_u128(1)]);
        assert_eq!(store.external_ref("t", "cal-1").unwrap(), Some(Uuid::from_u128(1)));
        assert_eq!(store.external_ref("other-tenant", "cal-1").unwrap(), None, "tenants never see each other's");
        let entries = store.entries_of(&names, "t", "c", booking.details.date).unwrap();
        let order: Vec<(Uuid, EntryStatus)> = entries.iter().map(|e| (e.details.entry_id, e.status)).collect();
        assert_eq!(order, [(Uuid::from_u128(3), EntryStatus::Expired), (Uuid::from_u128(2), EntryStatus::Expired)], "in join order");
        let (position, zone) = store.closed_day("t", "c", booking.details.date).unwrap().unwrap();
        assert_eq!((position, zone), (closed.position, Tz::UTC));
        assert_eq!(store.closed_day("t", "c", booking.details.date.succ_opt().unwrap()).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_set_aside_and_started_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (store, rebuilt) = ClosedStore::open_or_rebuild(&path).unwrap();
        assert!(rebuilt);
        assert_eq!(store.through().unwrap(), 0);
        assert_eq!(std::fs::read(path.with_extension("redb.damaged")).unwrap(), vec![0x5a; 8192], "kept for an investigator");
    }
}
