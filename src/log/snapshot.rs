//! Snapshot files: the whole state at a ledger position, so that start-up
//! applies only the events after it (see `proto/FORMAT.md`). One file per
//! snapshot, `snapshots/<position, 20 digits>.snap`: a fixed header naming the
//! position, the hash-chain link of the ledger record it ends at and of the
//! responses journal record it ends at, and checksums; then the protobuf body
//! (`log::codec`). A file is written under a temporary name, fsynced, renamed
//! and its directory fsynced, so a crash never leaves half a snapshot under a
//! real name.
//!
//! A snapshot is used only after every check passes (its checksums, its rules,
//! and that the logs hold the records it names with the hashes it names); one
//! that fails is reported and skipped. It is derived from the logs and never
//! the only copy of anything: this module never changes the logs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::codec::{self, CodecError, DecodedSnapshot, SnapshotRules};
use super::file::sync_dir;
use super::frame::Hash;
use super::{LogError, Position, record_hash_at};
use crate::core::{Rules, State};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"BLEDGSNP";
pub const SNAPSHOT_VERSION: u32 = 1;
/// `magic [8] | version u32 | crc32c u32 | position u64 | link [32] |
/// responses_position u64 | responses_link [32] | body_len u64 | body_hash [32]`.
pub const SNAPSHOT_HEADER_BYTES: usize = 136;
const SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".snap.tmp";

/// What a snapshot's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The ledger position the state includes.
    pub position: Position,
    /// The hash of the ledger record at `position` (`GENESIS_HASH` for 0).
    pub link: Hash,
    /// The responses journal position the state includes.
    pub responses_position: Position,
    /// The hash of the responses journal record at `responses_position`.
    pub responses_link: Hash,
    pub body_len: u64,
    /// BLAKE3 of the body.
    pub body_hash: Hash,
}

pub fn encode_header(header: &SnapshotHeader) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut out = [0u8; SNAPSHOT_HEADER_BYTES];
    out[0..8].copy_from_slice(SNAPSHOT_MAGIC);
    out[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&header.position.to_le_bytes());
    out[24..56].copy_from_slice(&header.link);
    out[56..64].copy_from_slice(&header.responses_position.to_le_bytes());
    out[64..96].copy_from_slice(&header.responses_link);
    out[96..104].copy_from_slice(&header.body_len.to_le_bytes());
    out[104..136].copy_from_slice(&header.body_hash);
    let crc = header_crc(&out);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// CRC-32C of the header but its own field (bytes 0..12 and 16..136).
fn header_crc(header: &[u8; SNAPSHOT_HEADER_BYTES]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[0..12]), &header[16..])
}

