//! Titus header readers (classifications pairs, base64 JSON metadata), inspection and decide().
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::vendor::vendor_titus(data);
});
