//! A consistent copy of a log that a writer may be appending to (`ledger
//! backup`): its segments copied, the copy cut after its last whole record,
//! that record made durable at the source, everything synced. It only reads
//! the source (and fsyncs it); it takes no lock and never waits for the writer.

use std::fs::{self, File};
use std::path::Path;

use super::file::{list_segments, segment_path, sync_dir};
use super::frame::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::{LogError, Position, Tail};

/// What [`copy_log`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The first and last positions copied, if any record was.
    pub positions: Option<(Position, Position)>,
    pub segments: usize,
    pub bytes: u64,
}

/// Copies the log in `src` into `dest` (created if missing, holding no segment):
/// every segment as it is when read, then the copy's last segment cut after
/// its last whole record, so a record the writer was appending is left out.
/// Segments after that record (a new one with only its header) are dropped.
/// Each source segment copied is then fsynced through a read-only descriptor,
/// so every record kept was durable at the source when this returns (the
/// writer had fsynced the acknowledged ones already), and so is the copy.
/// With `rotated` (the rejection journal), segments deleted at the source
/// while it is copied are skipped and the copy starts at its oldest record.
/// A record that fails its checks is an error: the copy is never made past damage.
pub fn copy_log(src: &Path, dest: &Path, rotated: bool) -> Result<Copied, LogError> {
    fs::create_dir_all(dest).map_err(LogError::io(dest))?;
    let mut copied = Vec::new();
    for (first, path) in list_segments(src)? {
        let mut from = match File::open(&path) {
            Ok(file) => file,
            Err(e) if rotated && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LogError::io(&path)(e)),
        };
        let target = segment_path(dest, first);
        let mut to = fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(LogError::io(&target))?;
        std::io::copy(&mut from, &mut to).map_err(LogError::io(&target))?;
        copied.push((first, from, to));
    }

    // A segment the writer was creating as it was listed may not have its whole
    // header yet: it holds no record, and a reader would call it damage.
    while let Some((first, _, to)) = copied.last() {
        let target = segment_path(dest, *first);
        if to.metadata().map_err(LogError::io(&target))?.len() >= SEGMENT_HEADER_BYTES as u64 {
            break;
        }
        copied.pop();
        fs::remove_file(&target).map_err(LogError::io(&target))?;
    }

    // The last whole record of the copy, read as every reader reads a log.
    let mut tail = if rotated { Tail::rotated(dest, 1) } else { Tail::new(dest, 1) };
    let mut first_position = None;
    let mut last = None;
    // Damage is reported in the source's file, which the copy's mirrors.
    let in_source = |error: LogError| match error {
        LogError::Corrupt { path, position, offset, reason } => {
            let path = path.file_name().map_or(path.clone(), |name| src.join(name));
            LogError::Corrupt { path, position, offset, reason }
        }
        other => other,
    };
    while tail
        .read_available(1 << 16, &mut |position, location, payload| {
            first_position.get_or_insert(position);
            last = Some((position, location.segment, location.offset + (FRAME_HEADER_BYTES + payload.len()) as u64));
            std::ops::ControlFlow::Continue(())
        })
        .map_err(in_source)?
        > 0
    {}

    let mut kept = 0;
    let mut bytes = 0;
    for (first, from, to) in copied {
        let target = segment_path(dest, first);
        match last {
            Some((_, segment, _)) if first < segment => {}
            Some((_, segment, end)) if first == segment => to.set_len(end).map_err(LogError::io(&target))?,
            _ => {
                drop(to);
                fs::remove_file(&target).map_err(LogError::io(&target))?;
                continue;
            }
        }
        // Every byte kept was written before this fsync: durable at the source now.
        from.sync_data().map_err(LogError::io(segment_path(src, first)))?;
        to.sync_all().map_err(LogError::io(&target))?;
        bytes += to.metadata().map_err(LogError::io(&target))?.len();
        kept += 1;
    }
    sync_dir(dest)?;
    Ok(Copied { positions: first_position.zip(last.map(|(position, _, _)| position)), segments: kept, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{FileLog, FileLogOptions, Log};
    use std::io::Write;

    fn positions(dir: &Path) -> Vec<Position> {
        let mut found = Vec::new();
        let mut tail = Tail::new(dir, 1);
        while tail
            .read_available(1024, &mut |position, _, _| {
                found.push(position);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
            > 0
        {}
        found
    }

    #[test]
    fn the_copy_ends_after_the_last_whole_record_and_drops_empty_segments() {
        let scratch = tempfile::tempdir().unwrap();
        let (src, dest) = (scratch.path().join("src"), scratch.path().join("dest"));
        let options = FileLogOptions { segment_bytes_max: 400 };
        let (mut log, _) = FileLog::open(&src, options).unwrap();
        for i in 0..20u32 {
            log.append(format!("record {i:>40}").as_bytes()).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let segments = list_segments(&src).unwrap();
        assert!(segments.len() > 3, "several segments: {segments:?}");
        // A record half written at the end of the last segment, as a reader
        // racing the writer sees it.
        let (_, last) = segments.last().unwrap();
        let whole = fs::metadata(last).unwrap().len();
        fs::OpenOptions::new().append(true).open(last).unwrap().write_all(&[7; 30]).unwrap();

        let copied = copy_log(&src, &dest, false).unwrap();
        assert_eq!(copied.positions, Some((1, 20)));
        assert_eq!(positions(&dest), (1..=20).collect::<Vec<_>>());
        let (first, _) = segments.last().unwrap();
        assert_eq!(fs::metadata(segment_path(&dest, *first)).unwrap().len(), whole, "cut after the last whole record");
        assert_eq!(copied.segments, segments.len());
        // The copy opens as a log with nothing to cut, and goes on at 21.
        let (mut log, report) = FileLog::open(&dest, options).unwrap();
        assert!(report.truncated.is_none());
        assert_eq!(log.append(b"next").unwrap(), 21);

        // A log whose newest segment holds only its header: that segment is left out.
        let (src2, dest2) = (scratch.path().join("src2"), scratch.path().join("dest2"));
        fs::create_dir_all(&src2).unwrap();
        for (first, path) in &segments {
            fs::copy(path, segment_path(&src2, *first)).unwrap();
        }
        fs::OpenOptions::new().write(true).open(segment_path(&src2, *first)).unwrap().set_len(whole).unwrap();
        let prev_hash = crate::log::record_hash_at(&src2, 20).unwrap().unwrap();
        let header = crate::log::frame::encode_segment_header(&crate::log::frame::SegmentHeader { first_position: 21, prev_hash });
        fs::write(segment_path(&src2, 21), header).unwrap();
        assert_eq!(positions(&src2), (1..=20).collect::<Vec<_>>());
        let copied = copy_log(&src2, &dest2, false).unwrap();
        assert_eq!(copied.positions, Some((1, 20)));
        assert!(!segment_path(&dest2, 21).exists());
        // ... and one caught before its header was whole.
        let (src3, dest3) = (scratch.path().join("src3"), scratch.path().join("dest3"));
        fs::create_dir_all(&src3).unwrap();
        for entry in fs::read_dir(&src2).unwrap() {
            let path = entry.unwrap().path();
            fs::copy(&path, src3.join(path.file_name().unwrap())).unwrap();
        }
        let partial = fs::read(segment_path(&src3, 21)).unwrap();
        fs::write(segment_path(&src3, 21), &partial[..20]).unwrap();
        let copied = copy_log(&src3, &dest3, false).unwrap();
        assert_eq!(copied.positions, Some((1, 20)));
        assert!(!segment_path(&dest3, 21).exists());
        assert!(fs::read_dir(&dest).unwrap().count() >= 1);
        assert!(copy_log(&src, &dest, false).is_err(), "a copy never writes over segments already there");

        // Damage (a flipped byte with whole records after it) stops the copy, named in the source.
        let (src4, dest4) = (scratch.path().join("src4"), scratch.path().join("dest4"));
        fs::create_dir_all(&src4).unwrap();
        for (first, path) in &segments {
            fs::copy(path, segment_path(&src4, *first)).unwrap();
        }
        let damaged = segment_path(&src4, segments[1].0);
        let mut bytes = fs::read(&damaged).unwrap();
        bytes[crate::log::frame::SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 2] ^= 0xff;
        fs::write(&damaged, bytes).unwrap();
        match copy_log(&src4, &dest4, false) {
            Err(LogError::Corrupt { path, position, .. }) => assert_eq!((path, position), (damaged, segments[1].0)),
            other => panic!("the damage was copied: {other:?}"),
        }
    }
}
