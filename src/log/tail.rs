//! The one forward reader of a log directory: every reader of the ledger and
//! of the journals (start-up, the audit, the clinic index, event pages and
//! streams, export, the timeline) walks records through a [`Tail`]. It checks
//! each record's frame and CRC and that positions run without gaps, reads a
//! chunk at a time (never a whole segment), and remembers where it stopped so
//! a follower can resume. It reads only records the caller says are durable,
//! or, offline, whatever the log holds; it never writes.

use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::file::{list_segments, segment_path};
use super::frame::{self, FRAME_HEADER_BYTES, Frame, FrameError, GENESIS_HASH, Hash, RECORD_BYTES_MAX, SEGMENT_HEADER_BYTES};
use super::walk::{Damage, Walk};
use super::{LogError, Position};

/// Bytes read from a segment at a time: a reader's memory is this plus one record.
const CHUNK_BYTES: usize = 1 << 20;

/// Where a record is: its segment (by first position) and its byte offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Location {
    pub segment: Position,
    pub offset: u64,
}

/// Called for each record read: its position, where it is, its payload.
/// `ControlFlow::Break` stops the read after this record.
pub type RecordVisit<'a> = dyn FnMut(Position, Location, &[u8]) -> ControlFlow<()> + 'a;

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Through this position, which the writer made durable: the log must hold it.
    Durable(Position),
    /// Whatever the log holds (offline readers, with no writer to ask): the end of
    /// the last segment, or a torn record at its very end, is where it stops.
    Available,
}

/// The segment file of the log in `dir` that holds the record at `location`.
pub fn location_path(dir: &Path, location: Location) -> PathBuf {
    segment_path(dir, location.segment)
}

struct Segment {
    first: Position,
    /// No segment followed this one when it was opened.
    is_last: bool,
    path: PathBuf,
    file: File,
    /// Checksums and positions: the position the next record must carry.
    walk: Walk,
    /// The file offset of the next record.
    offset: u64,
    /// Bytes read ahead, starting at file offset `buffered_at`.
    buffer: Vec<u8>,
    buffered_at: u64,
}

pub struct Tail {
    dir: PathBuf,
    next: Position,
    segment: Option<Segment>,
    /// For logs whose oldest segments are deleted (the rejection journal): a
    /// position before the oldest kept starts at the oldest. For the ledger, a
    /// missing position is corruption.
    rotated: bool,
}

fn corrupt(path: &Path, position: Position, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt { path: path.to_owned(), position, offset, reason: reason.into() }
}

impl Tail {
    /// A reader of the log in `dir` from position `from`.
    pub fn new(dir: &Path, from: Position) -> Tail {
        Tail { dir: dir.to_owned(), next: from.max(1), segment: None, rotated: false }
    }

    /// A reader of a log whose oldest segments may have been deleted: from
    /// `from`, or from the oldest record kept if that is later.
    pub fn rotated(dir: &Path, from: Position) -> Tail {
        Tail { rotated: true, ..Tail::new(dir, from) }
    }

    /// The position the next read starts at.
    pub fn next_position(&self) -> Position {
        self.next
    }

    /// The file a record read by this tail is in, to name it in an error.
    pub fn path_of(&self, location: Location) -> PathBuf {
        location_path(&self.dir, location)
    }

    /// Visits the records from the next one through `last` (which must be
    /// durable), at most `limit` of them; returns how many it visited.
    pub fn read(&mut self, last: Position, limit: usize, visit: &mut RecordVisit<'_>) -> Result<usize, LogError> {
        self.read_until(End::Durable(last), limit, visit)
    }

    /// Visits records up to whatever the log holds (for offline readers, with no
    /// writer to say what is durable): the end of the last segment, or a torn
    /// record at its very end, is where it stops.
    pub fn read_available(&mut self, limit: usize, visit: &mut RecordVisit<'_>) -> Result<usize, LogError> {
        self.read_until(End::Available, limit, visit)
    }

