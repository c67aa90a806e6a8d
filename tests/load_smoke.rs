//! The CI load smoke run (issue 7): a few hundred messages from the load generator
//! (`markgate-load`, playing Postfix) against the built daemon with the shipped default policy,
//! over a unix socket and over TCP, several messages per connection and one per connection.
//! It checks correctness under concurrency — every message labelled and given the disclaimer,
//! none lost or answered wrongly — never speed (the benchmarks in benches/ measure that).

mod support;

use support::daemon::{Daemon, bench_message, load};
use support::ports::free_port;

/// What the shipped UK GPMS policy does to PROTECT mail leaving for an accredited domain.
const EXPECT: &[&str] = &[
    "--expect-header",
    "X-Protective-Marking",
    "--expect-replbody",
    "--expect-body-contains",
    "recording and/or monitoring",
];

fn smoke(d: &Daemon, eml: &str, connections: &str, messages: &str, per_connection: &str) {
    let path = bench_message(eml);
    let mut args = vec![
        "--connect",
        &d.spec,
        "--eml",
        path.to_str().expect("utf-8 path"),
        "--connections",
        connections,
        "--messages",
        messages,
        "--per-connection",
        per_connection,
    ];
    args.extend_from_slice(EXPECT);
    let r = load(&args);
    assert!(
        r.success,
        "{eml} over {} ({connections} connections): {}\n{}\nmarkgate log:\n{}",
        d.spec,
        r.json,
        r.stderr,
        d.log()
    );
    assert_eq!(r.number("messages"), messages.parse().ok());
    eprintln!("{}", r.json.trim());
}

#[test]
fn load_smoke_over_a_unix_socket() {
    let d = Daemon::start("");
    smoke(&d, "small-2k.eml", "8", "300", "0");
    smoke(&d, "small-2k.eml", "16", "100", "1");
    smoke(&d, "large-200k.eml", "4", "40", "5");
}

#[test]
fn load_smoke_over_tcp() {
    let d = Daemon::start_tcp(free_port(), "");
    smoke(&d, "small-2k.eml", "8", "300", "0");
    smoke(&d, "large-200k.eml", "4", "40", "0");
}
