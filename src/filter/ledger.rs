//! The filter's side of thread memory: before deciding, ask the ledger about the message's
//! thread (with a timeout) and hand what it found to `policy::decide_in_thread` as
//! [`ThreadFacts`]; after the answer is decided, remember the message without delaying it.
//!
//! Owns the outage policy: when the ledger cannot answer in time, the policy's
//! `on_unavailable` says whether the message is decided without thread memory (fail-open) or
//! answered 451 (tempfail). Either way an outage is one `ledger_unavailable` audit record when
//! it starts and one `ledger_recovered` when it ends, never one per message.
//!
//! Must not: decide (that is `policy/thread.rs`), or know how the store keeps its data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{Evaluation, Filter, MessageSource as _, smtp_reply};

use crate::audit::AuditEvent;
use crate::audit::AuditHandle;
use crate::audit::event::{LedgerRecovered, LedgerUnavailable};
use crate::inspect::digest::text_digest;
use crate::inspect::thread::{ThreadKeys, hex, keys};
use crate::ledger::{Backend, Clock, Entry, Found, Query, Store, SystemClock, Way, retention_secs};
use crate::milter::handler::{Outcome, Verdict};
use crate::policy::Envelope;
use crate::policy::Policy;
use crate::policy::decide::{Delivery, Direction};
use crate::policy::thread::{Needs, OnUnavailable, ThreadEntry, ThreadFacts, needs};
use crate::transaction::Transaction;

/// The ledger as the filter uses it: the store, the timeout, the clock and the outage state.
#[derive(Clone)]
pub struct LedgerHandle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Backend,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    audit: Option<AuditHandle>,
    /// Where outage records are written from: the SQLite thread reports detached writes.
    runtime: Option<tokio::runtime::Handle>,
    outage: std::sync::Mutex<Outage>,
}

/// Which operations are failing, and what the outage has cost so far.
#[derive(Default)]
struct Outage {
    lookups_failing: bool,
    writes_failing: bool,
    /// When lookups last went to the store during an outage: while lookups fail, one message a
    /// second asks the store and the others are answered "unavailable" at once, so a hung
    /// Redis costs each connection nothing, not the timeout per message.
    last_probe: Option<Instant>,
    since: Option<(Instant, String)>,
    on_unavailable: String,
    unchecked: u64,
    tempfailed: u64,
    lost: u64,
}

/// The kind of ledger call, for the outage bookkeeping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Lookup,
    Write,
}

impl LedgerHandle {
    /// Use `store`, waiting at most `timeout` per call, with outage records to `audit`.
    pub fn new(store: Backend, timeout: Duration, audit: Option<AuditHandle>) -> Self {
        LedgerHandle {
            inner: Arc::new(Inner {
                store,
                timeout,
                clock: Arc::new(SystemClock),
                audit,
                runtime: tokio::runtime::Handle::try_current().ok(),
                outage: std::sync::Mutex::new(Outage::default()),
            }),
        }
    }

