//! The embedded ledger: one SQLite file (WAL mode) written by one dedicated thread.
//!
//! Writes, prunes and stats are jobs sent to that thread with a oneshot for the answer, so the
//! async runtime never waits on SQLite's writer. The thread owns the only connection markgate
//! writes through, so markgate never contends with itself for the file's lock (no `database
//! is locked` from 64 connections at once): writes that queue up while it is busy are
//! committed together in one transaction. Pruning deletes in chunks and serves waiting
//! lookups between chunks, so it never holds mail up for long. `busy_timeout` is the
//! configured ledger timeout, so another process holding the file (a backup, `sqlite3` at a
//! prompt) makes calls fail after it, never hang.
//!
//! Lookups, on every message's path, are answered on the caller's thread: first by the key
//! filter ([`seen`]: no entry has any of the keys, the usual answer, costs no file read), then
//! from the entries not yet committed ([`mem`]) and the caller's own read connection
//! ([`inline`]); the thread answers them only when the file cannot be read at once.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use tokio::sync::oneshot;

use super::{Entry, Found, LedgerError, Query, Stats, Store, Way};

mod inline;
mod mem;
mod seen;

use mem::Mem;

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 512;
/// Rows deleted per pruning step.
const PRUNE_CHUNK: i64 = 2000;

/// Only inbound entries are ever found by their text (a copy leaving is matched against what
/// came in), so only they are in the text index: an outbound message changes one index page
/// fewer. Files made before that had `entries_text` over every entry; it is dropped on open.
///
/// The indexes end in `way, time` so that "the newest inbound entries of this key" is read
/// straight from the index even when one key has many entries (a message re-sent many times).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    message_id TEXT,
    thread_index BLOB,
    subject TEXT NOT NULL,
    digest BLOB,
    level TEXT NOT NULL,
    marking TEXT,
    qualifiers TEXT NOT NULL,
    way INTEGER NOT NULL,
    domains TEXT NOT NULL,
    time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_message_id ON entries(message_id, way, time);
CREATE INDEX IF NOT EXISTS entries_thread_index ON entries(thread_index, time)
    WHERE thread_index IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_text_inbound ON entries(digest, subject, time)
    WHERE way = 0;
CREATE INDEX IF NOT EXISTS entries_time ON entries(time);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
    WITHOUT ROWID;
";

/// The columns every statement reads or writes, in `row_entry`'s order. A macro, not a const,
/// so the statements below are literals: building their text for each call cost more than
/// running them.
macro_rules! columns {
    () => {
        "message_id, thread_index, subject, digest, level, marking, qualifiers, way, domains, time"
    };
}

/// The newest entries of one key (`?1`) since `?2`.
macro_rules! newest {
    ($condition:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM entries WHERE ",
            $condition,
            " AND time >= ?2 ORDER BY time DESC LIMIT 4"
        )
    };
}

type Reply<T> = oneshot::Sender<Result<T, LedgerError>>;

/// Told once a detached write ([`SqliteStore::record_detached`]) is committed or has failed.
pub type Done = Box<dyn FnOnce(Result<(), LedgerError>) + Send>;

enum Job {
    Record(Box<Entry>, Reply<()>),
    Many(Vec<Entry>, Reply<()>),
    Lookup(Query, Reply<Found>),
    ById(String, Reply<Vec<Entry>>),
    Prune(i64, Reply<u64>),
    Stats(Reply<Stats>),
    /// Detached writes are waiting and the thread was idle.
    Nudge,
    /// Commit everything taken or waiting now (a stopping daemon).
    Flush(Reply<()>),
}

/// Entries written by one INSERT statement when a batch has that many: SQLite's work per
/// statement (its statement savepoint, the step and reset, the binding calls' setup) was
/// about a third of an entry's insert; a batch of 300 takes 19 statements instead of 300.
///
/// Both inserts say `OR ROLLBACK`: a failed insert rolls the whole transaction back anyway
/// ([`Worker::insert`]), and with the default `ABORT` SQLite must be able to undo one
/// statement of many rows (the NOT NULL columns could fail on its fifth row), so it copied
/// every page the statement changed into a statement journal first (7-9 % of the ledger
/// thread's CPU per entry in `cargo bench --bench hot_paths -- remember`).
const ROWS_PER_INSERT: usize = 16;
/// Columns bound per entry (`columns!()`, in [`bind_row`]'s order).
const COLUMNS: usize = 10;

/// The statement inserting [`ROWS_PER_INSERT`] entries, built once.
fn insert_many_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let rows: Vec<String> = (0..ROWS_PER_INSERT)
            .map(|r| {
                let params: Vec<String> = (1..=COLUMNS)
                    .map(|c| format!("?{}", r * COLUMNS + c))
                    .collect();
                format!("({})", params.join(", "))
            })
            .collect();
        format!(
            "INSERT OR ROLLBACK INTO entries ({}) VALUES {}",
            columns!(),
            rows.join(", ")
        )
    })
}

