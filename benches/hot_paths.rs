//! Micro-benchmarks of the per-message hot paths (issue 7): frame codec, marking parse,
//! `decide`, and the disclaimer insertion (inspect → decide → plan → apply) on a 10 KB and a
//! 1 MB message, with the shipped default policy.
//!
//! `cargo bench --bench hot_paths` (all) or `cargo bench --bench hot_paths -- decide` (names
//! containing "decide"). Under `cargo test` each path runs once, untimed.
//!
//! A small std-only harness (`harness = false`) rather than criterion: it keeps the dev
//! dependency set unchanged and builds in seconds on a shared machine. Each benchmark is warmed
//! up, then timed in 11 samples of a batch sized to ~50 ms; the median and the fastest sample
//! are printed in ns per iteration. Compare runs on the same machine only; the stable number
//! between changes is callgrind's instruction count (benches/run.sh --only callgrind).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use markgate::filter::{self, RawSource};
use markgate::inspect;
use markgate::milter::codec::{Decoded, FrameDecoder};
use markgate::milter::command::Command;
use markgate::milter::reply::Reply;
use markgate::policy::{self, Envelope, Policy};

fn bench(filter: &[String], name: &str, mut f: impl FnMut()) {
    if !filter.is_empty() && !filter.iter().any(|w| name.contains(w.as_str())) {
        return;
    }
    // `cargo test --all-targets` runs this binary without `--bench`: run each path once as a
    // smoke check and time nothing (a debug build's timings mean nothing anyway).
    if !std::env::args().any(|a| a == "--bench") {
        f();
        println!("{name}: ran once (smoke; `cargo bench --bench hot_paths` measures)");
        return;
    }
    // Warm up and size a batch to ~50 ms.
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < Duration::from_millis(200) {
        f();
        n += 1;
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    let batch = ((50e6 / per) as u64).max(1);
    let mut samples: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    println!(
        "{name:<40} median {:>12.0} ns/iter   fastest {:>12.0} ns/iter   ({batch} per sample)",
        samples[5], samples[0]
    );
}

/// The frames Postfix sends for one message: headers, EOH, body chunks, EOM.
fn message_frames(raw: &[u8]) -> BytesMut {
    let split = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(raw.len(), |i| i + 2);
    let mut out = BytesMut::new();
    for line in raw[..split].split(|&b| b == b'\n') {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            Command::Header {
                name: bytes::Bytes::copy_from_slice(&line[..colon]),
                value: bytes::Bytes::copy_from_slice(&line[colon + 1..]),
            }
            .to_frame()
            .encode(&mut out);
        }
    }
    Command::EndOfHeaders.to_frame().encode(&mut out);
    for chunk in raw[split..].chunks(65_535) {
        Command::Body(bytes::Bytes::copy_from_slice(chunk))
            .to_frame()
            .encode(&mut out);
    }
    Command::EndOfMessage(bytes::Bytes::new())
        .to_frame()
        .encode(&mut out);
    out
}

/// A PROTECT message going out, with a text body of about `size` bytes.
fn protect_message(size: usize) -> Vec<u8> {
    let mut m = b"From: Alice Smith <alice.smith@example-council.gcsx.gov.uk>\r\n\
To: Bob Jones <bob.jones@partner.gcsx.gov.uk>\r\n\
Subject: PROTECT: quarterly figures\r\n\
Date: Mon, 02 Nov 2026 09:30:00 +0000\r\n\
Message-ID: <bench@example-council.gcsx.gov.uk>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
Content-Transfer-Encoding: 7bit\r\n\r\n"
        .to_vec();
    let line = b"The regional office staffing figures for the quarter are attached below.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

fn envelope() -> Envelope {
    Envelope {
        sender: "alice.smith@example-council.gcsx.gov.uk".into(),
        recipients: vec!["bob.jones@partner.gcsx.gov.uk".into()],
        client_ip: Some([127, 0, 0, 1].into()),
        auth_user: None,
        daemon_name: Some("ORIGINATING".into()),
        next_hops: Vec::new(),
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let policy: Policy = match Policy::builtin() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("the built-in policy does not load: {e:?}");
            std::process::exit(1);
        }
    };
    let small = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/data/small-2k.eml"
    ))
    .unwrap_or_else(|_| protect_message(2_000));

    // Frame codec: decode + parse every frame of a 2 KB message.
    let frames = message_frames(&small);
    let decoder = FrameDecoder::default();
    bench(&filter, "codec: decode+parse 2 KB message", || {
        let mut buf = frames.clone();
        let mut n = 0;
        while let Ok(Decoded::Frame(f)) = decoder.decode(&mut buf) {
            if Command::parse(&f).is_ok() {
                n += 1;
            }
        }
        black_box(n);
    });
    let answer = [
        Reply::AddHeader {
            name: bytes::Bytes::from_static(b"X-Protective-Marking"),
            value: bytes::Bytes::from_static(b"PROTECT"),
        },
        Reply::ReplaceBody(bytes::Bytes::from(small.clone())),
        Reply::Continue,
    ];
    bench(&filter, "codec: encode EOM answer (2 KB body)", || {
        let mut out = BytesMut::with_capacity(4096);
        for r in &answer {
            r.encode(&mut out);
        }
        black_box(out);
    });

    // Marking parse: header fields and the markings found in them.
    bench(&filter, "markings: parse headers of 2 KB message", || {
        let fields = inspect::markings::header_fields(black_box(&small));
        let headers: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        black_box(inspect::markings::header_facts(&policy, &headers));
    });

    // decide() on those facts.
    let fields = inspect::markings::header_fields(&small);
    let headers: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let facts = inspect::markings::header_facts(&policy, &headers);
    let env = envelope();
    bench(&filter, "decide: PROTECT outbound", || {
        black_box(policy::decide(&policy, black_box(&facts), &env));
    });

    // The thread ledger's per-message work before the lookup (issue 12): the keys (ids,
    // subject, text digest) of the 2 KB message as the milter hands it over (CRLF), the digest
    // alone, and which lookups the policy needs (the recipients' ceilings).
    let crlf: Vec<u8> = small
        .split(|&b| b == b'\n')
        .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
        .collect();
    bench(&filter, "ledger: thread keys of small-2k.eml", || {
        black_box(inspect::thread::keys(black_box(&headers), Some(&crlf)));
    });
    bench(&filter, "ledger: text digest of small-2k.eml", || {
        black_box(inspect::digest::text_digest(black_box(&crlf)));
    });
    bench(&filter, "ledger: which lookups the policy needs", || {
        black_box(policy::thread::needs(&policy, black_box(&env)));
    });

    ledger_store(&filter, &headers, &crlf);

    // The whole per-message pipeline with the disclaimer inserted, then applied: on the load
    // generator's 2 KB message, and on a 10 KB and a 1 MB text message.
    for (name, raw) in [
        ("disclaimer: evaluate+apply small-2k.eml", small.clone()),
        (
            "disclaimer: evaluate+apply 10 KB",
            protect_message(10 * 1024),
        ),
        (
            "disclaimer: evaluate+apply 1 MB",
            protect_message(1024 * 1024),
        ),
    ] {
        match filter::evaluate(&policy, envelope(), &RawSource::new(&raw)) {
            Ok(e) if e.output().is_some() => {}
            other => {
                eprintln!("{name}: the pipeline did not produce an output: {other:?}");
                std::process::exit(1);
            }
        }
        bench(&filter, name, || {
            let source = RawSource::new(black_box(&raw));
            if let Ok(e) = filter::evaluate(&policy, envelope(), &source) {
                black_box(e.output());
            }
        });
    }
}

