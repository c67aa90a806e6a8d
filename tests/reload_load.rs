//! Reload under load, against a real Postfix: a few hundred messages flow while SIGHUP arrives
//! again and again, half of the time with a broken policy file.
//!
//! markgate's milter server runs in this process with a handler that does exactly what the
//! reload contract asks of the filter: take one snapshot of the live config+policy at the start
//! of each message (MAIL), decide at end-of-message with `policy::decide` on that snapshot, and
//! answer accept or the policy's reject. The reloads are real: the policy file is replaced
//! (atomically, as an editor would) and this process gets a real SIGHUP, handled by
//! `reload::handle_signals`.
//!
//! Two good policies alternate: A (the shipped uk-gpms: `*.gcsx.gov.uk` may receive
//! RESTRICTED) and B (the same with that ceiling lowered to UNCLASSIFIED), with a broken file in
//! between every change. Checked afterwards, for every message: it was either delivered or
//! rejected (never tempfailed, never lost, never duplicated); the outcome is what the policy in
//! force when the message started says (recomputed here from the policy with the recorded
//! digest); the broken policy was never in force; and the Prometheus endpoint, scraped over
//! HTTP, agrees with the counts.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use markgate::config::Config;
use markgate::inspect;
use markgate::metrics::Metrics;
use markgate::milter::handler::{
    ConnectionFacts, Handler, HandlerError, Macros, MessageSink, Modification, Outcome, SmtpReply,
    Verdict,
};
use markgate::milter::{ListenSpec, Server, ServerConfig};
use markgate::notify::Notifier;
use markgate::policy::{self, Envelope, Facts, Policy};
use markgate::reload::{Live, PolicyFiles, ReloadObserver, Reloader, Reopen, Swap};
use markgate::transaction::Transaction;

use support::peers;
use support::postfix::{Postfix, PostfixConfig, TOOLS};
use support::smtp::Smtp;

/// Messages sent in total, and by how many SMTP clients at once.
const MESSAGES: usize = 300;
const CLIENTS: usize = 4;
/// Reload attempts (every other one with a broken policy).
const RELOADS: usize = 40;

const SENDER: &str = "clerk@example-council.gcsx.gov.uk";

/// The three kinds of message and where they go. Under A: accept, reject, accept. Under B:
/// reject, reject, accept.
const CASES: [(&str, &str); 3] = [
    ("RESTRICTED: partner figures", "officer@partner.gcsx.gov.uk"),
    ("RESTRICTED: figures for a friend", "someone@example.com"),
    ("lunch on friday", "someone@example.com"),
];

/// One message as the client saw it: Message-ID, case, final SMTP code, reply text.
type Sent = (String, usize, u16, String);

/// What the handler saw and did for one message.
#[derive(Debug, Clone)]
struct Seen {
    message_id: String,
    digest: String,
    generation_at_start: u64,
    generation_at_end: u64,
    verdict: &'static str,
    facts: Facts,
    envelope: Envelope,
}

struct Probe {
    current: Arc<Swap<Live<Policy>>>,
    seen: Mutex<Vec<Seen>>,
    metrics: Metrics,
}

/// One message in flight: the transaction and the snapshot taken at MAIL.
struct Message {
    tx: Transaction,
    live: Arc<Live<Policy>>,
}

impl MessageSink for Message {
    fn mail_from(&mut self, sender: &[u8], args: &[Vec<u8>]) -> std::io::Result<()> {
        self.tx.mail_from(sender, args)
    }
    fn rcpt_to(&mut self, recipient: &[u8], args: &[Vec<u8>]) -> std::io::Result<()> {
        self.tx.rcpt_to(recipient, args)
    }
    fn header(&mut self, name: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.tx.header(name, value)
    }
    fn body_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.tx.body_chunk(chunk)
    }
    fn macros(&mut self, macros: Macros) -> std::io::Result<()> {
        MessageSink::macros(&mut self.tx, macros)
    }
}

