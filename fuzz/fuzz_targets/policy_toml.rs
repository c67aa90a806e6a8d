//! Policy loader (raw → validated → compiled) on arbitrary TOML text, then decide() on the result.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::policy::policy_toml(data);
});
