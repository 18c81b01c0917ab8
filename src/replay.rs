//! Replay: log records folded into a [`State`], the one way every part of the
//! server does it. Start-up recovers from the first event or from a
//! snapshot's state ([`recover_from`]); the snapshot thread rebuilds a state
//! from the files (`crate::snapshots`); the writer catches its published copy
//! up after a re-open. Each feeds its records to a [`Replay`], which decodes,
//! applies with the invariants checked, counts, and stops at the first fault.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::closed::{ClosedStore, StoreError};
use crate::core::{self, Event, EventKind, Rules, State, StoredResponse, Text};
use crate::log::codec::{self, CodecError};
use crate::log::decode::Decoder;
use crate::log::events::{self, ReadError};
use crate::log::{Log, Position};

/// One state being rebuilt from records in log order: a ledger event or a
/// stored answer at a time. The first record that does not decode or apply
/// stops the fold ([`ControlFlow::Break`]) and is kept for [`Replay::check`].
pub struct Replay<'s> {
    pub state: &'s mut State,
    decoder: Decoder,
    /// Ledger events applied.
    pub events: u64,
    /// Stored answers recorded.
    pub answers: u64,
    failure: Option<RecoverError>,
    /// Where the records of a `days_closed` past its `through` go before it is applied.
    closed: Option<(&'s ClosedStore, Position)>,
}

