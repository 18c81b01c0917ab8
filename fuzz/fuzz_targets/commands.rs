//! The JSON command bodies: the first byte picks the route, the rest is its
//! body, parsed and checked by the handler's own check before it would submit
//! anything (`http::extract::check_command_body`). Never panics; a refusal is
//! a 4xx problem.
#![no_main]

use booking_ledger::http::extract::check_command_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    if let Err(problem) = check_command_body(route as usize, body) {
        let status = problem.status.as_u16();
        assert!((400..500).contains(&status), "a body answered {status}");
    }
});
