//! The `markgate` binary: everything happens in [`markgate::cli`].
#![forbid(unsafe_code)]

/// jemalloc instead of the C library's malloc: fewer instructions per message for the many
/// small allocations of a milter dialogue (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    markgate::cli::main()
}
