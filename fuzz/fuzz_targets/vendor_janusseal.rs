//! Janusseal readers (private-namespace x-protective-marking, pm-uuid, pmconfirmed), inspection and decide().
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::vendor::vendor_janusseal(data);
});
