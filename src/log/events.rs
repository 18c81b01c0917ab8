//! The ledger's records read back as core events: the one place that turns a
//! record into an [`Event`], checking that the event carries the position of
//! the record that holds it. Every reader of events goes through here, so a
//! record that does not decode is the same error everywhere, naming its file
//! and position; none skips it.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::codec::CodecError;
use super::decode::Decoder;
use super::{Location, LogError, Position, Tail};
use crate::core::Event;

/// Why a record is not the event it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("{0}")]
    Undecodable(CodecError),
    #[error("the record holds the event of position {found}")]
    Misplaced { found: Position },
}

/// A failure to read the ledger's events: the log's, or a record's.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{path}: position {position}: {fault}")]
    Event { path: PathBuf, position: Position, fault: Fault },
}

impl ReadError {
    /// The position of the bad record, when the log could say.
    pub fn position(&self) -> Option<Position> {
        match self {
            ReadError::Log(LogError::Corrupt { position, .. }) | ReadError::Event { position, .. } => Some(*position),
            ReadError::Log(_) => None,
        }
    }
}

/// Events the writer made durable, handed to the read side as they are
/// (shared, immutable) with where each record is, so that it indexes them
/// without reading or decoding them again. Sent before the durable position
/// that covers them; a batch the read side has no room for is dropped, and
/// it reads those events from the files instead.
#[derive(Debug)]
pub struct DurableBatch {
    pub events: Vec<Event>,
    pub locations: Vec<Location>,
}

/// The writer's end of the feed of [`DurableBatch`]es.
pub type Feed = std::sync::mpsc::SyncSender<std::sync::Arc<DurableBatch>>;
/// The read side's end.
pub type Fed = std::sync::mpsc::Receiver<std::sync::Arc<DurableBatch>>;

/// Batches the feed holds for a read side that is behind; past them it reads the files.
pub const FEED_BATCHES: usize = 256;

/// A feed: the writer's end and the read side's.
pub fn feed() -> (Feed, Fed) {
    std::sync::mpsc::sync_channel(FEED_BATCHES)
}

/// Decodes the record at `position` into its event.
pub fn decode_at(decoder: &mut Decoder, position: Position, payload: &[u8]) -> Result<Event, Fault> {
    let event = decoder.decode_event(payload).map_err(Fault::Undecodable)?;
    if event.position != position {
        return Err(Fault::Misplaced { found: event.position });
    }
    Ok(event)
}

/// Called with each event read and where its record is; `Break` stops after it.
/// How many events a reader of a range reads at a time: a bound on the
/// memory a chunk holds, and on how long a stop flag waits to be seen.
pub const READ_CHUNK_LEN: usize = 4096;

pub type EventVisit<'a> = dyn FnMut(Event, Location) -> ControlFlow<()> + 'a;

/// A [`Tail`] that yields events. After an error it stays at the bad record, so
/// reading again fails again: a reader never moves past what it could not read.
pub struct EventReader {
    tail: Tail,
    dir: PathBuf,
    decoder: Decoder,
}

impl EventReader {
    pub fn new(dir: &Path, from: Position) -> EventReader {
        EventReader { tail: Tail::new(dir, from), dir: dir.to_owned(), decoder: Decoder::interning() }
    }

    /// A reader for code that applies events and drops them (the snapshot
    /// thread): their request id and Idempotency-Key are not decoded.
    pub fn for_recovery(dir: &Path, from: Position) -> EventReader {
        EventReader { decoder: Decoder::for_recovery(), ..EventReader::new(dir, from) }
    }

    /// The position the next read starts at.
    pub fn next_position(&self) -> Position {
        self.tail.next_position()
    }

    /// The events from the next one through `last` (durable), at most `limit`.
    pub fn read(&mut self, last: Position, limit: usize, visit: &mut EventVisit<'_>) -> Result<usize, ReadError> {
        self.read_with(limit, visit, |tail, limit, visit| tail.read(last, limit, visit))
    }

    /// Every event from the next one through `last` (durable), or up to
    /// whatever the log holds when `last` is None (offline), read
    /// `READ_CHUNK_LEN` at a time; `between` runs after each chunk with how
    /// many it read (to report progress, or to stop with an error). Ends early
    /// when `visit` breaks; the reader then stands after the event that broke.
    pub fn read_through<E: From<ReadError>>(
        &mut self,
        last: Option<Position>,
        visit: &mut EventVisit<'_>,
        mut between: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stopped = false;
        while !stopped && last.is_none_or(|last| self.next_position() <= last) {
            let mut visit = |event, location| {
                let flow = visit(event, location);
                stopped = flow.is_break();
                flow
            };
            let read = match last {
                Some(last) => self.read(last, READ_CHUNK_LEN, &mut visit)?,
                None => self.read_available(READ_CHUNK_LEN, &mut visit)?,
            };
            between(read)?;
            stopped |= last.is_none() && read == 0;
        }
        Ok(())
    }

    /// The events up to whatever the log holds (offline), at most `limit`.
    pub fn read_available(&mut self, limit: usize, visit: &mut EventVisit<'_>) -> Result<usize, ReadError> {
        self.read_with(limit, visit, |tail, limit, visit| tail.read_available(limit, visit))
    }

    fn read_with(
        &mut self,
        limit: usize,
        visit: &mut EventVisit<'_>,
        read: impl FnOnce(&mut Tail, usize, &mut super::RecordVisit<'_>) -> Result<usize, LogError>,
    ) -> Result<usize, ReadError> {
        let mut failure = None;
        let decoder = &mut self.decoder;
        let read = read(&mut self.tail, limit, &mut |position, location, payload| match decode_at(decoder, position, payload) {
            Ok(event) => visit(event, location),
            Err(fault) => {
                failure = Some((position, location, fault));
                ControlFlow::Break(())
            }
        })?;
        match failure {
            None => Ok(read),
            Some((position, location, fault)) => {
                let path = self.tail.path_of(location);
                // The tail moved past the bad record: put it back there.
                self.tail = Tail::new(&self.dir, position);
                Err(ReadError::Event { path, position, fault })
            }
        }
    }
}
