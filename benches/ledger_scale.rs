//! The SQLite ledger at scale (issue 12): generate a ledger of N entries (default 10 million)
//! through the store itself, then time lookups as the filter makes them and report the file
//! size per entry. A benchmark, not a test: nothing here asserts a time.
//!
//!     cargo bench --bench ledger_scale -- [--entries N] [--lookups N] [--path FILE] [--keep]
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it is a smoke run of 2 000 entries.
//!     cargo bench --bench ledger_scale -- --redis redis://127.0.0.1:PORT/ [--entries N]
//!     cargo bench --bench ledger_scale -- --redis-server [--entries N]
//!
//! With Redis the figure is memory: the server's `used_memory` (INFO memory) before and after
//! the entries are written, and the difference per entry. `--redis-server` starts its own
//! `redis-server` (Debian package redis-server) on a free loopback port with its files in a
//! temporary directory and no persistence, loads 200 000 entries unless `--entries` says
//! otherwise, and stops it by its process id afterwards.
//!
//! The file goes to `target/ledger-scale.sqlite` unless `--path` says otherwise (never into
//! the repository) and is deleted afterwards unless `--keep`. An existing file of the right
//! size is reused (generation of 10 million entries takes minutes). Output: one JSON line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use markgate::ledger::redis::RedisStore;
use markgate::ledger::sqlite::SqliteStore;
use markgate::ledger::{Entry, Query, Store, Way};

/// A message id, digest and subject for entry `i`, spread over the key space as real ones are.
fn keys(i: u64) -> (String, String, String) {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let id = format!("{h:016x}.{i}@mail.example-council.gcsx.gov.uk");
    let digest = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        h,
        h ^ 0xabcdef,
        h.rotate_left(17),
        i
    );
    let subject = format!("budget report {}", i % 50_000);
    (id, digest, subject)
}

fn entry(i: u64, time: i64) -> Entry {
    let (id, digest, subject) = keys(i);
    Entry {
        message_id: Some(id),
        thread_index: None,
        subject,
        digest: Some(digest),
        level: if i.is_multiple_of(3) {
            "RESTRICTED"
        } else {
            "PROTECT"
        }
        .into(),
        marking: Some(
            if i.is_multiple_of(3) {
                "RESTRICTED"
            } else {
                "PROTECT - PERSONAL"
            }
            .into(),
        ),
        qualifiers: if i.is_multiple_of(3) {
            vec![]
        } else {
            vec!["PERSONAL".into()]
        },
        way: if i.is_multiple_of(2) {
            Way::Inbound
        } else {
            Way::Outbound
        },
        domains: vec!["partner.gcsx.gov.uk".into()],
        time,
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // there a small smoke run keeps the bench working without minutes of generation.
    let bench = args.iter().any(|a| a == "--bench");
    let (default_entries, default_lookups) = if bench {
        (10_000_000, 20_000)
    } else {
        (2_000, 200)
    };
    let entries: u64 =
        arg(&args, "--entries").map_or(default_entries, |v| v.parse().expect("--entries N"));
    let lookups: usize =
        arg(&args, "--lookups").map_or(default_lookups, |v| v.parse().expect("--lookups N"));
    let path = arg(&args, "--path").map_or_else(
        || {
            let name = if bench {
                "target/ledger-scale.sqlite"
            } else {
                "target/ledger-scale-smoke.sqlite"
            };
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
        },
        std::path::PathBuf::from,
    );
    let keep = args.iter().any(|a| a == "--keep");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // `--redis-server`: a private redis-server for the memory figure (kept until the end).
    let private = args
        .iter()
        .any(|a| a == "--redis-server")
        .then(PrivateRedis::start);
    let entries = match (&private, arg(&args, "--entries")) {
        (Some(_), None) => 200_000,
        _ => entries,
    };
    let redis_url = arg(&args, "--redis").or_else(|| private.as_ref().map(|r| r.url.clone()));
    rt.block_on(async {
        match &redis_url {
            Some(url) => {
                let store = RedisStore::new(url, "bench:", Duration::from_secs(30)).expect("redis");
                measure(Arc::new(store), "redis", entries, lookups, None, None).await;
            }
            None => {
                let store = Arc::new(SqliteStore::open(&path, Duration::from_secs(30)).expect("open"));
                let writer = Arc::clone(&store);
                let bulk = move |batch: Vec<Entry>| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
                    let w = Arc::clone(&writer);
                    Box::pin(async move { w.record_many(batch).await.expect("bulk write") })
                };
                let reader = Arc::clone(&store);
                let inline = move |q: &Query| reader.lookup_inline(q);
                measure(store, "sqlite", entries, lookups, Some(&path), Some(&bulk)).await;
                // The daemon's own path: the same lookups on the caller's thread.
                inline_lookups(&inline, entries, lookups);
            }
        }
    });
    if redis_url.is_none() {
        cleanup(&path, keep);
    }
    drop(private);
}