    /// The same with another clock (tests, `policy test --ledger`). Call before sharing.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.clock = clock;
                LedgerHandle {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => LedgerHandle { inner },
        }
    }

    pub fn store(&self) -> &Backend {
        &self.inner.store
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }

    /// Commit every entry remembered so far (a stopping daemon, after its last message), so a
    /// clean stop forgets nothing; a failure is logged (what is lost is memory, not mail).
    pub async fn flush(&self) {
        if let Backend::Sqlite(s) = &self.inner.store {
            let wait = self.inner.timeout.max(Duration::from_secs(5));
            match tokio::time::timeout(wait, s.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "the last ledger entries were not committed"),
                Err(_) => warn!(?wait, "the ledger did not commit its last entries in time"),
            }
        }
    }

    /// Prune now with this retention; errors are logged, not raised (mail is unaffected).
    pub async fn prune(&self, retention_days: u32) -> Option<u64> {
        let before = self.inner.clock.now() - retention_secs(retention_days);
        match self.inner.store.prune(before).await {
            Ok(n) => {
                if n > 0 {
                    info!(pruned = n, retention_days, "ledger pruned");
                }
                Some(n)
            }
            Err(e) => {
                warn!(error = %e, "ledger pruning failed; it is tried again later");
                None
            }
        }
    }

    /// Prune every [`crate::ledger::PRUNE_EVERY`] with the retention of the policy in force.
    pub fn spawn_pruner(&self, live: super::LiveCell) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let retention = live
                    .snapshot()
                    .policy
                    .thread
                    .as_ref()
                    .map(|t| t.retention_days);
                if let Some(days) = retention {
                    me.prune(days).await;
                }
                tokio::time::sleep(crate::ledger::PRUNE_EVERY).await;
            }
        });
    }

    /// Ask the ledger about a message (the whole of [`consult`] without the policy's outage
    /// choice): what `policy test --ledger` and the daemon both use.
    pub async fn ask(
        &self,
        keys: &ThreadKeys,
        retention_days: u32,
    ) -> Result<Found, crate::ledger::LedgerError> {
        let all = Needs {
            parents: true,
            copies: true,
            text: true,
        };
        self.ask_for(keys, all, retention_days).await
    }

    /// Ask only what the rules could use (`needs`); nothing at all, and no trip to the
    /// store, when that is nothing.
    async fn ask_for(
        &self,
        keys: &ThreadKeys,
        needs: Needs,
        retention_days: u32,
    ) -> Result<Found, crate::ledger::LedgerError> {
        let mut query = Query {
            since: self.inner.clock.now() - retention_secs(retention_days),
            ..Query::default()
        };
        if needs.parents {
            query.ids = keys.references.iter().map(|(id, _)| id.clone()).collect();
            query.thread_indexes = keys.parent_indexes().iter().map(|b| hex(b)).collect();
        }
        if needs.copies {
            query.own_id = keys.message_id.clone();
            query.text = keys.digest.map(|d| (hex(&d), keys.subject.clone()));
        }
        if !query.has_keys() {
            return Ok(Found::default());
        }
        if let Backend::Sqlite(s) = &self.inner.store
            && let Some(found) = s.lookup_inline(&query)
        {
            return Ok(found);
        }
        match tokio::time::timeout(self.inner.timeout, self.inner.store.lookup(query)).await {
            Ok(r) => r,
            Err(_) => Err(crate::ledger::LedgerError(format!(
                "no answer within {:?}",
                self.inner.timeout
            ))),
        }
    }

    /// Remember a decided message, waiting for the store (at most the timeout).
    pub async fn write(
        &self,
        entry: Entry,
        retention_days: u32,
    ) -> Result<(), crate::ledger::LedgerError> {
        let keep = Duration::from_secs(u64::try_from(retention_secs(retention_days)).unwrap_or(0));
        match tokio::time::timeout(self.inner.timeout, self.inner.store.record(entry, keep)).await {
            Ok(r) => r,
            Err(_) => Err(crate::ledger::LedgerError(format!(
                "no answer within {:?}",
                self.inner.timeout
            ))),
        }
    }

    /// Note a failure: the first of an outage is logged at `error` and audited.
    fn failed(&self, op: Op, error: &str, on_unavailable: OnUnavailable) {
        let mut o = self.inner.outage.lock().unwrap_or_else(|p| p.into_inner());
        let starting = o.since.is_none();
        match op {
            Op::Lookup => o.lookups_failing = true,
            Op::Write => {
                o.writes_failing = true;
                if on_unavailable == OnUnavailable::FailOpen {
                    o.lost += 1;
                }
            }
        }
        if !starting {
            return;
        }
        let policy = match on_unavailable {
            OnUnavailable::FailOpen => "fail-open",
            OnUnavailable::Tempfail => "tempfail",
        };
        o.since = Some((Instant::now(), crate::audit::record::now_rfc3339()));
        o.on_unavailable = policy.to_owned();
        drop(o);
        let backend = self.inner.store.describe();
        error!(backend = %backend, error, on_unavailable = policy, "the thread ledger is unavailable");
        self.audit(AuditEvent::LedgerUnavailable(LedgerUnavailable {
            backend,
            error: error.to_owned(),
            on_unavailable: policy.to_owned(),
        }));
    }

    /// Note a success: when it ends the outage, log and audit the recovery.
    fn worked(&self, op: Op) {
        let mut o = self.inner.outage.lock().unwrap_or_else(|p| p.into_inner());
        if o.since.is_none() {
            return;
        }
        match op {
            Op::Lookup => o.lookups_failing = false,
            Op::Write => o.writes_failing = false,
        }
        if o.lookups_failing || o.writes_failing {
            return;
        }
        let done = std::mem::take(&mut *o);
        drop(o);
        let Some((started, since)) = done.since else {
            return;
        };
        let backend = self.inner.store.describe();
        let outage_seconds = started.elapsed().as_secs_f64();
        info!(backend = %backend, outage_seconds, unchecked = done.unchecked, tempfailed = done.tempfailed, lost = done.lost, "the thread ledger answers again");
        self.audit(AuditEvent::LedgerRecovered(LedgerRecovered {
            backend,
            since,
            outage_seconds,
            unchecked_messages: done.unchecked,
            tempfailed_messages: done.tempfailed,
            lost_entries: done.lost,
        }));
    }

    /// Should this message ask the store? Always, except during a lookup outage, when one
    /// message a second does.
    fn probing(&self) -> bool {
        let mut o = self.inner.outage.lock().unwrap_or_else(|p| p.into_inner());
        if !o.lookups_failing {
            return true;
        }
        let due = o
            .last_probe
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            o.last_probe = Some(Instant::now());
        }
        due
    }

    fn count(&self, tempfailed: bool) {
        let mut o = self.inner.outage.lock().unwrap_or_else(|p| p.into_inner());
        if tempfailed {
            o.tempfailed += 1;
        } else {
            o.unchecked += 1;
        }
    }

    fn audit(&self, event: AuditEvent) {
        if let (Some(audit), Some(rt)) = (self.inner.audit.clone(), self.inner.runtime.as_ref()) {
            rt.spawn(async move {
                if let Err(e) = audit.record(event).await {
                    error!(error = %e, "ledger outage audit record not written");
                }
            });
        }
    }
}