impl<'s> Replay<'s> {
    pub fn new(state: &'s mut State) -> Replay<'s> {
        Replay { state, decoder: Decoder::for_recovery(), events: 0, answers: 0, failure: None, closed: None }
    }

    /// A replay that puts into `store` what each `days_closed` it applies
    /// takes out of memory, when the store does not have it yet.
    pub fn storing(mut self, store: &'s ClosedStore) -> Result<Replay<'s>, RecoverError> {
        self.closed = Some((store, store.through()?));
        Ok(self)
    }

    /// The ledger record at `position`, read from `log`.
    pub fn record(&mut self, log: &dyn Log, position: Position, payload: &[u8]) -> ControlFlow<()> {
        match events::decode_at(&mut self.decoder, position, payload) {
            Ok(event) => self.event(&event),
            Err(fault) => self.fail(RecoverError::Read(ReadError::Event { path: log.path_of(position), position, fault })),
        }
    }

    /// A decoded ledger event.
    pub fn event(&mut self, event: &Event) -> ControlFlow<()> {
        if let (EventKind::DaysClosed { clinic, through }, Some((store, stored))) = (&event.kind, self.closed)
            && event.position > stored
            && let Some(tenant) = self.state.tenant(&event.tenant)
        {
            let days = core::days::closing(tenant, clinic, *through, event.position);
            // Not fsynced one by one: `recover_storing` syncs the store at its end, and a
            // crash before that replays these again.
            if let Err(error) = store.put_all(&[(event.tenant.clone(), days)], false) {
                return self.fail(RecoverError::Closed(error));
            }
        }
        match apply_checked(self.state, event) {
            Ok(()) => {
                self.events += 1;
                ControlFlow::Continue(())
            }
            Err(error) => self.fail(error),
        }
    }

    /// The responses journal's record at `position`: its stored answer is
    /// recorded when `keep` says so of its time.
    pub fn answer(&mut self, position: Position, payload: &[u8], keep: impl Fn(DateTime<Utc>) -> bool) -> ControlFlow<()> {
        match decode_answer(position, payload) {
            Ok((tenant, response, recorded_at)) => {
                if keep(recorded_at) {
                    self.state.idempotency.record(&tenant, response, recorded_at);
                    self.answers += 1;
                }
                ControlFlow::Continue(())
            }
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: RecoverError) -> ControlFlow<()> {
        self.failure = Some(error);
        ControlFlow::Break(())
    }

    /// The fault that stopped the fold, if one did; the fold may go on after `Ok`.
    pub fn check(&mut self) -> Result<(), RecoverError> {
        self.failure.take().map_or(Ok(()), Err)
    }
}

/// A record of the responses journal: a keyed command's stored answer that
/// appended no event.
pub fn decode_answer(position: Position, payload: &[u8]) -> Result<(Text, StoredResponse, DateTime<Utc>), RecoverError> {
    codec::decode_rejected_response(payload).map_err(|error| RecoverError::Responses { position, error })
}

#[derive(Debug)]
pub struct Recovered {
    pub state: State,
    /// Events applied (after the start's position).
    pub events: u64,
    /// Stored answers loaded from the responses journal (after the start's position).
    pub responses: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("responses journal position {position}: {error}")]
    Responses { position: Position, error: CodecError },
    /// The log says something the rules forbid (two active bookings of a slot,
    /// say): it was written past the core, or the core had a bug.
    #[error("the ledger breaks an invariant at position {position}: {reason}")]
    Violation { position: Position, reason: String },
    #[error(transparent)]
    Closed(#[from] StoreError),
}

/// Where a recovery starts: the state through some ledger position and the
/// responses journal position it includes.
#[derive(Debug)]
pub struct Start {
    pub state: State,
    pub responses_position: Position,
}

impl Start {
    /// Before the first event and the first stored answer.
    pub fn empty(rules: Rules) -> Start {
        Start { state: State::new(rules), responses_position: 0 }
    }
}

/// Rebuilds the state from `log` and `responses`. Stored answers already older
/// than the retention at `now` are not loaded.
pub fn recover(log: &dyn Log, responses: &dyn Log, rules: Rules, now: DateTime<Utc>) -> Result<Recovered, RecoverError> {
    recover_from(log, responses, Start::empty(rules), now)
}

/// Rebuilds the state from `start` and the records of `log` and `responses`
/// after it. Whatever the start, the state is the one a recovery from the
/// first record gives: the idempotency table is settled at the end, so it holds
/// the same answers whichever order they were recorded in.
pub fn recover_from(log: &dyn Log, responses: &dyn Log, start: Start, now: DateTime<Utc>) -> Result<Recovered, RecoverError> {
    recover_storing(log, responses, start, now, None)
}

/// [`recover_from`], putting into `closed` what each `days_closed` it applies
/// takes out of memory, when the store lacks it.
pub fn recover_storing(
    log: &dyn Log,
    responses: &dyn Log,
    start: Start,
    now: DateTime<Utc>,
    closed: Option<&ClosedStore>,
) -> Result<Recovered, RecoverError> {
    let started = Instant::now();
    let Start { mut state, responses_position } = start;
    let mut replay = Replay::new(&mut state);
    if let Some(store) = closed {
        replay = replay.storing(store)?;
    }
    log.read_from(replay.state.position + 1, &mut |position, payload| replay.record(log, position, payload)).map_err(ReadError::from)?;
    replay.check()?;
    if let Some(store) = closed {
        store.sync()?;
    }
    if replay.events > 0 {
        replay.state.compact();
    }
    // The writer's clock never runs behind the last event's time, so neither
    // does the retention's.
    let now = now.max(replay.state.recorded_at_last);
    let retention = replay.state.rules.idempotency_retention;
    responses
        .read_from(responses_position + 1, &mut |position, payload| {
            replay.answer(position, payload, |recorded_at| now - recorded_at < retention)
        })
        .map_err(ReadError::from)?;
    replay.check()?;
    let (events, responses) = (replay.events, replay.answers);
    state.idempotency.settle(now, retention);
    Ok(Recovered { state, events, responses, elapsed: started.elapsed() })
}

/// Applies one recovered event. `apply` asserts the invariants `decide` keeps;
/// a log that breaks them is reported (`Violation`), not served from.
pub fn apply_checked(state: &mut State, event: &Event) -> Result<(), RecoverError> {
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core::apply(state, event)));
    applied.map_err(|panic| {
        let reason = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
        RecoverError::Violation { position: event.position, reason: reason.unwrap_or_default() }
    })
}
