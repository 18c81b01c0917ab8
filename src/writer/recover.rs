//! Start-up: the state recovered by applying every event of the log, read
//! through `log::events`, and the stored answers of the responses journal put back.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::core::{self, Rules, State};
use crate::log::codec::{self, CodecError};
use crate::log::decode::Decoder;
use crate::log::events::{self, ReadError};
use crate::log::{Log, Position};

#[derive(Debug)]
pub struct Recovered {
    pub state: State,
    pub events: u64,
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

/// Rebuilds the state from `log` and `responses`. Stored answers already older
/// than the retention at `now` are not loaded.
pub fn recover(log: &dyn Log, responses: &dyn Log, rules: Rules, now: DateTime<Utc>) -> Result<Recovered, RecoverError> {
    let started = Instant::now();
    let mut state = State::new(rules);
    let mut failure = None;
    let mut events = 0;
    let mut decoder = Decoder::for_recovery();
    log.read_from(1, &mut |position, payload| {
        let event = match events::decode_at(&mut decoder, position, payload) {
            Ok(event) => event,
            Err(fault) => {
                failure = Some(RecoverError::Read(ReadError::Event { path: log.path_of(position), position, fault }));
                return ControlFlow::Break(());
            }
        };
        // `apply` asserts the invariants `decide` keeps; a log that breaks
        // them is reported, not served from.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core::apply(&mut state, &event)));
        if let Err(panic) = applied {
            let reason = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failure = Some(RecoverError::Violation { position, reason: reason.unwrap_or_default() });
            return ControlFlow::Break(());
        }
        events += 1;
        ControlFlow::Continue(())
    })
    .map_err(ReadError::from)?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let mut loaded = 0;
    responses
        .read_from(1, &mut |position, payload| match codec::decode_rejected_response(payload) {
            Ok((tenant, response, recorded_at)) => {
                if now - recorded_at < rules.idempotency_retention {
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
    state.idempotency.expire(now, rules.idempotency_retention, usize::MAX);
    Ok(Recovered { state, events, responses: loaded, elapsed: started.elapsed() })
}
