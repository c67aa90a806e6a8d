//! The shared ledger for gateway clusters: Redis, through the `redis` crate on tokio.
//!
//! Keys (under the configured prefix, `markgate:ledger:` by default), each expiring by TTL
//! after the policy's retention:
//! - `m:<Message-ID>`: a hash, one field per entry of that id (the entry's slot, below), the
//!   entry as JSON: each entry's JSON is stored here, once;
//! - `t:<Thread-Index hex>`, `d:<digest hex>:<SHA-256 of the normalised subject, hex>`: hashes
//!   that find entries by Exchange thread index and, inbound ones only (as SQLite's text index),
//!   by text + subject; per entry, its slot and
//!   `m:<Message-ID>`, the key (under the prefix) holding its JSON. An entry without a
//!   Message-ID has no `m:` key, and its JSON is stored in these instead (as every entry's was
//!   before: such values, starting with `{`, are read as entries wherever they are found);
//! - `times`: a sorted set of every entry's slot by time, and `slots`, which keys hold each
//!   slot (for `stats` and `prune`: pruning takes old entries out of their keys at once; the
//!   keys also expire by themselves);
//! - `lookups`, `hits`: counters for the hit rate.
//!
//! An entry's slot tells it apart within its keys: 32 hex digits of the SHA-256 of its
//! Message-ID, direction and digest (entries written before were slotted by that text itself;
//! both kinds are read, pruned and expire alike).
//!
//! A pointer whose `m:` key has expired or been pruned finds nothing: the entry it named was
//! at least as old as that key's newest entry, so it is past the retention too.
//!
//! One multiplexed connection is shared by every message; when a call fails or times out it
//! is dropped and the next call connects again, so a restarted Redis is picked up without
//! restarting markgate and a hung one costs each message at most the timeout.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use super::{Entry, Found, LedgerError, Query, Stats, Store, Way};

pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
    shown: String,
}

impl RedisStore {
    /// Check the URL; connecting waits for the first call (Redis may come up after markgate).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, LedgerError> {
        let client = redis::Client::open(url)
            .map_err(|e| LedgerError(format!("bad Redis URL {}: {e}", hide_password(url))))?;
        Ok(RedisStore {
            client,
            prefix: prefix.to_owned(),
            timeout,
            conn: Mutex::new(None),
            shown: hide_password(url),
        })
    }

    /// The URL without its password.
    pub fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn connection(&self) -> Result<MultiplexedConnection, LedgerError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| LedgerError(format!("connecting timed out after {:?}", self.timeout)))?
            .map_err(LedgerError::new)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Run a pipeline with the timeout; on any failure forget the connection.
    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, LedgerError> {
        let mut c = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut c)).await;
        let out = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(LedgerError::new(e)),
            Err(_) => Err(LedgerError(format!("timed out after {:?}", self.timeout))),
        };
        if out.is_err() {
            *self.conn.lock().await = None;
        }
        out
    }

    fn key(&self, kind: &str, k: &str) -> String {
        format!("{}{kind}:{k}", self.prefix)
    }

    fn plain(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn text_key(&self, digest: &str, subject: &str) -> String {
        let s = crate::inspect::thread::hex(&Sha256::digest(subject.as_bytes()));
        self.key("d", &format!("{digest}:{s}"))
    }
}

