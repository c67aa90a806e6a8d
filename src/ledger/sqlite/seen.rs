//! Which keys the ledger may hold: a Bloom filter over every key of every entry in the file
//! and in memory, so that a lookup whose keys no entry has is answered "nothing" without
//! reading SQLite.
//!
//! That is most lookups: a new message going out asks whether it is a copy of one that came
//! in (its own Message-ID and its text), and it almost never is. Reading the file for that
//! answer cost more than anything else the ledger does on the connection's thread (a read
//! transaction, two index searches, the file locks). The filter answers it with a few bit
//! tests; a key it cannot rule out (one in the ledger, or a false positive, under 2 in 100
//! at the filter's capacity) is read from the file as before.
//!
//! The filter is built from the file by a thread of its own: at the store's first commit,
//! again when it has taken more keys than it was sized for (pruning never takes keys out),
//! and when another process has written the file (seen by the ledger thread,
//! `mark_foreign_write`; a build running at that moment is thrown away, its snapshot may
//! predate the write). Until a build has finished, it says nothing (`narrow` gives `None`)
//! and every lookup reads the file. A build never loses a key that arrives meanwhile: before
//! its read snapshot begins it takes the keys of every uncommitted entry, and every key added
//! while it runs is logged and added to the new filter when it is swapped in.
//!
//! Owns: the filter, its builds and its keys' hashing (the file's rules: ids as written,
//! Thread-Index and digest as bytes, text keys for inbound entries only).
//!
//! It also holds each inbound entry's normalised subject on its own, so that an outbound
//! message can be told, before its text is digested, that no inbound entry has its subject
//! and so none can be the message it copies ([`Seen::may_find_text`]): the digest is then not
//! made at all.
//!
//! Must not: say "absent" for a key any entry in the file or in memory has; write the file.

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Shared, unhex};
use crate::ledger::{Entry, Query, Way};

