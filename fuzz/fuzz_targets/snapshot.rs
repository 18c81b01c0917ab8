//! The snapshot decoder: the header (`log::snapshot::decode_header`) and the
//! protobuf body (`codec::decode_snapshot`) on arbitrary bytes. Never panics;
//! a header it accepts is the one it would write; a body it accepts encodes
//! again into a body that decodes to the same state.
#![no_main]

use booking_ledger::core::Rules;
use booking_ledger::log::{codec, snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = snapshot::decode_header(data) {
        assert_eq!(snapshot::encode_header(&header)[..], data[..snapshot::SNAPSHOT_HEADER_BYTES]);
    }
    if let Ok(decoded) = codec::decode_snapshot(data, Rules::default()) {
        let again = codec::encode_snapshot(&decoded.state, decoded.responses_position);
        let redecoded = codec::decode_snapshot(&again, Rules::default()).expect("a snapshot it wrote does not decode");
        assert_eq!(redecoded.responses_position, decoded.responses_position);
        assert!(redecoded.state == decoded.state, "the state changed through encode and decode");
    }
});
