//! The compliance evidence report over arbitrary audit lines: no panic, no markup from the
//! records in the HTML, JSON that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::evidence::evidence_trail(data);
});