/// Bind one entry's columns at parameters `after + 1 ..= after + COLUMNS`.
fn bind_row(stmt: &mut rusqlite::Statement<'_>, after: usize, e: &Entry) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(after + 1, &e.message_id)?;
    stmt.raw_bind_parameter(after + 2, e.thread_index.as_deref().and_then(unhex))?;
    stmt.raw_bind_parameter(after + 3, &e.subject)?;
    stmt.raw_bind_parameter(after + 4, e.digest.as_deref().and_then(unhex))?;
    stmt.raw_bind_parameter(after + 5, &e.level)?;
    stmt.raw_bind_parameter(after + 6, &e.marking)?;
    stmt.raw_bind_parameter(after + 7, e.qualifiers.join("\u{1f}"))?;
    let way: i64 = match e.way {
        Way::Inbound => 0,
        Way::Outbound => 1,
    };
    stmt.raw_bind_parameter(after + 8, way)?;
    stmt.raw_bind_parameter(after + 9, e.domains.join(" "))?;
    stmt.raw_bind_parameter(after + 10, e.time)
}

/// What the store's handles and its thread share.
#[derive(Default)]
struct Shared {
    mem: std::sync::Mutex<Mem>,
    /// The keys the file and memory may hold (lookups whose keys none has skip the file).
    /// Locked after `mem` when both are held.
    seen: seen::Seen,
    /// The thread is blocked waiting for a job with no transaction open.
    parked: std::sync::atomic::AtomicBool,
    /// Lookups and hits not yet added to the `counters` table.
    lookups: std::sync::atomic::AtomicU64,
    hits: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Most detached writes that may wait for a stuck ledger thread; past this a write fails at
/// once (an outage: audited, and the entry is lost, never the mail).
const MAX_PENDING: usize = 100_000;

/// How long entries may sit in an open transaction before it is committed. Commits are the
/// ledger's main cost (every changed page goes to the WAL), so at low concurrency grouping
/// a few milliseconds of messages into one commit halves its CPU per message. Lookups on this
/// thread see the open transaction, so thread checks never miss a message for it; another
/// process (`markgate ledger lookup`) sees entries this much later, and a crash of markgate
/// forgets at most this much (memory, not mail).
const COMMIT_AFTER: Duration = Duration::from_millis(25);

/// A handle on the ledger thread. Cheap to share; the thread ends when the last handle goes.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    shared: std::sync::Arc<Shared>,
    path: PathBuf,
    /// Tells this store's cached reader connections from another store's.
    id: u64,
}