/// Filter bits per key it is sized for: with [`HASHES`] bit tests in one block, about 1.5 %
/// false positives when full.
const BITS_PER_KEY: u64 = 10;
const HASHES: u64 = 7;
/// Keys a filter is sized for at least (about 640 KiB of bits): a new ledger grows into it
/// without a rebuild for a while.
const MIN_KEYS: u64 = 256 * 1024;
/// A failed build is tried again after this long (the file may be locked meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A key kind and its value, hashed together (an id and a subject with the same text are
/// different keys).
#[derive(Hash)]
enum Key<'a> {
    Id(&'a str),
    ThreadIndex(&'a [u8]),
    Text(&'a [u8], &'a str),
    /// The subject of an entry that has a `Text` key.
    Subject(&'a str),
}

/// The bits, in blocks of one cache line. Each key sets [`HASHES`] bits in one block (chosen
/// by its first hash; the bits by its second), so a test or an insert touches one cache line,
/// not one per bit: with the bits spread over the whole filter every key cost [`HASHES`]
/// cache misses, more than the hashing.
struct Bloom {
    blocks: Vec<[u64; 8]>,
    /// Keys it was sized for, and keys added so far.
    capacity: u64,
    added: u64,
}

impl Bloom {
    /// A filter for `keys` keys, with room to grow to twice as many.
    fn for_keys(keys: u64) -> Bloom {
        let capacity = keys.max(MIN_KEYS) * 2;
        let nbits = capacity * BITS_PER_KEY;
        Bloom {
            blocks: vec![[0; 8]; nbits.div_ceil(512) as usize],
            capacity,
            added: 0,
        }
    }

    /// A key's block (the first hash spread over the blocks by multiply-shift, so their
    /// number need not be a power of two) and its bits in it (nine bits of the second hash
    /// each).
    fn place(&self, (h1, h2): (u64, u64)) -> (usize, impl Iterator<Item = u64> + use<>) {
        let block = ((u128::from(h1) * self.blocks.len() as u128) >> 64) as usize;
        (block, (0..HASHES).map(move |i| (h2 >> (i * 9)) & 511))
    }

    fn insert(&mut self, h: (u64, u64)) {
        let (block, bits) = self.place(h);
        let block = &mut self.blocks[block];
        for b in bits {
            block[(b / 64) as usize] |= 1 << (b % 64);
        }
        self.added += 1;
    }

    fn may_have(&self, h: (u64, u64)) -> bool {
        let (block, mut bits) = self.place(h);
        let block = &self.blocks[block];
        bits.all(|b| block[(b / 64) as usize] & (1 << (b % 64)) != 0)
    }
}

#[derive(Default)]
struct State {
    /// The filter lookups may trust; `None` before the first build and after a foreign
    /// write, until the next build finishes.
    bloom: Option<Bloom>,
    /// A build is running: the keys it must add when it swaps its filter in.
    log: Option<Vec<(u64, u64)>>,
    /// No build starts before this (one failed).
    not_before: Option<Instant>,
    /// Another process wrote the file while a build was running: that build's snapshot may
    /// predate the write, so its filter is thrown away, not swapped in.
    foreign_during_build: bool,
}

/// A fast keyed hash for the filter's bit positions (multiply and xor-shift, eight bytes a
/// step). Not SipHash, which cost more than the rest of a lookup: the worst an attacker who
/// guessed the seed could do is make keys collide, and a collision only costs the file read
/// the filter would have saved.
#[derive(Clone, Copy)]
pub(super) struct Seed(u64);

impl Default for Seed {
    /// A seed of its own, at random.
    fn default() -> Seed {
        Seed(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }
}

pub(super) struct Mix(u64);

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for Mix {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ (bytes.len() as u64).wrapping_mul(MUL);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(word)).wrapping_mul(MUL);
            h ^= h >> 29;
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(MUL);
        self.0 = h ^ (h >> 32);
    }

    fn finish(&self) -> u64 {
        let h = (self.0 ^ (self.0 >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 30)
    }
}

impl BuildHasher for Seed {
    type Hasher = Mix;
    fn build_hasher(&self) -> Mix {
        Mix(self.0)
    }
}

/// The filter, shared by the store's handles, the ledger thread and the builds.
pub(super) struct Seen {
    state: Mutex<State>,
    /// Two independent hashes per key; seeded at random per process.
    first: Seed,
    second: Seed,
}

impl Default for Seen {
    fn default() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        Seen {
            state: Mutex::default(),
            first: Seed(random.hash_one(1u8)),
            second: Seed(random.hash_one(2u8)),
        }
    }
}

impl Seen {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hash(&self, key: &Key<'_>) -> (u64, u64) {
        (self.first.hash_one(key), self.second.hash_one(key))
    }

    /// The hashes of the keys `e` can be found by in the file (`super::lookup`'s rules).
    fn keys_of(&self, e: &Entry, into: &mut Vec<(u64, u64)>) {
        if let Some(id) = &e.message_id {
            into.push(self.hash(&Key::Id(id)));
        }
        if let Some(ti) = e.thread_index.as_deref().and_then(unhex) {
            into.push(self.hash(&Key::ThreadIndex(&ti)));
        }
        if e.way == Way::Inbound
            && let Some(d) = e.digest.as_deref().and_then(digest_bytes)
        {
            into.push(self.hash(&Key::Text(&d, &e.subject)));
            into.push(self.hash(&Key::Subject(&e.subject)));
        }
    }

    /// An entry is about to become findable (in memory or in the file).
    pub(super) fn add(&self, e: &Entry) {
        let mut hashes = Vec::with_capacity(4);
        self.keys_of(e, &mut hashes);
        let mut state = self.state();
        for h in hashes {
            if let Some(b) = &mut state.bloom {
                b.insert(h);
            }
            if let Some(log) = &mut state.log {
                log.push(h);
            }
        }
    }

    /// `q` without the keys no entry has: `None` when the filter cannot tell yet (ask the
    /// file everything), a query with no keys when no entry has any of them.
    pub(super) fn narrow(&self, q: &Query) -> Option<Query> {
        let ids: Vec<(u64, u64)> = q.ids.iter().map(|id| self.hash(&Key::Id(id))).collect();
        let own = q.own_id.as_deref().map(|id| self.hash(&Key::Id(id)));
        // A key that is not hex cannot be hashed as the file stores it: kept, never ruled out.
        let indexes: Vec<Option<(u64, u64)>> = q
            .thread_indexes
            .iter()
            .map(|ti| unhex(ti).map(|b| self.hash(&Key::ThreadIndex(&b))))
            .collect();
        let text = q
            .text
            .as_ref()
            .map(|(d, subject)| digest_bytes(d).map(|d| self.hash(&Key::Text(&d, subject))));
        let state = self.state();
        let bloom = state.bloom.as_ref()?;
        let may = |h: Option<(u64, u64)>| h.is_none_or(|h| bloom.may_have(h));
        Some(Query {
            ids: q
                .ids
                .iter()
                .zip(ids)
                .filter(|(_, h)| bloom.may_have(*h))
                .map(|(id, _)| id.clone())
                .collect(),
            // Copied only when kept: ruling a key out should cost no allocation.
            own_id: if may(own) { q.own_id.clone() } else { None },
            thread_indexes: q
                .thread_indexes
                .iter()
                .zip(indexes)
                .filter(|(_, h)| may(*h))
                .map(|(ti, _)| ti.clone())
                .collect(),
            text: if text.is_none_or(may) {
                q.text.clone()
            } else {
                None
            },
            since: q.since,
        })
    }

    /// May an entry be found by a text key with this (normalised) subject? `false` only when
    /// the filter is built and no inbound entry with a digest has the subject: then no lookup
    /// by text with it can find anything, whatever the digest.
    pub(super) fn may_find_text(&self, subject: &str) -> bool {
        let h = self.hash(&Key::Subject(subject));
        self.state().bloom.as_ref().is_none_or(|b| b.may_have(h))
    }

    /// A build has finished and no foreign write was seen since.
    pub(super) fn ready(&self) -> bool {
        self.state().bloom.is_some()
    }

    /// Another process has written the file: entries this process never saw may be in it.
    /// Lookups read the file until a new build has finished.
    pub(super) fn mark_foreign_write(&self) {
        let mut state = self.state();
        state.bloom = None;
        if state.log.is_some() {
            state.foreign_during_build = true;
        }
    }

    /// A build should start now: none has finished since the filter was dropped (or ever),
    /// or the filter holds more keys than it was sized for; and none is running.
    pub(super) fn build_due(&self) -> bool {
        let state = self.state();
        state.log.is_none()
            && state.not_before.is_none_or(|t| Instant::now() >= t)
            && state.bloom.as_ref().is_none_or(|b| b.added > b.capacity)
    }
}

/// A digest's hex as its 32 bytes (on the stack: every message has one), `None` when it is
/// not 64 hex digits (such a digest is stored as NULL, so it finds nothing by text).
fn digest_bytes(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *o = super::hex_digit(pair[0])? << 4 | super::hex_digit(pair[1])?;
    }
    Some(out)
}

