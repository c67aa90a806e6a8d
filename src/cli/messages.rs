//! The loop `markgate policy test` runs over the message files it is given, with or without
//! `--ledger`: each file read in turn, an unreadable one reported and skipped, the exit code
//! made from what happened to all of them.
//!
//! Must not: evaluate or report a message (the caller's step does), or stop at a failed message
//! unless the step asks to.

use std::ops::ControlFlow;
use std::path::PathBuf;

use super::{EXIT_OK, EXIT_RUNTIME};

/// Run `step` on each message file (its name as given, its bytes). `step` answers
/// `Continue(true)` when the message went through, `Continue(false)` when it failed (the run
/// goes on and ends in [`EXIT_RUNTIME`]), or `Break(code)` to stop at once with `code`.
pub(super) fn for_each(
    messages: &[PathBuf],
    mut step: impl FnMut(&str, &[u8]) -> ControlFlow<u8, bool>,
) -> u8 {
    let mut code = EXIT_OK;
    for path in messages {
        let name = path.display().to_string();
        let raw = match std::fs::read(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("markgate: cannot read {name}: {e}");
                code = EXIT_RUNTIME;
                continue;
            }
        };
        match step(&name, &raw) {
            ControlFlow::Continue(true) => {}
            ControlFlow::Continue(false) => code = EXIT_RUNTIME,
            ControlFlow::Break(stop) => return stop,
        }
    }
    code
}
