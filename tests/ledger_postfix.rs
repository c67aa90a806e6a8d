//! Thread memory end to end (issue 12): the built `markgate` daemon behind a real private
//! Postfix, with its ledger in SQLite, and two daemons sharing a real `redis-server` that the
//! test starts on a free loopback port. The scenarios:
//!
//! - a RESTRICTED message comes in; a reply marked UNCLASSIFIED going out to the internet is
//!   refused (THREAD-DOWNGRADE), with an audit record citing the rule;
//! - the same reply marked RESTRICTED to a GCSX domain passes;
//! - the inbound RESTRICTED message re-sent unchanged to the internet is refused as a redirect
//!   (THREAD-REDIRECT);
//! - an unrelated message with the same subject passes.
//!
//! Then faults: the SQLite file locked by another process and made read-only, and Redis
//! stopped mid-run and restarted, under both `on_unavailable` choices. Every message sent must
//! be delivered or get a 4xx/5xx; an outage is exactly one `ledger_unavailable` and one
//! `ledger_recovered` audit record. Waits poll with generous bounds; nothing is timed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::daemon::Daemon;
use support::postfix::{Postfix, PostfixConfig, SwaksResult, TOOLS};
use support::{peers, ports};

const PARTNER: &str = "bob@partner.gcsx.gov.uk";
const ALICE: &str = "alice@example-council.gcsx.gov.uk";
const INTERNET: &str = "carol@example.com";
const OUTSIDE: &str = "192.0.2.10";
const WAIT: Duration = Duration::from_secs(60);