/// Build a filter from the file at `path` on a thread of its own and swap it in. Does
/// nothing when a build is running already.
pub(super) fn start_build(shared: Arc<Shared>, path: PathBuf) {
    {
        // Memory before the seen lock (the order `record_detached` takes them in): every
        // entry not committed yet is logged now, before the build's snapshot begins, and
        // every later one is logged by `add`.
        let mem = shared.mem();
        let mut state = shared.seen.state();
        if state.log.is_some() {
            return;
        }
        let mut log = Vec::new();
        for e in mem.entries() {
            shared.seen.keys_of(e, &mut log);
        }
        state.log = Some(log);
        state.foreign_during_build = false;
    }
    let theirs = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("markgate-ledger-filter".into())
        .spawn(move || {
            let built = build(&theirs.seen, &path).map_err(|e| {
                format!(
                    "cannot read {} to build its key filter: {e}",
                    path.display()
                )
            });
            finish(&theirs.seen, built);
        });
    if let Err(e) = spawned {
        finish(
            &shared.seen,
            Err(format!("cannot start the key filter's build thread: {e}")),
        );
    }
}

/// Read every key of the file in one read transaction (one snapshot).
fn build(seen: &Seen, path: &std::path::Path) -> rusqlite::Result<Bloom> {
    let conn = super::inline::open_reader(path)?;
    // A build waits for a busy file rather than failing at once as lookups do.
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        let count: i64 = conn.query_row("SELECT count(*) FROM entries", [], |r| r.get(0))?;
        // At most four keys per entry (its id, its Thread-Index, and an inbound one's text
        // and subject); about three in most ledgers.
        let mut bloom = Bloom::for_keys(count.max(0) as u64 * 3);
        let mut stmt =
            conn.prepare("SELECT message_id, thread_index, digest, subject, way FROM entries")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if let Some(id) = r.get_ref(0)?.as_str_or_null()? {
                bloom.insert(seen.hash(&Key::Id(id)));
            }
            if let Some(ti) = r.get_ref(1)?.as_blob_or_null()? {
                bloom.insert(seen.hash(&Key::ThreadIndex(ti)));
            }
            if r.get::<_, i64>(4)? == 0
                && let Some(d) = r.get_ref(2)?.as_blob_or_null()?
            {
                let subject = r.get_ref(3)?.as_str()?;
                bloom.insert(seen.hash(&Key::Text(d, subject)));
                bloom.insert(seen.hash(&Key::Subject(subject)));
            }
        }
        Ok(bloom)
    })();
    let _ = conn.execute_batch("COMMIT");
    result
}

