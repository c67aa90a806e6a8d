//! The entries other connections to the file cannot see yet, indexed by the keys a lookup
//! asks for.
//!
//! At 64 connections a few hundred entries wait for each commit, and every message's lookup
//! read them all (a scan with string comparisons per entry). Here each entry is filed under
//! a hash of each key it can be found by (its Message-ID, its Thread-Index, and, inbound, its
//! text digest with its subject), so a lookup reads only the entries sharing one of its
//! keys, then checks them by the same rules as the file's statements (a hash collision only
//! costs a comparison).
//!
//! Owns: the order entries were remembered in, which of them the ledger thread has taken
//! into its open transaction, and the completion callbacks of those it has not.
//!
//! Must not: touch the file, or decide when anything is committed (that is the thread's).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use super::Done;
use super::seen::Seed;
use crate::ledger::{Entry, Found, Query, Way};

/// The kinds of key an entry is filed under (part of the hash, so an id and a Thread-Index
/// with the same text do not share a slot).
#[derive(Hash)]
enum Key<'a> {
    Id(&'a str),
    ThreadIndex(&'a str),
    Text(&'a str, &'a str),
}

/// One uncommitted entry, its place in the order of arrival and the hashes it is filed
/// under (kept: hashing them again to unfile it cost as much as the filing).
struct Held {
    seq: u64,
    entry: Arc<Entry>,
    keys: [Option<u64>; 3],
}

/// Uncommitted entries, oldest first: the first `taken` are in the thread's open transaction
/// (oldest first, left once committed or failed), the rest are detached writes waiting for
/// the thread.
#[derive(Default)]
pub(super) struct Mem {
    held: VecDeque<Held>,
    taken: usize,
    /// The callbacks of `held[taken..]`, in the same order.
    done: Vec<Done>,
    /// Key hash -> the `seq` of each held entry with that key, ascending.
    index: HashMap<u64, Seqs, BuildHasherDefault<Hashed>>,
    /// Keys are hashed with the key filter's keyed hash, not SipHash: SipHash for each key,
    /// and the map's SipHash again over that hash, cost more than the rest of filing an entry.
    hasher: Seed,
    next: u64,
}

/// The entries filed under one key: nearly always one (every message its own id), kept
/// without an allocation of its own.
enum Seqs {
    One(u64),
    Many(Vec<u64>),
}

impl Seqs {
    fn push(&mut self, seq: u64) {
        match self {
            Seqs::One(first) => *self = Seqs::Many(vec![*first, seq]),
            Seqs::Many(v) => v.push(seq),
        }
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Seqs::One(s) => std::slice::from_ref(s),
            Seqs::Many(v) => v,
        }
    }

    /// Take `seq` out; true when none is left.
    fn remove(&mut self, seq: u64) -> bool {
        match self {
            Seqs::One(s) => *s == seq,
            Seqs::Many(v) => {
                v.retain(|s| *s != seq);
                v.is_empty()
            }
        }
    }
}

/// The index's keys are keyed hashes already: the map uses them as they are.
#[derive(Default)]
struct Hashed(u64);

impl Hasher for Hashed {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Mem {
    /// Detached writes not yet taken by the thread.
    pub(super) fn pending(&self) -> usize {
        self.held.len() - self.taken
    }

    fn hash(&self, key: Key<'_>) -> u64 {
        self.hasher.hash_one(&key)
    }

    /// The keys `e` can be found by (the same as the file's indexes: only inbound entries
    /// by their text).
    fn keys_of(&self, e: &Entry) -> [Option<u64>; 3] {
        let id = e.message_id.as_deref().map(|id| self.hash(Key::Id(id)));
        let ti = e
            .thread_index
            .as_deref()
            .map(|ti| self.hash(Key::ThreadIndex(ti)));
        let text = match (&e.digest, e.way) {
            (Some(d), Way::Inbound) => Some(self.hash(Key::Text(d, &e.subject))),
            _ => None,
        };
        [id, ti, text]
    }

    /// Remember a detached write.
    pub(super) fn push(&mut self, entry: Entry, done: Done) {
        let seq = self.next;
        self.next += 1;
        let keys = self.keys_of(&entry);
        for k in keys.into_iter().flatten() {
            self.index
                .entry(k)
                .and_modify(|s| s.push(seq))
                .or_insert(Seqs::One(seq));
        }
        self.held.push_back(Held {
            seq,
            entry: Arc::new(entry),
            keys,
        });
        self.done.push(done);
    }

    /// The detached writes not taken yet, now taken into the open transaction (they stay
    /// findable until [`Mem::forget_taken`] or [`Mem::forget_newest_taken`]).
    pub(super) fn take(&mut self) -> (Vec<Arc<Entry>>, Vec<Done>) {
        let entries = self
            .held
            .range(self.taken..)
            .map(|h| h.entry.clone())
            .collect();
        self.taken = self.held.len();
        (entries, std::mem::take(&mut self.done))
    }

    /// The detached writes not taken yet, forgotten (the thread has stopped).
    pub(super) fn drop_pending(&mut self) -> Vec<Done> {
        while self.held.len() > self.taken {
            if let Some(h) = self.held.pop_back() {
                self.unindex(&h);
            }
        }
        std::mem::take(&mut self.done)
    }