impl Filter {
    /// Use thread memory (the policy's `[thread]` rules need it).
    pub fn with_ledger(mut self, ledger: LedgerHandle) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Count an answer given before deciding (the ledger outage's 451).
    pub(super) fn count_out(&self, started: Instant, out: Outcome) -> Outcome {
        self.count(started, None, "tempfail");
        out
    }
}

/// Before deciding: the thread facts for `decide`, and the keys to remember the message by.
/// `Err` is the answer to give instead of deciding (451 under `on_unavailable = "tempfail"`).
pub(super) async fn consult(
    ledger: Option<&LedgerHandle>,
    policy: &Policy,
    tx: &Transaction,
    envelope: &Envelope,
) -> Result<(ThreadFacts, Option<ThreadKeys>), Box<Outcome>> {
    let (Some(ledger), Some(t)) = (ledger, policy.thread.as_ref()) else {
        return Ok((ThreadFacts::default(), None));
    };
    let mut needs = needs(policy, envelope);
    let headers = super::MessageSource::headers(tx);
    let mut k = keys(&headers, None);
    // The text digest costs a parse of the whole message: only when a copy is looked for
    // or this message may be looked for as one. A copy going out is looked for among the
    // inbound entries with its subject: when there are none, no digest can match, and an
    // outbound entry's digest is never compared with anything (only inbound entries are
    // found by text), so it is not made at all. A body spilled to disk is not read again
    // just for it: such a message is tied to earlier ones by its ids only.
    if needs.copies && !ledger.store().may_find_text(&k.subject) {
        needs.text = false;
    }
    let whole = if tx.is_spilled() || !needs.text {
        None
    } else {
        tx.whole().ok()
    };
    k.digest = whole.as_deref().map(text_digest);
    // The decision reads the whole message too: it takes this copy instead of a new one.
    if let Some(std::borrow::Cow::Owned(w)) = whole {
        tx.keep_whole(w);
    }
    let mut facts = ThreadFacts {
        downgrade_marker: t.downgrade.allow_header.as_ref().and_then(|h| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(h.as_bytes()))
                .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
        }),
        ..ThreadFacts::default()
    };
    let asked = if ledger.probing() {
        ledger.ask_for(&k, needs, t.retention_days).await
    } else {
        Err(crate::ledger::LedgerError(
            "unavailable (asked again once a second until it answers)".into(),
        ))
    };
    match asked {
        Ok(found) => {
            ledger.worked(Op::Lookup);
            fill(&mut facts, &k, found);
            Ok((facts, Some(k)))
        }
        Err(e) => {
            ledger.failed(Op::Lookup, &e.0, t.on_unavailable);
            match t.on_unavailable {
                OnUnavailable::FailOpen => {
                    ledger.count(false);
                    warn!(error = %e, "thread ledger unavailable: deciding without thread memory (fail-open)");
                    facts.unavailable = Some(e.0);
                    Ok((facts, Some(k)))
                }
                OnUnavailable::Tempfail => {
                    ledger.count(true);
                    warn!(error = %e, "thread ledger unavailable: answering 4xx (tempfail)");
                    Err(Box::new(Outcome {
                        verdict: Verdict::Tempfail(Some(smtp_reply(&t.unavailable_reply))),
                        modifications: Vec::new(),
                    }))
                }
            }
        }
    }
}

