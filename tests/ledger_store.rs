//! The ledger stores on their own (issue 12): real SQLite files and a real `redis-server`
//! started here on a free loopback port. Retention pruning with a clock the test controls, 64
//! writers at once with no entry lost, and 64 milter connections to the built daemon with
//! every message answered and every entry recorded (no `database is locked` reaching the MTA).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use markgate::filter::LedgerHandle;
use markgate::ledger::{
    Backend, Clock as _, Entry, LedgerConfig, ManualClock, Query, Store, Way, prune_now,
    redis::RedisStore, sqlite::SqliteStore,
};
use support::daemon::{Daemon, bench_message, load};
use support::{peers, ports};

const DAY: i64 = 86_400;

fn entry(id: &str, time: i64) -> Entry {
    Entry {
        message_id: Some(id.to_owned()),
        thread_index: None,
        subject: "budget 2027".into(),
        digest: Some(format!("{:064x}", id.len())),
        level: "RESTRICTED".into(),
        marking: Some("RESTRICTED".into()),
        qualifiers: vec![],
        way: Way::Inbound,
        domains: vec!["example-council.gcsx.gov.uk".into()],
        time,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn ids_present<S: Store>(store: &S, ids: &[String], since: i64) -> usize {
    let found = store
        .lookup(Query {
            ids: ids.to_vec(),
            since,
            ..Query::default()
        })
        .await
        .expect("lookup");
    found.by_id.len()
}

/// Retention: entries older than the policy's days go at the next prune, by the test's clock;
/// lookups already ignore them before that.
async fn retention_by_the_test_clock<S: Store>(store: &S) {
    let clock = ManualClock::at(1_000 * DAY);
    let old: Vec<String> = (0..5).map(|i| format!("old.{i}@x")).collect();
    let new: Vec<String> = (0..5).map(|i| format!("new.{i}@x")).collect();
    let keep = Duration::from_secs(3600 * 24 * 60);
    for id in &old {
        store
            .record(entry(id, 1_000 * DAY), keep)
            .await
            .expect("record");
    }
    clock.advance(20 * DAY);
    for id in &new {
        store
            .record(entry(id, 1_020 * DAY), keep)
            .await
            .expect("record");
    }
    // 20 days on, with 30 days' retention: nothing goes.
    assert_eq!(prune_now(store, &clock, 30).await.expect("prune"), 0);
    clock.advance(15 * DAY);
    // 35 days after the first five: they go, the rest stay.
    let since = clock.now() - 30 * DAY;
    assert_eq!(
        ids_present(store, &old, since).await,
        0,
        "ignored before pruning"
    );
    assert_eq!(prune_now(store, &clock, 30).await.expect("prune"), 5);
    assert_eq!(ids_present(store, &old, i64::MIN).await, 0, "pruned");
    assert_eq!(ids_present(store, &new, since).await, 5);
    assert_eq!(
        store.stats().await.expect("stats").oldest,
        Some(1_020 * DAY)
    );
    clock.advance(30 * DAY);
    assert_eq!(prune_now(store, &clock, 30).await.expect("prune"), 5);
    assert_eq!(store.stats().await.expect("stats").entries, 0);
}

/// 64 writers at once, 20 entries each: every one is there afterwards.
async fn sixty_four_writers<S: Store>(store: Arc<S>) {
    let mut tasks = Vec::new();
    for w in 0..64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                store
                    .record(
                        entry(&format!("w{w}.m{i}@x"), 5_000 * DAY),
                        Duration::from_secs(3600),
                    )
                    .await
                    .expect("no write fails under load");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let ids: Vec<String> = (0..64)
        .flat_map(|w| (0..20).map(move |i| format!("w{w}.m{i}@x")))
        .collect();
    let mut found = 0;
    for chunk in ids.chunks(32) {
        found += ids_present(&*store, chunk, i64::MIN).await;
    }
    assert_eq!(found, 64 * 20, "no entry lost");
}

#[test]
fn sqlite_retention_and_concurrency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    rt.block_on(async {
        let store =
            SqliteStore::open(&dir.path().join("a.sqlite"), Duration::from_secs(5)).expect("open");
        retention_by_the_test_clock(&store).await;
        let store =
            SqliteStore::open(&dir.path().join("b.sqlite"), Duration::from_secs(5)).expect("open");
        sixty_four_writers(Arc::new(store)).await;
    });
    // WAL mode, one file (plus its WAL while open).
    let c = rusqlite::Connection::open(dir.path().join("b.sqlite")).expect("open");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
    let n: i64 = c
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 64 * 20);
}