fn message(id: &str, marking: &str, subject: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{PARTNER}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\nDate: Sun, 06 Dec 2026 03:00:00 +0000\r\nMessage-ID: <{id}>\r\nX-Protective-Marking: {marking}\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The inbound original (from a GCSX partner, outside our networks).
fn original(tag: &str) -> (String, Vec<u8>) {
    let id = format!("orig.{tag}@partner.gcsx.gov.uk");
    let m = message(
        &id,
        "RESTRICTED",
        "Budget 2027",
        "",
        &format!(
            "The draft figures for 2027 ({tag}) are attached below.\r\nPlease keep them within the council."
        ),
    );
    (id, m)
}

fn reply(tag: &str, parent: &str, marking: &str) -> Vec<u8> {
    let id = format!("reply.{tag}.{}@example-council.gcsx.gov.uk", marking.len());
    let m = message(
        &id,
        marking,
        "RE: Budget 2027",
        &format!("In-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n"),
        &format!("Thanks, noted ({tag})."),
    );
    let s = String::from_utf8(m).expect("ascii");
    s.replacen(
        &format!("From: <{PARTNER}>"),
        &format!("From: <{ALICE}>"),
        1,
    )
    .into_bytes()
}

fn unrelated(tag: &str) -> Vec<u8> {
    message(
        &format!("other.{tag}@example-council.gcsx.gov.uk"),
        "UNCLASSIFIED",
        "Budget 2027",
        "",
        &format!("Public consultation on the 2027 budget ({tag}) opens on Monday."),
    )
}

fn inbound(pf: &Postfix, data: &[u8]) -> SwaksResult {
    pf.send_data_with(
        PARTNER,
        &[ALICE],
        data,
        &["--xclient", &format!("ADDR={OUTSIDE} NAME=mx.partner.test")],
    )
}

fn outbound(pf: &Postfix, to: &str, data: &[u8]) -> SwaksResult {
    pf.send_data_with(
        ALICE,
        &[to],
        data,
        &["--xclient", "ADDR=127.0.0.1 NAME=client.test"],
    )
}

/// The reply Postfix gave to the end of DATA (the milter's answer), with its code.
fn data_reply(r: &SwaksResult) -> String {
    let replies = r.replies();
    replies
        .iter()
        .rev()
        .find(|l| l.starts_with("250 2.0.0 Ok: queued") || l.starts_with('4') || l.starts_with('5'))
        .map(|s| (*s).to_owned())
        .unwrap_or_else(|| panic!("no answer to DATA in:\n{}", r.dialog))
}

fn accepted(r: &SwaksResult) -> bool {
    r.code == 0 && data_reply(r).starts_with("250")
}

/// A daemon + Postfix pair.
struct Gateway {
    daemon: Daemon,
    pf: Postfix,
}

impl Gateway {
    fn start(extra: &str) -> Gateway {
        let daemon = Daemon::start(extra);
        let pf = Postfix::start(PostfixConfig::with_milter(daemon.spec.clone()));
        Gateway { daemon, pf }
    }

    fn config(&self) -> PathBuf {
        self.daemon.dir().join("markgate.toml")
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.daemon.dir().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn events(&self, kind: &str) -> usize {
        self.audit().iter().filter(|r| r["event"] == kind).count()
    }

    /// `markgate ledger ARGS --config <this daemon's config>`.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_markgate"))
            .arg("ledger")
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .expect("run markgate ledger");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Wait until the ledger holds an entry for `id` in `direction`.
    fn wait_recorded(&self, id: &str, direction: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (ok, text) = self.cli(&["lookup", id]);
            if ok && text.contains(&format!("direction: {direction}")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never recorded ({direction}):\n{text}\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for `n` audit records of `kind`.
    fn wait_events(&self, kind: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.events(kind) < n {
            assert!(
                Instant::now() < deadline,
                "waiting for {n} {kind} record(s), have {}:\n{}",
                self.events(kind),
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The audit decision record for a Message-ID.
fn decision_for(records: &[serde_json::Value], id: &str) -> serde_json::Value {
    records
        .iter()
        .rev()
        .find(|r| r["event"] == "message_decision" && r["data"]["message_id"] == format!("<{id}>"))
        .cloned()
        .unwrap_or_else(|| panic!("no decision for {id}"))
}

/// The four scenarios; the original comes in through `a`, the rest goes out through `b`
/// (the same gateway for SQLite, another one sharing Redis for a cluster).
fn four_scenarios(a: &Gateway, b: &Gateway, tag: &str) {
    let (orig_id, orig) = original(tag);
    let r = inbound(&a.pf, &orig);
    assert!(
        accepted(&r),
        "the inbound original is accepted:\n{}",
        r.dialog
    );
    a.wait_recorded(&orig_id, "inbound");
    if !std::ptr::eq(a, b) {
        b.wait_recorded(&orig_id, "inbound");
    }

    // 1. Downgraded reply to the internet: refused, naming the original's marking.
    let down = reply(tag, &orig_id, "UNCLASSIFIED");
    let r = outbound(&b.pf, INTERNET, &down);
    let answer = data_reply(&r);
    assert!(
        answer.starts_with("550 5.7.1"),
        "downgrade refused: {answer}"
    );
    assert!(answer.contains("THREAD-DOWNGRADE"), "{answer}");
    assert!(
        answer.contains("RESTRICTED"),
        "names the original marking: {answer}"
    );
    let down_id = format!("reply.{tag}.12@example-council.gcsx.gov.uk");
    let deadline = Instant::now() + WAIT;
    let rec = loop {
        let recs = b.audit();
        if recs
            .iter()
            .any(|r| r["data"]["message_id"] == format!("<{down_id}>"))
        {
            break decision_for(&recs, &down_id);
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for the downgrade"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec["data"]["verdict"], "reject", "{rec}");
    assert_eq!(rec["data"]["verdict_rules"][0], "THREAD-DOWNGRADE", "{rec}");
    let finding = rec["data"]["findings"].to_string();
    assert!(
        finding.contains(&orig_id),
        "the finding names the original: {finding}"
    );

    // 2. The same reply marked RESTRICTED to a GCSX domain: delivered.
    let kept = reply(tag, &orig_id, "RESTRICTED");
    let r = outbound(&b.pf, "dave@other.gcsx.gov.uk", &kept);
    assert!(
        accepted(&r),
        "RESTRICTED reply to GCSX passes: {}",
        data_reply(&r)
    );

    // 3. The original re-sent unchanged to the internet: a redirect.
    let r = outbound(&b.pf, INTERNET, &orig);
    let answer = data_reply(&r);
    assert!(answer.starts_with("550"), "redirect refused: {answer}");
    assert!(answer.contains("THREAD-REDIRECT"), "{answer}");

    // 3b. Its text re-sent under a new Message-ID (a server that issues its own ids) and a
    // forward prefix: a redirect found by the text digest and the normalised subject.
    let (_, body) = original(tag);
    let copy = String::from_utf8(body)
        .expect("ascii")
        .replacen(
            &format!("Message-ID: <orig.{tag}@"),
            &format!("Message-ID: <copy.{tag}@"),
            1,
        )
        .replacen("Subject: Budget 2027", "Subject: FW: Budget 2027", 1);
    let r = outbound(&b.pf, INTERNET, copy.as_bytes());
    let answer = data_reply(&r);
    assert!(
        answer.starts_with("550"),
        "redirect by text refused: {answer}"
    );
    assert!(answer.contains("THREAD-REDIRECT"), "{answer}");

    // 4. An unrelated message with the same subject: delivered.
    let r = outbound(&b.pf, INTERNET, &unrelated(tag));
    assert!(accepted(&r), "unrelated message passes: {}", data_reply(&r));
}

#[test]
fn sqlite_thread_scenarios_through_postfix() {
    if !peers::available("sqlite_thread_scenarios_through_postfix", TOOLS, true) {
        return;
    }
    let g = Gateway::start("");
    four_scenarios(&g, &g, "sqlite");
    // Delivered: the original, the RESTRICTED reply, the unrelated message.
    g.pf.wait_delivered(3, WAIT);
    let (ok, stats) = g.cli(&["stats"]);
    assert!(ok, "{stats}");
    assert!(stats.contains("entries: 3"), "{stats}");
    assert!(stats.contains("hit rate"), "{stats}");
    // The CLI prints what is stored, never body text.
    let (ok, shown) = g.cli(&["lookup", "<orig.sqlite@partner.gcsx.gov.uk>"]);
    assert!(ok, "{shown}");
    assert!(shown.contains("marking: RESTRICTED"), "{shown}");
    assert!(
        shown.contains("subject (normalised): budget 2027"),
        "{shown}"
    );
    assert!(!shown.contains("draft figures"), "no body text: {shown}");
    let (ok, pruned) = g.cli(&["prune"]);
    assert!(ok && pruned.contains("pruned 0 entries"), "{pruned}");
    assert_eq!(g.events("ledger_unavailable"), 0, "{}", g.daemon.log());
}

/// A `redis-server` of our own on a free loopback port, with no persistence.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis {
            child: None,
            port: ports::free_port(),
            dir,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new(peers::tool("redis-server"))
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        assert!(
            ports::wait_listening(self.port, 30),
            "redis-server did not listen on {}",
            self.port
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(ports::wait_closed(self.port, 30), "redis still listening");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn policy_with(dir: &Path, on_unavailable: &str) -> PathBuf {
    let text = markgate::policy::BUILTIN_POLICY.replace(
        "on_unavailable = \"fail-open\"",
        &format!("on_unavailable = \"{on_unavailable}\""),
    );
    assert!(text.contains(&format!("on_unavailable = \"{on_unavailable}\"")));
    let path = dir.join(format!("policy-{on_unavailable}.toml"));
    std::fs::write(&path, text).expect("write policy");
    path
}

#[test]
fn redis_cluster_two_gateways_share_the_ledger_and_survive_a_restart() {
    let mut tools = TOOLS.to_vec();
    tools.push("redis-server");
    if !peers::available("redis_cluster_two_gateways_share_the_ledger", &tools, true) {
        return;
    }
    let mut redis = Redis::start();
    let pdir = tempfile::tempdir().expect("tempdir");
    let tempfail = policy_with(pdir.path(), "tempfail");
    let cfg = format!(
        "[ledger]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
        redis.url()
    );
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    four_scenarios(&a, &b, "redis");
    // The downgrade is seen on the other instance too (b recorded nothing a needs; a sees b's
    // outbound RESTRICTED reply and a's own original).
    let (ok, stats) = a.cli(&["stats"]);
    assert!(ok && stats.contains("entries: 3"), "{stats}");

    // Redis stops mid-run: fail-open gateways deliver, with one outage record each.
    redis.stop();
    for i in 0..3 {
        let r = outbound(&a.pf, PARTNER, &unrelated(&format!("down-{i}")));
        assert!(
            accepted(&r),
            "fail-open delivers during the outage: {}",
            data_reply(&r)
        );
    }
    a.wait_events("ledger_unavailable", 1);
    // A tempfail gateway answers 451 while Redis is down.
    let c = start_with_policy(&tempfail, &redis.url());
    let r = outbound(&c.pf, PARTNER, &unrelated("tempfail-down"));
    let answer = data_reply(&r);
    assert!(
        answer.starts_with("451"),
        "tempfail while Redis is down: {answer}"
    );

    redis.restart();
    // During an outage one message a second asks the store: send until one has, and the
    // recovery is on record. Every message is answered meanwhile (fail-open: delivered).
    let after_a = send_until_recovered(&a, false);
    send_until_recovered(&c, true);
    assert_eq!(
        a.events("ledger_unavailable"),
        1,
        "exactly one outage record"
    );
    assert_eq!(
        a.events("ledger_recovered"),
        1,
        "exactly one recovery record"
    );
    let rec = a
        .audit()
        .into_iter()
        .find(|r| r["event"] == "ledger_recovered")
        .expect("recovered");
    let unchecked = rec["data"]["unchecked_messages"].as_u64().expect("count");
    assert!(unchecked >= 3, "{rec}");
    // Nothing lost: every message was delivered or got a 4xx/5xx (asserted one by one).
    a.pf.wait_delivered(1 + 3 + after_a, WAIT);
}

/// Send a message through `g` every 300 ms until the ledger's recovery is audited; each one
/// must be delivered (fail-open) or, with `tempfail`, delivered or answered 451. Returns how
/// many were delivered.
fn send_until_recovered(g: &Gateway, tempfail: bool) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut delivered = 0;
    for n in 0.. {
        let r = outbound(&g.pf, PARTNER, &unrelated(&format!("after-{n}-{tempfail}")));
        let answer = data_reply(&r);
        if accepted(&r) {
            delivered += 1;
        } else {
            assert!(tempfail && answer.starts_with("451"), "{answer}");
        }
        if g.events("ledger_recovered") >= 1 {
            break;
        }
        // The recovery record follows the first successful write, just after the answer.
        std::thread::sleep(Duration::from_millis(300));
        if g.events("ledger_recovered") >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery:\n{}",
            g.daemon.log()
        );
    }
    delivered
}

/// A gateway whose config names `policy` (a top-level key, so it goes first) and a Redis URL.
fn start_with_policy(policy: &Path, url: &str) -> Gateway {
    let daemon = Daemon::start_with_top(
        &format!("policy = {policy:?}\n"),
        &format!("[ledger]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout = \"2s\"\n"),
    );
    let pf = Postfix::start(PostfixConfig::with_milter(daemon.spec.clone()));
    Gateway { daemon, pf }
}

#[test]
fn sqlite_locked_and_read_only_under_both_policies() {
    if !peers::available(
        "sqlite_locked_and_read_only_under_both_policies",
        TOOLS,
        true,
    ) {
        return;
    }
    let pdir = tempfile::tempdir().expect("tempdir");
    for choice in ["fail-open", "tempfail"] {
        let policy = policy_with(pdir.path(), choice);
        let g = {
            let daemon = Daemon::start_with_top(
                &format!("policy = {policy:?}\n"),
                "[ledger]\ntimeout = \"300ms\"\n",
            );
            let pf = Postfix::start(PostfixConfig::with_milter(daemon.spec.clone()));
            Gateway { daemon, pf }
        };
        let db = g.daemon.dir().join("ledger.sqlite");
        let r = outbound(&g.pf, PARTNER, &unrelated(&format!("{choice}-before")));
        assert!(accepted(&r), "{}", data_reply(&r));

        // Another process holds the file's write lock (a sqlite3 prompt in a transaction, a
        // backup tool): markgate's lookups still read, its writes wait busy_timeout and fail.
        let locker = rusqlite::Connection::open(&db).expect("open ledger");
        locker
            .execute_batch(
                "BEGIN IMMEDIATE; INSERT INTO counters (name, value) VALUES ('lock-test', 1);",
            )
            .expect("lock");
        let mut outcomes = Vec::new();
        for i in 0..3 {
            let r = outbound(&g.pf, PARTNER, &unrelated(&format!("{choice}-locked-{i}")));
            let answer = data_reply(&r);
            assert!(
                answer.starts_with("250") || answer.starts_with('4') || answer.starts_with('5'),
                "every message gets an answer: {answer}"
            );
            assert!(
                !answer.contains("locked"),
                "no SQLite error text reaches the MTA: {answer}"
            );
            outcomes.push(answer);
        }
        match choice {
            "fail-open" => assert!(
                outcomes.iter().all(|a| a.starts_with("250")),
                "fail-open delivers: {outcomes:?}"
            ),
            _ => assert!(
                outcomes.iter().all(|a| a.starts_with("451")),
                "tempfail answers 451: {outcomes:?}"
            ),
        }
        g.wait_events("ledger_unavailable", 1);
        locker.execute_batch("ROLLBACK;").expect("release");
        drop(locker);
        let r = outbound(&g.pf, PARTNER, &unrelated(&format!("{choice}-after")));
        assert!(accepted(&r), "after the lock: {}", data_reply(&r));
        g.wait_events("ledger_recovered", 1);
        assert_eq!(g.events("ledger_unavailable"), 1, "one outage record");

        // Read-only: the file and its WAL become immutable; lookups still work, writes fail.
        if choice == "fail-open" && chattr(&db, true) {
            let wal = db.with_extension("sqlite-wal");
            let _ = chattr(&wal, true);
            let r = outbound(&g.pf, PARTNER, &unrelated("read-only"));
            assert!(accepted(&r), "read-only ledger: {}", data_reply(&r));
            g.wait_events("ledger_unavailable", 2);
            chattr(&db, false);
            chattr(&wal, false);
            let r = outbound(&g.pf, PARTNER, &unrelated("writable-again"));
            assert!(accepted(&r), "{}", data_reply(&r));
            g.wait_events("ledger_recovered", 2);
            let (ok, shown) =
                g.cli(&["lookup", "other.writable-again@example-council.gcsx.gov.uk"]);
            assert!(ok && shown.contains("direction: outbound"), "{shown}");
        }
        // The accepted messages reach the sink (Postfix delivers after the answer, so wait).
        let delivered = g.pf.wait_delivered(2, WAIT).len();
        assert!(delivered >= 2, "delivered: {delivered}");
    }
}

/// `chattr +i`/`-i` (immutable even for root); false when the filesystem does not support it.
fn chattr(path: &Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
