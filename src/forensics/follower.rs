//! The follower: one reader that tails the durable ledger beside the writer and
//! keeps the read side's indexes up to date: the clinic index (time travel) and
//! the live audit (so `GET /audit` answers without rescanning the ledger).
//!
//! It reads the files, never the writer's state, and holds its locks only to
//! fold one chunk of events in; queries copy what they need out and let go.
//! A record it cannot read stops it, and every query waiting on it is told
//! why (file and position) instead of waiting forever.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::READ_CHUNK_LEN;
use super::audit::{AuditReport, Auditor};
use super::clinics::{ClinicDay, ClinicIndex, DayChange};
use crate::core::Rules;
use crate::log::events::{EventReader, ReadError};
use crate::log::{Durable, Position};

pub struct Indexes {
    dir: PathBuf,
    clinics: RwLock<ClinicIndex>,
    /// A `parking_lot` mutex, not a tokio one: nothing awaits while it is held.
    audit: Mutex<Auditor>,
    /// Every position up to this one is indexed and audited.
    indexed: watch::Sender<Position>,
    /// Why the follower stopped, if it did, and the position it could not read.
    failure: OnceLock<(String, Option<Position>)>,
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
    pub fn new(dir: &Path, rules: Rules) -> Arc<Indexes> {
        Arc::new(Indexes {
            dir: dir.to_owned(),
            clinics: RwLock::default(),
            audit: Mutex::new(Auditor::new(rules, None).forgetting_closed_days()),
            indexed: watch::Sender::new(0),
            failure: OnceLock::new(),
        })
    }

    pub fn indexed(&self) -> Position {
        *self.indexed.borrow()
    }

    /// Indexes the log through `last` (durable), continuing from where `reader` stopped.
    pub fn index_through(&self, reader: &mut EventReader, last: Position) -> Result<(), ReadError> {
        while reader.next_position() <= last {
            let mut events = Vec::with_capacity(READ_CHUNK_LEN.min(1024));
            reader.read(last, READ_CHUNK_LEN, &mut |event, location| {
                events.push((event, location));
                ControlFlow::Continue(())
            })?;
            {
                let mut clinics = self.clinics.write();
                for (event, location) in &events {
                    clinics.index(event, *location);
                }
            }
            let mut audit = self.audit.lock();
            for (event, _) in &events {
                audit.check(event);
            }
            drop(audit);
            self.indexed.send_replace(reader.next_position() - 1);
        }
        Ok(())
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
        plan.run(&self.dir)
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
        plan.run(&self.dir)
    }

    fn stop(&self, error: &ReadError) {
        let _ = self.failure.set((error.to_string(), error.position()));
        // Wake the waiters so they see the failure.
        self.indexed.send_modify(|_| {});
    }
}

/// Keeps `indexes` up to date with the durable log until the writer goes away.
pub async fn follow(indexes: Arc<Indexes>, mut durable: Durable) {
    let mut reader = Some(EventReader::new(&indexes.dir, 1));
    loop {
        let last = *durable.borrow_and_update();
        let (indexes_, mut follower) = (indexes.clone(), reader.take().expect("put back after every pass"));
        let result = tokio::task::spawn_blocking(move || {
            let result = indexes_.index_through(&mut follower, last);
            (follower, result)
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
        if durable.changed().await.is_err() {
            return;
        }
    }
}