#[test]
fn sqlite_open_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    let config = LedgerConfig {
        path: blocker.join("ledger.sqlite"),
        path_configured: true,
        ..LedgerConfig::default()
    };
    let err = match Backend::open(&config) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a path under a file cannot be opened"),
    };
    assert!(err.contains("not-a-dir"), "{err}");
    assert!(
        LedgerHandle::open(&config, None)
            .err()
            .is_some_and(|e| e.contains("backend = \"off\""))
    );
}

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Option<Redis> {
    if !peers::available("ledger_store redis", &["redis-server"], false) {
        return None;
    }
    let port = ports::free_port();
    let child = Command::new(peers::tool("redis-server"))
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--port",
        ])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    assert!(ports::wait_listening(port, 30), "redis did not start");
    Some(Redis(child, port))
}

#[test]
fn redis_retention_concurrency_and_shared_view() {
    let Some(r) = redis() else { return };
    let url = format!("redis://127.0.0.1:{}/", r.1);
    let rt = rt();
    rt.block_on(async {
        let a = RedisStore::new(&url, "t1:", Duration::from_secs(5)).expect("store");
        retention_by_the_test_clock(&a).await;
        let b = RedisStore::new(&url, "t2:", Duration::from_secs(5)).expect("store");
        sixty_four_writers(Arc::new(b)).await;
        // Two instances on one Redis see each other's entries.
        let one = RedisStore::new(&url, "t3:", Duration::from_secs(5)).expect("store");
        let two = RedisStore::new(&url, "t3:", Duration::from_secs(5)).expect("store");
        one.record(entry("shared@x", 10), Duration::from_secs(60))
            .await
            .expect("record");
        assert_eq!(ids_present(&two, &["shared@x".into()], 0).await, 1);
        // Keys carry the retention as their TTL.
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let ttl: i64 = redis::cmd("TTL")
            .arg("t3:m:shared@x")
            .query_async(&mut c)
            .await
            .expect("ttl");
        assert!((1..=60).contains(&ttl), "ttl {ttl}");
    });
}

