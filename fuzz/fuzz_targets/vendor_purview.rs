//! Microsoft Purview `msip_labels` reader, its render round trip, inspection and decide().
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::vendor::vendor_purview(data);
});
