//! AU EPMS 2024.1 label parser (header and subject forms, subject finder) and its render round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::policy::label_au_epms(data);
});
