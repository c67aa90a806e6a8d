//! Message inspection (MIME shape, disclaimer detection, signed parts) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::rewrite::fuzz_inspect(data);
});
