//! Arbitrary MTA command sequences through the milter session state machine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::milter::session(data);
});