    /// The `n` oldest taken entries are in the file now, or never will be.
    pub(super) fn forget_taken(&mut self, n: usize) {
        for _ in 0..n.min(self.taken) {
            if let Some(h) = self.held.pop_front() {
                self.taken -= 1;
                self.unindex(&h);
            }
        }
    }

    /// The `n` newest taken entries failed to be written and are forgotten.
    pub(super) fn forget_newest_taken(&mut self, n: usize) {
        let n = n.min(self.taken);
        let gone: Vec<Held> = self.held.drain(self.taken - n..self.taken).collect();
        self.taken -= n;
        for h in &gone {
            self.unindex(h);
        }
    }

    fn unindex(&mut self, h: &Held) {
        for k in h.keys.into_iter().flatten() {
            if self.index.get_mut(&k).is_some_and(|s| s.remove(h.seq)) {
                self.index.remove(&k);
            }
        }
    }

    /// Every entry held, committed or not.
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.held.iter().map(|h| &*h.entry)
    }

    fn get(&self, seq: u64) -> Option<&Entry> {
        let i = self.held.binary_search_by_key(&seq, |h| h.seq).ok()?;
        Some(&self.held[i].entry)
    }

    /// The uncommitted entries the query would find in the file, by the same rules as the
    /// file's statements (`super::lookup`): by id any direction, by its own id and by text
    /// inbound only, nothing older than `since`. Each list holds an entry once, the waiting
    /// writes first, then the taken ones, each oldest first.
    pub(super) fn find(&self, q: &Query) -> Found {
        let first_waiting = self.held.get(self.taken).map_or(self.next, |h| h.seq);
        // Waiting writes before taken ones (the order the lists always had).
        let order = |seq: &u64| (*seq < first_waiting, *seq);
        let mut found = Found::default();
        if self.held.is_empty() {
            return found;
        }
        let mut seqs: Vec<u64> = Vec::new();
        let collect = |key: Key<'_>, seqs: &mut Vec<u64>| {
            if let Some(s) = self.index.get(&self.hash(key)) {
                seqs.extend_from_slice(s.as_slice());
            }
        };
        for id in &q.ids {
            collect(Key::Id(id), &mut seqs);
        }
        if let Some(id) = &q.own_id {
            collect(Key::Id(id), &mut seqs);
        }
        let since = q.since;
        let by_id = self.matching(&mut seqs, order, since, |e| {
            let id = e.message_id.as_deref();
            id.is_some_and(|id| q.ids.iter().any(|i| i == id))
                || (e.way == Way::Inbound && id.is_some() && q.own_id.as_deref() == id)
        });
        found.by_id = by_id;
        for ti in &q.thread_indexes {
            collect(Key::ThreadIndex(ti), &mut seqs);
        }
        found.by_thread_index = self.matching(&mut seqs, order, since, |e| {
            e.thread_index
                .as_ref()
                .is_some_and(|ti| q.thread_indexes.contains(ti))
        });
        if let Some((digest, subject)) = &q.text {
            collect(Key::Text(digest, subject), &mut seqs);
        }
        found.by_text = self.matching(&mut seqs, order, since, |e| {
            matches!((&q.text, &e.digest), (Some((digest, subject)), Some(d))
                if e.way == Way::Inbound && d == digest && &e.subject == subject)
        });
        found
    }

    /// The entries of `seqs` (emptied) that are recent enough and pass `wanted`, each once,
    /// in `order`.
    fn matching<K: Ord>(
        &self,
        seqs: &mut Vec<u64>,
        order: impl Fn(&u64) -> K,
        since: i64,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Vec<Entry> {
        seqs.sort_unstable_by_key(&order);
        seqs.dedup();
        let out = seqs
            .iter()
            .filter_map(|s| self.get(*s))
            .filter(|e| e.time >= since && wanted(e))
            .cloned()
            .collect();
        seqs.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the lookup read before the index: every uncommitted entry, waiting writes first.
    fn scan<'a>(all: impl Iterator<Item = &'a Entry>, q: &Query) -> Found {
        let mut found = Found::default();
        for e in all {
            if e.time < q.since {
                continue;
            }
            let id = e.message_id.as_deref();
            if id.is_some_and(|id| q.ids.iter().any(|i| i == id))
                || (e.way == Way::Inbound && id.is_some() && q.own_id.as_deref() == id)
            {
                found.by_id.push(e.clone());
            }
            if let Some(ti) = &e.thread_index
                && q.thread_indexes.contains(ti)
            {
                found.by_thread_index.push(e.clone());
            }
            if let (Some((digest, subject)), Some(d)) = (&q.text, &e.digest)
                && e.way == Way::Inbound
                && d == digest
                && &e.subject == subject
            {
                found.by_text.push(e.clone());
            }
        }
        found
    }

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
        fn key(&mut self, kind: &str) -> Option<String> {
            let k = self.below(5);
            (k > 0).then(|| format!("{kind}{k}"))
        }
    }

    fn entry(r: &mut Lcg, n: u64) -> Entry {
        Entry {
            message_id: r.key("id"),
            thread_index: r.key("ti"),
            subject: format!("s{}", r.below(2)),
            digest: r.key("d"),
            level: "OFFICIAL".into(),
            marking: None,
            qualifiers: Vec::new(),
            way: if r.below(2) == 0 {
                Way::Inbound
            } else {
                Way::Outbound
            },
            domains: vec![format!("n{n}.example")],
            time: i64::try_from(r.below(10)).unwrap_or(0),
        }
    }

    fn query(r: &mut Lcg) -> Query {
        let mut q = Query {
            since: i64::try_from(r.below(6)).unwrap_or(0),
            ..Query::default()
        };
        for _ in 0..r.below(3) {
            q.ids.extend(r.key("id"));
        }
        q.own_id = r.key("id");
        for _ in 0..r.below(3) {
            q.thread_indexes.extend(r.key("ti"));
        }
        q.text = r.key("d").map(|d| (d, format!("s{}", r.below(2))));
        q
    }

    /// The index finds what the scan found, in the same order, through writes waiting, taken,
    /// committed (oldest first) and failed (newest taken).
    #[test]
    fn the_index_finds_what_a_scan_finds() {
        let mut r = Lcg(12);
        let mut mem = Mem::default();
        // The model: taken entries oldest first, then waiting ones.
        let mut taken: VecDeque<Entry> = VecDeque::new();
        let mut waiting: Vec<Entry> = Vec::new();
        let mut last_taken = 0;
        for step in 0..4000u64 {
            match r.below(10) {
                0..=4 => {
                    let e = entry(&mut r, step);
                    waiting.push(e.clone());
                    mem.push(e, Box::new(|_| {}));
                }
                5 => {
                    let (got, done) = mem.take();
                    assert_eq!(got.len(), waiting.len());
                    assert_eq!(done.len(), waiting.len());
                    last_taken = waiting.len();
                    taken.extend(waiting.drain(..));
                }
                6 => {
                    let n = usize::try_from(r.below(4)).unwrap_or(0);
                    mem.forget_taken(n);
                    taken.drain(..n.min(taken.len()));
                    last_taken = last_taken.min(taken.len());
                }
                7 if r.below(4) == 0 => {
                    mem.forget_newest_taken(last_taken);
                    taken.truncate(taken.len() - last_taken);
                    last_taken = 0;
                }
                _ => {
                    let q = query(&mut r);
                    let expected = scan(waiting.iter().chain(taken.iter()), &q);
                    assert_eq!(mem.find(&q), expected, "step {step}: {q:?}");
                }
            }
            assert_eq!(mem.pending(), waiting.len());
        }
        assert_eq!(mem.drop_pending().len(), waiting.len());
        mem.forget_taken(usize::MAX);
        assert!(
            mem.held.is_empty() && mem.index.is_empty(),
            "nothing left behind"
        );
    }

    /// What the daemon holds at 64 connections: a few hundred entries of unique Message-IDs
    /// wait for the commit, and each new message asks for ids and text nobody has. (Run under
    /// callgrind with `--toggle-collect` on `scan` and `Mem::find` to compare their cost.)
    #[test]
    fn a_commit_window_of_unique_messages() {
        let mut mem = Mem::default();
        let mut all = Vec::new();
        for i in 0..350 {
            let e = Entry {
                message_id: Some(format!("{i}.bench@example-council.gcsx.gov.uk")),
                thread_index: None,
                subject: "protect: the quarterly figures".into(),
                digest: Some(format!("{:064x}", i % 7)),
                level: "OFFICIAL".into(),
                marking: Some("OFFICIAL".into()),
                qualifiers: Vec::new(),
                way: if i % 10 == 0 {
                    Way::Inbound
                } else {
                    Way::Outbound
                },
                domains: vec!["partner.example".into()],
                time: 100,
            };
            all.push(e.clone());
            mem.push(e, Box::new(|_| {}));
            if i == 200 {
                let _ = mem.take();
            }
        }
        let waiting: Vec<Entry> = all[201..].to_vec();
        let taken = &all[..201];
        for i in 0..200 {
            let q = Query {
                ids: vec![format!("{}.bench@example-council.gcsx.gov.uk", 1000 + i)],
                own_id: Some(format!("{}.new@example-council.gcsx.gov.uk", i)),
                thread_indexes: Vec::new(),
                text: Some((
                    format!("{:064x}", 99),
                    "protect: the quarterly figures".into(),
                )),
                since: 0,
            };
            let want = scan(waiting.iter().chain(taken), &q);
            assert!(want.is_empty());
            assert_eq!(mem.find(&q), want);
        }
        // And one that finds: an inbound copy by its text, and a parent by its id.
        let q = Query {
            ids: vec!["40.bench@example-council.gcsx.gov.uk".into()],
            text: Some((
                format!("{:064x}", 3),
                "protect: the quarterly figures".into(),
            )),
            ..Query::default()
        };
        let found = mem.find(&q);
        assert_eq!(found, scan(waiting.iter().chain(taken), &q));
        assert_eq!((found.by_id.len(), found.by_text.len()), (1, 5));
    }
}
