//! Marking inspection and forward evidence on a header block, then decide() under each shipped policy.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::policy::markings_and_decide(data);
});