/// Sort what the ledger found into parents (by reference headers or Thread-Index) and copies
/// (the same Message-ID, or the same text and subject).
pub fn fill(facts: &mut ThreadFacts, k: &ThreadKeys, found: Found) {
    let own = k.message_id.as_deref();
    for (id, header) in &k.references {
        if Some(id.as_str()) == own {
            continue;
        }
        for e in found
            .by_id
            .iter()
            .filter(|e| e.message_id.as_deref() == Some(id))
        {
            facts.parents.push(entry(e, header));
        }
    }
    for e in &found.by_thread_index {
        if e.message_id.as_deref() != own || own.is_none() {
            facts.parents.push(entry(e, "Thread-Index"));
        }
    }
    for e in found
        .by_id
        .iter()
        .filter(|e| own.is_some() && e.message_id.as_deref() == own)
    {
        facts.same.push(entry(e, "Message-ID"));
    }
    for e in &found.by_text {
        facts.same.push(entry(e, "text digest and subject"));
    }
}

fn entry(e: &Entry, matched_by: &str) -> ThreadEntry {
    ThreadEntry {
        message_id: e
            .message_id
            .clone()
            .unwrap_or_else(|| "(no Message-ID)".into()),
        level: e.level.clone(),
        marking: e.marking.clone(),
        direction: match e.way {
            Way::Inbound => Direction::Inbound,
            Way::Outbound => Direction::Outbound,
        },
        matched_by: matched_by.to_owned(),
    }
}

/// The entry a decided message leaves behind (`None` when it goes nowhere).
pub fn entry_of(eval: &Evaluation, k: &ThreadKeys, time: i64) -> Option<Entry> {
    entry_with(eval, k.message_id.clone(), k, k.subject.clone(), time)
}

/// [`entry_of`] taking the message's own keys (the daemon's path, done with them after this):
/// its Message-ID and subject move into the entry instead of being copied.
fn entry_from(eval: &Evaluation, mut k: ThreadKeys, time: i64) -> Option<Entry> {
    let id = k.message_id.take();
    let subject = std::mem::take(&mut k.subject);
    entry_with(eval, id, &k, subject, time)
}

fn entry_with(
    eval: &Evaluation,
    message_id: Option<String>,
    k: &ThreadKeys,
    subject: String,
    time: i64,
) -> Option<Entry> {
    if !eval.delivers() {
        return None;
    }
    let d = &eval.decision;
    let mut domains: Vec<String> = Vec::new();
    for r in &d.recipients {
        if (r.delivery == Delivery::Deliver || d.shadow.is_some()) && !domains.contains(&r.domain) {
            domains.push(r.domain.clone());
        }
    }
    Some(Entry {
        message_id,
        thread_index: k.thread_index.as_deref().map(hex),
        subject,
        digest: k.digest.map(|d| hex(&d)),
        level: d.effective.level_name.clone(),
        marking: d.effective.marking.clone(),
        qualifiers: d.effective.qualifiers.clone(),
        way: match d.direction {
            Direction::Inbound => Way::Inbound,
            Direction::Outbound => Way::Outbound,
        },
        domains,
        time,
    })
}