/// The SQLite ledger's part of a message on the connection's thread, its key filter built: the
/// lookup of a new outgoing message (own id and text: found nowhere) and its entry remembered
/// (handed to the ledger thread, which commits it meanwhile on another core).
fn ledger_store(filter: &[String], headers: &[(&[u8], &[u8])], whole: &[u8]) {
    use markgate::ledger::sqlite::SqliteStore;
    use markgate::ledger::{Entry, Query, Way};
    let name = "ledger: look up and remember a new message (SQLite)";
    if !filter.is_empty() && !filter.iter().any(|w| name.contains(w.as_str())) {
        return;
    }
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("{name}: no temporary directory");
        return;
    };
    let store = match SqliteStore::open(&dir.path().join("ledger.sqlite"), Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            return;
        }
    };
    let keys = inspect::thread::keys(headers, Some(whole));
    let digest = keys.digest.map(|d| inspect::thread::hex(&d));
    let n = std::cell::Cell::new(0u64);
    let mut one = || {
        n.set(n.get() + 1);
        let id = format!(
            "{}.{}",
            n.get(),
            keys.message_id.as_deref().unwrap_or("bench@example")
        );
        let query = Query {
            own_id: Some(id.clone()),
            text: digest.clone().map(|d| (d, keys.subject.clone())),
            since: 0,
            ..Query::default()
        };
        black_box(store.lookup_inline(&query));
        store.record_detached(
            Entry {
                message_id: Some(id),
                thread_index: None,
                subject: keys.subject.clone(),
                digest: digest.clone(),
                level: "PROTECT".into(),
                marking: Some("PROTECT".into()),
                qualifiers: Vec::new(),
                way: Way::Outbound,
                domains: vec!["partner.gcsx.gov.uk".into()],
                time: 1_800_000_000,
            },
            Box::new(|_| {}),
        );
    };
    // The first commit starts the filter's build; lookups read the file until it is done, so
    // a figure taken before then would measure another path: none is taken.
    one();
    let start = Instant::now();
    while !store.key_filter_ready() {
        if start.elapsed() > Duration::from_secs(10) {
            eprintln!("{name}: the key filter was not built in 10 s; not measured");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = (thread_cpu("markgate-ledger"), n.get());
    bench(filter, name, &mut one);
    if !std::env::args().any(|a| a == "--bench") {
        return; // the smoke run under `cargo test` made one entry: no CPU figure to give
    }
    // The ledger thread's CPU per entry it committed meanwhile (10 ms ticks: over many
    // thousands of entries), once it has committed them all. This loop makes entries faster
    // than the thread commits them, so its batches are larger than a daemon's (up to the
    // pending limit, past which entries are refused and not counted): compare this figure
    // between builds, not with the daemon's per-thread CPU.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(rt) = &rt {
        let _ = rt.block_on(store.flush());
    }
    let committed = rt
        .as_ref()
        .ok()
        .and_then(|rt| rt.block_on(markgate::ledger::Store::stats(&store)).ok())
        .map_or(0, |s| s.entries);
    if let (Some(t0), Some(t1)) = (before.0, thread_cpu("markgate-ledger"))
        && committed > before.1
    {
        // Only what was committed: an entry refused when too many wait is not the thread's.
        let per = (t1 - t0).as_nanos() as f64 / (committed - before.1) as f64;
        println!(
            "{:<40} {per:>12.0} ns of its CPU per entry",
            "  the ledger thread"
        );
    }
}

/// CPU time (user + system) of this process's thread named `name`, from /proc.
fn thread_cpu(name: &str) -> Option<Duration> {
    let tick = 10_000_000u64; // USER_HZ = 100 on Linux
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        return Some(Duration::from_nanos(ticks * tick));
    }
    None
}