fn facts_of(policy: &Policy, tx: &Transaction) -> Facts {
    let headers: Vec<(&[u8], &[u8])> = tx
        .headers()
        .iter()
        .map(|h| (h.name.as_slice(), h.value.as_slice()))
        .collect();
    let m = inspect::markings::find(policy, headers.iter().copied());
    Facts {
        subject: m.subject,
        markings: m.markings,
        forward: inspect::forward::evidence(policy, headers.iter().copied()),
        disclaimer_present: false,
        signed_or_encrypted: false,
    }
}

fn envelope_of(tx: &Transaction) -> Envelope {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Envelope {
        sender: tx.sender().map(|s| text(s.bare())).unwrap_or_default(),
        recipients: tx.recipients().iter().map(|r| text(r.bare())).collect(),
        client_ip: tx.connection().addr,
        auth_user: tx.macros().get("auth_authen").map(text),
        daemon_name: tx.macros().get("daemon_name").map(text),
    }
}

fn verdict_name(v: &policy::decide::Verdict) -> &'static str {
    match v {
        policy::decide::Verdict::Accept => "accept",
        policy::decide::Verdict::Reject { .. } => "reject",
        policy::decide::Verdict::Tempfail { .. } => "tempfail",
        policy::decide::Verdict::Quarantine { .. } => "quarantine",
    }
}

impl Handler for Probe {
    type Sink = Message;

    fn begin_message(&self, conn: &ConnectionFacts) -> Result<Message, HandlerError> {
        let live = self.current.snapshot();
        let tx = Transaction::new(conn, live.config.spill_policy());
        Ok(Message { tx, live })
    }

    async fn end_of_message(
        &self,
        _conn: &ConnectionFacts,
        message: Message,
    ) -> Result<Outcome, HandlerError> {
        {
            let started = Instant::now();
            // Widen the window in which a reload can land while this message is in flight.
            tokio::time::sleep(Duration::from_millis(3)).await;
            let Message { tx, live } = message;
            let facts = facts_of(&live.policy, &tx);
            let envelope = envelope_of(&tx);
            let decision = policy::decide(&live.policy, &facts, &envelope);
            let verdict = verdict_name(&decision.verdict);
            let message_id = tx
                .first_header("Message-ID")
                .map(|h| String::from_utf8_lossy(&h.value).trim().to_string())
                .unwrap_or_default();
            let level = decision.effective.level_name.clone();
            let rules: Vec<&str> = decision.rule_ids.iter().map(String::as_str).collect();
            self.metrics.message_decided(
                &format!("{:?}", decision.direction).to_lowercase(),
                &level,
                verdict,
                &rules,
                started.elapsed(),
            );
            self.seen.lock().map_err(|_| "poisoned")?.push(Seen {
                message_id,
                digest: live.policy_digest.clone(),
                generation_at_start: live.generation,
                generation_at_end: self.current.snapshot().generation,
                verdict,
                facts,
                envelope,
            });
            let reply = |r: &policy::Reply| SmtpReply {
                code: r.code,
                enhanced: Some(r.enhanced.clone()),
                lines: vec![r.text.clone()],
            };
            Ok(match &decision.verdict {
                policy::decide::Verdict::Accept => Outcome::pass(),
                policy::decide::Verdict::Reject { reply: r, .. } => Outcome {
                    verdict: Verdict::Reject(Some(reply(r))),
                    modifications: Vec::new(),
                },
                policy::decide::Verdict::Tempfail { reply: r, .. } => Outcome {
                    verdict: Verdict::Tempfail(Some(reply(r))),
                    modifications: Vec::new(),
                },
                policy::decide::Verdict::Quarantine { reason, .. } => Outcome {
                    verdict: Verdict::Continue,
                    modifications: vec![Modification::Quarantine {
                        reason: reason.clone().into_bytes(),
                    }],
                },
            })
        }
    }
}

