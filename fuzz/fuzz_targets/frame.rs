//! The frame decoder on arbitrary bytes: never panics, and a frame it accepts
//! has the CRC-32C of its bytes (computed here, independently) and the layout
//! of `proto/FORMAT.md`.
#![no_main]

use booking_ledger::log::frame::{self, FRAME_HEADER_BYTES, RECORD_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = frame::decode_record(data) {
        let len = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize;
        assert!(len <= RECORD_BYTES_MAX);
        assert_eq!(f.len, FRAME_HEADER_BYTES + len);
        let covered = &data[8..FRAME_HEADER_BYTES + len];
        assert_eq!(crc32c::crc32c(covered), u32::from_le_bytes(data[4..8].try_into().unwrap()), "accepted a bad CRC");
        assert_eq!(f.covered, covered);
        assert_eq!(f.position, u64::from_le_bytes(data[8..16].try_into().unwrap()));
        assert_eq!(&f.prev_hash[..], &data[16..48]);
        assert_eq!(f.payload, &data[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len]);
        assert_eq!(frame::record_hash(f.covered), *blake3::hash(covered).as_bytes());
    }
    if let Ok(header) = frame::decode_segment_header(data) {
        assert_eq!(&data[0..8], frame::SEGMENT_MAGIC);
        assert_eq!(frame::encode_segment_header(&header)[..], data[..frame::SEGMENT_HEADER_BYTES], "accepted a header it would not write");
    }
});