    fn read_until(&mut self, end: End, limit: usize, visit: &mut RecordVisit<'_>) -> Result<usize, LogError> {
        let (last, to_the_end) = match end {
            End::Durable(last) => (last, false),
            End::Available => (Position::MAX, true),
        };
        let mut visited = 0;
        while visited < limit && self.next <= last {
            if self.segment.is_none() {
                match self.oldest()? {
                    None if to_the_end => return Ok(visited),
                    None => return Err(corrupt(&self.dir, self.next, 0, "no segment holds this position")),
                    Some(oldest) if self.rotated => self.next = self.next.max(oldest),
                    Some(_) => {}
                }
                if self.next > last {
                    return Ok(visited);
                }
                self.segment = Some(self.open(self.next)?);
            }
            let segment = self.segment.as_mut().expect("opened above");
            let (first, is_last) = (segment.first, segment.is_last);
            match segment.next_frame() {
                Ok(Some((offset, record))) => {
                    debug_assert_eq!(record.position, self.next, "the walk checked it");
                    self.next += 1;
                    visited += 1;
                    if visit(record.position, Location { segment: first, offset }, record.payload).is_break() {
                        return Ok(visited);
                    }
                }
                // Offline, a record that does not decode at the end of the last
                // segment is a torn write that was never acknowledged: the log ends
                // before it. A bad record that intact ones follow is damage, as
                // `FileLog::open` has it.
                Err(BadFrame::Damage(offset, damage)) if to_the_end && is_last && damage.may_be_torn() => {
                    if segment.is_torn_tail(offset, damage)? {
                        return Ok(visited);
                    }
                    return Err(segment.error(BadFrame::Damage(offset, damage)));
                }
                Err(bad) => return Err(segment.error(bad)),
                // The end of this segment: the next record starts the next one.
                Ok(None) => {
                    // A segment that ends before holding `next` is the last one (an
                    // empty segment starts at `next` itself: there is nothing after it).
                    let path = segment_path(&self.dir, self.next);
                    let more = first < self.next && path.exists();
                    if to_the_end && !more {
                        return Ok(visited);
                    }
                    if !more {
                        return Err(corrupt(&segment.path, self.next, segment.offset, "the log ends before a durable position"));
                    }
                    self.segment = None;
                }
            }
        }
        Ok(visited)
    }

    /// The first position of the oldest segment, if there is one.
    fn oldest(&self) -> Result<Option<Position>, LogError> {
        Ok(list_segments(&self.dir)?.first().map(|(first, _)| *first))
    }

    /// Opens the segment holding `position` and skips to that record.
    fn open(&self, position: Position) -> Result<Segment, LogError> {
        let segments = list_segments(&self.dir)?;
        let index = segments.partition_point(|(first, _)| *first <= position).checked_sub(1);
        let (first, path) =
            index.map(|i| segments[i].clone()).ok_or_else(|| corrupt(&self.dir, position, 0, "no segment holds this position"))?;
        let file = File::open(&path).map_err(LogError::io(&path))?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        file.read_exact_at(&mut header, 0).map_err(LogError::io(&path))?;
        let decoded = frame::decode_segment_header(&header).map_err(|reason| corrupt(&path, first, 0, reason))?;
        if decoded.first_position != first {
            return Err(corrupt(&path, first, 0, format!("segment header names first position {}", decoded.first_position)));
        }
        let is_last = index == Some(segments.len() - 1);
        let offset = SEGMENT_HEADER_BYTES as u64;
        let mut segment = Segment { first, is_last, path, file, walk: Walk::unchained(first), offset, buffer: Vec::new(), buffered_at: 0 };
        while segment.walk.next_position() < position {
            match segment.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => return Err(corrupt(&segment.path, segment.walk.next_position(), segment.offset, "the segment ends early")),
                Err(bad) => return Err(segment.error(bad)),
            }
        }
        Ok(segment)
    }
}

/// Why the next frame could not be read.
enum BadFrame {
    /// The record at this offset is damaged.
    Damage(u64, Damage),
    Io(std::io::Error),
}

