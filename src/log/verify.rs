//! The offline check of a whole log, for `ledger verify`: every segment header,
//! every record's checksum, gap-free positions and every link of the hash chain,
//! across all segments. It only reads: a torn tail is reported, never cut off.
//!
//! Segments are read in order, a block at a time, so memory is bounded by a few
//! blocks whatever the size of the log or its segments. The reading thread
//! finds where the frames in a block start (their length fields alone) while
//! the block is in the cache, and hands it to the checking threads: a record's
//! checksum and hash depend on its own bytes alone, so each block's records are
//! walked on their own (a `walk::Walk`, as opening the log walks them), links
//! included but the one into the block's first record, which is checked as the
//! blocks are merged back in order. That finds the same first fault a
//! record-by-record walk would, and `Damage::is_torn_tail` judges it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use super::file::{TornTail, list_segments};
use super::frame::{self, FRAME_HEADER_BYTES, FrameError, GENESIS_HASH, Hash, RECORD_BYTES_MAX, SEGMENT_HEADER_BYTES, SegmentHeader};
use super::walk::{Damage, Walk};
use super::{LogError, Position};

/// Threads that check records. Checking is bound by hashing, so threads help
/// up to the cores there are, after which reading (one thread) is the limit.
const THREADS_MAX: usize = 8;
/// Segments are read this much at a time: a block that stays in the cache
/// while the reader walks its frames and a checking thread hashes them. A
/// record larger than a block makes its block larger.
const BLOCK_BYTES: usize = 1 << 20;
/// Blocks handed out and not yet merged back, per checking thread: one being
/// checked and one waiting, so no thread waits for the reader.
const BLOCKS_IN_FLIGHT_PER_THREAD: usize = 2;
/// A frame's bytes, for the progress estimate of a log with no closed segment:
/// about what a booking with its provenance takes.
const FRAME_BYTES_TYPICAL: u64 = 200;

/// Where the oldest segment of a log must start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// At position 1, linked to the genesis hash: nothing is ever removed from
    /// the log (the ledger, the stored responses).
    Genesis,
    /// At any position: retention may have removed the oldest segments (the
    /// rejection journal), so the oldest one's link to its predecessor cannot be
    /// checked. Every link from there on is.
    Retained,
}

/// What `verify_dir` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments read, up to and including the one with a problem.
    pub segments: usize,
    /// Intact records, each checked: checksum, position and link.
    pub records: u64,
    /// The position of the last intact record (0 for an empty log).
    pub position_last: Position,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The log ends in an incomplete or damaged record with no intact record
    /// after it: a write of the last batch that a crash interrupted. Its fdatasync
    /// never returned, so it was never acknowledged; the server cuts it off at
    /// its next start. Not an error.
    TornTail(TornTail),
    /// The first problem, in log order. Nothing after it was checked.
    Corrupt(Problem),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// The byte offset of the bad record (or 0 for a bad segment header).
    pub offset: u64,
    /// The position the bad record (or the segment's first record) should have.
    pub position: Position,
    pub fault: Fault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The segment header is unreadable: short, bad magic, checksum or version.
    Header(&'static str),
    /// The header's first position is not the one the file is named for.
    HeaderName { named: Position, header: Position },
    /// The segment does not start right after the previous one ends: records
    /// are missing, or repeated.
    HeaderPosition { found: Position },
    /// The header's prev_hash is not the hash of the previous segment's last record.
    HeaderChain,
    /// A record that does not decode (incomplete, impossible length, checksum),
    /// with an intact record after it or in a segment that is not the last.
    Record(FrameError),
    /// A record (with a good checksum) that carries another position.
    Position { found: Position },
    /// A record (with a good checksum) whose prev_hash is not the hash of the record before it.
    Chain,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Header(reason) => write!(f, "bad segment header: {reason}"),
            Fault::HeaderName { named, header } => {
                write!(f, "bad segment header: it starts at position {header} but the file is named for position {named}")
            }
            Fault::HeaderPosition { found } => {
                write!(f, "bad segment header: it starts at position {found}, so records are missing or repeated")
            }
            Fault::HeaderChain => {
                write!(f, "hash chain broken: the segment header's prev_hash is not the hash of the previous segment's last record")
            }
            Fault::Record(e) => write!(f, "{} (not at the end of the log: corruption, not a torn tail)", e.describe()),
            Fault::Position { found } => write!(f, "the record carries position {found}"),
            Fault::Chain => write!(f, "hash chain broken: the record's prev_hash is not the hash of the record before it"),
        }
    }
}