/// What `remember` needs of the policy (taken before the policy snapshot moves on).
pub(super) struct Memo {
    retention_days: u32,
    on_unavailable: OnUnavailable,
    reply: crate::policy::Reply,
}

impl Memo {
    pub(super) fn of(policy: &Policy) -> Option<Memo> {
        policy.thread.as_ref().map(|t| Memo {
            retention_days: t.retention_days,
            on_unavailable: t.on_unavailable,
            reply: t.unavailable_reply.clone(),
        })
    }
}

/// After the decision: remember the message. Under `on_unavailable = "fail-open"` this runs
/// on a task of its own and the answer does not wait; a failed write is an outage (audited
/// once) and a lost entry. Under `"tempfail"` the answer waits for the write (at most the
/// timeout), and a failed write answers 451 instead: a message the ledger could not remember
/// is not passed. `Some` is that 451.
pub(super) async fn remember(
    ledger: Option<&LedgerHandle>,
    memo: Option<Memo>,
    eval: &Evaluation,
    keys: Option<ThreadKeys>,
) -> Option<Box<Outcome>> {
    let (Some(ledger), Some(memo), Some(k)) = (ledger, memo, keys) else {
        return None;
    };
    let entry = entry_from(eval, k, ledger.inner.clock.now())?;
    match memo.on_unavailable {
        OnUnavailable::FailOpen => {
            let me = ledger.clone();
            // The message is answered without waiting: what a failure loses is memory, not
            // mail.
            let done = move |r: Result<(), crate::ledger::LedgerError>| match r {
                Ok(()) => me.worked(Op::Write),
                Err(e) => me.failed(Op::Write, &e.0, OnUnavailable::FailOpen),
            };
            match ledger.store() {
                Backend::Sqlite(s) => s.record_detached(entry, Box::new(done)),
                Backend::Redis(_) => {
                    let ledger = ledger.clone();
                    tokio::spawn(
                        async move { done(ledger.write(entry, memo.retention_days).await) },
                    );
                }
            }
            None
        }
        OnUnavailable::Tempfail => match ledger.write(entry, memo.retention_days).await {
            Ok(()) => {
                ledger.worked(Op::Write);
                None
            }
            Err(e) => {
                ledger.failed(Op::Write, &e.0, OnUnavailable::Tempfail);
                ledger.count(true);
                warn!(error = %e, "thread ledger cannot record the message: answering 4xx (tempfail)");
                Some(Box::new(Outcome {
                    verdict: Verdict::Tempfail(Some(smtp_reply(&memo.reply))),
                    modifications: Vec::new(),
                }))
            }
        },
    }
}

impl LedgerHandle {
    /// The daemon's ledger from `[ledger]` (`None` when `backend = "off"`), logging where it
    /// is and, when the default path could not be used, where it went instead.
    pub fn open(
        config: &crate::ledger::LedgerConfig,
        audit: Option<AuditHandle>,
    ) -> Result<Option<LedgerHandle>, String> {
        match Backend::open(config) {
            Ok(None) => {
                info!(
                    "thread ledger off ([ledger] backend = \"off\"): thread rules are not checked"
                );
                Ok(None)
            }
            Ok(Some((store, fallback))) => {
                if let Some(why) = fallback {
                    warn!("{why}");
                }
                info!(ledger = %store.describe(), timeout = ?config.timeout, "thread ledger open");
                Ok(Some(LedgerHandle::new(store, config.timeout, audit)))
            }
            Err(e) => Err(format!(
                "cannot open the thread ledger: {e}. Give it a file markgate may write with \
                 `[ledger] path = \"PATH\"`, or turn it off with `[ledger] backend = \"off\"`"
            )),
        }
    }
}
