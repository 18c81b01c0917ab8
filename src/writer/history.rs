//! Time travel: the state as it stood right after an earlier position,
//! rebuilt from the log on disk beside the running writer.

use std::ops::ControlFlow;
use std::path::Path;

use super::recover::RecoverError;
use crate::core::{self, State};
use crate::log::{self, Position, codec};

/// The state right after `as_of`, replayed from the durable log in `dir`. Its
/// cost grows with the ledger: it reads every event up to `as_of`.
pub fn state_as_of(dir: &Path, as_of: Position) -> Result<State, RecoverError> {
    let mut state = State::default();
    let mut failure = None;
    log::read_dir(dir, 1, as_of, &mut |position, payload| match codec::decode_event(payload) {
        Ok(event) => {
            core::apply(&mut state, &event);
            ControlFlow::Continue(())
        }
        Err(error) => {
            failure = Some(RecoverError::Codec { log: "ledger", position, error });
            ControlFlow::Break(())
        }
    })?;
    failure.map_or(Ok(state), Err)
}
