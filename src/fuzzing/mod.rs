//! Bodies of the fuzz targets, shared by the `fuzz/` cargo-fuzz crate and by
//! `tests/fuzz_replay.rs`, which replays the committed corpora and regressions as ordinary
//! tests. Hidden from the docs: not part of markgate's API.
//!
//! One file per area: `milter.rs`, `policy.rs` (policy TOML, label parsers, marking inspection
//! with decide()); other areas add their own `pub mod` line and file, a
//! `fuzz/fuzz_targets/<name>.rs` that calls the body, and a row in the table in
//! `tests/fuzz_replay.rs`. A body must never panic on any input; it panics only when an
//! invariant is broken, which is what the fuzzer looks for.

pub mod evidence;
pub mod large;
pub mod milter;
pub mod policy;
pub mod rewrite;
pub mod thread;
pub mod vendor;

/// Let a panic raised inside mail-parser unwind to markgate's own `catch_unwind` instead of
/// aborting the fuzzer. cargo-fuzz builds every crate with debug assertions, and mail-parser
/// has `debug_assert!(false, …)` on recovery paths that malformed MIME reaches (release builds,
/// and our dev profile, compile them out). libfuzzer-sys installs a hook that aborts on every
/// panic before it unwinds; this wraps that hook for panics located in mail-parser's source,
/// so what the fuzzer then checks is markgate's handling of a parser failure. A panic in
/// markgate's own code, or one that escapes markgate's containment, still aborts.
pub fn contain_parser_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let next = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("mail-parser-"));
            if in_parser {
                // Said once per panic, so a crash that follows (one that escaped markgate's
                // containment) shows where the parser gave up.
                eprintln!("fuzzing: mail-parser panicked ({info}); unwinding to markgate");
            } else {
                next(info);
            }
        }));
    });
}
