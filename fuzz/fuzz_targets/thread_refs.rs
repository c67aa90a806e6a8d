//! Thread keys (Message-ID, In-Reply-To, References, Thread-Index, subject) from any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    markgate::fuzzing::thread::thread_refs(data);
});
