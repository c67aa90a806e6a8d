//! Boldon James Classifier readers (SISL XML, display text), inspection and decide().
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::vendor::vendor_boldon_james(data);
});
