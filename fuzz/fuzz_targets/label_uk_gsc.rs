//! UK GSC 2014 label parser (header, subject prefix and bracketed forms) and its render round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::policy::label_uk_gsc(data);
});