impl Store for RedisStore {
    async fn record(&self, entry: Entry, keep: Duration) -> Result<(), LedgerError> {
        let json = serde_json::to_string(&entry).map_err(LedgerError::new)?;
        let ttl = i64::try_from(keep.as_secs().max(1)).unwrap_or(i64::MAX);
        let slot = slot(&entry);
        // The key holding the JSON, and the keys that point at it (or hold it too, for an
        // entry without a Message-ID).
        let home = entry.message_id.as_deref().map(|id| format!("m:{id}"));
        let mut keys = Vec::new();
        if let Some(home) = &home {
            keys.push(self.plain(home));
        }
        if let Some(ti) = &entry.thread_index {
            keys.push(self.key("t", ti));
        }
        // Only inbound entries are ever wanted by their text (a copy leaving is matched
        // against what came in; the thread rules read nothing else), so, as in SQLite's text
        // index, only they are filed under it.
        if let Some(d) = entry.digest.as_ref().filter(|_| entry.way == Way::Inbound) {
            keys.push(self.text_key(d, &entry.subject));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (i, k) in keys.iter().enumerate() {
            let value = match &home {
                Some(home) if i > 0 => home,
                _ => &json,
            };
            pipe.cmd("HSET").arg(k).arg(&slot).arg(value).ignore();
            pipe.cmd("EXPIRE").arg(k).arg(ttl).ignore();
        }
        pipe.cmd("ZADD")
            .arg(self.plain("times"))
            .arg(entry.time)
            .arg(&slot)
            .ignore();
        // Which keys hold this entry, so that pruning can take it out of each.
        let held = serde_json::to_string(&keys).map_err(LedgerError::new)?;
        pipe.cmd("HSET")
            .arg(self.plain("slots"))
            .arg(&slot)
            .arg(held)
            .ignore();
        self.run::<()>(&pipe).await
    }

    async fn lookup(&self, query: Query) -> Result<Found, LedgerError> {
        let mut pipe = redis::pipe();
        let ids: Vec<&String> = query.ids.iter().chain(query.own_id.as_ref()).collect();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.key("m", id));
        }
        for ti in &query.thread_indexes {
            pipe.cmd("HGETALL").arg(self.key("t", ti));
        }
        if let Some((d, s)) = &query.text {
            pipe.cmd("HGETALL").arg(self.text_key(d, s));
        }
        let n_ids = ids.len();
        let n_ti = query.thread_indexes.len();
        let answers: Vec<Vec<(String, String)>> = if n_ids + n_ti == 0 && query.text.is_none() {
            Vec::new()
        } else {
            self.run(&pipe).await?
        };
        // Values naming the key that holds the JSON are read from there, in one more round
        // trip (only when a thread index or text matched).
        let mut pointers = redis::pipe();
        let mut pointed = 0;
        for (slot, value) in answers.iter().flatten() {
            if !value.starts_with('{') {
                pointers.cmd("HGET").arg(self.plain(value)).arg(slot);
                pointed += 1;
            }
        }
        let resolved: Vec<Option<String>> = if pointed == 0 {
            Vec::new()
        } else {
            self.run(&pointers).await?
        };
        let mut resolved = resolved.into_iter();
        let mut parse = |values: &[Vec<(String, String)>]| -> Vec<Entry> {
            values
                .iter()
                .flatten()
                .filter_map(|(_, v)| {
                    if v.starts_with('{') {
                        serde_json::from_str::<Entry>(v).ok()
                    } else {
                        serde_json::from_str::<Entry>(&resolved.next()??).ok()
                    }
                })
                .filter(|e| e.time >= query.since)
                .collect()
        };
        let found = Found {
            by_id: parse(answers.get(..n_ids).unwrap_or(&[])),
            by_thread_index: parse(answers.get(n_ids..n_ids + n_ti).unwrap_or(&[])),
            by_text: parse(answers.get(n_ids + n_ti..).unwrap_or(&[])),
        };
        let mut count = redis::pipe();
        count.cmd("INCR").arg(self.plain("lookups")).ignore();
        if !found.is_empty() {
            count.cmd("INCR").arg(self.plain("hits")).ignore();
        }
        // The hit rate is a statistic: a lost increment must not fail the lookup.
        let _ = self.run::<()>(&count).await;
        Ok(found)
    }

    async fn by_message_id(&self, id: String) -> Result<Vec<Entry>, LedgerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HVALS").arg(self.key("m", &id));
        let v: Vec<Vec<String>> = self.run(&pipe).await?;
        Ok(v.iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect())
    }

    async fn prune(&self, before: i64) -> Result<u64, LedgerError> {
        let mut total = 0u64;
        loop {
            // A chunk at a time, so a big backlog never holds Redis (or the caller) for long.
            let mut ask = redis::pipe();
            ask.cmd("ZRANGEBYSCORE")
                .arg(self.plain("times"))
                .arg("-inf")
                .arg(format!("({before}"))
                .arg("LIMIT")
                .arg(0)
                .arg(1000);
            let (slots,): (Vec<String>,) = self.run(&ask).await?;
            if slots.is_empty() {
                return Ok(total);
            }
            let mut held = redis::pipe();
            for slot in &slots {
                held.cmd("HGET").arg(self.plain("slots")).arg(slot);
            }
            let keys: Vec<Option<String>> = self.run(&held).await?;
            let mut drop = redis::pipe();
            drop.atomic();
            for (slot, keys) in slots.iter().zip(keys) {
                let keys: Vec<String> = keys
                    .and_then(|k| serde_json::from_str(&k).ok())
                    .unwrap_or_default();
                for k in keys {
                    drop.cmd("HDEL").arg(k).arg(slot).ignore();
                }
                drop.cmd("HDEL").arg(self.plain("slots")).arg(slot).ignore();
                drop.cmd("ZREM").arg(self.plain("times")).arg(slot).ignore();
            }
            self.run::<()>(&drop).await?;
            total += slots.len() as u64;
        }
    }

    async fn stats(&self) -> Result<Stats, LedgerError> {
        let times = self.plain("times");
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(&times);
        pipe.cmd("ZRANGE")
            .arg(&times)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        pipe.cmd("GET").arg(self.plain("lookups"));
        pipe.cmd("GET").arg(self.plain("hits"));
        pipe.cmd("INFO").arg("memory");
        let (entries, oldest, lookups, hits, info): StatsAnswer = self.run(&pipe).await?;
        let bytes = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Stats {
            backend: self.describe(),
            entries,
            bytes,
            oldest: oldest.first().map(|(_, t)| *t as i64),
            lookups: lookups.unwrap_or(0),
            hits: hits.unwrap_or(0),
        })
    }
}

/// An entry's field in its keys: 32 hex digits of the SHA-256 of its Message-ID, direction and
/// digest (what tells entries of one Message-ID apart; the text itself was ~130 bytes, stored
/// four times per entry).
fn slot(e: &Entry) -> String {
    let mut h = Sha256::new();
    h.update(e.message_id.as_deref().unwrap_or("").as_bytes());
    h.update(b"|");
    h.update(e.way.as_str().as_bytes());
    h.update(b"|");
    h.update(e.digest.as_deref().unwrap_or("").as_bytes());
    crate::inspect::thread::hex(&h.finalize()[..16])
}

/// ZCARD, ZRANGE … WITHSCORES, GET lookups, GET hits, INFO memory.
type StatsAnswer = (u64, Vec<(String, f64)>, Option<u64>, Option<u64>, String);

/// `redis://user:secret@host/` → `redis://user:***@host/`.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::hide_password("redis://:s3cret@10.0.0.1:6379/2"),
            "redis://:***@10.0.0.1:6379/2"
        );
        assert_eq!(
            super::hide_password("redis://127.0.0.1/"),
            "redis://127.0.0.1/"
        );
    }
}
