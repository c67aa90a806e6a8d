//! Fault tests against the built daemon (issue 7, robustness): peers that stall or trickle,
//! 1000 concurrent connections, frames at and over the size cap, a message with 10 000
//! headers, a 50 MiB body. Meanwhile ordinary mail must keep flowing, checked with the load
//! generator (`markgate-load`, which also checks every answer).
//!
//! No test here measures speed. Waits are generous liveness bounds ("closed at all, not
//! hung"), never performance assertions. `MARKGATE_FAULT_LONG=1` runs the long variants
//! (more connections, more messages).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use support::daemon::{Daemon, bench_message, load};

fn long() -> bool {
    std::env::var_os("MARKGATE_FAULT_LONG").is_some()
}

/// An OPTNEG offer as Postfix sends it (version 6, all actions, all protocol steps).
fn optneg() -> Vec<u8> {
    let mut f = vec![0, 0, 0, 13, b'O'];
    f.extend_from_slice(&6u32.to_be_bytes());
    f.extend_from_slice(&0x1ffu32.to_be_bytes());
    f.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
    f
}

/// Read one reply frame (length, code, payload); None on EOF.
fn read_frame(s: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).ok()?;
    let code = *body.first()?;
    Some((code, body[1..].to_vec()))
}

/// Has the peer closed the connection (EOF or reset) within `limit`?
fn closed_within(s: &mut UnixStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn negotiated(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.write_all(&optneg()).expect("send OPTNEG");
    let (code, _) = read_frame(&mut s).expect("OPTNEG answer");
    assert_eq!(code, b'O');
    s
}

#[test]
fn stalled_and_trickling_peers_are_timed_out_while_others_are_served() {
    let d = Daemon::start("[timeouts]\nread = \"1s\"\n");

    // A: stops in the middle of a frame (length says 20 bytes, 3 arrive).
    let mut stalled = negotiated(&d);
    stalled
        .write_all(&[0, 0, 0, 20, b'C', b'h', b'o'])
        .expect("half a frame");

    // B: sends a valid 37-byte CONNECT frame one byte every 250 ms (~10 s for the frame):
    // each read is within the read timeout, the packet as a whole is not. The daemon must
    // hang up before the frame is complete (a write then fails).
    let trickle_sock = negotiated(&d);
    let trickler = std::thread::spawn(move || {
        let mut s = trickle_sock;
        let mut frame = vec![0, 0, 0, 33, b'C'];
        frame.extend_from_slice(&[b'h'; 30]);
        frame.extend_from_slice(b"\0U");
        let started = Instant::now();
        for b in frame {
            if s.write_all(&[b]).is_err() {
                return (true, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        (false, started.elapsed())
    });

    // Meanwhile ordinary mail on 4 other connections gets every answer.
    let r = load(&[
        "--connect",
        &d.spec,
        "--eml",
        bench_message("small-2k.eml").to_str().expect("utf-8 path"),
        "--connections",
        "4",
        "--messages",
        "200",
    ]);
    assert!(
        r.success,
        "mail during the stalls: {}\n{}",
        r.json, r.stderr
    );

    assert!(
        closed_within(&mut stalled, Duration::from_secs(20)),
        "the peer that stopped mid-frame was never disconnected"
    );
    let (closed, after) = trickler.join().expect("trickler");
    assert!(
        closed,
        "the trickling peer got its whole frame in ({after:?}): it was not timed out"
    );
    let log = d.log();
    assert!(log.contains("read timeout"), "no timeout logged:\n{log}");
}

#[test]
fn a_thousand_concurrent_connections_are_all_served() {
    let n = if long() { "2000" } else { "1000" };
    let d = Daemon::start("[limits]\nmax_connections = 2500\n");
    // --idle opens them all (OPTNEG, CONNECT), holds them, then makes one more round trip on
    // every one; it fails unless all n answered.
    let r = load(&[
        "--connect",
        &d.spec,
        "--idle",
        n,
        "--hold",
        "1",
        "--pid",
        &d.pid().to_string(),
    ]);
    assert!(r.success, "{}\n{}", r.json, r.stderr);
    assert_eq!(r.number("alive_after_hold"), n.parse().ok());
    eprintln!("idle connections: {}", r.json.trim());
    // And mail still flows afterwards.
    let r = load(&[
        "--connect",
        &d.spec,
        "--eml",
        bench_message("small-2k.eml").to_str().expect("utf-8 path"),
        "--connections",
        "64",
        "--messages",
        "256",
    ]);
    assert!(r.success, "{}\n{}", r.json, r.stderr);
}

/// A HEADER frame whose length field (code + payload) is exactly `len`.
fn header_frame(len: usize) -> Vec<u8> {
    let name = b"X-Big";
    let value_len = len - 1 - name.len() - 2;
    let mut f = Vec::with_capacity(len + 4);
    f.extend_from_slice(&(len as u32).to_be_bytes());
    f.push(b'L');
    f.extend_from_slice(name);
    f.push(0);
    f.extend(std::iter::repeat_n(b'a', value_len));
    f.push(0);
    f
}

/// CONNECT, MAIL and RCPT. markgate negotiates no reply to these (NR_*), and no DATA event.
fn start_message(s: &mut UnixStream) {
    s.write_all(b"\0\0\0\x04Ch\0U\0\0\0\x09M<a@b.c>\0\0\0\0\x09R<d@e.f>\0")
        .expect("send");
}

/// EOH and end-of-message; the final answer's code (modifications before it are skipped).
fn finish_message(s: &mut UnixStream) -> Option<u8> {
    s.write_all(b"\0\0\0\x01N\0\0\0\x01E").ok()?;
    loop {
        let (code, _) = read_frame(s)?;
        if matches!(code, b'c' | b'a' | b't' | b'r' | b'd' | b'y') {
            return Some(code);
        }
    }
}

#[test]
fn frames_at_the_size_cap_are_served_and_over_it_close_the_connection() {
    let cap = 65_536;
    let d = Daemon::start("[limits]\nmax_frame_size = \"64KiB\"\n");

    let mut at = negotiated(&d);
    start_message(&mut at);
    at.write_all(&header_frame(cap)).expect("send");

    let mut over = negotiated(&d);
    start_message(&mut over);
    // Only the length prefix and the code: the daemon must refuse before reading (or
    // allocating for) the payload.
    let frame = header_frame(cap + 1);
    over.write_all(&frame[..5]).expect("send");
    assert!(
        closed_within(&mut over, Duration::from_secs(20)),
        "a frame over the cap did not close the connection"
    );
    // A length field of 4 GiB - 1 as well.
    let mut huge = negotiated(&d);
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, b'L'])
        .expect("send");
    assert!(closed_within(&mut huge, Duration::from_secs(20)));
    // The message with the frame of exactly the cap is answered, after the other two
    // connections were cut: the daemon carried on.
    assert!(
        matches!(finish_message(&mut at), Some(b'c' | b'a')),
        "the message with a frame at the cap was not answered:\n{}",
        d.log()
    );
    assert!(d.log().contains("bad packet"), "{}", d.log());
}

fn write_eml(dir: &std::path::Path, name: &str, head: &str, body_bytes: usize) -> String {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    f.write_all(head.as_bytes()).expect("write");
    f.write_all(b"\n").expect("write");
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n";
    let mut written = 0;
    while written < body_bytes {
        f.write_all(line).expect("write");
        written += line.len();
    }
    f.flush().expect("flush");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn a_message_with_ten_thousand_headers_is_answered() {
    let d = Daemon::start("");
    let mut head = String::from(
        "From: alice.smith@example-council.gcsx.gov.uk\nTo: bob.jones@partner.gcsx.gov.uk\n\
         Subject: PROTECT: many headers\nMessage-ID: <many@example-council.gcsx.gov.uk>\n",
    );
    for i in 0..10_000 {
        head.push_str(&format!("X-Trace-{i}: hop {i} via relay{i}.example\n"));
    }
    let eml = write_eml(d.dir(), "many.eml", &head, 2_000);
    let r = load(&[
        "--connect",
        &d.spec,
        "--eml",
        &eml,
        "--messages",
        "3",
        "--expect-header",
        "X-Protective-Marking",
    ]);
    assert!(r.success, "{}\n{}", r.json, r.stderr);
}

/// Send one 50 MiB PROTECT message; every answer checked (label, disclaimer). Returns the
/// peak-RSS growth of the daemon in KiB.
fn fifty_mib_message() -> f64 {
    let d = Daemon::start("");
    let head = "From: alice.smith@example-council.gcsx.gov.uk\nTo: bob.jones@partner.gcsx.gov.uk\n\
                Subject: PROTECT: the archive\nMessage-ID: <big@example-council.gcsx.gov.uk>\n\
                Content-Type: text/plain\n";
    let eml = write_eml(d.dir(), "big.eml", head, 50 << 20);
    let r = load(&[
        "--connect",
        &d.spec,
        "--eml",
        &eml,
        "--messages",
        "1",
        "--timeout",
        "600",
        "--expect-header",
        "X-Protective-Marking",
        "--expect-replbody",
        "--expect-body-contains",
        "recording and/or monitoring",
        "--pid",
        &d.pid().to_string(),
    ]);
    std::fs::remove_file(&eml).expect("remove");
    assert!(r.success, "{}\n{}", r.json, r.stderr);
    eprintln!("50 MiB message: {}", r.json.trim());
    r.number("hwm_growth_kib")
        .expect("peak RSS read from /proc")
}

/// Issue 7's memory target (body spilled, judged from a reduced copy, replacement streamed):
/// a 50 MiB message is labelled and answered (checked by `fifty_mib_message`), and peak RSS
/// grows by less than 16 MiB. A property of the design, not a speed. In the normal run: one
/// 50 MiB message takes about 30 s in a debug build.
#[test]
fn a_50_mib_body_grows_peak_rss_by_less_than_16_mib() {
    let growth = fifty_mib_message();
    assert!(
        growth < 16.0 * 1024.0,
        "peak RSS grew by {growth} KiB for a 50 MiB message: the body is being held in memory"
    );
}
