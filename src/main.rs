//! The `markgate` binary: everything happens in [`markgate::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    markgate::cli::main()
}
