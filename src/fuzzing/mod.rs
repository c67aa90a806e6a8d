//! Bodies of the fuzz targets, shared by the `fuzz/` cargo-fuzz crate and by
//! `tests/fuzz_replay.rs`, which replays the committed corpora and regressions as ordinary
//! tests. Hidden from the docs: not part of markgate's API.
//!
//! One file per area: `milter.rs`, `policy.rs` (policy TOML, label parsers, marking inspection
//! with decide()); other areas add their own `pub mod` line and file, a
//! `fuzz/fuzz_targets/<name>.rs` that calls the body, and a row in the table in
//! `tests/fuzz_replay.rs`. A body must never panic on any input; it panics only when an
//! invariant is broken, which is what the fuzzer looks for.

pub mod large;
pub mod milter;
pub mod policy;
pub mod rewrite;
