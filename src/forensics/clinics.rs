//! The clinic index, for time travel: where on disk each clinic's events are,
//! so that "the slots as of position P" reads that clinic's history only, and
//! its cost grows with the clinic, not with the ledger.
//!
//! A follower thread tails the durable log and indexes as it goes (at start-up
//! it catches up in the background). Queries wait until it has indexed their
//! position.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio::sync::watch;
use uuid::Uuid;

use crate::core::{self, EventKind, State, Text};
use crate::log::{self, Location, LogError, Position, Tail, codec};

/// Records indexed per read of the log.
const INDEX_CHUNK_LEN: usize = 4096;

#[derive(Default)]
struct Entries {
    /// Per (tenant, clinic): its events' positions and locations, in order.
    clinics: BTreeMap<(Text, Text), Vec<(Position, Location)>>,
    /// Per booking: its (tenant, clinic), to index its cancellation.
    bookings: BTreeMap<Uuid, (Text, Text)>,
}

pub struct ClinicIndex {
    dir: PathBuf,
    entries: RwLock<Entries>,
    /// Every position up to this one is indexed.
    indexed: AtomicU64,
    indexed_changed: watch::Sender<Position>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("position {position}: {error}")]
    Codec { position: Position, error: codec::CodecError },
}

impl ClinicIndex {
    pub fn new(dir: &Path) -> Arc<ClinicIndex> {
        Arc::new(ClinicIndex {
            dir: dir.to_owned(),
            entries: RwLock::default(),
            indexed: AtomicU64::new(0),
            indexed_changed: watch::Sender::new(0),
        })
    }

    pub fn indexed(&self) -> Position {
        self.indexed.load(Ordering::Acquire)
    }

    /// Indexes the log through `last` (durable), continuing from where it stopped.
    pub fn index_through(&self, tail: &mut Tail, last: Position) -> Result<(), IndexError> {
        while tail.next_position() <= last {
            let mut failure = None;
            let mut entries = self.entries.write();
            let entries = &mut *entries;
            tail.read(last, INDEX_CHUNK_LEN, &mut |position, location, payload| {
                let event = match codec::decode_event(payload) {
                    Ok(event) => event,
                    Err(error) => {
                        failure.get_or_insert(IndexError::Codec { position, error });
                        return;
                    }
                };
                let clinic = match &event.kind {
                    EventKind::ScheduleSet { clinic, .. } => Some(clinic.clone()),
                    EventKind::BookingCreated(created) => {
                        entries.bookings.insert(created.details.booking_id, (event.tenant.clone(), created.details.clinic.clone()));
                        Some(created.details.clinic.clone())
                    }
                    EventKind::BookingCancelled { booking_id, .. } => entries.bookings.get(booking_id).map(|(_, clinic)| clinic.clone()),
                    _ => None,
                };
                if let Some(clinic) = clinic {
                    entries.clinics.entry((event.tenant.clone(), clinic)).or_default().push((position, location));
                }
            })?;
            if let Some(failure) = failure {
                return Err(failure);
            }
            let through = tail.next_position() - 1;
            self.indexed.store(through, Ordering::Release);
            self.indexed_changed.send_replace(through);
        }
        Ok(())
    }

    /// Waits until everything through `position` is indexed.
    pub async fn wait_for(&self, position: Position) {
        let mut indexed = self.indexed_changed.subscribe();
        let _ = indexed.wait_for(|indexed| *indexed >= position).await;
    }

    /// The state of one clinic's schedules and bookings right after `as_of`:
    /// that clinic's events only, read from disk by location and replayed
    /// (renumbered, since the clinic's positions have gaps). Other clinics and
    /// workflows are absent from it.
    pub fn clinic_as_of(&self, tenant: &str, clinic: &str, as_of: Position) -> Result<State, IndexError> {
        assert!(as_of <= self.indexed(), "query position {as_of} is not indexed yet");
        let locations: Vec<Location> = {
            let entries = self.entries.read();
            let key = (Text::from(tenant), Text::from(clinic));
            let events = entries.clinics.get(&key).map_or(&[][..], |v| v.as_slice());
            events.iter().take_while(|(position, _)| *position <= as_of).map(|(_, location)| *location).collect()
        };
        let mut state = State::default();
        let mut failure = None;
        log::read_many(&self.dir, &locations, &mut |position, payload| {
            if failure.is_some() {
                return;
            }
            match codec::decode_event(payload) {
                Ok(mut event) => {
                    event.position = state.position + 1;
                    event.response = None;
                    core::apply(&mut state, &event);
                }
                Err(error) => failure = Some(IndexError::Codec { position, error }),
            }
        })?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        state.position = as_of;
        Ok(state)
    }
}

/// Keeps `index` up to date with the durable log until the writer goes away.
pub async fn follow(index: Arc<ClinicIndex>, mut durable: watch::Receiver<Position>) {
    let mut tail = Some(Tail::new(&index.dir, 1));
    loop {
        let last = *durable.borrow_and_update();
        let (index_, mut follower) = (index.clone(), tail.take().expect("put back after every pass"));
        let result = tokio::task::spawn_blocking(move || {
            let result = index_.index_through(&mut follower, last);
            (follower, result)
        })
        .await;
        match result {
            Ok((follower, Ok(()))) => tail = Some(follower),
            Ok((_, Err(error))) => return tracing::error!(%error, "the clinic index stopped; time-travel queries will wait"),
            Err(_) => return,
        }
        if durable.changed().await.is_err() {
            return;
        }
    }
}
