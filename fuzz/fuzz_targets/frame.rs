//! Milter frame decoder, command and reply parsers on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::milter::frame(data);
});