pub fn decode_header(bytes: &[u8]) -> Result<SnapshotHeader, Fault> {
    let Some(header) = bytes.get(..SNAPSHOT_HEADER_BYTES) else {
        return Err(Fault::Header("the file is shorter than a snapshot header"));
    };
    let header: &[u8; SNAPSHOT_HEADER_BYTES] = header.try_into().unwrap();
    if &header[0..8] != SNAPSHOT_MAGIC {
        return Err(Fault::Header("not a snapshot (bad magic)"));
    }
    if u32::from_le_bytes(header[12..16].try_into().unwrap()) != header_crc(header) {
        return Err(Fault::Header("header checksum mismatch"));
    }
    if u32::from_le_bytes(header[8..12].try_into().unwrap()) != SNAPSHOT_VERSION {
        return Err(Fault::Header("unsupported snapshot format version"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    let hash_at = |at: usize| -> Hash { header[at..at + 32].try_into().unwrap() };
    Ok(SnapshotHeader {
        position: u64_at(16),
        link: hash_at(24),
        responses_position: u64_at(56),
        responses_link: hash_at(64),
        body_len: u64_at(96),
        body_hash: hash_at(104),
    })
}

/// Why a snapshot is not used. Never an error of the server: the snapshot is
/// skipped and the state recovered another way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("cannot read it: {0}")]
    Unreadable(String),
    #[error("bad header: {0}")]
    Header(&'static str),
    #[error("the file is named for position {named} but its header says {header}")]
    Misnamed { named: Position, header: Position },
    #[error("the file holds {found} bytes where its header says {expected}: it was cut short or added to")]
    Length { expected: u64, found: u64 },
    #[error("body checksum mismatch")]
    BodyChecksum,
    #[error("the body does not decode: {0}")]
    Undecodable(CodecError),
    #[error("the body is of position {body} (responses {body_responses}), the header of {header} (responses {header_responses})")]
    BodyMismatch { body: Position, body_responses: Position, header: Position, header_responses: Position },
    #[error("taken under other rules ({taken}) than the configured ones ({configured})")]
    Rules { taken: SnapshotRules, configured: SnapshotRules },
    #[error("position {position} is ahead of the ledger, which ends at {last}")]
    Ahead { position: Position, last: Position },
    #[error("its chain link is not the hash of ledger record {position}: it was taken from another ledger, or another history of this one")]
    Link { position: Position },
    #[error("the responses journal ends before its position {position}")]
    ResponsesAhead { position: Position },
    #[error("its responses link is not the hash of responses journal record {position}: it was taken beside another journal")]
    ResponsesLink { position: Position },
    #[error("the log it names cannot be read to check it: {0}")]
    Log(String),
}

/// The logs a snapshot is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Logs<'a> {
    pub ledger: &'a Path,
    /// The last ledger position that may be used: the durable one, or the
    /// log's last when no writer runs.
    pub ledger_last: Position,
    pub responses: &'a Path,
}

/// `dir/<position, 20 digits>.snap`.
pub fn snapshot_path(dir: &Path, position: Position) -> PathBuf {
    dir.join(format!("{position:020}{SUFFIX}"))
}

fn temporary_path(dir: &Path, position: Position) -> PathBuf {
    dir.join(format!("{position:020}{TEMPORARY_SUFFIX}"))
}

/// The snapshots in `dir`, oldest first (none if there is no `dir`).
pub fn list_snapshots(dir: &Path) -> Result<Vec<(Position, PathBuf)>, LogError> {
    let mut snapshots = Vec::new();
    for (name, path) in entries(dir)? {
        if let Some(position) = name.strip_suffix(SUFFIX).and_then(|stem| stem.parse::<Position>().ok()) {
            snapshots.push((position, path));
        }
    }
    snapshots.sort();
    Ok(snapshots)
}

/// Files of `dir` left by snapshot writes a crash interrupted.
pub fn list_temporary(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut temporary: Vec<PathBuf> =
        entries(dir)?.into_iter().filter(|(name, _)| name.ends_with(TEMPORARY_SUFFIX)).map(|(_, p)| p).collect();
    temporary.sort();
    Ok(temporary)
}

fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, LogError> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::Io { path: dir.to_owned(), source: e }),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.map_err(LogError::io(dir))?;
        if let Some(name) = entry.file_name().to_str() {
            entries.push((name.to_owned(), entry.path()));
        }
    }
    Ok(entries)
}

/// Deletes what interrupted snapshot writes left in `dir`; returns what it deleted.
/// Only for whoever holds the data directory, when no snapshot is being written.
pub fn remove_temporary(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let temporary = list_temporary(dir)?;
    for path in &temporary {
        fs::remove_file(path).map_err(LogError::io(path))?;
    }
    if !temporary.is_empty() {
        sync_dir(dir)?;
    }
    Ok(temporary)
}

