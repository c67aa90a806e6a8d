//! The embedded ledger: one SQLite file (WAL mode) served by one dedicated thread.
//!
//! Every call is a job sent to that thread with a oneshot for the answer, so the async runtime
//! never waits on SQLite. The thread owns the only connection markgate opens, so markgate never
//! contends with itself for the file's lock (no `database is locked` from 64 connections at
//! once): writes that queue up while it is busy are committed together in one transaction.
//! Pruning deletes in chunks and serves waiting lookups between chunks, so it never holds mail
//! up for long. `busy_timeout` is the configured ledger timeout, so another process holding
//! the file (a backup, `sqlite3` at a prompt) makes calls fail after it, never hang.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use tokio::sync::oneshot;

use super::{Entry, Found, LedgerError, Query, Stats, Store, Way};

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 512;
/// Rows deleted per pruning step.
const PRUNE_CHUNK: i64 = 2000;

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
CREATE INDEX IF NOT EXISTS entries_text ON entries(digest, subject, way, time);
CREATE INDEX IF NOT EXISTS entries_time ON entries(time);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
    WITHOUT ROWID;
";

const COLUMNS: &str =
    "message_id, thread_index, subject, digest, level, marking, qualifiers, way, domains, time";

type Reply<T> = oneshot::Sender<Result<T, LedgerError>>;

enum Job {
    Record(Box<Entry>, Reply<()>),
    Many(Vec<Entry>, Reply<()>),
    Lookup(Query, Reply<Found>),
    ById(String, Reply<Vec<Entry>>),
    Prune(i64, Reply<u64>),
    Stats(Reply<Stats>),
}

/// A handle on the ledger thread. Cheap to share; the thread ends when the last handle goes.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
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
        let display = path.display().to_string();
        std::thread::Builder::new()
            .name("markgate-ledger".into())
            .spawn(move || Worker::new(conn).run(rx))
            .map_err(|e| {
                LedgerError(format!("cannot start the ledger thread for {display}: {e}"))
            })?;
        Ok(SqliteStore {
            jobs,
            path: path.to_path_buf(),
        })
    }

    /// Write many entries in one transaction (bulk loads: the scale benchmark, imports).
    pub async fn record_many(&self, entries: Vec<Entry>) -> Result<(), LedgerError> {
        self.ask(|r| Job::Many(entries, r)).await
    }

    pub fn path(&self) -> &Path {
        &self.path
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
    // entries.
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-32768;",
    )
    .map_err(err)?;
    // Creating the schema is also the check that the file is writable now.
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
        .map_err(err)?;
    Ok(conn)
}

struct Worker {
    conn: Connection,
    /// Lookups and hits not yet added to the `counters` table.
    lookups: u64,
    hits: u64,
}

impl Worker {
    fn new(conn: Connection) -> Self {
        Worker {
            conn,
            lookups: 0,
            hits: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut queue: VecDeque<Job> = VecDeque::new();
        loop {
            let job = match queue.pop_front() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
            };
            match job {
                Job::Record(e, r) => {
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
                    let result = self.write(batch.iter().map(|(e, _)| &**e));
                    for (_, r) in batch {
                        let _ = r.send(result.clone());
                    }
                }
                Job::Prune(before, r) => {
                    let result = self.prune(before, &rx, &mut queue);
                    let _ = r.send(result);
                }
                other => self.serve(other),
            }
        }
        let _ = self.write(std::iter::empty());
    }

    /// Everything but records (batched in `run`) and prunes.
    fn serve(&mut self, job: Job) {
        match job {
            Job::Record(e, r) => {
                let _ = r.send(self.write(std::iter::once(&*e)));
            }
            Job::Many(es, r) => {
                let _ = r.send(self.write(es.iter()));
            }
            Job::Lookup(q, r) => {
                let result = self.lookup(&q);
                if result.is_ok() {
                    self.lookups += 1;
                    if result.as_ref().is_ok_and(|f| !f.is_empty()) {
                        self.hits += 1;
                    }
                }
                let _ = r.send(result);
            }
            Job::ById(id, r) => {
                let _ = r.send(self.select("message_id = ?1", &id, i64::MIN));
            }
            Job::Stats(r) => {
                let _ = r.send(self.stats());
            }
            Job::Prune(_, r) => {
                // Only reached for a prune asked while another runs: that one covers it.
                let _ = r.send(Ok(0));
            }
        }
    }

    fn write<'e>(&mut self, entries: impl Iterator<Item = &'e Entry>) -> Result<(), LedgerError> {
        let (lookups, hits) = (self.lookups, self.hits);
        let tx = self.conn.transaction().map_err(LedgerError::new)?;
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO entries ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))
                .map_err(LedgerError::new)?;
            for e in entries {
                insert
                    .execute(params![
                        e.message_id,
                        e.thread_index.as_deref().and_then(unhex),
                        e.subject,
                        e.digest.as_deref().and_then(unhex),
                        e.level,
                        e.marking,
                        e.qualifiers.join("\u{1f}"),
                        match e.way {
                            Way::Inbound => 0,
                            Way::Outbound => 1,
                        },
                        e.domains.join(" "),
                        e.time,
                    ])
                    .map_err(LedgerError::new)?;
            }
            if lookups > 0 {
                let mut add = tx
                    .prepare_cached(
                        "INSERT INTO counters (name, value) VALUES (?1, ?2)
                         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    )
                    .map_err(LedgerError::new)?;
                add.execute(params!["lookups", lookups as i64])
                    .map_err(LedgerError::new)?;
                add.execute(params!["hits", hits as i64])
                    .map_err(LedgerError::new)?;
            }
        }
        tx.commit().map_err(LedgerError::new)?;
        self.lookups -= lookups;
        self.hits -= hits;
        Ok(())
    }

    fn select(
        &self,
        condition: &str,
        key: &dyn rusqlite::ToSql,
        since: i64,
    ) -> Result<Vec<Entry>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM entries WHERE {condition} AND time >= ?2 ORDER BY time DESC LIMIT 4"
            ))
            .map_err(LedgerError::new)?;
        let rows = stmt
            .query_map(params![key, since], row_entry)
            .map_err(LedgerError::new)?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(LedgerError::new)
    }

    fn lookup(&self, q: &Query) -> Result<Found, LedgerError> {
        let mut found = Found::default();
        for id in &q.ids {
            found
                .by_id
                .extend(self.select("message_id = ?1", id, q.since)?);
        }
        if let Some(id) = &q.own_id {
            found
                .by_id
                .extend(self.select("message_id = ?1 AND way = 0", id, q.since)?);
        }
        for ti in &q.thread_indexes {
            if let Some(bytes) = unhex(ti) {
                found
                    .by_thread_index
                    .extend(self.select("thread_index = ?1", &bytes, q.since)?);
            }
        }
        if let Some((digest, subject)) = &q.text
            && let Some(d) = unhex(digest)
        {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM entries WHERE digest = ?1 AND subject = ?2 AND way = 0 AND time >= ?3 ORDER BY time DESC LIMIT 4"
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
            lookups: counter("lookups")? + self.lookups,
            hits: counter("hits")? + self.hits,
        })
    }
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
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
