//! The hand-written protobuf event decoder (`log::decode`) against prost's
//! (`codec::decode_event_with_prost`), the oracle: on any bytes both decode
//! the same event or both refuse. Never panics.
#![no_main]

use booking_ledger::log::codec;
use booking_ledger::log::decode::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = Decoder::default().decode_event(data);
    let prost = codec::decode_event_with_prost(data);
    match (&ours, &prost) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the decoders disagree on the event"),
        (Err(_), Err(_)) => {}
        _ => panic!("one decoder refuses what the other accepts: ours {ours:?}, prost {prost:?}"),
    }
    // The interning decoder (of readers of many records) decodes the same.
    let interned = Decoder::interning().decode_event(data);
    assert_eq!(interned.is_ok(), ours.is_ok());
    if let (Ok(a), Ok(b)) = (interned, ours) {
        assert_eq!(a, b);
    }
});