/// Writes the snapshot of `body` (a `codec::encode_snapshot`) as `dir/<position>.snap`:
/// under a temporary name, fsynced, renamed, and the directory fsynced. A
/// failure removes the temporary file and leaves any snapshot already there.
pub fn write_snapshot(
    dir: &Path,
    position: Position,
    link: Hash,
    responses_position: Position,
    responses_link: Hash,
    body: &[u8],
) -> Result<(PathBuf, SnapshotHeader), LogError> {
    let header = SnapshotHeader {
        position,
        link,
        responses_position,
        responses_link,
        body_len: body.len() as u64,
        body_hash: *blake3::hash(body).as_bytes(),
    };
    fs::create_dir_all(dir).map_err(LogError::io(dir))?;
    let temporary = temporary_path(dir, position);
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temporary)?;
        file.write_all(&encode_header(&header))?;
        file.write_all(body)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&temporary);
        return Err(LogError::Io { path: temporary, source });
    }
    let path = snapshot_path(dir, position);
    if let Err(source) = fs::rename(&temporary, &path) {
        let _ = fs::remove_file(&temporary);
        return Err(LogError::Io { path, source });
    }
    sync_dir(dir)?;
    Ok((path, header))
}

/// Reads the header of the snapshot at `path`, named for position `named`.
pub fn read_header(path: &Path, named: Position) -> Result<SnapshotHeader, Fault> {
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    File::open(path)
        .and_then(|file| file.take(SNAPSHOT_HEADER_BYTES as u64).read_to_end(&mut bytes))
        .map_err(|e| Fault::Unreadable(e.to_string()))?;
    let header = decode_header(&bytes)?;
    if header.position != named {
        return Err(Fault::Misnamed { named, header: header.position });
    }
    Ok(header)
}

/// Checks that the logs hold the records `header` names, with the hashes it names.
pub fn check_links(header: &SnapshotHeader, logs: &Logs<'_>) -> Result<(), Fault> {
    if header.position > logs.ledger_last {
        return Err(Fault::Ahead { position: header.position, last: logs.ledger_last });
    }
    let log_fault = |e: LogError| Fault::Log(e.to_string());
    match record_hash_at(logs.ledger, header.position).map_err(log_fault)? {
        None => return Err(Fault::Ahead { position: header.position, last: logs.ledger_last }),
        Some(hash) if hash != header.link => return Err(Fault::Link { position: header.position }),
        Some(_) => {}
    }
    match record_hash_at(logs.responses, header.responses_position).map_err(log_fault)? {
        None => Err(Fault::ResponsesAhead { position: header.responses_position }),
        Some(hash) if hash != header.responses_link => Err(Fault::ResponsesLink { position: header.responses_position }),
        Some(_) => Ok(()),
    }
}

/// Reads the whole snapshot at `path` (its header already read and checked)
/// and decodes its body: the length, the body's checksum, the body itself, and
/// that it is the state the header names. With `rules`, also that it was taken
/// under them.
pub fn read_body(path: &Path, header: &SnapshotHeader, rules: Option<Rules>) -> Result<DecodedSnapshot, Fault> {
    let unreadable = |e: std::io::Error| Fault::Unreadable(e.to_string());
    let mut file = File::open(path).map_err(unreadable)?;
    let found = file.metadata().map_err(unreadable)?.len();
    let expected = SNAPSHOT_HEADER_BYTES as u64 + header.body_len;
    if found != expected {
        return Err(Fault::Length { expected, found });
    }
    let mut bytes = Vec::with_capacity(expected as usize);
    file.read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 != expected {
        return Err(Fault::Length { expected, found: bytes.len() as u64 });
    }
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    if *blake3::hash(body).as_bytes() != header.body_hash {
        return Err(Fault::BodyChecksum);
    }
    let decoded = codec::decode_snapshot(body, rules.unwrap_or_default()).map_err(Fault::Undecodable)?;
    if decoded.state.position != header.position || decoded.responses_position != header.responses_position {
        return Err(Fault::BodyMismatch {
            body: decoded.state.position,
            body_responses: decoded.responses_position,
            header: header.position,
            header_responses: header.responses_position,
        });
    }
    if let Some(rules) = rules
        && decoded.rules != SnapshotRules::of(&rules)
    {
        return Err(Fault::Rules { taken: decoded.rules, configured: SnapshotRules::of(&rules) });
    }
    Ok(decoded)
}

