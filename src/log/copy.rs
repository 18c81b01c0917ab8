//! A consistent copy of a log that a writer may be appending to (`ledger
//! backup`): its segments copied, the copy cut after its last whole record,
//! that record made durable at the source, everything synced. It only reads
//! the source (and fsyncs it); it takes no lock and never waits for the writer.

use std::fs::{self, File};
use std::path::Path;

use super::file::{list_segments, segment_path, sync_dir};
use super::frame::FRAME_HEADER_BYTES;
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
            Err(e) if rotated && e.kind() == std::io::ErrorKind::NotFound && copied.is_empty() => continue,
            Err(e) => return Err(LogError::io(&path)(e)),
        };
        let target = segment_path(dest, first);
        let mut to = fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(LogError::io(&target))?;
        std::io::copy(&mut from, &mut to).map_err(LogError::io(&target))?;
        copied.push((first, from, to));
    }

    // The last whole record of the copy, read as every reader reads a log.
    let mut tail = if rotated { Tail::rotated(dest, 1) } else { Tail::new(dest, 1) };
    let mut first_position = None;
    let mut last = None;
    while tail.read_available(1 << 16, &mut |position, location, payload| {
        first_position.get_or_insert(position);
        last = Some((position, location.segment, location.offset + (FRAME_HEADER_BYTES + payload.len()) as u64));
        std::ops::ControlFlow::Continue(())
    })? > 0
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
