//! Rewrite round trip: the output parses, non-text parts are byte-identical, the disclaimer is
//! there exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::rewrite::fuzz_rewrite_roundtrip(data);
});