impl From<Damage> for Fault {
    fn from(damage: Damage) -> Fault {
        match damage {
            Damage::Frame(error) => Fault::Record(error),
            Damage::Position { found } => Fault::Position { found },
            Damage::Chain => Fault::Chain,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: position {}, byte offset {}: {}", self.path.display(), self.position, self.offset, self.fault)
    }
}

/// Checks the log in `dir` from its first segment to the end of its last:
/// everything `proto/FORMAT.md` promises of segments and records, plus every
/// link of the hash chain (which opening a log checks for the last segment
/// only). `progress` learns the records checked as they are checked.
///
/// Problems in the log are the report's verdict; an error is a failure to read it.
pub fn verify_dir(dir: &Path, origin: Origin, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, LogError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(THREADS_MAX);
    verify_dir_with(dir, origin, threads, BLOCK_BYTES, progress)
}

fn verify_dir_with(
    dir: &Path,
    origin: Origin,
    threads: usize,
    block_bytes: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, LogError> {
    assert!(threads >= 1 && block_bytes >= 1);
    let segments = list_segments(dir)?;
    let (job_sender, jobs) = mpsc::channel::<Block>();
    let jobs = Mutex::new(jobs);
    std::thread::scope(|scope| {
        let (checked_sender, checked) = mpsc::channel::<Checked>();
        for _ in 0..threads {
            let (jobs, checked_sender) = (&jobs, checked_sender.clone());
            // Each thread ends once the verifier, and with it `job_sender`, is gone.
            scope.spawn(move || {
                loop {
                    // The lock is held while waiting for a block, never while checking one.
                    let Ok(block) = jobs.lock().expect("no checking thread panics").recv() else { return };
                    // A panic (a bug) goes back to the verifier, which would
                    // otherwise wait for this block forever.
                    let share = panic::catch_unwind(AssertUnwindSafe(|| check_share(&block.bytes, &block.offsets, block.first_position)));
                    if checked_sender.send(Checked { block, share }).is_err() {
                        return;
                    }
                }
            });
        }
        drop(checked_sender);
        let mut verifier = Verifier::new(origin, block_bytes, threads * BLOCKS_IN_FLIGHT_PER_THREAD, job_sender, checked);
        for (index, (named, path)) in segments.iter().enumerate() {
            if verifier.segment(*named, path, index + 1 == segments.len(), progress)?.is_break() {
                break;
            }
        }
        Ok(verifier.report())
    })
}

/// About how many records the log in `dir` holds, from its file names and sizes
/// alone (the last segment's count is guessed from its size): a progress bar's
/// length, never a check.
pub fn records_estimate(dir: &Path) -> Result<u64, LogError> {
    let segments = list_segments(dir)?;
    let Some(((first, _), (last, last_path))) = segments.first().zip(segments.last()) else {
        return Ok(0);
    };
    let mut closed_bytes = 0;
    for (_, path) in &segments[..segments.len() - 1] {
        closed_bytes += fs::metadata(path).map_err(LogError::io(path))?.len().saturating_sub(SEGMENT_HEADER_BYTES as u64);
    }
    let closed_records = last.saturating_sub(*first);
    let frame_bytes = closed_bytes.checked_div(closed_records).map_or(FRAME_BYTES_TYPICAL, |bytes| bytes.max(1));
    let last_bytes = fs::metadata(last_path).map_err(LogError::io(last_path))?.len().saturating_sub(SEGMENT_HEADER_BYTES as u64);
    Ok(closed_records + last_bytes / frame_bytes)
}

/// Whole frames of one segment, handed to a checking thread.
struct Block {
    /// The order blocks are handed out in, which is the order they are merged back in.
    sequence: u64,
    /// The byte offset of `bytes[0]` in its segment.
    base: usize,
    first_position: Position,
    bytes: Vec<u8>,
    /// Where each frame starts in `bytes`; never empty.
    offsets: Vec<usize>,
}

struct Checked {
    block: Block,
    share: std::thread::Result<Share>,
}

/// Reads segments in order, hands their blocks out and merges them back,
/// carrying the chain from one segment to the next.
struct Verifier {
    block_bytes: usize,
    in_flight_max: usize,
    jobs: mpsc::Sender<Block>,
    checked: mpsc::Receiver<Checked>,
    /// Blocks handed out and not yet merged back: at most `in_flight_max`.
    in_flight: usize,
    sequence_sent: u64,
    sequence_merged: u64,
    /// Checked blocks that came back before one handed out earlier.
    early: BTreeMap<u64, Checked>,
    /// The buffers of merged blocks, to read into again.
    spare: Vec<(Vec<u8>, Vec<usize>)>,
    report: VerifyReport,
    /// The next position and the hash it must link to; unknown before the first
    /// segment of a log whose oldest segments may be gone.
    next: Option<(Position, Hash)>,
}

impl Verifier {
    fn new(
        origin: Origin,
        block_bytes: usize,
        in_flight_max: usize,
        jobs: mpsc::Sender<Block>,
        checked: mpsc::Receiver<Checked>,
    ) -> Verifier {
        assert!(in_flight_max >= 1);
        let next = match origin {
            Origin::Genesis => Some((1, GENESIS_HASH)),
            Origin::Retained => None,
        };
        Verifier {
            block_bytes,
            in_flight_max,
            jobs,
            checked,
            in_flight: 0,
            sequence_sent: 0,
            sequence_merged: 0,
            early: BTreeMap::new(),
            spare: Vec::new(),
            report: VerifyReport { segments: 0, records: 0, position_last: 0, verdict: Verdict::Clean },
            next,
        }
    }

    fn report(mut self) -> VerifyReport {
        assert_eq!(self.in_flight, 0);
        self.report.position_last = self.next.map_or(0, |(position, _)| position - 1);
        self.report
    }

    fn conclude(&mut self, verdict: Verdict) -> ControlFlow<()> {
        self.report.verdict = verdict;
        ControlFlow::Break(())
    }

    /// Checks one segment; `Break` once the verdict is in (a torn tail or corruption).
    fn segment(&mut self, named: Position, path: &Path, is_last: bool, progress: &mut dyn FnMut(u64)) -> Result<ControlFlow<()>, LogError> {
        self.report.segments += 1;
        let expected = self.next.map_or(named, |(position, _)| position);
        let problem = |offset: usize, position: Position, fault: Fault| {
            Verdict::Corrupt(Problem { path: path.to_owned(), offset: offset as u64, position, fault })
        };
        let mut file = File::open(path).map_err(LogError::io(path))?;
        let mut head = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        file.by_ref().take(SEGMENT_HEADER_BYTES as u64).read_to_end(&mut head).map_err(LogError::io(path))?;
        let header = match frame::decode_segment_header(&head) {
            Ok(header) => header,
            // A crash while creating the last segment: it holds nothing, and the
            // server removes it at its next start.
            Err(_) if is_last && head.len() < SEGMENT_HEADER_BYTES => {
                let torn = TornTail { path: path.to_owned(), offset: 0, bytes: head.len() as u64, position: expected };
                return Ok(self.conclude(Verdict::TornTail(torn)));
            }
            Err(reason) => return Ok(self.conclude(problem(0, expected, Fault::Header(reason)))),
        };
        if let Some((position, hash)) = self.next {
            if header.first_position != position {
                return Ok(self.conclude(problem(0, position, Fault::HeaderPosition { found: header.first_position })));
            }
            if header.prev_hash != hash {
                return Ok(self.conclude(problem(0, position, Fault::HeaderChain)));
            }
        }
        if header.first_position != named {
            let fault = Fault::HeaderName { named, header: header.first_position };
            return Ok(self.conclude(problem(0, header.first_position, fault)));
        }

        let mut scan = Scan { records: 0, last_hash: header.prev_hash, fault: None };
        let stopped = self.stream(&mut file, path, &header, &mut scan, progress);
        // Every block handed out comes back, even after a read error.
        while self.in_flight > 0 {
            self.merge_next(&mut scan, progress);
        }
        if let Some((offset, error)) = stopped?
            && scan.fault.is_none()
        {
            scan.fault = Some((offset, Damage::Frame(error)));
        }
        self.report.records += scan.records;
        self.next = Some((header.first_position + scan.records, scan.last_hash));
        let Some((offset, damage)) = scan.fault else {
            return Ok(ControlFlow::Continue(()));
        };
        let position = header.first_position + scan.records;
        // Only the last segment can end in a torn write. Whether it does takes the
        // rest of the segment, read whole as opening the log does: this happens
        // once, at the end.
        if is_last && damage.may_be_torn() {
            let bytes = fs::read(path).map_err(LogError::io(path))?;
            if damage.is_torn_tail(&bytes, offset, position) {
                let torn = TornTail { path: path.to_owned(), offset: offset as u64, bytes: (bytes.len() - offset) as u64, position };
                return Ok(self.conclude(Verdict::TornTail(torn)));
            }
        }
        Ok(self.conclude(problem(offset, position, damage.into())))
    }

    /// Reads the segment's records a block at a time and hands out the whole
    /// frames of each, until the end of the file or a fault merged back.
    /// Returns where the frames stop short of the end of the file, and why: a
    /// length no record can have, or a frame the file ends inside of.
    ///
    /// The frames are found from their length fields alone. A damaged length
    /// shifts the frames after it, but the damaged record then fails its
    /// checksum (or is where the frames stop), so it is still the first fault.
    fn stream(
        &mut self,
        file: &mut File,
        path: &Path,
        header: &SegmentHeader,
        scan: &mut Scan,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(usize, FrameError)>, LogError> {
        // The start of a frame that did not fit in the last block, and its offset.
        let mut carry = Vec::new();
        let mut base = SEGMENT_HEADER_BYTES;
        let mut first_position = header.first_position;
        while scan.fault.is_none() {
            let (mut bytes, mut offsets) = self.spare.pop().unwrap_or_default();
            bytes.clear();
            offsets.clear();
            bytes.extend_from_slice(&carry);
            let mut end = 0;
            let at_end = loop {
                let read = file.by_ref().take(self.block_bytes as u64).read_to_end(&mut bytes).map_err(LogError::io(path))?;
                while let Some(len) = frame_len(&bytes, end) {
                    offsets.push(end);
                    end += len;
                }
                let impossible = bytes
                    .get(end..end + FRAME_HEADER_BYTES)
                    .is_some_and(|frame| u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize > RECORD_BYTES_MAX);
                if read == 0 || impossible {
                    break true;
                }
                if !offsets.is_empty() {
                    break false;
                }
                // No whole frame yet: a record larger than a block. Read on.
            };
            carry.clear();
            carry.extend_from_slice(&bytes[end..]);
            bytes.truncate(end);
            let records = offsets.len() as u64;
            if records > 0 {
                let block = Block { sequence: self.sequence_sent, base, first_position, bytes, offsets };
                self.hand_out(block, scan, progress);
            } else {
                self.spare.push((bytes, offsets));
            }
            base += end;
            first_position += records;
            if at_end {
                let error =
                    (!carry.is_empty()).then(|| frame::decode_record(&carry).expect_err("the frames stopped at one that does not fit"));
                return Ok(error.map(|error| (base, error)));
            }
        }
        Ok(None)
    }

    fn hand_out(&mut self, block: Block, scan: &mut Scan, progress: &mut dyn FnMut(u64)) {
        assert!(!block.offsets.is_empty() && block.sequence == self.sequence_sent);
        while self.in_flight >= self.in_flight_max {
            self.merge_next(scan, progress);
        }
        self.sequence_sent += 1;
        self.in_flight += 1;
        self.jobs.send(block).expect("the checking threads outlive the verifier");
    }

    /// Waits for a checked block, then merges every block that is next in order.
    fn merge_next(&mut self, scan: &mut Scan, progress: &mut dyn FnMut(u64)) {
        let checked = self.checked.recv().expect("the checking threads outlive the verifier");
        if let Err(payload) = checked.share {
            panic::resume_unwind(payload);
        }
        self.early.insert(checked.block.sequence, checked);
        while let Some(Checked { block, share: Ok(share) }) = self.early.remove(&self.sequence_merged) {
            self.sequence_merged += 1;
            self.in_flight -= 1;
            let records = merge(scan, &block, &share);
            if records > 0 {
                progress(records);
            }
            self.spare.push((block.bytes, block.offsets));
        }
    }
}

/// Merges a checked block into its segment's scan, after every block before
/// it; returns the records it adds. A share checked every link but the one into
/// its first record, which is checked here, after that record's own checksum
/// and position (the order a record-by-record walk checks them in).
fn merge(scan: &mut Scan, block: &Block, share: &Share) -> u64 {
    if scan.fault.is_some() {
        return 0; // Blocks after the first fault are not looked at.
    }
    let offset = |i: usize| block.base + block.offsets[i];
    match share.fault {
        Some((0, fault)) => {
            scan.fault = Some((offset(0), fault));
            0
        }
        _ if share.prev_hash_first != scan.last_hash => {
            scan.fault = Some((offset(0), Damage::Chain));
            0
        }
        Some((i, fault)) => {
            scan.records += i as u64;
            scan.last_hash = share.last_hash;
            scan.fault = Some((offset(i), fault));
            i as u64
        }
        None => {
            scan.records += share.records_checked as u64;
            scan.last_hash = share.last_hash;
            share.records_checked as u64
        }
    }
}

/// One segment's records, as merged so far.
struct Scan {
    /// Intact records before the fault (or in all).
    records: u64,
    /// The hash of the last intact record (the header's prev_hash if none).
    last_hash: Hash,
    /// The byte offset of the first bad record and what is wrong with it.
    fault: Option<(usize, Damage)>,
}

/// The length of the frame at `offset`, if its length field is possible and
/// the frame fits in `bytes`. Reads the length field only.
fn frame_len(bytes: &[u8], offset: usize) -> Option<usize> {
    let field = bytes.get(offset..offset + 4)?;
    let len = u32::from_le_bytes(field.try_into().unwrap()) as usize;
    let frame_len = FRAME_HEADER_BYTES + len;
    (len <= RECORD_BYTES_MAX && offset + frame_len <= bytes.len()).then_some(frame_len)
}

/// A run of consecutive records, checked on their own.
struct Share {
    /// Records whose checksum and position were checked (all, or up to and
    /// including the first fault); their links too, but the first's.
    records_checked: usize,
    /// The first record's prev_hash, for the caller to check.
    prev_hash_first: Hash,
    /// The hash of the last intact record.
    last_hash: Hash,
    /// The first bad record, by index in the share.
    fault: Option<(usize, Damage)>,
}

fn check_share(bytes: &[u8], offsets: &[usize], first_position: Position) -> Share {
    // The link into the first record is the merge's to check.
    let mut walk = Walk::unanchored(first_position);
    let mut share = Share { records_checked: 0, prev_hash_first: GENESIS_HASH, last_hash: GENESIS_HASH, fault: None };
    for (i, &offset) in offsets.iter().enumerate() {
        share.records_checked = i + 1;
        match walk.step(&bytes[offset..]) {
            Ok(record) => {
                debug_assert_eq!(record.len, offsets.get(i + 1).map_or(record.len, |next| next - offset));
                if i == 0 {
                    share.prev_hash_first = *record.prev_hash;
                }
            }
            Err(damage) => {
                share.fault = Some((i, damage));
                break;
            }
        }
    }
    // No link only when the first record is bad, and then the merge uses nothing else.
    share.last_hash = walk.link().unwrap_or(GENESIS_HASH);
    share
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{FileLog, FileLogOptions, Log};

    /// Payloads of varying length, so that no two records line up by accident.
    fn payload(i: u64) -> Vec<u8> {
        format!("event number {i} {}", "x".repeat((i % 7) as usize)).into_bytes()
    }

    /// Writes `count` records in batches of three, in segments of about `segment_bytes_max` bytes.
    fn write(dir: &Path, segment_bytes_max: u64, count: u64) -> Vec<PathBuf> {
        let (mut log, _) = FileLog::open(dir, FileLogOptions { segment_bytes_max }).unwrap();
        for i in 1..=count {
            log.append(&payload(i)).unwrap();
            if i.is_multiple_of(3) {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
        list_segments(dir).unwrap().into_iter().map(|(_, path)| path).collect()
    }

    fn verify(dir: &Path) -> VerifyReport {
        let mut seen = 0;
        let report = verify_dir(dir, Origin::Genesis, &mut |n| seen += n).unwrap();
        assert_eq!(seen, report.records, "progress counts every intact record");
        report
    }

    /// On one thread reading whole segments at once, and on three threads
    /// reading 64-byte blocks (smaller than a record, so most records span
    /// blocks and blocks come back out of order): both must find the same thing.
    fn verify_both_ways(dir: &Path) -> VerifyReport {
        let whole = verify_dir_with(dir, Origin::Genesis, 1, 1 << 30, &mut |_| {}).unwrap();
        let mut seen = 0;
        let blocks = verify_dir_with(dir, Origin::Genesis, 3, 64, &mut |n| seen += n).unwrap();
        assert_eq!(whole, blocks);
        assert_eq!(seen, blocks.records, "progress counts every intact record");
        whole
    }

    /// The byte offset and position of every record in a segment.
    fn records_in(path: &Path) -> Vec<(usize, Position)> {
        let bytes = fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut offset = SEGMENT_HEADER_BYTES;
        while offset < bytes.len() {
            let record = frame::decode_record(&bytes[offset..]).unwrap();
            out.push((offset, record.position));
            offset += record.len;
        }
        out
    }

    fn corrupt_at(report: &VerifyReport) -> (&Path, Position, u64, Fault) {
        match &report.verdict {
            Verdict::Corrupt(p) => (&p.path, p.position, p.offset, p.fault),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_clean_log_over_several_segments_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 200);
        assert!(segments.len() >= 5, "segments should have rolled: {}", segments.len());
        let report = verify_both_ways(dir.path());
        assert_eq!(report, VerifyReport { segments: segments.len(), records: 200, position_last: 200, verdict: Verdict::Clean });
        assert_eq!(verify(dir.path()), report);
    }

    #[test]
    fn an_empty_log_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1024, 0);
        assert_eq!(verify(dir.path()), VerifyReport { segments: 1, records: 0, position_last: 0, verdict: Verdict::Clean });
    }

    /// Any flipped byte of a middle record of a middle segment (its length,
    /// checksum, position, link or payload) is found, in that file, at that position.
    #[test]
    fn a_flipped_byte_in_a_middle_segment_is_found_with_its_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 200);
        let middle = &segments[segments.len() / 2];
        let records = records_in(middle);
        let (offset, position) = records[records.len() / 2];
        let record_len = records[records.len() / 2 + 1].0 - offset;
        let clean = fs::read(middle).unwrap();
        for byte in offset..offset + record_len {
            let mut bad = clean.clone();
            bad[byte] ^= 0x04;
            fs::write(middle, &bad).unwrap();
            let report = verify_both_ways(dir.path());
            let (path, found, found_offset, fault) = corrupt_at(&report);
            assert_eq!((path, found, found_offset), (middle.as_path(), position, offset as u64), "flip at byte {byte}: {fault}");
            assert_eq!(report.records, position - 1, "flip at byte {byte}");
        }
    }

    /// A record whose prev_hash was changed and its checksum recomputed passes
    /// every check but the chain's: at every record of a segment, so at the
    /// start, inside and at the edges of every thread's share.
    #[test]
    fn a_broken_link_with_a_good_checksum_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 200);
        let middle = &segments[segments.len() / 2];
        let clean = fs::read(middle).unwrap();
        for (offset, position) in records_in(middle) {
            let mut bytes = clean.clone();
            let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            bytes[offset + 16 + 5] ^= 0x01; // inside prev_hash
            let crc = crc32c::crc32c(&bytes[offset + 8..offset + FRAME_HEADER_BYTES + len]);
            bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
            fs::write(middle, &bytes).unwrap();
            let report = verify_both_ways(dir.path());
            assert_eq!(corrupt_at(&report), (middle.as_path(), position, offset as u64, Fault::Chain), "position {position}");
        }
    }

    /// Cutting the last segment anywhere inside its last record leaves a torn
    /// tail: reported with its offset and size, not an error.
    #[test]
    fn a_truncated_tail_is_a_torn_tail_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 50);
        let last = segments.last().unwrap();
        let full = fs::read(last).unwrap();
        let (last_start, last_position) = *records_in(last).last().unwrap();
        assert_eq!(last_position, 50);
        for cut in last_start + 1..full.len() {
            fs::write(last, &full[..cut]).unwrap();
            let report = verify_both_ways(dir.path());
            let torn = TornTail { path: last.clone(), offset: last_start as u64, bytes: (cut - last_start) as u64, position: 50 };
            assert_eq!(report.verdict, Verdict::TornTail(torn), "cut at {cut}");
            assert_eq!((report.records, report.position_last), (49, 49), "cut at {cut}");
        }
        // Garbage where the next record would go, too.
        let mut garbage = full.clone();
        garbage.extend_from_slice(&[0xAB; 100]);
        fs::write(last, &garbage).unwrap();
        let report = verify(dir.path());
        assert_eq!(report.verdict, Verdict::TornTail(TornTail { path: last.clone(), offset: full.len() as u64, bytes: 100, position: 51 }));
        // A segment whose creation was interrupted, after a full one.
        fs::write(last, &full).unwrap();
        let interrupted = dir.path().join(format!("{:020}.seg", 51));
        fs::write(&interrupted, b"BLEDG").unwrap();
        let report = verify(dir.path());
        assert_eq!(report.verdict, Verdict::TornTail(TornTail { path: interrupted, offset: 0, bytes: 5, position: 51 }));
        assert_eq!(report.records, 50);
    }

    /// Damage to any record of the last segment but its last one has intact
    /// records after it: corruption, never a torn tail.
    #[test]
    fn damage_followed_by_an_intact_record_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 50);
        let last = segments.last().unwrap();
        let records = records_in(last);
        let (offset, position) = records[records.len() - 2];
        let mut bytes = fs::read(last).unwrap();
        bytes[offset + FRAME_HEADER_BYTES + 2] ^= 0x40; // its payload
        fs::write(last, &bytes).unwrap();
        let report = verify_both_ways(dir.path());
        assert_eq!(corrupt_at(&report), (last.as_path(), position, offset as u64, Fault::Record(FrameError::Checksum)));
        // And a record cut short in a segment that is not the last one.
        let first = &segments[0];
        let (offset, position) = *records_in(first).last().unwrap();
        let bytes = fs::read(first).unwrap();
        fs::write(first, &bytes[..offset + 10]).unwrap();
        let report = verify_both_ways(dir.path());
        assert_eq!(corrupt_at(&report), (first.as_path(), position, offset as u64, Fault::Record(FrameError::Incomplete)));
    }

    /// A segment header with a valid checksum but the wrong prev_hash breaks the
    /// chain between two segments.
    #[test]
    fn a_segment_header_with_the_wrong_prev_hash_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 200);
        let third = &segments[2];
        let mut bytes = fs::read(third).unwrap();
        let mut header = frame::decode_segment_header(&bytes).unwrap();
        header.prev_hash[0] ^= 0x01;
        bytes[..SEGMENT_HEADER_BYTES].copy_from_slice(&frame::encode_segment_header(&header));
        fs::write(third, &bytes).unwrap();
        let report = verify_both_ways(dir.path());
        assert_eq!(corrupt_at(&report), (third.as_path(), header.first_position, 0, Fault::HeaderChain));
        assert_eq!(report.records, header.first_position - 1);
    }

    #[test]
    fn a_missing_or_renamed_segment_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 200);
        let second_first = records_in(&segments[1])[0].1;
        let third_first = records_in(&segments[2])[0].1;
        let removed = fs::read(&segments[1]).unwrap();
        fs::remove_file(&segments[1]).unwrap();
        let report = verify(dir.path());
        assert_eq!(corrupt_at(&report), (segments[2].as_path(), second_first, 0, Fault::HeaderPosition { found: third_first }));

        let renamed = dir.path().join(format!("{:020}.seg", second_first + 1));
        fs::write(&renamed, &removed).unwrap();
        let report = verify(dir.path());
        let fault = Fault::HeaderName { named: second_first + 1, header: second_first };
        assert_eq!(corrupt_at(&report), (renamed.as_path(), second_first, 0, fault));
    }

    /// A journal whose oldest segments retention removed verifies from its oldest
    /// remaining segment on; the ledger's origin must be position 1.
    #[test]
    fn a_retained_log_may_start_later_but_a_genesis_log_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write(dir.path(), 1024, 200);
        let second_first = records_in(&segments[1])[0].1;
        fs::remove_file(&segments[0]).unwrap();
        let report = verify_dir(dir.path(), Origin::Retained, &mut |_| {}).unwrap();
        assert_eq!((report.records, report.position_last, &report.verdict), (200 - second_first + 1, 200, &Verdict::Clean));
        let report = verify(dir.path());
        assert_eq!(corrupt_at(&report), (segments[1].as_path(), 1, 0, Fault::HeaderPosition { found: second_first }));
    }

    #[test]
    fn the_estimate_is_exact_for_closed_segments_and_close_for_the_last() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(records_estimate(dir.path()).unwrap(), 0);
        write(dir.path(), 4096, 1000);
        let estimate = records_estimate(dir.path()).unwrap();
        assert!((950..=1050).contains(&estimate), "{estimate}");
    }
}