/// Swap a built filter in with the keys logged meanwhile, or note the failure.
fn finish(seen: &Seen, built: Result<Bloom, String>) {
    let mut state = seen.state();
    let log = state.log.take().unwrap_or_default();
    if std::mem::take(&mut state.foreign_during_build) {
        // Left unbuilt: `build_due` starts another at the ledger thread's next commit.
        return;
    }
    match built {
        Ok(mut bloom) => {
            for h in log {
                bloom.insert(h);
            }
            state.bloom = Some(bloom);
            state.not_before = None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "thread ledger: no key filter; lookups read the file meanwhile");
            state.not_before = Some(Instant::now() + RETRY_AFTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, way: Way) -> Entry {
        Entry {
            message_id: Some(format!("<m{i}@example>")),
            thread_index: i
                .is_multiple_of(3)
                .then(|| crate::inspect::thread::hex(&i.to_be_bytes())),
            subject: format!("subject {}", i % 5),
            digest: Some(crate::inspect::thread::hex(&[(i % 251) as u8; 32])),
            level: "OFFICIAL".into(),
            marking: None,
            qualifiers: Vec::new(),
            way,
            domains: Vec::new(),
            time: 0,
        }
    }

    fn query_for(e: &Entry) -> Query {
        Query {
            ids: vec![e.message_id.clone().unwrap_or_default()],
            own_id: e.message_id.clone(),
            thread_indexes: e.thread_index.iter().cloned().collect(),
            text: Some((e.digest.clone().unwrap_or_default(), e.subject.clone())),
            since: 0,
        }
    }

    fn ready(seen: &Seen) {
        seen.state().bloom = Some(Bloom::for_keys(0));
    }

    #[test]
    fn it_says_nothing_until_built_and_after_a_foreign_write() {
        let seen = Seen::default();
        let q = query_for(&entry(1, Way::Inbound));
        assert_eq!(seen.narrow(&q), None);
        assert!(seen.build_due());
        ready(&seen);
        assert!(!seen.build_due());
        assert!(!seen.narrow(&q).expect("built").has_keys());
        seen.mark_foreign_write();
        assert_eq!(seen.narrow(&q), None);
        assert!(seen.build_due());
    }

    /// A build that was running when another process wrote the file read a snapshot that
    /// may miss the write: its filter is not swapped in, and another build is due.
    #[test]
    fn a_build_overtaken_by_a_foreign_write_is_thrown_away() {
        let seen = Seen::default();
        seen.state().log = Some(Vec::new());
        seen.mark_foreign_write();
        finish(&seen, Ok(Bloom::for_keys(0)));
        assert!(!seen.ready(), "the stale filter must not be used");
        assert!(seen.build_due());
        // The next build, with no foreign write during it, is used.
        seen.state().log = Some(Vec::new());
        finish(&seen, Ok(Bloom::for_keys(0)));
        assert!(seen.ready());
    }

    /// Never a false "absent"; few false "maybe"s when full.
    #[test]
    fn added_keys_are_kept_and_others_mostly_ruled_out() {
        let seen = Seen::default();
        ready(&seen);
        let capacity = seen.state().bloom.as_ref().map_or(0, |b| b.capacity);
        // Four keys per inbound entry (id, Thread-Index for a third of them, text, subject),
        // so a quarter of capacity in entries about fills it.
        let n = capacity / 4;
        for i in 0..n {
            seen.add(&entry(i, Way::Inbound));
        }
        for i in (0..n).step_by(97) {
            let e = entry(i, Way::Inbound);
            let q = query_for(&e);
            let narrowed = seen.narrow(&q).expect("built");
            assert_eq!(narrowed.own_id, e.message_id);
            assert_eq!(narrowed.ids, q.ids);
            assert_eq!(narrowed.text, q.text);
            assert_eq!(narrowed.thread_indexes, q.thread_indexes);
        }
        let mut maybe = 0;
        let tries = 20_000;
        for i in n..n + tries {
            let q = Query {
                own_id: Some(format!("<other{i}@example>")),
                ..Query::default()
            };
            if seen.narrow(&q).expect("built").own_id.is_some() {
                maybe += 1;
            }
        }
        assert!(
            maybe * 100 < tries * 2,
            "{maybe} false positives in {tries}"
        );
    }

    /// The file's rules: an outbound entry is not found by its text; a Thread-Index is
    /// matched as bytes (any case of hex); a key that is not hex is never ruled out.
    #[test]
    fn keys_follow_the_files_rules() {
        let seen = Seen::default();
        ready(&seen);
        let out = entry(3, Way::Outbound);
        seen.add(&out);
        let mut q = query_for(&out);
        q.thread_indexes = vec![out.thread_index.clone().unwrap_or_default().to_uppercase()];
        let narrowed = seen.narrow(&q).expect("built");
        assert_eq!(narrowed.own_id, out.message_id);
        assert_eq!(narrowed.thread_indexes, q.thread_indexes);
        assert_eq!(
            narrowed.text, None,
            "outbound entries are not found by text"
        );
        let odd = Query {
            thread_indexes: vec!["not hex".into()],
            text: Some(("zz".into(), "s".into())),
            ..Query::default()
        };
        assert_eq!(seen.narrow(&odd), Some(odd.clone()));
    }

    #[test]
    fn digest_bytes_reads_what_unhex_reads() {
        let lower = crate::inspect::thread::hex(&[0xab; 32]);
        for s in [
            lower.clone(),
            lower.to_uppercase(),
            "zz".repeat(32),
            lower[..62].into(),
        ] {
            let expected = unhex(&s).filter(|b| b.len() == 32);
            assert_eq!(digest_bytes(&s).map(|b| b.to_vec()), expected, "{s}");
        }
    }

    /// A build started while entries wait uncommitted, and entries added while it runs, are
    /// all in the filter it swaps in.
    #[test]
    fn a_build_keeps_what_memory_holds_and_what_arrives_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.sqlite");
        let conn = super::super::open_connection(&path, Duration::from_secs(5)).expect("open");
        let stored = entry(10, Way::Inbound);
        conn.execute(
            "INSERT INTO entries (message_id, thread_index, subject, digest, level, qualifiers, \
             way, domains, time) VALUES (?1, ?2, ?3, ?4, 'OFFICIAL', '', 0, '', 0)",
            rusqlite::params![
                stored.message_id,
                stored.thread_index.as_deref().and_then(unhex),
                stored.subject,
                stored.digest.as_deref().and_then(unhex)
            ],
        )
        .expect("insert");
        let shared = Arc::new(Shared::default());
        let waiting = entry(11, Way::Inbound);
        shared.seen.add(&waiting);
        shared.mem().push(waiting.clone(), Box::new(|_| {}));
        start_build(shared.clone(), path.clone());
        let arriving = entry(12, Way::Inbound);
        shared.seen.add(&arriving);
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.seen.narrow(&Query::default()).is_none() {
            assert!(Instant::now() < deadline, "the build did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        for e in [&stored, &waiting, &arriving] {
            let q = query_for(e);
            assert_eq!(
                shared.seen.narrow(&q),
                Some(q.clone()),
                "{:?}",
                e.message_id
            );
            assert!(shared.seen.may_find_text(&e.subject), "{}", e.subject);
        }
        assert!(!shared.seen.may_find_text("subject 4"));
    }

    /// An outbound message may skip its digest only when no inbound entry with a digest has
    /// its subject: never before the filter is built or after a foreign write, never for a
    /// subject an inbound entry has; an outbound entry's subject does not count (it is not
    /// found by text), nor does an inbound one's without a digest.
    #[test]
    fn only_inbound_entries_with_a_digest_make_their_subject_findable_by_text() {
        let seen = Seen::default();
        assert!(seen.may_find_text("anything"), "not built: cannot tell");
        ready(&seen);
        assert!(!seen.may_find_text("anything"));
        let out = Entry {
            subject: "sent out".into(),
            ..entry(1, Way::Outbound)
        };
        let undigested = Entry {
            subject: "too large to digest".into(),
            digest: None,
            ..entry(2, Way::Inbound)
        };
        let inbound = Entry {
            subject: "came in".into(),
            ..entry(3, Way::Inbound)
        };
        for e in [&out, &undigested, &inbound] {
            seen.add(e);
        }
        assert!(!seen.may_find_text("sent out"));
        assert!(!seen.may_find_text("too large to digest"));
        assert!(seen.may_find_text("came in"));
        seen.mark_foreign_write();
        assert!(seen.may_find_text("anything"));
    }
}
