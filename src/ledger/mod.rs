//! The ledger: what the gateway remembers of recent messages, so that a reply marked lower than
//! the message it answers, or an inbound marked message leaving again unchanged, can be seen.
//!
//! Owns: the [`Entry`] a message leaves behind (Message-ID, Exchange Thread-Index, normalised
//! subject, digest of the decoded text, effective marking, direction, recipient domains,
//! time), the [`Store`] trait with its two implementations ([`sqlite`], embedded, the
//! default; [`redis`], shared by the gateways of a cluster), retention pruning with an
//! injectable [`Clock`], and the `[ledger]` daemon settings ([`LedgerConfig`]).
//!
//! Must not: decide anything, know the policy, or store body text (only digests). The filter
//! (`filter/ledger.rs`) asks it and hands what it found to `policy::decide` as plain facts.

pub mod redis;
pub mod sqlite;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the embedded ledger lives unless `[ledger] path` says otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/markgate/ledger.sqlite";
/// Where it goes instead when [`DEFAULT_PATH`] cannot be used (not root) and no path was
/// configured: the working directory, as the README says.
pub const FALLBACK_PATH: &str = "markgate-ledger.sqlite";
/// The Redis URL unless `[ledger] url` says otherwise.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";
/// Longest wait for one ledger call on a message's path.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// The prefix of every Redis key markgate writes.
pub const DEFAULT_PREFIX: &str = "markgate:ledger:";

/// `[ledger] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Sqlite,
    Redis,
    Off,
}

/// `[ledger]`: daemon settings (the retention and what to do in an outage are policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    pub backend: BackendKind,
    /// The SQLite file.
    pub path: PathBuf,
    /// True when `path` was set in the config (then it is never replaced by the fallback).
    pub path_configured: bool,
    /// The Redis URL (`redis://[:password@]host:port/db`).
    pub url: String,
    /// Prefix of the Redis keys (several clusters may share one Redis).
    pub prefix: String,
    /// Longest wait for one lookup on a message's path.
    pub timeout: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            backend: BackendKind::Sqlite,
            path: PathBuf::from(DEFAULT_PATH),
            path_configured: false,
            url: DEFAULT_URL.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Which way a message went through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Way {
    Inbound,
    Outbound,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Inbound => "inbound",
            Way::Outbound => "outbound",
        }
    }
}

/// What one message leaves behind. Never body text: `digest` is a SHA-256 of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub message_id: Option<String>,
    /// Exchange Thread-Index, hex.
    pub thread_index: Option<String>,
    /// Normalised subject (`inspect::thread::normalise_subject`).
    pub subject: String,
    /// SHA-256 of the decoded message text, hex; `None` when the text was not read (a body
    /// too large to hold).
    pub digest: Option<String>,
    /// The effective level's name.
    pub level: String,
    /// The marking as written (with its qualifiers), when there was one.
    pub marking: Option<String>,
    pub qualifiers: Vec<String>,
    pub way: Way,
    /// Recipient domains, lower case.
    pub domains: Vec<String>,
    /// Unix seconds.
    pub time: i64,
}

/// One question: every key a message offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Message-IDs it answers (entries of either direction).
    pub ids: Vec<String>,
    /// Its own Message-ID: only inbound entries are wanted (a redirect repeats one).
    pub own_id: Option<String>,
    /// Exchange Thread-Index values (hex) of its ancestors.
    pub thread_indexes: Vec<String>,
    /// (digest hex, normalised subject), when the text was read: only inbound entries are
    /// wanted, as for `own_id`.
    pub text: Option<(String, String)>,
    /// Entries older than this (unix seconds) are ignored even if not yet pruned.
    pub since: i64,
}

impl Query {
    /// It asks for at least one key.
    pub fn has_keys(&self) -> bool {
        !self.ids.is_empty()
            || self.own_id.is_some()
            || !self.thread_indexes.is_empty()
            || self.text.is_some()
    }
}

/// What a [`Query`] found, by key kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub by_id: Vec<Entry>,
    pub by_thread_index: Vec<Entry>,
    pub by_text: Vec<Entry>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.by_thread_index.is_empty() && self.by_text.is_empty()
    }
}

/// What `markgate ledger stats` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub backend: String,
    pub entries: u64,
    /// Bytes on disk (SQLite: file + WAL) or used by Redis.
    pub bytes: u64,
    /// Unix seconds of the oldest entry.
    pub oldest: Option<i64>,
    /// Lookups answered, and those that found something.
    pub lookups: u64,
    pub hits: u64,
}

/// Why the ledger could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LedgerError(pub String);

impl LedgerError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        LedgerError(e.to_string())
    }
}