/// Each entry's JSON is stored once, under its Message-ID; its thread-index and text keys name
/// that key. Found by every key, found without a Message-ID too, pruned from every key; and
/// entries written before (their JSON under every key, slotted by their text) are still
/// found by each key and pruned.
#[test]
fn redis_stores_each_entry_once_and_reads_the_older_layout() {
    let Some(r) = redis() else { return };
    let url = format!("redis://127.0.0.1:{}/", r.1);
    rt().block_on(async {
        let store = RedisStore::new(&url, "once:", Duration::from_secs(5)).expect("store");
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let keep = Duration::from_secs(600);
        let mut e = entry("once@x", 100);
        e.thread_index = Some("ab".repeat(27));
        store.record(e.clone(), keep).await.expect("record");
        let mut no_id = entry("", 100);
        no_id.message_id = None;
        no_id.digest = Some(format!("{:064x}", 77));
        store.record(no_id.clone(), keep).await.expect("record");

        // One copy of the JSON; the other keys name where it is.
        let text_key = |d: &str| {
            use sha2::Digest as _;
            let s = sha2::Sha256::digest(b"budget 2027");
            let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
            format!("once:d:{d}:{hex}")
        };
        let vals = |key: String| {
            let mut c = c.clone();
            async move {
                let v: Vec<String> = redis::cmd("HVALS")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .expect("hvals");
                v
            }
        };
        let home = vals("once:m:once@x".into()).await;
        assert_eq!(home.len(), 1);
        assert!(home[0].starts_with('{'), "{home:?}");
        assert_eq!(
            vals(format!("once:t:{}", "ab".repeat(27))).await,
            ["m:once@x"]
        );
        assert_eq!(
            vals(text_key(e.digest.as_deref().unwrap_or(""))).await,
            ["m:once@x"]
        );
        // Without a Message-ID the JSON stays in its text key.
        let own = vals(text_key(&format!("{:064x}", 77))).await;
        assert!(own.len() == 1 && own[0].starts_with('{'), "{own:?}");

        let by_all = Query {
            ids: vec!["once@x".into()],
            thread_indexes: vec!["ab".repeat(27)],
            text: Some((e.digest.clone().unwrap_or_default(), "budget 2027".into())),
            since: 0,
            ..Query::default()
        };
        let found = store.lookup(by_all.clone()).await.expect("lookup");
        assert_eq!(found.by_id, [e.clone()]);
        assert_eq!(found.by_thread_index, [e.clone()]);
        assert_eq!(found.by_text, [e.clone()]);
        let by_text = Query {
            text: Some((format!("{:064x}", 77), "budget 2027".into())),
            ..Query::default()
        };
        assert_eq!(
            store.lookup(by_text.clone()).await.expect("lookup").by_text,
            [no_id]
        );
        // Outbound entries are found by id, never by text (as in SQLite): not filed under it.
        let mut out = entry("out@x", 100);
        out.way = Way::Outbound;
        out.digest = Some(format!("{:064x}", 88));
        store.record(out.clone(), keep).await.expect("record");
        assert!(vals(text_key(&format!("{:064x}", 88))).await.is_empty());
        let q_out = Query {
            ids: vec!["out@x".into()],
            text: Some((format!("{:064x}", 88), "budget 2027".into())),
            ..Query::default()
        };
        let found = store.lookup(q_out.clone()).await.expect("lookup");
        assert_eq!((found.by_id, found.by_text), (vec![out], vec![]));

        // The layout before: the JSON under every key, the slot the entry's own text.
        let mut old = entry("old@x", 100);
        old.digest = Some(format!("{:064x}", 5));
        let json = serde_json::to_string(&old).expect("json");
        let slot = format!("old@x|inbound|{:064x}", 5);
        let keys = ["once:m:old@x".to_owned(), text_key(&format!("{:064x}", 5))];
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("HSET").arg(k).arg(&slot).arg(&json).ignore();
        }
        pipe.cmd("ZADD")
            .arg("once:times")
            .arg(100)
            .arg(&slot)
            .ignore();
        pipe.cmd("HSET")
            .arg("once:slots")
            .arg(&slot)
            .arg(serde_json::to_string(&keys).expect("json"))
            .ignore();
        pipe.query_async::<()>(&mut c).await.expect("old layout");
        let q = Query {
            ids: vec!["old@x".into()],
            text: Some((format!("{:064x}", 5), "budget 2027".into())),
            ..Query::default()
        };
        let found = store.lookup(q.clone()).await.expect("lookup");
        assert_eq!((found.by_id, found.by_text), (vec![old.clone()], vec![old]));

        // Pruning takes every entry, of both layouts, out of every key.
        assert_eq!(store.stats().await.expect("stats").entries, 4);
        assert_eq!(store.prune(101).await.expect("prune"), 4);
        for q in [by_all, by_text, q, q_out] {
            assert!(store.lookup(q).await.expect("lookup").is_empty());
        }
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("once:[mtd]:*")
            .query_async(&mut c)
            .await
            .expect("keys");
        assert!(left.is_empty(), "{left:?}");
    });
}

