//! The bodies of the fuzz targets, shared by `fuzz/` (cargo-fuzz) and the corpus-replay test, so
//! every committed corpus entry and regression also runs in the normal test suite. Each body
//! takes the raw fuzzer input and panics only when an invariant is broken.

pub mod policy;
