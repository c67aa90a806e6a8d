//! Free loopback ports for parallel tests.
//!
//! The kernel picks a free port for `bind(127.0.0.1:0)`; we release it and hand it to the
//! process that will listen there. Ports handed out in this process are remembered so two tests
//! running in parallel threads never receive the same one.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port nobody listens on right now and no other test in this process was given.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port after 100 attempts");
}

/// Is something listening on 127.0.0.1:`port` (TCP)? Read from /proc/net/tcp rather than by
/// connecting: a connection to Postfix's smtpd starts an SMTP session (and a milter session).
pub fn is_listening(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // Columns: sl local_address rem_address st ...; local 127.0.0.1 is "0100007F" (little
    // endian), state 0A is LISTEN.
    let want = format!("0100007F:{port:04X}");
    let any = format!("00000000:{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1).unwrap_or("");
        let state = cols.nth(1).unwrap_or("");
        state == "0A" && (local == want || local == any)
    })
}

/// Wait until `port` is listening (true) or `secs` pass (false).
pub fn wait_listening(port: u16, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if is_listening(port) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Wait until nothing listens on `port` any more.
pub fn wait_closed(port: u16, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if !is_listening(port) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}