/// Every check of the snapshot at `path`: what `ledger verify` runs on each one.
pub fn check(path: &Path, named: Position, logs: &Logs<'_>, rules: Option<Rules>) -> Result<SnapshotHeader, Fault> {
    let header = read_header(path, named)?;
    check_links(&header, logs)?;
    read_body(path, &header, rules)?;
    Ok(header)
}

/// A snapshot that passed every check, loaded.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub header: SnapshotHeader,
    /// The state at `header.position`, under the configured rules.
    pub state: State,
}

/// The newest snapshot in `dir` that passes every check against `logs` and
/// `rules`. Each newer one that fails is reported (a warning naming the file
/// and why) and skipped; None if none passes, or there is none.
pub fn load_newest(dir: &Path, logs: &Logs<'_>, rules: Rules) -> Option<Loaded> {
    let snapshots = match list_snapshots(dir) {
        Ok(snapshots) => snapshots,
        Err(error) => {
            tracing::warn!(%error, "cannot list the snapshots; the state is recovered from the log");
            return None;
        }
    };
    for (named, path) in snapshots.into_iter().rev() {
        let loaded = read_header(&path, named).and_then(|header| {
            check_links(&header, logs)?;
            let decoded = read_body(&path, &header, Some(rules))?;
            Ok(Loaded { path: path.clone(), header, state: decoded.state })
        });
        match loaded {
            Ok(loaded) => return Some(loaded),
            Err(fault) => tracing::warn!(path = %path.display(), %fault, "skipping snapshot {}: {fault}", path.display()),
        }
    }
    None
}

/// Deletes the snapshots in `dir` but the newest `kept` at or before `position`
/// (the last one written), and every one after it: a snapshot ahead of the
/// durable log is of a history the log no longer has. Returns what it deleted.
pub fn prune(dir: &Path, position: Position, kept: usize) -> Result<Vec<PathBuf>, LogError> {
    let snapshots = list_snapshots(dir)?;
    let at_or_before = snapshots.partition_point(|(p, _)| *p <= position);
    let oldest_kept = at_or_before.saturating_sub(kept);
    let deleted: Vec<PathBuf> = snapshots[..oldest_kept].iter().chain(&snapshots[at_or_before..]).map(|(_, path)| path.clone()).collect();
    for path in &deleted {
        fs::remove_file(path).map_err(LogError::io(path))?;
    }
    if !deleted.is_empty() {
        sync_dir(dir)?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader { position: 42, link: [1; 32], responses_position: 7, responses_link: [2; 32], body_len: 9, body_hash: [3; 32] }
    }

    #[test]
    fn the_header_round_trips_and_every_flipped_bit_is_detected() {
        let bytes = encode_header(&header());
        assert_eq!(decode_header(&bytes), Ok(header()));
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes;
                bad[byte] ^= 1 << bit;
                assert!(decode_header(&bad).is_err(), "flip of byte {byte} bit {bit} went unnoticed");
            }
        }
        for cut in 0..bytes.len() {
            assert!(decode_header(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_at_or_before_the_last_written_and_nothing_ahead() {
        let dir = tempfile::tempdir().unwrap();
        for position in [10, 20, 30, 40, 50] {
            fs::write(snapshot_path(dir.path(), position), b"").unwrap();
        }
        fs::write(temporary_path(dir.path(), 60), b"").unwrap();
        let deleted = prune(dir.path(), 40, 2).unwrap();
        assert_eq!(deleted, [10, 20, 50].map(|p| snapshot_path(dir.path(), p)));
        assert_eq!(list_snapshots(dir.path()).unwrap().into_iter().map(|(p, _)| p).collect::<Vec<_>>(), [30, 40]);
        assert_eq!(remove_temporary(dir.path()).unwrap(), [temporary_path(dir.path(), 60)]);
        assert!(list_temporary(dir.path()).unwrap().is_empty());
        assert!(list_snapshots(&dir.path().join("none")).unwrap().is_empty(), "no directory, no snapshots");
    }
}
