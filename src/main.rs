//! The `markgate` binary: everything happens in [`markgate::cli`].
#![forbid(unsafe_code)]

/// mimalloc instead of the C library's malloc: a message costs a few hundred small
/// allocations (parsed headers, MIME facts, the decision, the audit record), and glibc's
/// malloc/free were ~20 % of the daemon's instructions, with `malloc_consolidate` on the tokio
/// workers; with mimalloc the same run takes ~14 % fewer instructions per message (BENCHMARKS.md).
/// Only the daemon binary sets it; the library leaves the choice to whoever links it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    markgate::cli::main()
}