impl Segment {
    /// The next record, checked by the segment's walk, and its offset; None at
    /// the end of the file.
    fn next_frame(&mut self) -> Result<Option<(u64, Frame<'_>)>, BadFrame> {
        let offset = self.offset;
        let damaged = |error| BadFrame::Damage(offset, Damage::Frame(error));
        let Some(header) = self.fill(FRAME_HEADER_BYTES).map_err(BadFrame::Io)? else { return Ok(None) };
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
        if len > RECORD_BYTES_MAX {
            return Err(damaged(FrameError::Oversized));
        }
        if self.fill(FRAME_HEADER_BYTES + len).map_err(BadFrame::Io)?.is_none() {
            return Err(damaged(FrameError::Incomplete));
        }
        let start = (offset - self.buffered_at) as usize;
        let record = self.walk.step(&self.buffer[start..]).map_err(|damage| BadFrame::Damage(offset, damage))?;
        self.offset += record.len as u64;
        Ok(Some((offset, record)))
    }

    /// The error for a record that could not be read, naming this file and the
    /// position the record should have.
    fn error(&self, bad: BadFrame) -> LogError {
        match bad {
            BadFrame::Damage(offset, damage) => corrupt(&self.path, self.walk.next_position(), offset, damage.to_string()),
            BadFrame::Io(source) => LogError::Io { path: self.path.clone(), source },
        }
    }

    /// Whether the damage at `offset` of this segment, the log's last, is a
    /// torn tail. Reads the rest of the segment, as `FileLog::open` reads the
    /// whole of it.
    fn is_torn_tail(&self, offset: u64, damage: Damage) -> Result<bool, LogError> {
        let len = self.file.metadata().map_err(LogError::io(&self.path))?.len();
        let mut rest = vec![0u8; len.saturating_sub(offset) as usize];
        self.file.read_exact_at(&mut rest, offset).map_err(LogError::io(&self.path))?;
        Ok(damage.is_torn_tail(&rest, 0, self.walk.next_position()))
    }

