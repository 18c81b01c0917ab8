//! Segment recovery: the bytes as the only segment of a ledger directory,
//! opened by `FileLog::open` (which cuts a torn tail) and read back. Never
//! panics, and every record it accepts is checked here, independently of the
//! log's code: its CRC-32C, its position, and its chain link (the BLAKE3 of
//! the record before it, or the segment header's `prev_hash` for the first).
//!
//! The first byte picks the mode: odd, the rest is a raw segment file; even,
//! the rest is payloads framed into a valid segment, then damaged (a byte
//! flipped, a cut) as its last three bytes say, so that the fuzzer reaches
//! past the CRCs.
#![no_main]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

use booking_ledger::log::frame::{self, GENESIS_HASH, SegmentHeader};
use booking_ledger::log::{FileLog, FileLogOptions, Log};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        base.join(format!("ledger-fuzz-segment-{}", std::process::id()))
    })
}

/// Payloads framed into a segment starting at position 1, then damaged.
fn built(data: &[u8]) -> Vec<u8> {
    let (body, damage) = data.split_at(data.len().saturating_sub(3));
    let mut out = frame::encode_segment_header(&SegmentHeader { first_position: 1, prev_hash: GENESIS_HASH }).to_vec();
    let mut hash = GENESIS_HASH;
    let mut rest = body;
    let mut position = 1;
    while let Some((&len, tail)) = rest.split_first() {
        let take = (len as usize).min(tail.len());
        hash = frame::encode_record(&mut out, position, &hash, &tail[..take]);
        position += 1;
        rest = &tail[take..];
    }
    if let [at, xor, cut] = *damage {
        let at = (at as usize * 7) % out.len();
        out[at] ^= xor;
        if cut & 1 == 1 {
            out.truncate(out.len() - (cut as usize >> 1).min(out.len()));
        }
    }
    out
}

/// The records a correct reader may accept: those before the first one that
/// fails its CRC, its position or its chain link (checked without `frame`).
fn independently_valid(bytes: &[u8]) -> Vec<&[u8]> {
    let mut valid = Vec::new();
    let Some(header) = bytes.get(..56) else { return valid };
    if &header[0..8] != frame::SEGMENT_MAGIC || u64::from_le_bytes(header[16..24].try_into().unwrap()) != 1 {
        return valid;
    }
    let mut crc = crc32c::crc32c(&header[0..12]);
    crc = crc32c::crc32c_append(crc, &header[16..56]);
    if crc != u32::from_le_bytes(header[12..16].try_into().unwrap()) {
        return valid;
    }
    let mut last_hash: [u8; 32] = header[24..56].try_into().unwrap();
    let (mut offset, mut expected) = (56usize, 1u64);
    while let Some(head) = bytes.get(offset..offset + 48) {
        let len = u32::from_le_bytes(head[0..4].try_into().unwrap()) as usize;
        let Some(covered) = bytes.get(offset + 8..offset + 48 + len) else { break };
        if crc32c::crc32c(covered) != u32::from_le_bytes(head[4..8].try_into().unwrap())
            || u64::from_le_bytes(head[8..16].try_into().unwrap()) != expected
            || head[16..48] != last_hash
        {
            break;
        }
        valid.push(&covered[40..]);
        last_hash = *blake3::hash(covered).as_bytes();
        expected += 1;
        offset += 48 + len;
    }
    valid
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 1 { rest.to_vec() } else { built(rest) };
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{:020}.seg", 1)), &bytes).unwrap();
    let valid = independently_valid(&bytes);
    if let Ok((log, _report)) = FileLog::open(dir, FileLogOptions::default()) {
        let mut read: Vec<(u64, Vec<u8>)> = Vec::new();
        log.read_from(1, &mut |position, payload| {
            read.push((position, payload.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(log.position_next(), read.len() as u64 + 1);
        assert!(read.len() <= valid.len(), "accepted {} records where only {} have a good CRC and chain link", read.len(), valid.len());
        for (i, (position, payload)) in read.iter().enumerate() {
            assert_eq!(*position, i as u64 + 1);
            assert_eq!(payload.as_slice(), valid[i], "record {position} read back other bytes");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
});