/// A `redis-server` this benchmark started: loopback only, a free port, no persistence, its
/// working directory a temporary one. Stopped (by its own process id) when dropped.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            _dir: dir,
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bulk writer for the generation phase (SQLite's `record_many`), or none (one by one).
type Bulk<'a> =
    &'a dyn Fn(Vec<Entry>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

async fn measure<S: Store>(
    store: Arc<S>,
    backend: &str,
    entries: u64,
    lookups: usize,
    path: Option<&std::path::Path>,
    bulk: Option<Bulk<'_>>,
) {
    {
        let before = store.stats().await.expect("stats");
        let have = before.entries;
        let now = 2_000_000_000i64;
        let started = Instant::now();
        if have < entries {
            match bulk {
                // SQLite: 10 000 entries per transaction through the store's own bulk path.
                Some(bulk) => {
                    let mut next = have;
                    while next < entries {
                        let end = (next + 10_000).min(entries);
                        let batch: Vec<Entry> = (next..end)
                            .map(|i| entry(i, now - (i % (30 * 86_400)) as i64))
                            .collect();
                        bulk(batch).await;
                        next = end;
                        if next % 1_000_000 == 0 {
                            eprintln!("{next} entries, {:.0} s", started.elapsed().as_secs_f64());
                        }
                    }
                }
                // Redis: many records in flight, one pipeline each.
                None => {
                    let mut next = have;
                    let mut inflight = tokio::task::JoinSet::new();
                    while next < entries {
                        while inflight.len() < 256 && next < entries {
                            let s = Arc::clone(&store);
                            let e = entry(next, now - (next % (30 * 86_400)) as i64);
                            inflight.spawn(async move {
                                s.record(e, Duration::from_secs(40 * 86_400)).await
                            });
                            next += 1;
                        }
                        if let Some(r) = inflight.join_next().await {
                            r.expect("task").expect("record");
                        }
                    }
                    while let Some(r) = inflight.join_next().await {
                        r.expect("task").expect("record");
                    }
                }
            }
        }
        let generate_s = started.elapsed().as_secs_f64();
        let stats = store.stats().await.expect("stats");

        // Lookups as the filter makes them: the message's own id, the id it answers and its
        // text digest with subject; half of them find an entry.
        let mut lat = Vec::with_capacity(lookups);
        let mut hits = 0usize;
        for n in 0..lookups as u64 {
            let q = query(n, entries);
            let t = Instant::now();
            let found = store.lookup(q).await.expect("lookup");
            lat.push(t.elapsed());
            hits += usize::from(!found.is_empty());
        }
        lat.sort();
        let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)].as_secs_f64() * 1e6;
        if path.is_none() {
            // Redis: what the entries written here added to the server's memory.
            let added = stats.entries.saturating_sub(before.entries);
            println!(
                "{{\"label\":\"ledger|{backend}|memory\",\"entries_added\":{added},\"used_memory_before\":{},\"used_memory_after\":{},\"bytes_per_entry\":{:.0}}}",
                before.bytes,
                stats.bytes,
                stats.bytes.saturating_sub(before.bytes) as f64 / added.max(1) as f64
            );
        }
        let (file, wal) = match path {
            Some(path) => {
                let mut w = path.to_path_buf().into_os_string();
                w.push("-wal");
                (
                    std::fs::metadata(path).map_or(0, |m| m.len()),
                    std::fs::metadata(w).map_or(0, |m| m.len()),
                )
            }
            // Redis: the server's used_memory.
            None => (stats.bytes, 0),
        };
        println!(
            "{{\"label\":\"ledger|{backend}|scale\",\"entries\":{},\"generate_s\":{:.1},\"file_bytes\":{},\"wal_bytes\":{},\"bytes_per_entry\":{:.0},\"lookups\":{},\"hits\":{},\"p50_us\":{:.0},\"p99_us\":{:.0},\"max_us\":{:.0}}}",
            stats.entries,
            generate_s,
            file,
            wal,
            file as f64 / stats.entries.max(1) as f64,
            lat.len(),
            hits,
            pct(50),
            pct(99),
            lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e6)
        );
    }
}

/// Lookup `n` of the run: its own id, a parent that exists for even `n`, its text.
fn query(n: u64, entries: u64) -> Query {
    let now = 2_000_000_000i64;
    let i = (n.wrapping_mul(2_654_435_761)) % entries;
    let (own, digest, subject) = keys(entries + n);
    let parent = if n.is_multiple_of(2) {
        keys(i).0
    } else {
        keys(entries * 2 + n).0
    };
    Query {
        ids: vec![parent],
        own_id: Some(own),
        thread_indexes: vec![],
        text: Some((digest, subject)),
        since: now - 30 * 86_400,
    }
}

/// The same lookups on the calling thread (`SqliteStore::lookup_inline`, what the daemon
/// does), other keys than the thread's run so the page cache is not simply warm for them.
fn inline_lookups(
    inline: &dyn Fn(&Query) -> Option<markgate::ledger::Found>,
    entries: u64,
    lookups: usize,
) {
    let mut lat = Vec::with_capacity(lookups);
    let mut hits = 0usize;
    for n in lookups as u64..2 * lookups as u64 {
        let q = query(n, entries);
        let t = Instant::now();
        let found = inline(&q).expect("the file can be read");
        lat.push(t.elapsed());
        hits += usize::from(!found.is_empty());
    }
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "{{\"label\":\"ledger|sqlite|scale|inline\",\"entries\":{entries},\"lookups\":{},\"hits\":{hits},\"p50_us\":{:.0},\"p99_us\":{:.0},\"max_us\":{:.0}}}",
        lat.len(),
        pct(50),
        pct(99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e6)
    );
}

fn cleanup(path: &std::path::Path, keep: bool) {
    if !keep {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.to_path_buf().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