    /// Makes `len` bytes from `self.offset` available in the buffer, reading
    /// ahead a chunk at a time; None if the file ends first.
    fn fill(&mut self, len: usize) -> std::io::Result<Option<&[u8]>> {
        let start = self.offset.saturating_sub(self.buffered_at) as usize;
        if self.offset < self.buffered_at || start + len > self.buffer.len() {
            self.buffer.resize(len.max(CHUNK_BYTES), 0);
            let mut read = 0;
            while read < self.buffer.len() {
                match self.file.read_at(&mut self.buffer[read..], self.offset + read as u64) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buffer.truncate(read);
            self.buffered_at = self.offset;
            if read < len {
                return Ok(None);
            }
        }
        let start = (self.offset - self.buffered_at) as usize;
        Ok(Some(&self.buffer[start..start + len]))
    }
}

/// The hash-chain link of the record at `position` of the log in `dir`, as
/// `frame::record_hash` computes it (`GENESIS_HASH` for position 0), or None
/// if the log ends before it (a torn record at the very end counts as absent).
/// Reads the records of its segment up to it, checking each as a [`Tail`] does:
/// what a snapshot's chain link is checked against.
pub fn record_hash_at(dir: &Path, position: Position) -> Result<Option<Hash>, LogError> {
    if position == 0 {
        return Ok(Some(GENESIS_HASH));
    }
    let segments = list_segments(dir)?;
    let Some(index) = segments.partition_point(|(first, _)| *first <= position).checked_sub(1) else { return Ok(None) };
    let tail = Tail::new(dir, segments[index].0);
    let mut segment = tail.open(segments[index].0)?;
    let is_last = index + 1 == segments.len();
    loop {
        match segment.next_frame() {
            Ok(Some((_, record))) if record.position == position => return Ok(Some(frame::record_hash(record.covered))),
            Ok(Some(_)) => {}
            // The segment ends before `position`: the next one starts after it,
            // or the log ends there.
            Ok(None) => return Ok(None),
            Err(BadFrame::Damage(_, damage)) if is_last && damage.may_be_torn() => return Ok(None),
            Err(bad) => return Err(segment.error(bad)),
        }
    }
}

/// Called for each record read by location; an error stops the read.
pub type LocatedVisit<'a, E> = dyn FnMut(Position, Location, &[u8]) -> Result<(), E> + 'a;

/// Reads the records at `locations` (each with the position it must hold), in
/// order, opening each segment once: the random-access twin of [`Tail`], for
/// indexes that remember where records are. An error names the position.
pub fn read_many<E: From<LogError>>(dir: &Path, locations: &[(Position, Location)], visit: &mut LocatedVisit<'_, E>) -> Result<(), E> {
    let mut open: Option<(Position, File, PathBuf)> = None;
    let mut record = Vec::new();
    for &(position, ref location) in locations {
        if open.as_ref().is_none_or(|(segment, _, _)| *segment != location.segment) {
            let path = segment_path(dir, location.segment);
            let file = File::open(&path).map_err(LogError::io(&path))?;
            open = Some((location.segment, file, path));
        }
        let (_, file, path) = open.as_ref().expect("opened above");
        let mut header = [0u8; FRAME_HEADER_BYTES];
        file.read_exact_at(&mut header, location.offset).map_err(LogError::io(path))?;
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
        if len > RECORD_BYTES_MAX {
            return Err(corrupt(path, position, location.offset, FrameError::Oversized.describe()).into());
        }
        record.resize(FRAME_HEADER_BYTES + len, 0);
        file.read_exact_at(&mut record, location.offset).map_err(LogError::io(path))?;
        let frame =
            Walk::unchained(position).step(&record).map_err(|damage| corrupt(path, position, location.offset, damage.to_string()))?;
        visit(position, *location, frame.payload)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{FileLog, FileLogOptions, Log};
    use super::*;

    #[test]
    fn follows_the_log_across_segments_and_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions { segment_bytes_max: 700 }).unwrap();
        let payload = |i: u64| format!("record {i:04}").into_bytes();
        for i in 1..=40 {
            log.append(&payload(i)).unwrap();
        }
        log.sync().unwrap();
        let mut tail = Tail::new(dir.path(), 7);
        let mut seen = Vec::new();
        let mut locations = Vec::new();
        assert_eq!(
            tail.read(20, 5, &mut |p, l, r| {
                seen.push((p, r.to_vec()));
                locations.push(l);
                ControlFlow::Continue(())
            })
            .unwrap(),
            5
        );
        assert_eq!(
            tail.read(20, 100, &mut |p, l, r| {
                seen.push((p, r.to_vec()));
                locations.push(l);
                ControlFlow::Continue(())
            })
            .unwrap(),
            9
        );
        assert_eq!(tail.read(20, 100, &mut |_, _, _| ControlFlow::Continue(())).unwrap(), 0, "nothing past `last`");
        for i in 41..=60 {
            log.append(&payload(i)).unwrap();
        }
        log.sync().unwrap();
        tail.read(60, usize::MAX, &mut |p, l, r| {
            seen.push((p, r.to_vec()));
            locations.push(l);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, (7..=60).map(|i| (i, payload(i))).collect::<Vec<_>>());
        assert!(locations.iter().map(|l| l.segment).collect::<std::collections::BTreeSet<_>>().len() > 3, "read across segments");
        let mut reread = Vec::new();
        let located: Vec<(Position, Location)> = seen.iter().map(|(p, _)| *p).zip(locations.iter().copied()).collect();
        read_many::<LogError>(dir.path(), &located, &mut |p, _, r| {
            reread.push((p, r.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(reread, seen, "every record read back by its location");
    }

    #[test]
    fn an_empty_log_and_an_empty_last_segment_end_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions { segment_bytes_max: 4096 }).unwrap();
        assert_eq!(Tail::new(dir.path(), 1).read_available(10, &mut |_, _, _| ControlFlow::Continue(())).unwrap(), 0);
        assert_eq!(crate::log::last_position(dir.path()).unwrap(), None);
        for i in 0..40u8 {
            log.append(&[i; 100]).unwrap();
        }
        log.sync().unwrap();
        // The next append rolls: a new, empty segment is the last one.
        let segments = list_segments(dir.path()).unwrap();
        let next = log.position_next();
        drop(log);
        let header = frame::encode_segment_header(&frame::SegmentHeader { first_position: next, prev_hash: [0; 32] });
        std::fs::write(segment_path(dir.path(), next), header).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), segments.len() + 1);
        let mut tail = Tail::new(dir.path(), 1);
        assert_eq!(tail.read_available(1000, &mut |_, _, _| ControlFlow::Continue(())).unwrap(), 40);
        assert_eq!(tail.read_available(1000, &mut |_, _, _| ControlFlow::Continue(())).unwrap(), 0);
        assert_eq!(crate::log::last_position(dir.path()).unwrap(), Some(40));
        assert!(tail.read(41, 10, &mut |_, _, _| ControlFlow::Continue(())).is_err(), "a durable position that is not there is an error");
    }

    #[test]
    fn record_hashes_are_the_chain_links_the_next_records_carry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions { segment_bytes_max: 700 }).unwrap();
        for i in 0..30u8 {
            log.append(&[i; 40]).unwrap();
        }
        log.sync().unwrap();
        assert_eq!(record_hash_at(dir.path(), 0).unwrap(), Some(GENESIS_HASH));
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() > 2);
        let mut links = vec![GENESIS_HASH];
        for (_, path) in &segments {
            let bytes = std::fs::read(path).unwrap();
            let mut offset = SEGMENT_HEADER_BYTES;
            while offset < bytes.len() {
                let record = frame::decode_record(&bytes[offset..]).unwrap();
                assert_eq!(*record.prev_hash, links[record.position as usize - 1], "position {}", record.position);
                links.push(frame::record_hash(record.covered));
                offset += record.len;
            }
        }
        for position in 1..=30 {
            assert_eq!(record_hash_at(dir.path(), position).unwrap(), Some(links[position as usize]), "position {position}");
        }
        assert_eq!(record_hash_at(dir.path(), 31).unwrap(), None, "past the end");
        assert_eq!(record_hash_at(tempfile::tempdir().unwrap().path(), 1).unwrap(), None, "an empty log");
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        for i in 0..5u8 {
            log.append(&[i; 30]).unwrap();
        }
        log.sync().unwrap();
        let path = list_segments(dir.path()).unwrap()[0].1.clone();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SEGMENT_HEADER_BYTES + 2 * (FRAME_HEADER_BYTES + 30) + 60] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let error = Tail::new(dir.path(), 1).read(5, 10, &mut |_, _, _| ControlFlow::Continue(())).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        assert!(matches!(error, LogError::Corrupt { position: 3, .. }), "{error}");
        // Read by location, as an index does: the same record, named the same way.
        let third = Location { segment: 1, offset: (SEGMENT_HEADER_BYTES + 2 * (FRAME_HEADER_BYTES + 30)) as u64 };
        let error = read_many::<LogError>(dir.path(), &[(3, third)], &mut |_, _, _| Ok(())).unwrap_err();
        assert!(matches!(error, LogError::Corrupt { position: 3, .. }), "{error}");
        // A location that holds another record than the index says.
        let second = Location { segment: 1, offset: (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 30) as u64 };
        let error = read_many::<LogError>(dir.path(), &[(4, second)], &mut |_, _, _| Ok(())).unwrap_err();
        assert!(matches!(error, LogError::Corrupt { position: 4, .. }) && error.to_string().contains("carries position 2"), "{error}");
    }

    #[test]
    fn offline_a_damaged_record_in_the_last_segment_is_an_error_and_only_a_torn_one_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        for i in 0..5u8 {
            log.append(&[i; 30]).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let path = list_segments(dir.path()).unwrap()[0].1.clone();
        let intact = std::fs::read(&path).unwrap();
        let record = |position: usize| SEGMENT_HEADER_BYTES + (position - 1) * (FRAME_HEADER_BYTES + 30);
        let read_all = || Tail::new(dir.path(), 1).read_available(10, &mut |_, _, _| ControlFlow::Continue(()));

        let mut damaged = intact.clone();
        damaged[record(3) + FRAME_HEADER_BYTES + 15] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        match read_all() {
            Err(LogError::Corrupt { position, .. }) => assert_eq!(position, 3),
            other => panic!("records 4 and 5 follow the damage: {other:?}"),
        }
        assert!(crate::log::last_position(dir.path()).is_err());

        // The last record written in part: a torn tail, where the log ends.
        std::fs::write(&path, &intact[..record(5) + 20]).unwrap();
        assert_eq!(read_all().unwrap(), 4);
        assert_eq!(crate::log::last_position(dir.path()).unwrap(), Some(4));
    }
}