/// Counts reload results and lets the test wait for the next one.
#[derive(Default)]
struct Reloads {
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

struct Observer(Arc<Reloads>);

impl ReloadObserver for Observer {
    fn applied(&self, _: &str, _: &str, _: u64) {
        if let Ok(mut s) = self.0.state.lock() {
            s.0 += 1;
        }
        self.0.changed.notify_all();
    }
    fn failed(&self, _: &str, _: &str, _: &str) {
        if let Ok(mut s) = self.0.state.lock() {
            s.1 += 1;
        }
        self.0.changed.notify_all();
    }
}

impl Reloads {
    fn total(&self) -> usize {
        let s = self.state.lock().expect("lock");
        s.0 + s.1
    }
    fn wait_total(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = self.state.lock().expect("lock");
        while s.0 + s.1 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "reload {n} did not happen");
            s = self.changed.wait_timeout(s, left).expect("lock").0;
        }
    }
}

struct NoAudit;

impl Reopen for NoAudit {
    async fn reopen(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Replace `path` with `text` the way an editor does: write a new file, rename it over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write policy");
    std::fs::rename(&tmp, path).expect("rename policy");
}

fn sighup_self() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn reload_under_load_never_tempfails_never_loses_and_follows_the_policy_in_force() {
    if !peers::available(
        "reload_under_load_never_tempfails_never_loses_and_follows_the_policy_in_force",
        TOOLS,
        true,
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let policy_a = policy::BUILTIN_POLICY.to_string();
    let policy_b = policy_a.replacen(
        "\"*.gcsx.gov.uk\" = \"RESTRICTED\"",
        "\"*.gcsx.gov.uk\" = \"UNCLASSIFIED\"",
        1,
    );
    assert_ne!(
        policy_a, policy_b,
        "the shipped policy changed shape; adjust policy B"
    );
    let broken = format!("{policy_a}\n[[rule]]\nid = \"unfinished\nwhen = \n");
    let policy_path: PathBuf = dir.path().join("policy.toml");
    let config_path = dir.path().join("markgate.toml");
    replace(&policy_path, &policy_a);
    std::fs::write(
        &config_path,
        format!("policy = {:?}\n", policy_path.display().to_string()),
    )
    .expect("write config");

    // The digests the two good policies have, to name them in the checks.
    let digest_of = |text: &str| {
        use sha2::{Digest, Sha256};
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let compiled: HashMap<String, Policy> = [
        (
            digest_of(&policy_a),
            Policy::from_str("A", &policy_a).expect("A"),
        ),
        (
            digest_of(&policy_b),
            Policy::from_str("B", &policy_b).expect("B"),
        ),
    ]
    .into_iter()
    .collect();

    let reloads = Arc::new(Reloads::default());
    let metrics = Metrics::new();
    let reloader = Arc::new(
        Reloader::start(
            Some(config_path.clone()),
            Box::new(|_: &mut Config| {}),
            PolicyFiles,
            Box::new(Observer(Arc::clone(&reloads))),
            Some(metrics.clone()),
            Arc::new(Notifier::disabled()),
        )
        .expect("initial load"),
    );
    let probe = Arc::new(Probe {
        current: reloader.current(),
        seen: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (milter_addr, metrics_addr) = rt.block_on(async {
        let spec = ListenSpec::parse("inet:127.0.0.1:0").expect("spec");
        let server = Server::bind(&spec, ServerConfig::default())
            .await
            .expect("bind milter");
        let milter_addr = server.local_addr().expect("tcp address");
        let mut rx = stop_rx.clone();
        tokio::spawn(server.run(Arc::clone(&probe), async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let listener = markgate::metrics::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind metrics");
        let metrics_addr = listener.local_addr().expect("addr");
        let mut rx = stop_rx.clone();
        tokio::spawn(metrics.clone().serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let mut rx = stop_rx.clone();
        let r = Arc::clone(&reloader);
        tokio::spawn(async move {
            let out = markgate::reload::handle_signals(r, NoAudit, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
            if let Err(e) = out {
                panic!("signal handling failed: {e}");
            }
        });
        (milter_addr, metrics_addr)
    });
    // Let the signal handler be installed before the first SIGHUP (an unhandled SIGHUP would
    // kill the test process).
    std::thread::sleep(Duration::from_millis(200));

    let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:{milter_addr}")));

    // Reloader thread: A -> broken -> B -> broken -> A ..., one SIGHUP each, waiting for each
    // reload to be done before the next change so every broken file is really tried.
    let sending = Arc::new(AtomicBool::new(true));
    let reloads_done = Arc::new(AtomicUsize::new(0));
    let reload_thread = {
        let reloads = Arc::clone(&reloads);
        let sending = Arc::clone(&sending);
        let done = Arc::clone(&reloads_done);
        let (policy_a, policy_b, broken, policy_path) = (
            policy_a.clone(),
            policy_b.clone(),
            broken.clone(),
            policy_path.clone(),
        );
        std::thread::spawn(move || {
            for i in 0..RELOADS {
                if !sending.load(Ordering::SeqCst) && i >= RELOADS / 2 {
                    break;
                }
                let text = match i % 4 {
                    0 => &policy_b,
                    2 => &policy_a,
                    _ => &broken,
                };
                replace(&policy_path, text);
                let before = reloads.total();
                sighup_self();
                reloads.wait_total(before + 1);
                done.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };

    // Clients: MESSAGES messages over CLIENTS connections, several messages per connection.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let next = Arc::clone(&next);
            let results = Arc::clone(&results);
            let port = pf.smtp_port;
            std::thread::spawn(move || {
                let (mut smtp, greeting) = Smtp::connect(port);
                assert_eq!(greeting.code, 220);
                assert_eq!(smtp.command("EHLO client.test").code, 250);
                let mut on_this_connection = 0;
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= MESSAGES {
                        break;
                    }
                    let case = n % CASES.len();
                    let (subject, rcpt) = CASES[case];
                    let id = format!("<reload-{n}@markgate.test>");
                    let msg = format!(
                        "From: {SENDER}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\
                         Message-ID: {id}\r\n\r\nmessage {n}\r\n"
                    );
                    let mail = smtp.command(&format!("MAIL FROM:<{SENDER}>"));
                    assert_eq!(mail.code, 250, "MAIL: {}", mail.text());
                    let r = smtp.command(&format!("RCPT TO:<{rcpt}>"));
                    assert_eq!(r.code, 250, "RCPT: {}", r.text());
                    let (go, done) = smtp.data(msg.as_bytes());
                    let final_reply = done.unwrap_or(go);
                    results.lock().expect("lock").push((
                        id,
                        case,
                        final_reply.code,
                        final_reply.text(),
                    ));
                    on_this_connection += 1;
                    // A new SMTP session now and then, so milter connections come and go too.
                    if on_this_connection == 25 {
                        smtp.command("QUIT");
                        let (s, g) = Smtp::connect(port);
                        assert_eq!(g.code, 220);
                        smtp = s;
                        assert_eq!(smtp.command("EHLO client.test").code, 250);
                        on_this_connection = 0;
                    }
                }
                smtp.command("QUIT");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let send_time = started.elapsed();
    sending.store(false, Ordering::SeqCst);
    reload_thread.join().expect("reload thread");

    let results = results.lock().expect("lock").clone();
    assert_eq!(results.len(), MESSAGES);
    let tempfailed: Vec<_> = results.iter().filter(|r| r.2 / 100 == 4).collect();
    assert!(tempfailed.is_empty(), "tempfailed: {tempfailed:?}");
    let odd: Vec<_> = results
        .iter()
        .filter(|r| r.2 != 250 && r.2 / 100 != 5)
        .collect();
    assert!(odd.is_empty(), "neither accepted nor rejected: {odd:?}");
    let accepted: HashSet<String> = results
        .iter()
        .filter(|r| r.2 == 250)
        .map(|r| r.0.clone())
        .collect();
    let rejected: HashSet<String> = results
        .iter()
        .filter(|r| r.2 / 100 == 5)
        .map(|r| r.0.clone())
        .collect();

    // Every accepted message arrives exactly once.
    let delivered = pf.wait_delivered(accepted.len(), Duration::from_secs(120));
    let mut delivered_ids: Vec<String> = delivered
        .iter()
        .filter_map(|d| d.header("Message-ID"))
        .map(|s| s.trim().to_string())
        .collect();
    delivered_ids.sort();
    let unique: HashSet<String> = delivered_ids.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        delivered_ids.len(),
        "a message was delivered twice"
    );
    assert_eq!(unique, accepted, "delivered set differs from accepted set");

    // Every message was decided once, on a good policy, as that policy says.
    let seen = probe.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), MESSAGES, "decisions recorded");
    let by_id: HashMap<&str, &Seen> = seen.iter().map(|s| (s.message_id.as_str(), s)).collect();
    let mut across_reload = 0;
    let mut under = HashMap::<&str, usize>::new();
    for (id, _case, code, text) in &results {
        let s = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} never decided"));
        let policy = compiled
            .get(&s.digest)
            .unwrap_or_else(|| panic!("{id} decided on an unknown (broken?) policy {}", s.digest));
        let expected = verdict_name(&policy::decide(policy, &s.facts, &s.envelope).verdict);
        assert_eq!(
            s.verdict, expected,
            "{id}: decision differs from its policy"
        );
        match expected {
            "accept" => assert_eq!(*code, 250, "{id}: {text}"),
            "reject" => assert_eq!(*code, 550, "{id}: {text}"),
            other => panic!("{id}: unexpected verdict {other}"),
        }
        if s.generation_at_end != s.generation_at_start {
            across_reload += 1;
        }
        *under
            .entry(if s.digest == digest_of(&policy_a) {
                "A"
            } else {
                "B"
            })
            .or_default() += 1;
    }
    // Both policies really were in force at some point during the run.
    assert!(under.get("A").copied().unwrap_or(0) > 0, "{under:?}");
    assert!(under.get("B").copied().unwrap_or(0) > 0, "{under:?}");

    let (ok, failed) = *reloads.state.lock().expect("lock");
    assert!(ok >= 2 && failed >= 2, "ok {ok}, failed {failed}");

    // The metrics endpoint, over HTTP, agrees with what was sent.
    let text = scrape(metrics_addr);
    let total = |verdict: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("markgate_messages_total{"))
            .filter(|l| l.contains(&format!("verdict=\"{verdict}\"")))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    };
    assert_eq!(total("accept") as usize, accepted.len(), "{text}");
    assert_eq!(total("reject") as usize, rejected.len(), "{text}");
    assert_eq!(
        sample(&text, "markgate_message_duration_seconds_count") as usize,
        MESSAGES
    );
    assert_eq!(
        sample(&text, r#"markgate_reloads_total{result="ok"}"#) as usize,
        ok
    );
    assert_eq!(
        sample(&text, r#"markgate_reloads_total{result="failed"}"#) as usize,
        failed
    );

    println!(
        "reload under load: {MESSAGES} messages over {CLIENTS} connections in {:.2} s; \
         {} delivered, {} rejected, 0 tempfailed, 0 lost; {} reloads ok, {} failed \
         (broken policy); {} messages had a reload land while they were in flight; \
         decided under A: {}, under B: {}",
        send_time.as_secs_f64(),
        accepted.len(),
        rejected.len(),
        ok,
        failed,
        across_reload,
        under.get("A").copied().unwrap_or(0),
        under.get("B").copied().unwrap_or(0),
    );

    let _ = stop_tx.send(true);
    drop(pf);
    rt.shutdown_timeout(Duration::from_secs(5));
}