impl SqliteStore {
    /// Open (creating file, schema and, for the default path, its directory) and start the
    /// thread. Fails at once when the file cannot be opened or written.
    pub fn open(path: &Path, busy: Duration) -> Result<SqliteStore, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| LedgerError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = open_connection(path, busy)?;
        let (jobs, rx) = mpsc::channel();
        let shared = std::sync::Arc::new(Shared::default());
        let theirs = shared.clone();
        let display = path.display().to_string();
        std::thread::Builder::new()
            .name("markgate-ledger".into())
            .spawn(move || Worker::new(conn, theirs).run(rx))
            .map_err(|e| {
                LedgerError(format!("cannot start the ledger thread for {display}: {e}"))
            })?;
        static STORES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(SqliteStore {
            jobs,
            shared,
            path: path.to_path_buf(),
            id: STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Write many entries in one transaction (bulk loads: the scale benchmark, imports).
    pub async fn record_many(&self, entries: Vec<Entry>) -> Result<(), LedgerError> {
        self.ask(|r| Job::Many(entries, r)).await
    }

    /// Remember an entry without waiting: `done` is called on the ledger thread once the
    /// entry is committed (within [`COMMIT_AFTER`]) or has failed. Lookups see it at once.
    pub fn record_detached(&self, entry: Entry, done: Done) {
        use std::sync::atomic::Ordering;
        let mut mem = self.shared.mem();
        if mem.pending() >= MAX_PENDING {
            drop(mem);
            done(Err(LedgerError(format!(
                "{MAX_PENDING} entries are waiting for the ledger thread"
            ))));
            return;
        }
        self.shared.seen.add(&entry);
        mem.push(entry, done);
        drop(mem);
        if self.shared.parked.swap(false, Ordering::SeqCst) && self.jobs.send(Job::Nudge).is_err() {
            let taken = self.shared.mem().drop_pending();
            for done in taken {
                done(Err(LedgerError("the ledger thread has stopped".into())));
            }
        }
    }

    /// May a lookup by text with this normalised subject find anything? `false` only when the
    /// key filter knows that no inbound entry has the subject (see [`seen`]).
    pub fn may_find_text(&self, subject: &str) -> bool {
        self.shared.seen.may_find_text(subject)
    }

    /// The key filter has been built and lookups consult it before the file (the tests wait
    /// for this; a lookup is answered correctly either way).
    pub fn key_filter_ready(&self) -> bool {
        self.shared.seen.ready()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commit every entry remembered so far, now: a stopping daemon calls this after its last
    /// message, so a clean stop forgets nothing of the last moments.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.ask(Job::Flush).await
    }

    /// Look up on the calling thread, without a trip to the ledger thread: what the file
    /// holds (through this thread's own read connection) plus what is not committed yet.
    /// `None` when the file cannot be read at once (locked, gone): ask the thread instead,
    /// which waits up to the timeout.
    pub fn lookup_inline(&self, q: &Query) -> Option<Found> {
        use std::sync::atomic::Ordering;
        let narrowed = self.shared.seen.narrow(q);
        let q = narrowed.as_ref().unwrap_or(q);
        let found = if q.has_keys() {
            inline::lookup(self.id, &self.path, &self.shared, q)?
        } else {
            Found::default()
        };
        self.shared.lookups.fetch_add(1, Ordering::Relaxed);
        if !found.is_empty() {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
        }
        Some(found)
    }

    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(job(tx))
            .map_err(|_| LedgerError("the ledger thread has stopped".into()))?;
        rx.await
            .map_err(|_| LedgerError("the ledger thread has stopped".into()))?
    }
}

impl Store for SqliteStore {
    async fn record(&self, entry: Entry, _keep: Duration) -> Result<(), LedgerError> {
        self.ask(|r| Job::Record(Box::new(entry), r)).await
    }
    async fn lookup(&self, query: Query) -> Result<Found, LedgerError> {
        self.ask(|r| Job::Lookup(query, r)).await
    }
    async fn by_message_id(&self, id: String) -> Result<Vec<Entry>, LedgerError> {
        self.ask(|r| Job::ById(id, r)).await
    }
    async fn prune(&self, before: i64) -> Result<u64, LedgerError> {
        self.ask(|r| Job::Prune(before, r)).await
    }
    async fn stats(&self) -> Result<Stats, LedgerError> {
        self.ask(Job::Stats).await
    }
}

fn open_connection(path: &Path, busy: Duration) -> Result<Connection, LedgerError> {
    let err = |e: rusqlite::Error| LedgerError::new(e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(busy).map_err(err)?;
    // The bundled SQLite is built with STAT4, which marks bound parameters "re-plan when the
    // value changes": every lookup was parsed and planned again (a third of the ledger
    // thread's time). The plans here do not depend on the values, so hold them stable.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError(format!(
            "cannot switch {} to WAL mode (it stays in {mode} mode)",
            path.display()
        )));
    }
    // WAL + NORMAL: a commit is durable against a markgate crash; a power cut may lose the
    // last moments of entries, which only weakens thread checks briefly, never loses mail.
    // 32 MiB of page cache: the upper levels of the indexes stay in memory at millions of
    // entries. A checkpoint every 8000 pages of WAL (32 MiB; SQLite's default is 1000): the
    // newest pages of the table and of the time index are rewritten by every commit, and a
    // checkpoint copies each page once however often the WAL holds it, so a longer interval
    // copies fewer pages per entry (the ledger thread's CPU per message fell by a fifth).
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-32768; PRAGMA wal_autocheckpoint=8000;",
    )
    .map_err(err)?;
    // Creating the schema is also the check that the file is writable now.
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} DROP INDEX IF EXISTS entries_text; COMMIT;"
    ))
    .map_err(err)?;
    Ok(conn)
}

/// The open write transaction: when it began and who waits for its commit.
struct Open {
    since: std::time::Instant,
    entries: usize,
    /// How many of them are taken from [`Mem`] (and stay findable there until committed).
    unseen: usize,
    waiting: Vec<Reply<()>>,
    detached: Vec<Done>,
}

struct Worker {
    conn: Connection,
    shared: std::sync::Arc<Shared>,
    open: Option<Open>,
    /// The file's `data_version` at the last write transaction: it changes when another
    /// connection (another process) has committed since.
    data_version: Option<i64>,
}

impl Worker {
    fn new(conn: Connection, shared: std::sync::Arc<Shared>) -> Self {
        Worker {
            conn,
            shared,
            open: None,
            data_version: None,
        }
    }

