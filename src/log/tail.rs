//! Following the log from any position: a buffered reader that remembers where
//! it stopped, for readers beside the writer (event pages, live streams, the
//! clinic index). It reads only records the caller says are durable.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::file::{list_segments, segment_path};
use super::frame::{self, FRAME_HEADER_BYTES, RECORD_BYTES_MAX, SEGMENT_HEADER_BYTES};
use super::{LogError, Position};

/// Bytes read from a segment at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Where a record is: its segment (by first position) and its byte offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub segment: Position,
    pub offset: u64,
}

/// A record read from a segment: its position, its offset, its payload.
type RecordAt<'a> = (Position, u64, &'a [u8]);

struct Segment {
    first: Position,
    /// No segment followed this one when it was opened.
    is_last: bool,
    path: PathBuf,
    file: File,
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
}

fn corrupt(path: &Path, position: Position, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt { path: path.to_owned(), position, offset, reason: reason.into() }
}

impl Tail {
    pub fn new(dir: &Path, from: Position) -> Tail {
        Tail { dir: dir.to_owned(), next: from.max(1), segment: None }
    }

    /// The position the next read starts at.
    pub fn next_position(&self) -> Position {
        self.next
    }

    /// Visits the records from the next one through `last` (which must be
    /// durable), at most `limit` of them; returns how many it visited.
    pub fn read(&mut self, last: Position, limit: usize, visit: &mut dyn FnMut(Position, Location, &[u8])) -> Result<usize, LogError> {
        self.read_until(last, false, limit, visit)
    }

    /// Visits records up to whatever the log holds (for offline readers, with no
    /// writer to say what is durable): the end of the last segment, or a torn
    /// record at its very end, is where it stops.
    pub fn read_available(&mut self, limit: usize, visit: &mut dyn FnMut(Position, Location, &[u8])) -> Result<usize, LogError> {
        self.read_until(Position::MAX, true, limit, visit)
    }

