//! The `markgate` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

fn main() {
    println!("markgate {}", env!("CARGO_PKG_VERSION"));
}
