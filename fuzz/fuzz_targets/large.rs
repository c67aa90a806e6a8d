//! Large messages: judging a reduced copy gives exactly the whole message's answer (or the
//! reduced copy is refused).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::large::fuzz_large(data);
});