    fn read_until(
        &mut self,
        last: Position,
        to_the_end: bool,
        limit: usize,
        visit: &mut dyn FnMut(Position, Location, &[u8]),
    ) -> Result<usize, LogError> {
        let mut visited = 0;
        while visited < limit && self.next <= last {
            if self.segment.is_none() {
                if to_the_end && !self.holds(self.next)? {
                    return Ok(visited);
                }
                self.segment = Some(self.open(self.next)?);
            }
            let segment = self.segment.as_mut().expect("opened above");
            let (first, is_last) = (segment.first, segment.is_last);
            let frame = match segment.next_frame() {
                Err(LogError::Corrupt { .. }) if to_the_end && is_last => return Ok(visited),
                frame => frame?,
            };
            match frame {
                Some((position, offset, payload)) => {
                    if position != self.next {
                        let path = segment_path(&self.dir, first);
                        return Err(corrupt(&path, self.next, offset, format!("record carries position {position}")));
                    }
                    visit(position, Location { segment: first, offset }, payload);
                    self.next += 1;
                    visited += 1;
                }
                // The end of this segment: the next record starts the next one.
                None => {
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

    /// Whether some segment starts at or before `position`.
    fn holds(&self, position: Position) -> Result<bool, LogError> {
        Ok(list_segments(&self.dir)?.first().is_some_and(|(first, _)| *first <= position))
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
        frame::decode_segment_header(&header).map_err(|reason| corrupt(&path, first, 0, reason))?;
        let is_last = index == Some(segments.len() - 1);
        let mut segment = Segment { first, is_last, path, file, offset: SEGMENT_HEADER_BYTES as u64, buffer: Vec::new(), buffered_at: 0 };
        for skipped in first..position {
            if segment.next_frame()?.is_none() {
                return Err(corrupt(&segment.path, skipped, segment.offset, "the segment ends early"));
            }
        }
        Ok(segment)
    }
}

impl Segment {
    /// The next whole record, or None at the end of the file.
    fn next_frame(&mut self) -> Result<Option<RecordAt<'_>>, LogError> {
        let offset = self.offset;
        let Some(header) = self.fill(FRAME_HEADER_BYTES)? else { return Ok(None) };
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
        if len > RECORD_BYTES_MAX {
            return Err(corrupt(&self.path, 0, offset, "record length is impossibly large"));
        }
        if self.fill(FRAME_HEADER_BYTES + len)?.is_none() {
            return Ok(None);
        }
        let start = (offset - self.buffered_at) as usize;
        let frame = frame::decode_record(&self.buffer[start..]).map_err(|e| corrupt(&self.path, 0, offset, e.describe()))?;
        self.offset += frame.len as u64;
        Ok(Some((frame.position, offset, frame.payload)))
    }

    /// Makes `len` bytes from `self.offset` available in the buffer, reading
    /// ahead a chunk at a time; None if the file ends first.
    fn fill(&mut self, len: usize) -> Result<Option<&[u8]>, LogError> {
        let start = self.offset.saturating_sub(self.buffered_at) as usize;
        if self.offset < self.buffered_at || start + len > self.buffer.len() {
            self.buffer.resize(len.max(CHUNK_BYTES), 0);
            let mut read = 0;
            while read < self.buffer.len() {
                match self.file.read_at(&mut self.buffer[read..], self.offset + read as u64) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(LogError::Io { path: self.path.clone(), source: e }),
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

/// Reads the records at `locations`, in order, opening each segment once.
pub fn read_many(dir: &Path, locations: &[Location], visit: &mut dyn FnMut(Position, &[u8])) -> Result<(), LogError> {
    let mut open: Option<(Position, File, PathBuf)> = None;
    for location in locations {
        if open.as_ref().is_none_or(|(segment, _, _)| *segment != location.segment) {
            let path = segment_path(dir, location.segment);
            let file = File::open(&path).map_err(LogError::io(&path))?;
            open = Some((location.segment, file, path));
        }
        let (_, file, path) = open.as_ref().expect("opened above");
        let (position, payload) = read_record_at(file, path, *location)?;
        visit(position, &payload);
    }
    Ok(())
}

fn read_record_at(file: &File, path: &Path, location: Location) -> Result<(Position, Vec<u8>), LogError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    file.read_exact_at(&mut header, location.offset).map_err(LogError::io(path))?;
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    if len > RECORD_BYTES_MAX {
        return Err(corrupt(path, 0, location.offset, "record length is impossibly large"));
    }
    let mut record = vec![0u8; FRAME_HEADER_BYTES + len];
    file.read_exact_at(&mut record, location.offset).map_err(LogError::io(path))?;
    let frame = frame::decode_record(&record).map_err(|e| corrupt(path, 0, location.offset, e.describe()))?;
    Ok((frame.position, frame.payload.to_vec()))
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
            })
            .unwrap(),
            5
        );
        assert_eq!(
            tail.read(20, 100, &mut |p, l, r| {
                seen.push((p, r.to_vec()));
                locations.push(l);
            })
            .unwrap(),
            9
        );
        assert_eq!(tail.read(20, 100, &mut |_, _, _| {}).unwrap(), 0, "nothing past `last`");
        for i in 41..=60 {
            log.append(&payload(i)).unwrap();
        }
        log.sync().unwrap();
        tail.read(60, usize::MAX, &mut |p, l, r| {
            seen.push((p, r.to_vec()));
            locations.push(l);
        })
        .unwrap();
        assert_eq!(seen, (7..=60).map(|i| (i, payload(i))).collect::<Vec<_>>());
        assert!(locations.iter().map(|l| l.segment).collect::<std::collections::BTreeSet<_>>().len() > 3, "read across segments");
        let mut reread = Vec::new();
        read_many(dir.path(), &locations, &mut |p, r| reread.push((p, r.to_vec()))).unwrap();
        assert_eq!(reread, seen, "every record read back by its location");
    }

    #[test]
    fn an_empty_log_and_an_empty_last_segment_end_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions { segment_bytes_max: 4096 }).unwrap();
        assert_eq!(Tail::new(dir.path(), 1).read_available(10, &mut |_, _, _| {}).unwrap(), 0);
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
        assert_eq!(tail.read_available(1000, &mut |_, _, _| {}).unwrap(), 40);
        assert_eq!(tail.read_available(1000, &mut |_, _, _| {}).unwrap(), 0);
        assert_eq!(crate::log::last_position(dir.path()).unwrap(), Some(40));
        assert!(tail.read(41, 10, &mut |_, _, _| {}).is_err(), "a durable position that is not there is an error");
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
        let error = Tail::new(dir.path(), 1).read(5, 10, &mut |_, _, _| {}).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }
}
