//! Start-up: the state recovered by applying the events of the log, read
//! through `log::events`, and the stored answers of the responses journal put
//! back; from the first event, or from a snapshot's state (see `crate::snapshots`).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::core::{self, Event, Rules, State};
use crate::log::codec::{self, CodecError};
use crate::log::decode::Decoder;
use crate::log::events::{self, ReadError};
use crate::log::{Log, Position};

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
    let started = Instant::now();
    let Start { mut state, responses_position } = start;
    let mut failure = None;
    let mut events = 0;
    let mut decoder = Decoder::for_recovery();
    log.read_from(state.position + 1, &mut |position, payload| {
        let applied = events::decode_at(&mut decoder, position, payload)
            .map_err(|fault| RecoverError::Read(ReadError::Event { path: log.path_of(position), position, fault }))
            .and_then(|event| apply_checked(&mut state, &event));
        match applied {
            Ok(()) => {
                events += 1;
                ControlFlow::Continue(())
            }
            Err(error) => {
                failure = Some(error);
                ControlFlow::Break(())
            }
        }
    })
    .map_err(ReadError::from)?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    if events > 0 {
        state.compact();
    }
    // The writer's clock never runs behind the last event's time, so neither
    // does the retention's.
    let now = now.max(state.recorded_at_last);
    let retention = state.rules.idempotency_retention;
    let mut loaded = 0;
    responses
        .read_from(responses_position + 1, &mut |position, payload| match codec::decode_rejected_response(payload) {
            Ok((tenant, response, recorded_at)) => {
                if now - recorded_at < retention {
                    state.idempotency.record(&tenant, response, recorded_at);
                    loaded += 1;
                }
                ControlFlow::Continue(())
            }
            Err(error) => {
                failure = Some(RecoverError::Responses { position, error });
                ControlFlow::Break(())
            }
        })
        .map_err(ReadError::from)?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    state.idempotency.settle(now, retention);
    Ok(Recovered { state, events, responses: loaded, elapsed: started.elapsed() })
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