/// The store: five operations, two implementations. Calls never block the async runtime.
pub trait Store: Send + Sync + 'static {
    /// Remember one message for `keep` (Redis sets it as the keys' TTL; SQLite relies on
    /// pruning).
    fn record(
        &self,
        entry: Entry,
        keep: Duration,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Entries matching any of the query's keys (one round trip).
    fn lookup(&self, query: Query) -> impl Future<Output = Result<Found, LedgerError>> + Send;
    /// Entries with this Message-ID (for `markgate ledger lookup`).
    fn by_message_id(
        &self,
        id: String,
    ) -> impl Future<Output = Result<Vec<Entry>, LedgerError>> + Send;
    /// Forget entries older than `before` (unix seconds); how many went.
    fn prune(&self, before: i64) -> impl Future<Output = Result<u64, LedgerError>> + Send;
    fn stats(&self) -> impl Future<Output = Result<Stats, LedgerError>> + Send;
}

/// The configured store.
pub enum Backend {
    Sqlite(sqlite::SqliteStore),
    /// Boxed: the Redis client is several hundred bytes, the SQLite handle a channel.
    Redis(Box<redis::RedisStore>),
}

impl Backend {
    /// `sqlite:PATH` or the Redis URL without its password: for logs and audit records.
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite(s) => format!("sqlite:{}", s.path().display()),
            Backend::Redis(r) => r.describe(),
        }
    }

    /// May a lookup by text with this normalised subject find anything? Only the SQLite store
    /// can tell that it cannot (its key filter: no inbound entry has the subject); Redis has
    /// no such filter and always says it may.
    pub fn may_find_text(&self, subject: &str) -> bool {
        match self {
            Backend::Sqlite(s) => s.may_find_text(subject),
            Backend::Redis(_) => true,
        }
    }

    /// Open the configured backend (`None` for `off`). A SQLite ledger at the built-in default
    /// path that cannot be opened (not root) moves to [`FALLBACK_PATH`] in the working
    /// directory; the second value then says why, for a `warn` log.
    pub fn open(config: &LedgerConfig) -> Result<Option<(Backend, Option<String>)>, LedgerError> {
        match config.backend {
            BackendKind::Off => Ok(None),
            BackendKind::Redis => Ok(Some((
                Backend::Redis(Box::new(redis::RedisStore::new(
                    &config.url,
                    &config.prefix,
                    config.timeout,
                )?)),
                None,
            ))),
            BackendKind::Sqlite => match sqlite::SqliteStore::open(&config.path, config.timeout) {
                Ok(s) => Ok(Some((Backend::Sqlite(s), None))),
                Err(e) if !config.path_configured => {
                    let s = sqlite::SqliteStore::open(FALLBACK_PATH.as_ref(), config.timeout)
                        .map_err(|e2| {
                            LedgerError(format!(
                                "{}: {e}; and the fallback ./{FALLBACK_PATH}: {e2}",
                                config.path.display()
                            ))
                        })?;
                    let why = format!(
                        "cannot use {} ({e}); the ledger is ./{FALLBACK_PATH} in the working directory",
                        config.path.display()
                    );
                    Ok(Some((Backend::Sqlite(s), Some(why))))
                }
                Err(e) => Err(LedgerError(format!("{}: {e}", config.path.display()))),
            },
        }
    }
}

impl Store for Backend {
    async fn record(&self, entry: Entry, keep: Duration) -> Result<(), LedgerError> {
        match self {
            Backend::Sqlite(s) => s.record(entry, keep).await,
            Backend::Redis(r) => r.record(entry, keep).await,
        }
    }
    async fn lookup(&self, query: Query) -> Result<Found, LedgerError> {
        match self {
            Backend::Sqlite(s) => s.lookup(query).await,
            Backend::Redis(r) => r.lookup(query).await,
        }
    }
    async fn by_message_id(&self, id: String) -> Result<Vec<Entry>, LedgerError> {
        match self {
            Backend::Sqlite(s) => s.by_message_id(id).await,
            Backend::Redis(r) => r.by_message_id(id).await,
        }
    }
    async fn prune(&self, before: i64) -> Result<u64, LedgerError> {
        match self {
            Backend::Sqlite(s) => s.prune(before).await,
            Backend::Redis(r) => r.prune(before).await,
        }
    }
    async fn stats(&self) -> Result<Stats, LedgerError> {
        match self {
            Backend::Sqlite(s) => s.stats().await,
            Backend::Redis(r) => r.stats().await,
        }
    }
}

/// The time, in unix seconds. Injected so retention can be tested without waiting 30 days.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Unix seconds now.
    pub fn now_secs(self) -> i64 {
        self.now()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told (tests, `policy test --ledger`).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: i64) -> Self {
        ManualClock(AtomicI64::new(t))
    }
    pub fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock> Clock for Arc<C> {
    fn now(&self) -> i64 {
        (**self).now()
    }
}

/// Retention in seconds for a number of days.
pub fn retention_secs(days: u32) -> i64 {
    i64::from(days) * 86_400
}

/// Prune everything older than `retention_days` by `clock`: what the daemon's pruner runs
/// every [`PRUNE_EVERY`] and `markgate ledger prune` runs once.
pub async fn prune_now<S: Store, C: Clock + ?Sized>(
    store: &S,
    clock: &C,
    retention_days: u32,
) -> Result<u64, LedgerError> {
    store
        .prune(clock.now() - retention_secs(retention_days))
        .await
}

/// How often the daemon prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