/// 64 milter connections at once to the built daemon, its ledger in SQLite: every message
/// answered as expected (markgate-load checks each answer; a tempfail or a `database is
/// locked` would fail it) and every accepted message recorded.
#[test]
fn sixty_four_connections_record_every_message() {
    let d = Daemon::start("[ledger]\ntimeout = \"5s\"\n");
    let messages = 640;
    let r = load(&[
        "--connect",
        &d.spec,
        "--eml",
        bench_message("small-2k.eml").to_str().expect("utf-8 path"),
        "--connections",
        "64",
        "--messages",
        &messages.to_string(),
    ]);
    assert!(
        r.success,
        "load run failed: {}\n{}\n{}",
        r.json,
        r.stderr,
        d.log()
    );
    assert!(!d.log().contains("database is locked"), "{}", d.log());
    assert!(!d.log().contains("ledger is unavailable"), "{}", d.log());
    // Entries are written after the answers: poll until all are in.
    let db = d.dir().join("ledger.sqlite");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = rusqlite::Connection::open(&db).expect("open");
        let n: i64 = c
            .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
            .expect("count");
        if n == messages {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} of {messages} entries recorded\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ledger_config_mistakes_name_file_line_and_column() {
    use markgate::config::Config;
    let cases = [
        (
            "[ledger]\nbackend = \"mysql\"\n",
            "m.toml:2:11",
            "\"sqlite\", \"redis\" or \"off\"",
        ),
        (
            "[ledger]\npath = \"ledger.sqlite\"\n",
            "m.toml:2:8",
            "absolute path",
        ),
        (
            "[ledger]\nurl = \"http://x/\"\n",
            "m.toml:2:7",
            "a Redis URL",
        ),
        (
            "[ledger]\ntimeout = \"10m\"\n",
            "m.toml:2:11",
            "shorter than `[timeouts] eom`",
        ),
        (
            "[ledger]\nbackend = \"sqlite\"\nsize = 3\n",
            "m.toml:3:1",
            "unknown field `size`",
        ),
    ];
    for (text, at, expected) in cases {
        let e = Config::parse(text, "m.toml").expect_err(text).to_string();
        assert!(e.contains(at) && e.contains(expected), "{text:?}: {e}");
    }
    let c = Config::parse(
        "[ledger]\nbackend = \"redis\"\nurl = \"redis://10.0.0.5:6380/2\"\ntimeout = \"250ms\"\n",
        "m.toml",
    )
    .expect("valid");
    assert_eq!(c.ledger.backend, markgate::ledger::BackendKind::Redis);
    assert_eq!(c.ledger.timeout, Duration::from_millis(250));
}

/// A detached write (what the daemon does under fail-open) is found by the next lookup at
/// once, before its commit, on the caller's thread and on the ledger thread alike; `flush`
/// commits it at once (another connection to the file sees it; a stopping daemon relies on
/// this) and it is found once, not twice, after that.
#[test]
fn detached_writes_are_found_at_once_and_committed_soon() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.sqlite");
        let store = SqliteStore::open(&path, Duration::from_secs(5)).expect("open");
        let (tx, rx) = std::sync::mpsc::channel();
        let e = entry("detached@x", 50 * DAY);
        store.record_detached(
            e.clone(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let q = Query {
            ids: vec!["detached@x".into()],
            since: 0,
            ..Query::default()
        };
        let inline = store.lookup_inline(&q).expect("the file can be read");
        assert_eq!(inline.by_id, vec![e.clone()], "seen before the commit");
        assert_eq!(
            store.lookup(q.clone()).await.expect("lookup").by_id.len(),
            1
        );

        // What a stopping daemon does after its last message: committed now, reported first.
        store.flush().await.expect("flush");
        assert_eq!(
            rx.try_recv(),
            Ok(Ok(())),
            "the write is reported by the time flush returns"
        );
        let other = rusqlite::Connection::open(&path).expect("open");
        let n: i64 = other
            .query_row(
                "SELECT count(*) FROM entries WHERE message_id = 'detached@x'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(n, 1, "committed: another connection sees it");
        let inline = store.lookup_inline(&q).expect("the file can be read");
        assert_eq!(inline.by_id, vec![e], "found once after the commit");
        let stats = store.stats().await.expect("stats");
        assert_eq!((stats.entries, stats.lookups, stats.hits), (1, 3, 3));
    });
}

/// Wait (30 s at most, else fail saying `what`) until the store's key filter is built.
async fn key_filter_built(store: &SqliteStore, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !store.key_filter_ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The key filter (lookups skip the file when no entry has any of their keys) never hides an
/// entry: not one written before a restart, not one written by this store, and not one
/// another process wrote into the file, once this store has written since (it notices the
/// foreign commit and reads the file until its filter is built again).
#[test]
fn the_key_filter_never_hides_an_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.sqlite");
    let copy_of = |e: &Entry| Query {
        own_id: e.message_id.clone(),
        text: Some((e.digest.clone().unwrap_or_default(), e.subject.clone())),
        since: 0,
        ..Query::default()
    };
    let by_text = |e: &Entry| Query {
        own_id: Some("<not-this-one@example>".into()),
        ..copy_of(e)
    };
    let rt = rt();
    rt.block_on(async {
        let first = SqliteStore::open(&path, Duration::from_secs(5)).expect("open");
        let before: Vec<Entry> = (0..50)
            .map(|i| entry(&format!("<before-{i}@x>"), 10))
            .collect();
        first.record_many(before.clone()).await.expect("record");
        drop(first);

        let store = SqliteStore::open(&path, Duration::from_secs(5)).expect("reopen");
        store
            .record_many(vec![entry("<after@x>", 20)])
            .await
            .expect("record");
        key_filter_built(&store, "the filter was never built").await;
        let unseen = Query {
            own_id: Some("<never-sent@x>".into()),
            text: Some((format!("{:064x}", 999), "other".into())),
            since: 0,
            ..Query::default()
        };
        assert!(store.lookup_inline(&unseen).expect("inline").is_empty());
        // No inbound entry has this subject: an outbound message with it needs no digest.
        assert!(!store.may_find_text("other"));
        assert!(store.may_find_text("budget 2027"));
        for e in before.iter().chain([&entry("<after@x>", 20)]) {
            let found = store.lookup_inline(&copy_of(e)).expect("inline");
            assert_eq!(found.by_id.len(), 1, "{:?} by id", e.message_id);
            assert!(!found.by_text.is_empty(), "{:?} by text", e.message_id);
            assert!(
                !store
                    .lookup_inline(&by_text(e))
                    .expect("inline")
                    .by_text
                    .is_empty()
            );
        }
        // A detached write is found at once, before its commit.
        let detached = entry("<detached-entry@x>", 30);
        store.record_detached(detached.clone(), Box::new(|_| {}));
        assert_eq!(
            store
                .lookup_inline(&copy_of(&detached))
                .expect("inline")
                .by_id
                .len(),
            1
        );

        // Another process writes the file.
        let foreign = Entry {
            subject: "written elsewhere".into(),
            ..entry("<written-elsewhere-long-id@x>", 40)
        };
        {
            let other = SqliteStore::open(&path, Duration::from_secs(5)).expect("second opener");
            other
                .record_many(vec![foreign.clone()])
                .await
                .expect("record");
        }
        // This store's next write transaction notices it.
        store
            .record_many(vec![entry("<next@x>", 50)])
            .await
            .expect("record");
        let found = store.lookup_inline(&copy_of(&foreign)).expect("inline");
        assert_eq!(
            found.by_id.len(),
            1,
            "the foreign entry is read from the file"
        );
        assert!(
            store.may_find_text("written elsewhere"),
            "its subject is not ruled out either"
        );
        key_filter_built(&store, "the filter was not rebuilt").await;
        let found = store.lookup_inline(&copy_of(&foreign)).expect("inline");
        assert_eq!(found.by_id.len(), 1, "and is in the rebuilt filter");
        assert!(!found.by_text.is_empty(), "by text too");
        assert!(store.may_find_text("written elsewhere"), "its subject too");
        assert!(!store.may_find_text("other"));
    });
}