    /// Serve jobs until the last handle goes. Writes go into one open transaction, committed
    /// [`COMMIT_AFTER`] after it began, when [`MAX_BATCH`] entries wait, or at once when a
    /// caller waits for its write; everything else is served in or beside it.
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        use std::sync::atomic::Ordering;
        let mut queue: VecDeque<Job> = VecDeque::new();
        loop {
            let job = match queue.pop_front() {
                Some(j) => Some(j),
                None => match &self.open {
                    Some(open) => {
                        match rx.recv_timeout(COMMIT_AFTER.saturating_sub(open.since.elapsed())) {
                            Ok(j) => Some(j),
                            Err(mpsc::RecvTimeoutError::Timeout) => None,
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    None => {
                        self.shared.parked.store(true, Ordering::SeqCst);
                        if self.shared.mem().pending() > 0 {
                            self.shared.parked.store(false, Ordering::SeqCst);
                            None
                        } else {
                            match rx.recv() {
                                Ok(j) => {
                                    self.shared.parked.store(false, Ordering::SeqCst);
                                    Some(j)
                                }
                                Err(_) => break,
                            }
                        }
                    }
                },
            };
            self.take_pending();
            match job {
                None | Some(Job::Nudge) => {}
                Some(Job::Record(e, r)) => {
                    // A caller waits: take every waiting record, then commit now.
                    let mut batch = vec![(e, r)];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Job::Record(e, r)) => batch.push((e, r)),
                            Ok(other) => {
                                queue.push_back(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    for (e, r) in batch {
                        self.shared.seen.add(&e);
                        match self.insert(std::iter::once(&*e)) {
                            Ok(()) => self.open_mut().map_or((), |o| o.waiting.push(r)),
                            Err(err) => {
                                let _ = r.send(Err(err));
                            }
                        }
                    }
                    let _ = self.commit();
                }
                Some(Job::Prune(before, r)) => {
                    let _ = self.commit();
                    let result = self.prune(before, &rx, &mut queue);
                    let _ = r.send(result);
                }
                Some(other) => self.serve(other),
            }
            let due = self
                .open
                .as_ref()
                .is_some_and(|o| o.since.elapsed() >= COMMIT_AFTER || o.entries >= MAX_BATCH);
            if due {
                let _ = self.commit();
            }
        }
        self.take_pending();
        let _ = self.commit();
        let _ = self.flush_counters();
    }

    /// Move the detached writes into the open transaction. They stay visible to inline
    /// lookups throughout: moved from `pending` to `unseen` under one lock, and out of
    /// `unseen` only once committed (or failed).
    fn take_pending(&mut self) {
        let (taken, done) = {
            let mut mem = self.shared.mem();
            if mem.pending() == 0 {
                return;
            }
            mem.take()
        };
        let n = taken.len();
        match self.insert(taken.iter().map(|e| &**e)) {
            Ok(()) => {
                if let Some(open) = self.open_mut() {
                    open.unseen += n;
                    open.detached.extend(done);
                }
            }
            Err(err) => {
                // `insert` rolled back and forgot the older unseen ones; these go too.
                self.shared.mem().forget_newest_taken(n);
                for done in done {
                    done(Err(err.clone()));
                }
            }
        }
    }

    /// The open transaction's entries are in the file now, or never will be.
    fn forget_unseen(&self, open: &Open) {
        if open.unseen > 0 {
            self.shared.mem().forget_taken(open.unseen);
        }
    }

    fn open_mut(&mut self) -> Option<&mut Open> {
        self.open.as_mut()
    }

    /// Begin the write transaction unless one is open. On failure nothing is open.
    fn begin(&mut self) -> Result<(), LedgerError> {
        if self.open.is_none() {
            self.conn
                .prepare_cached("BEGIN IMMEDIATE")
                .and_then(|mut b| b.execute([]))
                .map_err(LedgerError::new)?;
            self.notice_foreign_writes();
            self.open = Some(Open {
                since: std::time::Instant::now(),
                entries: 0,
                unseen: 0,
                waiting: Vec::new(),
                detached: Vec::new(),
            });
        }
        Ok(())
    }

    /// Another process committed to the file since this thread's last write transaction (a
    /// `markgate policy test --ledger` on the live file): its entries are not in the key
    /// filter, so lookups read the file until the filter is built again.
    fn notice_foreign_writes(&mut self) {
        let version = self
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)));
        match version {
            Ok(v) => {
                if self.data_version.replace(v).is_some_and(|old| old != v) {
                    self.shared.seen.mark_foreign_write();
                }
            }
            Err(_) => self.shared.seen.mark_foreign_write(),
        }
    }

    /// Build the key filter when it is due. Only here, between write transactions: every
    /// entry not yet committed is then in memory, where the build takes its keys from.
    fn build_filter_if_due(&self) {
        if self.open.is_none()
            && self.shared.seen.build_due()
            && let Some(path) = self.conn.path()
        {
            seen::start_build(self.shared.clone(), PathBuf::from(path));
        }
    }

    /// Insert into the open transaction (beginning one). A failed insert rolls the whole
    /// transaction back and fails everyone waiting on it: a partial commit would report
    /// entries remembered that are not.
    fn insert<'e>(&mut self, entries: impl Iterator<Item = &'e Entry>) -> Result<(), LedgerError> {
        self.begin()?;
        let entries: Vec<&Entry> = entries.collect();
        let result = (|| {
            let mut chunks = entries.chunks_exact(ROWS_PER_INSERT);
            if chunks.len() > 0 {
                let mut many = self
                    .conn
                    .prepare_cached(insert_many_sql())
                    .map_err(LedgerError::new)?;
                for chunk in &mut chunks {
                    for (i, e) in chunk.iter().enumerate() {
                        bind_row(&mut many, i * COLUMNS, e).map_err(LedgerError::new)?;
                    }
                    many.raw_execute().map_err(LedgerError::new)?;
                }
            }
            if !chunks.remainder().is_empty() {
                let mut one = self
                    .conn
                    .prepare_cached(concat!(
                        "INSERT OR ROLLBACK INTO entries (",
                        columns!(),
                        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                    ))
                    .map_err(LedgerError::new)?;
                for e in chunks.remainder() {
                    bind_row(&mut one, 0, e).map_err(LedgerError::new)?;
                    one.raw_execute().map_err(LedgerError::new)?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                if let Some(open) = self.open_mut() {
                    open.entries += entries.len();
                }
                Ok(())
            }
            Err(e) => {
                self.rollback(&e);
                Err(e)
            }
        }
    }

    /// Commit the open transaction (with the lookup counters) and tell everyone waiting.
    fn commit(&mut self) -> Result<(), LedgerError> {
        use std::sync::atomic::Ordering;
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let lookups = self.shared.lookups.swap(0, Ordering::Relaxed);
        let hits = self.shared.hits.swap(0, Ordering::Relaxed);
        let result = self
            .add_counters(lookups, hits)
            .and_then(|()| run(&self.conn, "COMMIT"));
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.shared.lookups.fetch_add(lookups, Ordering::Relaxed);
            self.shared.hits.fetch_add(hits, Ordering::Relaxed);
        }
        self.forget_unseen(&open);
        for r in open.waiting {
            let _ = r.send(result.clone());
        }
        for done in open.detached {
            done(result.clone());
        }
        if result.is_ok() {
            self.build_filter_if_due();
        }
        result
    }

    fn rollback(&mut self, why: &LedgerError) {
        let _ = self.conn.execute_batch("ROLLBACK");
        if let Some(open) = self.open.take() {
            self.forget_unseen(&open);
            for r in open.waiting {
                let _ = r.send(Err(why.clone()));
            }
            for done in open.detached {
                done(Err(why.clone()));
            }
        }
    }

    fn add_counters(&self, lookups: u64, hits: u64) -> Result<(), LedgerError> {
        if lookups == 0 {
            return Ok(());
        }
        let mut add = self
            .conn
            .prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            )
            .map_err(LedgerError::new)?;
        add.execute(params!["lookups", lookups as i64])
            .map_err(LedgerError::new)?;
        add.execute(params!["hits", hits as i64])
            .map_err(LedgerError::new)?;
        Ok(())
    }

    /// Write the lookup counters in a transaction of their own (at shutdown).
    fn flush_counters(&mut self) -> Result<(), LedgerError> {
        if self
            .shared
            .lookups
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return Ok(());
        }
        self.begin()?;
        let _ = self.commit();
        Ok(())
    }

    /// Write entries a caller waits for and commit now (with whatever else is open); the
    /// caller hears the commit's result.
    fn write_now<'e>(&mut self, entries: impl Iterator<Item = &'e Entry>, r: Reply<()>) {
        let shared = self.shared.clone();
        match self.insert(entries.inspect(|e| shared.seen.add(e))) {
            Ok(()) => {
                if let Some(open) = self.open_mut() {
                    open.waiting.push(r);
                }
                let _ = self.commit();
            }
            Err(e) => {
                let _ = r.send(Err(e));
            }
        }
    }

    /// Everything but records (batched in `run`) and prunes.
    fn serve(&mut self, job: Job) {
        match job {
            Job::Record(e, r) => self.write_now(std::iter::once(&*e), r),
            Job::Many(es, r) => self.write_now(es.iter(), r),
            Job::Lookup(q, r) => {
                let result = self.read(|c| lookup(c, &q));
                if let Ok(found) = &result {
                    use std::sync::atomic::Ordering;
                    self.shared.lookups.fetch_add(1, Ordering::Relaxed);
                    if !found.is_empty() {
                        self.shared.hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = r.send(result);
            }
            Job::ById(id, r) => {
                let _ = r.send(self.read(|c| select(c, newest!("message_id = ?1"), &id, i64::MIN)));
            }
            Job::Stats(r) => {
                let _ = self.commit();
                let _ = r.send(self.stats());
            }
            Job::Prune(_, r) => {
                // Only reached for a prune asked while another runs: that one covers it.
                let _ = r.send(Ok(0));
            }
            Job::Nudge => {}
            Job::Flush(r) => {
                self.take_pending();
                let _ = r.send(self.commit());
            }
        }
    }

    /// Run reads in one read transaction (one round of file locks instead of one per
    /// statement), or inside the open write transaction, which they then see.
    fn read<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        if self.open.is_some() {
            return f(&self.conn);
        }
        in_read_transaction(&self.conn, f)
    }

    /// Delete in chunks; between chunks, answer whatever else is waiting.
    fn prune(
        &mut self,
        before: i64,
        rx: &mpsc::Receiver<Job>,
        queue: &mut VecDeque<Job>,
    ) -> Result<u64, LedgerError> {
        let mut total = 0u64;
        loop {
            let n = self
                .conn
                .prepare_cached(
                    "DELETE FROM entries WHERE id IN
                     (SELECT id FROM entries WHERE time < ?1 ORDER BY time LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![before, PRUNE_CHUNK]))
                .map_err(LedgerError::new)?;
            total += n as u64;
            if (n as i64) < PRUNE_CHUNK {
                break;
            }
            for job in queue.drain(..).collect::<Vec<_>>() {
                self.serve(job);
            }
            while let Ok(job) = rx.try_recv() {
                self.serve(job);
            }
        }
        if total > 0 {
            // Give the WAL back to the main file so it does not grow without bound.
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
        Ok(total)
    }

    fn stats(&self) -> Result<Stats, LedgerError> {
        let (entries, oldest): (i64, Option<i64>) = self
            .conn
            .query_row("SELECT count(*), min(time) FROM entries", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(LedgerError::new)?;
        let counter = |name: &str| -> Result<u64, LedgerError> {
            let v: Option<i64> = self
                .conn
                .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(LedgerError::new)?;
            Ok(v.unwrap_or(0).max(0) as u64)
        };
        let path = self.conn.path().map(PathBuf::from).unwrap_or_default();
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        Ok(Stats {
            backend: format!("sqlite:{}", path.display()),
            entries: entries.max(0) as u64,
            bytes: size(&path) + size(Path::new(&wal)),
            oldest,
            lookups: counter("lookups")?
                + self
                    .shared
                    .lookups
                    .load(std::sync::atomic::Ordering::Relaxed),
            hits: counter("hits")? + self.shared.hits.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

fn select(
    conn: &Connection,
    sql: &'static str,
    key: &dyn rusqlite::ToSql,
    since: i64,
) -> Result<Vec<Entry>, LedgerError> {
    let mut stmt = conn.prepare_cached(sql).map_err(LedgerError::new)?;
    let rows = stmt
        .query_map(params![key, since], row_entry)
        .map_err(LedgerError::new)?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(LedgerError::new)
}

/// What the file holds for a query (the thread's lookups and the inline ones).
fn lookup(conn: &Connection, q: &Query) -> Result<Found, LedgerError> {
    match copies_only(q) {
        Some((id, digest, subject)) => copies(conn, id, &digest, subject, q.since),
        None => lookup_each(conn, q),
    }
}

/// [`lookup`] one statement per key.
fn lookup_each(conn: &Connection, q: &Query) -> Result<Found, LedgerError> {
    let mut found = Found::default();
    for id in &q.ids {
        found
            .by_id
            .extend(select(conn, newest!("message_id = ?1"), id, q.since)?);
    }
    if let Some(id) = &q.own_id {
        found.by_id.extend(select(
            conn,
            newest!("message_id = ?1 AND way = 0"),
            id,
            q.since,
        )?);
    }
    for ti in &q.thread_indexes {
        if let Some(bytes) = unhex(ti) {
            found.by_thread_index.extend(select(
                conn,
                newest!("thread_index = ?1"),
                &bytes,
                q.since,
            )?);
        }
    }
    if let Some((digest, subject)) = &q.text
        && let Some(d) = unhex(digest)
    {
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                columns!(),
                " FROM entries WHERE digest = ?1 AND subject = ?2 AND way = 0 AND time >= ?3",
                " ORDER BY time DESC LIMIT 4"
            ))
            .map_err(LedgerError::new)?;
        let rows = stmt
            .query_map(params![d, subject, q.since], row_entry)
            .map_err(LedgerError::new)?;
        found.by_text = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(LedgerError::new)?;
    }
    Ok(found)
}

/// The question most messages ask (a new message going out: is it a copy of one that came
/// in?): its own id and its text, nothing else. Then `lookup` answers with [`copies`].
fn copies_only(q: &Query) -> Option<(&str, Vec<u8>, &str)> {
    if !q.ids.is_empty() || !q.thread_indexes.is_empty() {
        return None;
    }
    let (digest, subject) = q.text.as_ref()?;
    Some((q.own_id.as_deref()?, unhex(digest)?, subject))
}

/// Inbound entries by id and by text in one statement: the two statements `lookup` runs
/// otherwise, joined, each row tagged with the one it came from. One statement needs no read
/// transaction around it either ([`read_lookup`]): a third of the lookup's cost was the
/// statements' round trips, not the searches.
fn copies(
    conn: &Connection,
    id: &str,
    digest: &[u8],
    subject: &str,
    since: i64,
) -> Result<Found, LedgerError> {
    let mut stmt = conn
        // Short text: the statement cache hashes and copies it on every use.
        .prepare_cached(concat!(
            "SELECT *, 0 FROM (SELECT ",
            columns!(),
            " FROM entries WHERE message_id = ?1 AND way = 0 AND time >= ?2",
            " ORDER BY time DESC LIMIT 4) UNION ALL SELECT *, 1 FROM (SELECT ",
            columns!(),
            " FROM entries WHERE digest = ?3 AND subject = ?4 AND way = 0 AND time >= ?2",
            " ORDER BY time DESC LIMIT 4)"
        ))
        .map_err(LedgerError::new)?;
    let mut rows = stmt
        .query(params![id, since, digest, subject])
        .map_err(LedgerError::new)?;
    let mut found = Found::default();
    while let Some(r) = rows.next().map_err(LedgerError::new)? {
        let e = row_entry(r).map_err(LedgerError::new)?;
        let by_text: i64 = r.get(10).map_err(LedgerError::new)?;
        if by_text == 0 {
            found.by_id.push(e);
        } else {
            found.by_text.push(e);
        }
    }
    Ok(found)
}

/// A lookup on a reader connection: in one read transaction when it takes several
/// statements (one round of file locks), alone when it takes one.
fn read_lookup(conn: &Connection, q: &Query) -> Result<Found, LedgerError> {
    let statements = q.ids.len()
        + q.thread_indexes.len()
        + usize::from(q.own_id.is_some())
        + usize::from(q.text.is_some());
    // Its own id and its text alone are asked in one statement (`copies`).
    let joined = statements == 2 && q.own_id.is_some() && q.text.is_some();
    if statements <= 1 || joined {
        lookup(conn, q)
    } else {
        in_read_transaction(conn, |c| lookup(c, q))
    }
}

/// Run one statement kept prepared (parsing BEGIN and COMMIT anew each time showed up in
/// profiles).
fn run(conn: &Connection, sql: &'static str) -> Result<(), LedgerError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(LedgerError::new)
}

/// Run reads in one read transaction: one round of file locks instead of one per statement.
fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    run(conn, "BEGIN")?;
    let result = f(conn);
    if run(conn, "COMMIT").is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let ti: Option<Vec<u8>> = r.get(1)?;
    let digest: Option<Vec<u8>> = r.get(3)?;
    let qualifiers: String = r.get(6)?;
    let way: i64 = r.get(7)?;
    let domains: String = r.get(8)?;
    Ok(Entry {
        message_id: r.get(0)?,
        thread_index: ti.map(|b| crate::inspect::thread::hex(&b)),
        subject: r.get(2)?,
        digest: digest.map(|b| crate::inspect::thread::hex(&b)),
        level: r.get(4)?,
        marking: r.get(5)?,
        qualifiers: qualifiers
            .split('\u{1f}')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        way: if way == 0 {
            Way::Inbound
        } else {
            Way::Outbound
        },
        domains: domains
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        time: r.get(9)?,
    })
}

/// Hex text to bytes (`None` when it is not hex).
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = vec![0u8; s.len() / 2];
    for (o, p) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = hex_digit(p[0])? << 4 | hex_digit(p[1])?;
    }
    Some(out)
}

/// One hex digit's value (either case), from a table: a match per digit cost more than the
/// rest of binding an entry's digest.
pub(crate) fn hex_digit(c: u8) -> Option<u8> {
    const NOT: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [NOT; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let v = TABLE[usize::from(c)];
    (v != NOT).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_what_to_digit_reads() {
        for c in 0..=255u8 {
            let want = char::from(c).to_digit(16).map(|d| d as u8);
            assert_eq!(hex_digit(c), want, "{c}");
        }
        assert_eq!(unhex("00fF7a"), Some(vec![0, 255, 0x7a]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("0g"), None);
    }

    /// A ledger thread's worker on a new file, driven by the test itself.
    fn worker_on(path: &Path) -> Worker {
        let conn = open_connection(path, Duration::from_secs(5)).expect("open");
        Worker::new(conn, std::sync::Arc::new(Shared::default()))
    }

    /// Entries written many to a statement and one to a statement read back as they were
    /// given, in order, every column (batches of 1, of exactly a statement's rows, and of
    /// several statements plus a remainder).
    #[test]
    fn multi_row_inserts_store_every_column_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut worker = worker_on(&dir.path().join("m.sqlite"));
        let mut all = Vec::new();
        for (batch, size) in [1, ROWS_PER_INSERT, 2 * ROWS_PER_INSERT + 5]
            .into_iter()
            .enumerate()
        {
            let entries: Vec<Entry> = (0..size)
                .map(|i| Entry {
                    message_id: (i % 4 != 1).then(|| format!("<b{batch}-{i}@x>")),
                    thread_index: (i % 3 == 0)
                        .then(|| crate::inspect::thread::hex(&[i as u8, 7, batch as u8])),
                    subject: format!("subject {i} é"),
                    digest: (i % 5 != 2).then(|| crate::inspect::thread::hex(&[i as u8; 32])),
                    level: ["OFFICIAL", "RESTRICTED"][i % 2].into(),
                    marking: (i % 2 == 1).then(|| "RESTRICTED".into()),
                    qualifiers: (0..i % 3).map(|q| format!("Q{q}")).collect(),
                    way: if i % 2 == 0 {
                        Way::Inbound
                    } else {
                        Way::Outbound
                    },
                    domains: (0..i % 3).map(|d| format!("d{d}.example")).collect(),
                    time: (batch * 100 + i) as i64,
                })
                .collect();
            worker.insert(entries.iter()).expect("insert");
            worker.commit().expect("commit");
            all.extend(entries);
        }
        let mut stmt = worker
            .conn
            .prepare(concat!("SELECT ", columns!(), " FROM entries ORDER BY id"))
            .expect("prepare");
        let stored: Vec<Entry> = stmt
            .query_map([], row_entry)
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(stored, all);
    }

    /// A row failing in the middle of a sixteen-row insert (here a trigger raises the
    /// rollback that `OR ROLLBACK` gives a failed constraint): SQLite has already rolled the
    /// transaction back, the worker's own rollback finds nothing open, the entries inserted
    /// before it in the same transaction are gone too (never reported remembered), and the
    /// next batch is written and committed as usual.
    #[test]
    fn a_row_failing_mid_statement_rolls_back_the_transaction_and_the_worker_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut worker = worker_on(&dir.path().join("r.sqlite"));
        worker
            .conn
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON entries WHEN NEW.subject = 'poison' \
                 BEGIN SELECT RAISE(ROLLBACK, 'poisoned row'); END;",
            )
            .expect("trigger");
        let entry = |i: usize, subject: &str| Entry {
            message_id: Some(format!("<r{i}@x>")),
            thread_index: None,
            subject: subject.into(),
            digest: None,
            level: "OFFICIAL".into(),
            marking: None,
            qualifiers: Vec::new(),
            way: Way::Outbound,
            domains: Vec::new(),
            time: i as i64,
        };
        let count = |w: &Worker| -> i64 {
            w.conn
                .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
                .expect("count")
        };
        let first: Vec<Entry> = (0..3).map(|i| entry(i, "fine")).collect();
        worker.insert(first.iter()).expect("first batch");
        let failing: Vec<Entry> = (3..3 + ROWS_PER_INSERT)
            .map(|i| entry(i, if i == 9 { "poison" } else { "fine" }))
            .collect();
        let err = worker
            .insert(failing.iter())
            .expect_err("the poisoned batch fails");
        assert!(err.0.contains("poisoned row"), "{err}");
        assert!(worker.open.is_none(), "no transaction is left open");
        assert!(
            worker.conn.is_autocommit(),
            "SQLite has nothing open either"
        );
        assert_eq!(
            count(&worker),
            0,
            "the first batch went with the failed one"
        );
        let after: Vec<Entry> = (100..100 + ROWS_PER_INSERT + 1)
            .map(|i| entry(i, "fine"))
            .collect();
        worker.insert(after.iter()).expect("the next batch");
        worker.commit().expect("commit");
        assert_eq!(count(&worker), after.len() as i64);
    }

    /// The joined statement finds what the two statements found, in the same order: the
    /// newest four of each, inbound only, none older than `since`.
    #[test]
    fn one_statement_for_copies_finds_what_two_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut worker = worker_on(&dir.path().join("c.sqlite"));
        let digest = |n: u8| crate::inspect::thread::hex(&[n; 32]);
        let mut entries = Vec::new();
        for i in 0..60u8 {
            entries.push(Entry {
                message_id: Some(format!("m{}@x", i % 3)),
                thread_index: None,
                subject: format!("s{}", i % 2),
                digest: Some(digest(i % 4)),
                level: "OFFICIAL".into(),
                marking: None,
                qualifiers: vec!["q".into()],
                way: if i % 5 == 0 {
                    Way::Outbound
                } else {
                    Way::Inbound
                },
                domains: vec![format!("d{i}.example")],
                time: i64::from(i % 7) * 10,
            });
        }
        worker.insert(entries.iter()).expect("insert");
        worker.commit().expect("commit");
        let mut asked = 0;
        for id in ["m0@x", "m1@x", "m2@x", "none@x"] {
            for d in 0..5u8 {
                for subject in ["s0", "s1"] {
                    for since in [0, 25, 70] {
                        let q = Query {
                            own_id: Some(id.into()),
                            text: Some((digest(d), subject.into())),
                            since,
                            ..Query::default()
                        };
                        assert!(copies_only(&q).is_some());
                        let joined = lookup(&worker.conn, &q).expect("joined");
                        let each = lookup_each(&worker.conn, &q).expect("each");
                        assert_eq!(joined, each, "{q:?}");
                        asked += usize::from(!each.is_empty());
                    }
                }
            }
        }
        assert!(asked > 20, "the queries find something ({asked})");
    }
}
