//! The on-disk framing of records and segment headers (see `proto/FORMAT.md`).
//! Pure byte layout: no files here, so the codec can be tested byte for byte.

/// `len u32 | crc32c u32 | position u64 | prev_hash [32] | payload`.
pub const FRAME_HEADER_BYTES: usize = 48;
/// `magic [8] | version u32 | crc32c u32 | first_position u64 | prev_hash [32]`.
pub const SEGMENT_HEADER_BYTES: usize = 56;
pub const SEGMENT_MAGIC: &[u8; 8] = b"BLEDGSEG";
pub const FORMAT_VERSION: u32 = 1;
/// A record larger than this is a programming error on write and corruption on read.
/// Request bodies are capped at 64 KiB, so no honest record comes near it.
pub const RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;

pub type Hash = [u8; 32];
/// The `prev_hash` of the very first record.
pub const GENESIS_HASH: Hash = [0; 32];

/// Appends one framed record to `out` and returns its hash, which the next
/// record carries as `prev_hash`.
pub fn encode_record(out: &mut Vec<u8>, position: u64, prev_hash: &Hash, payload: &[u8]) -> Hash {
    assert!(payload.len() <= RECORD_BYTES_MAX, "record of {} bytes", payload.len());
    assert!(position >= 1, "positions start at 1");
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(payload);
    let covered = &out[start + 8..];
    let crc = crc32c::crc32c(covered);
    let hash = record_hash(covered);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    hash
}

/// The hash-chain link of a record: BLAKE3 over everything its CRC covers
/// (position, previous hash and payload).
pub fn record_hash(crc_covered: &[u8]) -> Hash {
    *blake3::hash(crc_covered).as_bytes()
}

/// One record read back from bytes, checked against its CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub position: u64,
    pub prev_hash: &'a Hash,
    pub payload: &'a [u8],
    /// The bytes the CRC and the hash cover.
    pub covered: &'a [u8],
    /// The frame's total length in bytes.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the frame header or its declared payload needs.
    Incomplete,
    /// The declared length exceeds `RECORD_BYTES_MAX`.
    Oversized,
    /// The CRC does not match the bytes.
    Checksum,
}

impl FrameError {
    pub fn describe(self) -> &'static str {
        match self {
            FrameError::Incomplete => "record is incomplete",
            FrameError::Oversized => "record length is impossibly large",
            FrameError::Checksum => "record checksum mismatch",
        }
    }
}

/// Decodes the frame starting at `bytes[0]`.
pub fn decode_record(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    if len > RECORD_BYTES_MAX {
        return Err(FrameError::Oversized);
    }
    if bytes.len() < FRAME_HEADER_BYTES + len {
        return Err(FrameError::Incomplete);
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let covered = &bytes[8..FRAME_HEADER_BYTES + len];
    if crc32c::crc32c(covered) != crc {
        return Err(FrameError::Checksum);
    }
    Ok(Frame {
        position: u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
        prev_hash: bytes[16..48].try_into().unwrap(),
        payload: &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len],
        covered,
        len: FRAME_HEADER_BYTES + len,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_position: u64,
    pub prev_hash: Hash,
}

pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[0..8].copy_from_slice(SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&header.first_position.to_le_bytes());
    out[24..56].copy_from_slice(&header.prev_hash);
    let crc = segment_header_crc(&out);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

fn segment_header_crc(header: &[u8; SEGMENT_HEADER_BYTES]) -> u32 {
    let crc = crc32c::crc32c(&header[0..12]);
    crc32c::crc32c_append(crc, &header[16..56])
}

pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
    let Some(header) = bytes.get(..SEGMENT_HEADER_BYTES) else {
        return Err("segment header is incomplete");
    };
    let header: &[u8; SEGMENT_HEADER_BYTES] = header.try_into().unwrap();
    if &header[0..8] != SEGMENT_MAGIC {
        return Err("not a ledger segment (bad magic)");
    }
    if u32::from_le_bytes(header[12..16].try_into().unwrap()) != segment_header_crc(header) {
        return Err("segment header checksum mismatch");
    }
    if u32::from_le_bytes(header[8..12].try_into().unwrap()) != FORMAT_VERSION {
        return Err("unsupported segment format version");
    }
    Ok(SegmentHeader {
        first_position: u64::from_le_bytes(header[16..24].try_into().unwrap()),
        prev_hash: header[24..56].try_into().unwrap(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_chains() {
        let mut out = Vec::new();
        let h1 = encode_record(&mut out, 1, &GENESIS_HASH, b"first");
        let first_len = out.len();
        let h2 = encode_record(&mut out, 2, &h1, b"second");
        let f1 = decode_record(&out).unwrap();
        assert_eq!((f1.position, f1.payload, f1.len), (1, &b"first"[..], first_len));
        assert_eq!(record_hash(f1.covered), h1);
        let f2 = decode_record(&out[first_len..]).unwrap();
        assert_eq!((f2.position, f2.payload, f2.prev_hash), (2, &b"second"[..], &h1));
        assert_eq!(record_hash(f2.covered), h2);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, &GENESIS_HASH, b"payload");
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode_record(&bad).is_err(), "flip of byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let mut out = Vec::new();
        encode_record(&mut out, 1, &GENESIS_HASH, b"payload");
        for cut in 0..out.len() {
            assert_eq!(decode_record(&out[..cut]), Err(FrameError::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader { first_position: 42, prev_hash: [7; 32] };
        let bytes = encode_segment_header(&header);
        assert_eq!(decode_segment_header(&bytes), Ok(header));
        for byte in 0..bytes.len() {
            let mut bad = bytes;
            bad[byte] ^= 0x10;
            assert!(decode_segment_header(&bad).is_err(), "flip of byte {byte}");
        }
    }
}
