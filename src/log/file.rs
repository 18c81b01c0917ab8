//! The segmented file log. Each segment is `ledger/<first position, 20 digits>.seg`:
//! a header, then framed records (see `frame.rs` and `proto/FORMAT.md`).
//!
//! Only the last segment is ever written. A batch is one `write` and one
//! `fdatasync`; a new segment is fsynced and so is the directory that names it.
//! Segment writes and syncs go through a [`SegmentIo`] when one is given
//! (tests inject faults there), else straight to the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::SegmentIo;
use super::frame::{self, FRAME_HEADER_BYTES, GENESIS_HASH, Hash, SEGMENT_HEADER_BYTES, SegmentHeader};
use super::walk::Walk;
use super::{Location, Log, LogError, Position, ReopenError, Visit};

#[derive(Debug, Clone, Copy)]
pub struct FileLogOptions {
    /// A segment is closed once the next record would take it past this size.
    pub segment_bytes_max: u64,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions { segment_bytes_max: 64 * 1024 * 1024 }
    }
}

/// What `open` found and did, for the caller to log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    /// Bytes of a torn tail that were cut off the last segment, and where.
    pub truncated: Option<TornTail>,
}

/// The end of the last segment that a crash left half-written: a batch whose
/// fdatasync never returned, so nothing in it was acknowledged. `open` cuts it
/// off; `verify` reports it without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    /// The position the torn record would have had.
    pub position: Position,
}

#[derive(Debug)]
pub struct FileLog {
    dir: PathBuf,
    options: FileLogOptions,
    /// The segment being appended to.
    file: File,
    file_path: PathBuf,
    /// Bytes written to `file` (not counting `pending`).
    file_bytes: u64,
    /// Records in the current segment, written or pending.
    file_records: u64,
    /// Framed records not yet written.
    pending: Vec<u8>,
    position_next: Position,
    /// Where the last record appended is (`Log::last_location`).
    last_location: Option<Location>,
    /// The last position known durable; readers see nothing past it.
    position_synced: Position,
    last_hash: Hash,
    poisoned: bool,
    /// The seam segment writes and syncs go through; `None` in production.
    io: Option<Arc<dyn SegmentIo>>,
}

/// Writes all of `bytes` to the segment, through `io` if there is one.
fn write_segment(io: &Option<Arc<dyn SegmentIo>>, file: &mut File, path: &Path, mut bytes: &[u8]) -> Result<(), LogError> {
    let Some(io) = io else {
        return file.write_all(bytes).map_err(LogError::io(path));
    };
    while !bytes.is_empty() {
        match io.write(file, path, bytes) {
            Ok(0) => return Err(LogError::Io { path: path.to_owned(), source: io::ErrorKind::WriteZero.into() }),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(LogError::Io { path: path.to_owned(), source: error }),
        }
    }
    Ok(())
}

/// fdatasync of the segment (fsync with `all`), through `io` if there is one.
fn sync_segment(io: &Option<Arc<dyn SegmentIo>>, file: &File, path: &Path, all: bool) -> Result<(), LogError> {
    let synced = match io {
        Some(io) => io.sync(file, path, all),
        None if all => file.sync_all(),
        None => file.sync_data(),
    };
    synced.map_err(LogError::io(path))
}

/// Asks the kernel to forget the cached pages of `path` that are clean. After
/// a failed fsync the pages it could not write back may be marked clean and
/// still be read from the cache (PostgreSQL's "fsyncgate"): without this, a
/// re-opened log would read back, and then count as durable, records the disk
/// never got. Best effort: dirty pages stay, and a file system without a
/// backing device (tmpfs) has nothing else to read.
fn forget_cached_pages(path: &Path) {
    if let Ok(file) = File::open(path) {
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
    }
}

pub(super) fn segment_path(dir: &Path, first_position: Position) -> PathBuf {
    dir.join(format!("{first_position:020}.seg"))
}

/// The segments in `dir`, by first position.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(Position, PathBuf)>, LogError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<Position>() {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Records read per call into the [`super::Tail`], between checks for a stop.
const READ_CHUNK_LEN: usize = 1 << 16;

pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io(dir))
}

fn create_segment(dir: &Path, header: &SegmentHeader, io: &Option<Arc<dyn SegmentIo>>) -> Result<(File, PathBuf), LogError> {
    let path = segment_path(dir, header.first_position);
    let mut file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(LogError::io(&path))?;
    write_segment(io, &mut file, &path, &frame::encode_segment_header(header))?;
    sync_segment(io, &file, &path, true)?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// Whether the segment at `path` starts with a header that does not decode or
/// names another first position.
fn header_is_bad(path: &Path, first_position: Position) -> Result<bool, LogError> {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    let read = File::open(path).and_then(|mut file| io::Read::read_exact(&mut file, &mut header));
    match read {
        Ok(()) => Ok(frame::decode_segment_header(&header).map_or(true, |h| h.first_position != first_position)),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
        Err(error) => Err(LogError::Io { path: path.to_owned(), source: error }),
    }
}

fn corrupt(path: &Path, position: Position, offset: usize, reason: impl Into<String>) -> LogError {
    LogError::Corrupt { path: path.to_owned(), position, offset: offset as u64, reason: reason.into() }
}

impl FileLog {
    /// Opens (or creates) the log in `dir`. A torn record at the very end of the
    /// last segment is cut off; damage anywhere else is an error naming its
    /// position. The last segment is fsynced: every record it counts is durable.
    pub fn open(dir: &Path, options: FileLogOptions) -> Result<(FileLog, OpenReport), LogError> {
        FileLog::open_inner(dir, options, None, None)
    }

    /// Like [`FileLog::open`], with every segment write and sync going through `io`
    /// (also in the logs [`Log::reopen`] makes of it): for tests that inject faults.
    pub fn open_on(dir: &Path, options: FileLogOptions, io: Arc<dyn SegmentIo>) -> Result<(FileLog, OpenReport), LogError> {
        FileLog::open_inner(dir, options, Some(io), None)
    }

    /// With `acknowledged`, the records after that position are known never to
    /// have been acknowledged (a re-open after a failure knows its last sync):
    /// any damage among them is cut off like a torn tail, and a last segment
    /// that holds only such records and whose header is damaged is removed.
    fn open_inner(
        dir: &Path,
        options: FileLogOptions,
        io: Option<Arc<dyn SegmentIo>>,
        acknowledged: Option<Position>,
    ) -> Result<(FileLog, OpenReport), LogError> {
        fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let unacknowledged = |position: Position| acknowledged.is_some_and(|a| position > a);
        let mut report = OpenReport::default();
        let mut segments = list_segments(dir)?;
        // A crash while creating a segment can leave its header unwritten: the
        // segment holds nothing, so it goes.
        while let Some((first, path)) = segments.last() {
            let len = fs::metadata(path).map_err(LogError::io(path))?.len();
            if len >= SEGMENT_HEADER_BYTES as u64 && !(unacknowledged(*first) && header_is_bad(path, *first)?) {
                break;
            }
            tracing::warn!(path = %path.display(), len, "removing a segment whose creation was interrupted");
            fs::remove_file(path).map_err(LogError::io(path))?;
            sync_dir(dir)?;
            segments.pop();
        }
        let Some((first_position, path)) = segments.last().cloned() else {
            let header = SegmentHeader { first_position: 1, prev_hash: GENESIS_HASH };
            let (file, file_path) = create_segment(dir, &header, &io)?;
            report.segments = 1;
            let log = FileLog {
                dir: dir.to_owned(),
                options,
                file,
                file_path,
                file_bytes: SEGMENT_HEADER_BYTES as u64,
                file_records: 0,
                pending: Vec::new(),
                position_next: 1,
                last_location: None,
                position_synced: 0,
                last_hash: GENESIS_HASH,
                poisoned: false,
                io,
            };
            return Ok((log, report));
        };
        report.segments = segments.len();

        let bytes = fs::read(&path).map_err(LogError::io(&path))?;
        let header = frame::decode_segment_header(&bytes).map_err(|r| corrupt(&path, first_position, 0, r))?;
        if header.first_position != first_position {
            return Err(corrupt(&path, first_position, 0, "segment header names another first position"));
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut walk = Walk::chained(first_position, header.prev_hash);
        while offset < bytes.len() {
            let damage = match walk.step(&bytes[offset..]) {
                Ok(record) => {
                    offset += record.len;
                    continue;
                }
                Err(damage) => damage,
            };
            let expected = walk.next_position();
            // Damage among acknowledged records that is not a torn tail is corruption;
            // the rest (a torn tail, or records never acknowledged) is cut.
            if !unacknowledged(expected) && !damage.is_torn_tail(&bytes, offset, expected) {
                return Err(corrupt(&path, expected, offset, damage.to_string()));
            }
            let truncation =
                TornTail { path: path.clone(), offset: offset as u64, bytes: (bytes.len() - offset) as u64, position: expected };
            let file = OpenOptions::new().write(true).open(&path).map_err(LogError::io(&path))?;
            file.set_len(offset as u64).map_err(LogError::io(&path))?;
            report.truncated = Some(truncation);
            break;
        }
        let (expected, last_hash) = (walk.next_position(), walk.link().expect("a chained walk"));
        let file = OpenOptions::new().append(true).open(&path).map_err(LogError::io(&path))?;
        // What was read is counted from now on (replayed, answered, built on),
        // so it must be durable first: a crash before an fdatasync returned
        // leaves its records in the page cache, where a power loss after this
        // start-up would take them back. (Also the truncation, if any.)
        sync_segment(&io, &file, &path, true)?;
        let log = FileLog {
            dir: dir.to_owned(),
            options,
            file,
            file_path: path,
            file_bytes: offset as u64,
            file_records: expected - first_position,
            pending: Vec::new(),
            position_next: expected,
            last_location: None,
            position_synced: expected - 1,
            last_hash,
            poisoned: false,
            io,
        };
        Ok((log, report))
    }

    /// [`Log::reopen`], as a `FileLog` (the rejection journal writes with
    /// [`FileLog::write_without_sync`], which other logs lack).
    pub fn reopen_file(&self) -> Result<FileLog, ReopenError> {
        forget_cached_pages(&self.file_path);
        let reopened = FileLog::open_inner(&self.dir, self.options, self.io.clone(), Some(self.position_synced));
        let (log, report) = reopened.map_err(|error| match error {
            // Acknowledged records are damaged: not something waiting fixes.
            LogError::Corrupt { .. } => ReopenError::Never(error),
            error => ReopenError::Later(error),
        })?;
        if let Some(t) = &report.truncated {
            tracing::warn!(
                path = %t.path.display(), offset = t.offset, bytes = t.bytes, position = t.position,
                "re-opening the log cut a torn record off its end: it was never acknowledged"
            );
        }
        sync_dir(&log.dir).map_err(ReopenError::Later)?;
        Ok(log)
    }

    /// Writes the appended records to the file without waiting for the disk,
    /// and returns the last position written. A process crash keeps them (the
    /// page cache survives it), a power loss may not: for the rejection
    /// journal, which is evidence, never for the ledger.
    pub fn write_without_sync(&mut self) -> Result<Position, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let written = self.write_pending();
        self.poison_on_error(written)?;
        Ok(self.position_next - 1)
    }

    /// The hash of the last record appended: the next record's `prev_hash`.
    pub fn last_hash(&self) -> Hash {
        self.last_hash
    }

    /// Closes the current segment (durably) and starts the next one.
    fn roll(&mut self) -> Result<(), LogError> {
        self.write_pending()?;
        sync_segment(&self.io, &self.file, &self.file_path, false)?;
        let header = SegmentHeader { first_position: self.position_next, prev_hash: self.last_hash };
        let (file, path) = create_segment(&self.dir, &header, &self.io)?;
        self.file = file;
        self.file_path = path;
        self.file_bytes = SEGMENT_HEADER_BYTES as u64;
        self.file_records = 0;
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), LogError> {
        write_segment(&self.io, &mut self.file, &self.file_path, &self.pending)?;
        self.file_bytes += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn poison_on_error<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

impl Log for FileLog {
    fn append(&mut self, payload: &[u8]) -> Result<Position, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let frame_bytes = (FRAME_HEADER_BYTES + payload.len()) as u64;
        let segment_bytes = self.file_bytes + self.pending.len() as u64 + frame_bytes;
        if self.file_records > 0 && segment_bytes > self.options.segment_bytes_max {
            let rolled = self.roll();
            self.poison_on_error(rolled)?;
        }
        let position = self.position_next;
        self.last_location = Some(Location { segment: position - self.file_records, offset: self.file_bytes + self.pending.len() as u64 });
        self.last_hash = frame::encode_record(&mut self.pending, position, &self.last_hash, payload);
        self.position_next += 1;
        self.file_records += 1;
        Ok(position)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let written = self.write_pending();
        self.poison_on_error(written)?;
        let synced = sync_segment(&self.io, &self.file, &self.file_path, false);
        self.poison_on_error(synced)?;
        self.position_synced = self.position_next - 1;
        Ok(())
    }

    /// A new descriptor on the last segment, opened the way start-up opens it
    /// (the tail re-verified, a torn tail cut, what it read back made durable
    /// through the new descriptor). Records past the last successful
    /// sync were never acknowledged, so damage among them is cut too. The
    /// failed descriptor is never synced again.
    fn reopen(&self) -> Result<Box<dyn Log>, ReopenError> {
        Ok(Box::new(self.reopen_file()?))
    }

    fn position_next(&self) -> Position {
        self.position_next
    }

    fn last_location(&self) -> Option<Location> {
        self.last_location
    }

    fn path_of(&self, position: Position) -> PathBuf {
        let segments = list_segments(&self.dir).unwrap_or_default();
        let index = segments.partition_point(|(first, _)| *first <= position).saturating_sub(1);
        segments.get(index).map_or_else(|| self.dir.clone(), |(_, path)| path.clone())
    }

    fn read_from(&self, from: Position, visit: &mut Visit<'_>) -> Result<(), LogError> {
        let mut tail = super::Tail::new(&self.dir, from);
        let mut stopped = false;
        while !stopped && tail.next_position() <= self.position_synced {
            tail.read(self.position_synced, READ_CHUNK_LEN, &mut |position, _, payload| {
                let flow = visit(position, payload);
                stopped = flow.is_break();
                flow
            })?;
        }
        Ok(())
    }
}

/// The position of the oldest record kept in `dir` (segments may have been rotated away).
pub fn first_position(dir: &Path) -> Result<Option<Position>, LogError> {
    Ok(list_segments(dir)?.first().map(|(first, _)| *first))
}

/// The position of the last intact record in `dir`, read-only (for offline
/// readers: a torn tail is not cut off, just not counted).
pub fn last_position(dir: &Path) -> Result<Option<Position>, LogError> {
    // Only the last segment holding a record is read.
    for (first, _) in list_segments(dir)?.iter().rev() {
        let mut tail = super::Tail::new(dir, *first);
        let mut last = None;
        while tail.read_available(READ_CHUNK_LEN, &mut |position, _, _| {
            last = Some(position);
            std::ops::ControlFlow::Continue(())
        })? > 0
        {}
        if last.is_some() {
            return Ok(last);
        }
    }
    Ok(None)
}

/// Deletes the oldest segments until at most `keep` remain (never the last one).
pub fn remove_oldest_segments(dir: &Path, keep: usize) -> Result<usize, LogError> {
    let segments = list_segments(dir)?;
    let excess = segments.len().saturating_sub(keep.max(1));
    for (_, path) in &segments[..excess] {
        fs::remove_file(path).map_err(LogError::io(path))?;
    }
    if excess > 0 {
        sync_dir(dir)?;
    }
    Ok(excess)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::ControlFlow;

    fn payload(i: u64) -> Vec<u8> {
        format!("event number {i}").into_bytes()
    }

    fn write(dir: &Path, options: FileLogOptions, count: u64, batch: u64) {
        let (mut log, _) = FileLog::open(dir, options).unwrap();
        let start = log.position_next();
        for i in start..start + count {
            assert_eq!(log.append(&payload(i)).unwrap(), i);
            if i % batch == 0 {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
    }

    fn read_all(log: &FileLog) -> Vec<(Position, Vec<u8>)> {
        let mut out = Vec::new();
        log.read_from(1, &mut |p, r| {
            out.push((p, r.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn records_survive_reopen_across_segment_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileLogOptions { segment_bytes_max: 1024 };
        write(dir.path(), options, 100, 7);
        write(dir.path(), options, 50, 3);
        assert!(segment_files(dir.path()).len() > 5, "segments should have rolled");
        let (log, report) = FileLog::open(dir.path(), options).unwrap();
        assert_eq!(report.truncated, None);
        let records = read_all(&log);
        assert_eq!(records.len(), 150);
        for (i, (p, r)) in records.iter().enumerate() {
            assert_eq!(*p, i as u64 + 1);
            assert_eq!(*r, payload(*p));
        }
        let mut from_middle = Vec::new();
        log.read_from(77, &mut |p, _| {
            from_middle.push(p);
            if p == 80 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .unwrap();
        assert_eq!(from_middle, vec![77, 78, 79, 80]);
    }

    #[test]
    fn unsynced_appends_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        log.append(b"durable").unwrap();
        log.sync().unwrap();
        log.append(b"pending").unwrap();
        assert_eq!(read_all(&log), vec![(1, b"durable".to_vec())]);
    }

    /// Cutting the file anywhere inside the last record loses that record and
    /// nothing else, and the log goes on from there with an intact chain.
    #[test]
    fn a_torn_tail_is_truncated_at_every_byte_offset() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), FileLogOptions::default(), 5, 1);
        let path = segment_files(dir.path()).pop().unwrap();
        let full = fs::read(&path).unwrap();
        let last_len = FRAME_HEADER_BYTES + payload(5).len();
        let last_start = full.len() - last_len;
        for cut in last_start..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (mut log, report) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
            let expected_truncation = (cut > last_start).then_some((last_start as u64, 5));
            assert_eq!(report.truncated.map(|t| (t.offset, t.position)), expected_truncation, "cut at {cut}");
            assert_eq!(read_all(&log).len(), 4, "cut at {cut}");
            assert_eq!(log.append(&payload(5)).unwrap(), 5);
            log.sync().unwrap();
            drop(log);
            assert_eq!(fs::read(&path).unwrap(), full, "rewriting record 5 after a cut at {cut}");
        }
    }

    #[test]
    fn garbage_after_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), FileLogOptions::default(), 3, 1);
        let path = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0xAB; 100]);
        fs::write(&path, &bytes).unwrap();
        let (log, report) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        assert_eq!(report.truncated.unwrap().bytes, 100);
        assert_eq!(read_all(&log).len(), 3);
    }

    /// A flipped byte anywhere in any record but the last is corruption: open
    /// refuses and names the damaged record's position, never truncating.
    #[test]
    fn a_flipped_byte_mid_log_refuses_to_open_and_names_the_position() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), FileLogOptions::default(), 6, 1);
        let path = segment_files(dir.path()).pop().unwrap();
        let clean = fs::read(&path).unwrap();
        let record_len = FRAME_HEADER_BYTES + payload(1).len();
        // Records 3 and 4 (all payloads here have the same length).
        for position in [3u64, 4] {
            let start = SEGMENT_HEADER_BYTES + (position as usize - 1) * record_len;
            for byte in start..start + record_len {
                let mut bad = clean.clone();
                bad[byte] ^= 0x01;
                fs::write(&path, &bad).unwrap();
                match FileLog::open(dir.path(), FileLogOptions::default()) {
                    Err(LogError::Corrupt { position: p, .. }) => assert_eq!(p, position, "flip at byte {byte}"),
                    other => panic!("flip at byte {byte}: expected corruption, got {other:?}"),
                }
                assert_eq!(fs::read(&path).unwrap(), bad, "open must not modify a corrupt log");
            }
        }
    }

    #[test]
    fn a_flipped_byte_in_an_older_segment_fails_the_read_naming_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileLogOptions { segment_bytes_max: 512 };
        write(dir.path(), options, 40, 1);
        let first = segment_files(dir.path()).remove(0);
        let mut bytes = fs::read(&first).unwrap();
        let record_len = FRAME_HEADER_BYTES + payload(1).len();
        bytes[SEGMENT_HEADER_BYTES + record_len + 50] ^= 0x80; // inside record 2's payload
        fs::write(&first, &bytes).unwrap();
        let (log, _) = FileLog::open(dir.path(), options).unwrap();
        let err = log.read_from(1, &mut |_, _| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { position: 2, .. }), "{err}");
        assert!(err.to_string().contains("00000000000000000001.seg"), "{err}");
    }

    /// A re-open after a failed sync knows which records were never
    /// acknowledged: damage among them (a record lost in the middle of the
    /// failed batch) is cut like a torn tail, where start-up, knowing
    /// nothing, must refuse it as corruption.
    #[test]
    fn a_reopen_cuts_damage_among_records_never_synced() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(super::super::FaultyDisk::new());
        let (mut log, _) = FileLog::open_on(dir.path(), FileLogOptions::default(), disk.clone()).unwrap();
        for i in 1..=3 {
            log.append(&payload(i)).unwrap();
        }
        log.sync().unwrap();
        log.append(&payload(4)).unwrap();
        log.append(&payload(5)).unwrap();
        disk.arm(super::super::Fault::FailSync { errno: 5, kept: None }, 0);
        assert!(log.sync().is_err());
        let path = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let record_len = FRAME_HEADER_BYTES + payload(1).len();
        bytes[SEGMENT_HEADER_BYTES + 3 * record_len + 20] ^= 0x01; // record 4; record 5 intact after it
        fs::write(&path, &bytes).unwrap();

        assert!(matches!(FileLog::open(dir.path(), FileLogOptions::default()), Err(LogError::Corrupt { position: 4, .. })));
        let reopened = log.reopen().unwrap();
        assert_eq!(reopened.position_next(), 4, "records 4 and 5 were never acknowledged: cut");
        assert_eq!(fs::read(&path).unwrap().len(), SEGMENT_HEADER_BYTES + 3 * record_len);
    }

    /// A crash before fdatasync returned leaves the batch in the page cache;
    /// start-up reads it and builds on it, so it syncs it first: a power loss
    /// after start-up cannot take back what start-up counted. (Found by the
    /// writer's simulation: a keyed repeat was replayed from an answer that a
    /// later power loss removed.)
    #[test]
    fn what_start_up_counts_is_durable_before_it_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(super::super::FaultyDisk::new());
        let (mut log, _) = FileLog::open_on(dir.path(), FileLogOptions::default(), disk.clone()).unwrap();
        log.append(&payload(1)).unwrap();
        log.sync().unwrap();
        log.append(&payload(2)).unwrap();
        disk.arm(super::super::Fault::FailSync { errno: 5, kept: None }, 0);
        assert!(log.sync().is_err());
        drop(log); // the crash
        let (log, _) = FileLog::open_on(dir.path(), FileLogOptions::default(), disk.clone()).unwrap();
        assert_eq!(log.position_next(), 3, "start-up counts record 2, which was in the file");
        disk.lose_unsynced(|_, _| 0); // a power loss
        let (log, _) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        assert_eq!(read_all(&log).len(), 2, "record 2 was made durable by the start-up that counted it");
    }

    /// Damage among acknowledged records is no reason to wait: the re-open gives up for good.
    #[test]
    fn a_reopen_refuses_damage_among_acknowledged_records_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        for i in 1..=3 {
            log.append(&payload(i)).unwrap();
        }
        log.sync().unwrap();
        let path = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[SEGMENT_HEADER_BYTES + 20] ^= 0x01; // record 1
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(log.reopen(), Err(ReopenError::Never(LogError::Corrupt { position: 1, .. }))));
    }

    #[test]
    fn an_interrupted_segment_creation_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), FileLogOptions::default(), 3, 1);
        fs::write(segment_path(dir.path(), 4), b"BLEDG").unwrap();
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        assert_eq!(log.position_next(), 4);
        log.append(b"next").unwrap();
        log.sync().unwrap();
        assert_eq!(segment_files(dir.path()).len(), 1);
    }
}
