//! Reload under load, against a real Postfix: a few hundred messages flow through the
//! production [`Filter`] while SIGHUP arrives again and again, half of the time with a broken
//! policy file.
//!
//! Wired as `markgate run` wires it: a [`Reloader`] over real config and policy files, the
//! audit writer on a file in a temporary directory (with the reload audit observer and SIGUSR1
//! reopen), the metrics registry, and `Filter::new` reading its policy from the reload cell.
//! The only thing between the milter server and the filter is [`Slow`], which waits 3 ms
//! before handing each message to the filter (to widen the window in which a reload lands
//! while a message is in flight) and notes which policy was in force at MAIL. The reloads are
//! real: the policy file is replaced (atomically, as an editor would) and this process gets a
//! real SIGHUP, handled by `reload::handle_signals`.
//!
//! Two good policies alternate: A (the shipped uk-gpms: `*.gcsx.gov.uk` may receive
//! RESTRICTED) and B (the same with that ceiling lowered to UNCLASSIFIED and a disclaimer text
//! of its own), with a broken file in between every change. Checked afterwards, for every
//! message:
//! - it was either delivered or rejected: never tempfailed, never lost, never duplicated;
//! - it has exactly one audit record, whose policy digest is A's or B's (the broken policy was
//!   never in force) and is the policy that was in force when the message started;
//! - that record is exactly the one the recorded policy gives when the pipeline runs again
//!   here on the same message (verdict, reply, labels, edits, rule ids);
//! - a delivered message's body and label header are exactly what that same policy writes, so
//!   no message mixes one policy's verdict with the other's edits.
//!
//! And: the audit chain verifies, with one `policy_loaded` per good reload and one
//! `reload_failed` per broken one; the Prometheus endpoint, scraped over HTTP, agrees with the
//! counts.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use markgate::alert::AlertHandle;
use markgate::audit::{AuditConfig, AuditEvent, MessageRecord, Record, SyslogConfig};
use markgate::config::Config;
use markgate::filter::{self, Filter, LiveCell, MessageMeta, Notices, RawSource};
use markgate::metrics::Metrics;
use markgate::milter::handler::{ConnectionFacts, Handler, HandlerError, Macros, MessageSink};
use markgate::milter::{ListenSpec, Outcome, Server, ServerConfig};
use markgate::notify::Notifier;
use markgate::policy::{self, Envelope, Policy};
use markgate::reload::{AuditObserver, PolicyFiles, ReloadObserver, Reloader};

use support::peers;
use support::postfix::{Postfix, PostfixConfig, TOOLS, crlf_to_lf, parse_headers};
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

/// The disclaimer text of policy A (the shipped one) and what B puts in front of it.
const DISCLAIMER_A: &str = "Communications sent to or from this organisation may be subject \
    to recording and/or monitoring in accordance with relevant legislation.";
const B_MARK: &str = "Policy B notice. ";

/// One message as the client saw it: Message-ID, the message as sent, final SMTP code, reply
/// text.
type Sent = (String, String, u16, String);

/// The production filter, 3 ms late: counts the messages during which a reload landed, and
/// notes which policy was in force when each message started (at MAIL).
struct Slow {
    filter: Filter,
    current: LiveCell,
    across_reload: AtomicUsize,
    /// Message-ID -> digest of the policy in force at MAIL (`None` when a reload landed just
    /// as the filter took its snapshot, so which one it got is not known here).
    started_under: Mutex<HashMap<String, Option<String>>>,
}

/// A message in flight: the policy generation and digest in force when it started, and its
/// Message-ID once the header has passed.
struct Tracked {
    inner: filter::Message,
    generation: u64,
    digest: Option<String>,
    message_id: Option<String>,
}

impl MessageSink for Tracked {
    fn mail_from(&mut self, sender: &[u8], args: &[Vec<u8>]) -> std::io::Result<()> {
        self.inner.mail_from(sender, args)
    }
    fn rcpt_to(&mut self, recipient: &[u8], args: &[Vec<u8>]) -> std::io::Result<()> {
        self.inner.rcpt_to(recipient, args)
    }
    fn header(&mut self, name: &[u8], value: &[u8]) -> std::io::Result<()> {
        if name.eq_ignore_ascii_case(b"Message-ID") {
            self.message_id = Some(String::from_utf8_lossy(value).trim().to_string());
        }
        self.inner.header(name, value)
    }
    fn body_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.inner.body_chunk(chunk)
    }
    fn macros(&mut self, macros: Macros) -> std::io::Result<()> {
        self.inner.macros(macros)
    }
}

impl Handler for Slow {
    type Sink = Tracked;

    fn begin_message(&self, conn: &ConnectionFacts) -> Result<Tracked, HandlerError> {
        let before = self.current.snapshot();
        let inner = self.filter.begin_message(conn)?;
        let after = self.current.snapshot();
        Ok(Tracked {
            inner,
            generation: before.generation,
            digest: (before.generation == after.generation).then(|| before.policy_digest.clone()),
            message_id: None,
        })
    }

    async fn end_of_message(
        &self,
        conn: &ConnectionFacts,
        message: Tracked,
    ) -> Result<Outcome, HandlerError> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        let out = self.filter.end_of_message(conn, message.inner).await;
        if self.current.snapshot().generation != message.generation {
            self.across_reload.fetch_add(1, Ordering::SeqCst);
        }
        if let (Some(id), Ok(mut started)) = (message.message_id, self.started_under.lock()) {
            started.insert(id, message.digest);
        }
        out
    }
}

/// Counts reload results and lets the test wait for the next one.
#[derive(Default)]
struct Reloads {
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

/// Counts reloads for the test and writes their audit records as the daemon does.
struct Observer(Arc<Reloads>, AuditObserver);

impl ReloadObserver for Observer {
    fn applied(&self, path: &str, digest: &str, generation: u64) {
        self.1.applied(path, digest, generation);
        if let Ok(mut s) = self.0.state.lock() {
            s.0 += 1;
        }
        self.0.changed.notify_all();
    }
    fn failed(&self, path: &str, error: &str, kept_digest: &str) {
        self.1.failed(path, error, kept_digest);
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
    assert!(
        policy_a.contains(&format!("text = \"{DISCLAIMER_A}\"")),
        "the shipped disclaimer changed; adjust DISCLAIMER_A"
    );
    let policy_b = policy_a
        .replacen(
            "\"*.gcsx.gov.uk\" = \"RESTRICTED\"",
            "\"*.gcsx.gov.uk\" = \"UNCLASSIFIED\"",
            1,
        )
        .replacen(
            &format!("text = \"{DISCLAIMER_A}\""),
            &format!("text = \"{B_MARK}{DISCLAIMER_A}\""),
            1,
        );
    assert_eq!(
        policy_b.matches(B_MARK).count(),
        1,
        "the shipped policy changed shape; adjust policy B"
    );
    assert!(
        !policy_b.contains("\"*.gcsx.gov.uk\" = \"RESTRICTED\""),
        "the shipped policy changed shape; adjust policy B"
    );
    let broken = format!("{policy_a}\n[[rule]]\nid = \"unfinished\nwhen = \n");
    let policy_path: PathBuf = dir.path().join("policy.toml");
    let config_path = dir.path().join("markgate.toml");
    let audit_path = dir.path().join("audit.jsonl");
    replace(&policy_path, &policy_a);
    std::fs::write(
        &config_path,
        format!(
            "policy = {:?}\n\n[audit]\npath = {:?}\n",
            policy_path.display().to_string(),
            audit_path.display().to_string()
        ),
    )
    .expect("write config");
    let config = Config::load(&config_path).expect("config");
    assert_eq!(config.audit.path, audit_path);

    // The two good policies, by the digest the filter records.
    let compiled: HashMap<String, (&str, Policy)> = [("A", &policy_a), ("B", &policy_b)]
        .into_iter()
        .map(|(name, text)| {
            let p = Policy::from_str(name, text).expect("a good policy");
            (p.digest.clone(), (name, p))
        })
        .collect();
    assert_eq!(compiled.len(), 2);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let audit = markgate::audit::start(&AuditConfig {
        syslog: SyslogConfig {
            enabled: false,
            ..SyslogConfig::default()
        },
        ..config.audit.clone()
    })
    .expect("audit writer");
    let reloads = Arc::new(Reloads::default());
    let metrics = Metrics::new();
    let reloader = Arc::new(
        Reloader::start(
            Some(config_path.clone()),
            Box::new(|_: &mut Config| {}),
            PolicyFiles,
            Box::new(Observer(
                Arc::clone(&reloads),
                AuditObserver::new(audit.clone(), rt.handle().clone()),
            )),
            Some(metrics.clone()),
            Arc::new(Notifier::disabled()),
        )
        .expect("initial load"),
    );
    let first = reloader.current().snapshot();
    assert_eq!(compiled[&first.policy_digest].0, "A");
    let handler = Arc::new(Slow {
        filter: Filter::new(
            reloader.current(),
            Some(audit.clone()),
            AlertHandle::disabled(),
            Notices::disabled(),
        )
        .with_metrics(metrics.clone()),
        current: reloader.current(),
        across_reload: AtomicUsize::new(0),
        started_under: Mutex::new(HashMap::new()),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (milter_addr, metrics_addr) = rt.block_on(async {
        let spec = ListenSpec::parse("inet:127.0.0.1:0").expect("spec");
        let server = Server::bind(&spec, ServerConfig::default())
            .await
            .expect("bind milter");
        let milter_addr = server.local_addr().expect("tcp address");
        let mut rx = stop_rx.clone();
        tokio::spawn(server.run(Arc::clone(&handler), async move {
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
        let reopen = audit.clone();
        tokio::spawn(async move {
            let out = markgate::reload::handle_signals(r, reopen, async move {
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

    // Reloader thread: B -> broken -> A -> broken -> B ..., one SIGHUP each, waiting for each
    // reload to be done before the next change so every broken file is really tried.
    let sending = Arc::new(AtomicBool::new(true));
    let reload_thread = {
        let reloads = Arc::clone(&reloads);
        let sending = Arc::clone(&sending);
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
                    let (subject, rcpt) = CASES[n % CASES.len()];
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
                        msg,
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
    let mut delivered_by_id = HashMap::new();
    for d in &delivered {
        let id = d
            .header("Message-ID")
            .expect("Message-ID")
            .trim()
            .to_string();
        assert!(
            delivered_by_id.insert(id.clone(), d).is_none(),
            "{id} was delivered twice"
        );
    }
    let delivered_ids: HashSet<String> = delivered_by_id.keys().cloned().collect();
    assert_eq!(
        delivered_ids, accepted,
        "delivered set differs from accepted set"
    );

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
    let (ok, failed) = *reloads.state.lock().expect("lock");
    assert_eq!(
        sample(&text, r#"markgate_reloads_total{result="ok"}"#) as usize,
        ok
    );
    assert_eq!(
        sample(&text, r#"markgate_reloads_total{result="failed"}"#) as usize,
        failed
    );

    // The audit trail: stop everything that writes to it, then read it back.
    let _ = stop_tx.send(true);
    drop(pf);
    rt.block_on(async {
        // The reload records are handed to the writer from their own tasks; let them land.
        tokio::time::sleep(Duration::from_millis(200)).await;
        audit.shutdown().await.expect("audit writer stops cleanly");
    });
    let verified = markgate::audit::verify_files(std::slice::from_ref(&audit_path));
    assert!(
        verified.ok(),
        "the audit chain does not verify: {verified:?}"
    );
    let records: Vec<Record> = std::fs::read_to_string(&audit_path)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut decisions: HashMap<String, &MessageRecord> = HashMap::new();
    let (mut loaded, mut refused) = (0, 0);
    for r in &records {
        match &r.event {
            AuditEvent::MessageDecision(m) => {
                let id = m.message_id.clone().expect("the record names the message");
                assert!(
                    decisions.insert(id.clone(), m).is_none(),
                    "{id} has two audit records"
                );
            }
            AuditEvent::PolicyLoaded(p) => {
                assert_eq!(p.trigger, "reload");
                assert!(compiled.contains_key(&p.digest), "loaded {}", p.digest);
                loaded += 1;
            }
            AuditEvent::ReloadFailed(f) => {
                assert!(compiled.contains_key(&f.kept_digest), "kept {f:?}");
                assert!(
                    f.error.contains(&policy_path.display().to_string()),
                    "{f:?}"
                );
                refused += 1;
            }
            other => panic!("unexpected audit record {other:?}"),
        }
    }
    assert_eq!(decisions.len(), MESSAGES, "one audit record per message");

    // Every message was decided on a good policy, entirely as that policy says.
    let mut under = HashMap::<&str, usize>::new();
    for (id, sent, code, text) in &results {
        let rec = decisions
            .get(id)
            .unwrap_or_else(|| panic!("{id} has no audit record"));
        let (name, policy) = compiled.get(&rec.policy_digest).unwrap_or_else(|| {
            panic!(
                "{id} decided on an unknown (broken?) policy {}",
                rec.policy_digest
            )
        });
        *under.entry(name).or_default() += 1;
        // Decided on the policy in force when the message started, not a later one.
        match handler.started_under.lock().expect("lock").get(id) {
            Some(Some(at_mail)) => assert_eq!(
                &rec.policy_digest, at_mail,
                "{id}: decided on another policy than the one in force at MAIL"
            ),
            Some(None) => {}
            None => panic!("{id} never reached end-of-message"),
        }
        let envelope = Envelope {
            sender: rec.sender.clone(),
            recipients: rec.recipients.iter().map(|r| r.address.clone()).collect(),
            client_ip: rec.client_addr.as_deref().map(|a| a.parse().expect("ip")),
            auth_user: rec.auth_user.clone(),
            daemon_name: None,
            next_hops: Vec::new(),
        };
        assert_eq!(envelope.sender, SENDER);
        let eval = filter::evaluate(policy, envelope, &RawSource::new(sent.as_bytes()))
            .expect("the pipeline decides the message again");
        let meta = MessageMeta {
            queue_id: rec.queue_id.clone(),
            message_id: rec.message_id.clone(),
            client_name: rec.client_name.clone(),
            helo: rec.helo.clone(),
            size: rec.size,
        };
        let expected = filter::audit_record(policy, &eval, &meta);
        assert_eq!(
            **rec, expected,
            "{id}: the audit record is not what policy {name} decides"
        );
        match filter::answer_text(&eval).split(' ').next() {
            Some("accept") => assert_eq!(*code, 250, "{id}: {text}"),
            Some("550") => assert_eq!(*code, 550, "{id}: {text}"),
            other => panic!("{id}: unexpected answer {other:?}"),
        }
        if let Some(d) = delivered_by_id.get(id) {
            // The delivered message carries this policy's edits and no other's.
            let out = eval.output().expect("an accepted message has an output");
            let out = crlf_to_lf(&out);
            let body_at = out
                .windows(2)
                .position(|w| w == b"\n\n")
                .expect("header/body separator")
                + 2;
            assert_eq!(
                String::from_utf8_lossy(d.body()),
                String::from_utf8_lossy(&out[body_at..]),
                "{id}: delivered body differs from policy {name}'s"
            );
            let body = String::from_utf8_lossy(d.body());
            assert_eq!(body.contains(B_MARK), *name == "B", "{id}: {body}");
            assert_eq!(
                d.header_values("X-Protective-Marking"),
                parse_headers(&out[..body_at])
                    .into_iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("X-Protective-Marking"))
                    .map(|(_, v)| v)
                    .collect::<Vec<_>>(),
                "{id}: label header differs from policy {name}'s"
            );
        }
    }
    // Both policies really were in force at some point during the run.
    assert!(under.get("A").copied().unwrap_or(0) > 0, "{under:?}");
    assert!(under.get("B").copied().unwrap_or(0) > 0, "{under:?}");

    let (ok, failed) = *reloads.state.lock().expect("lock");
    assert!(ok >= 2 && failed >= 2, "ok {ok}, failed {failed}");
    assert_eq!((loaded, refused), (ok, failed), "reload audit records");

    println!(
        "reload under load (production filter): {MESSAGES} messages over {CLIENTS} \
         connections in {:.2} s; {} delivered, {} rejected, 0 tempfailed, 0 lost; {} reloads \
         ok, {} failed (broken policy); {} messages had a reload land while they were in \
         flight; decided under A: {}, under B: {}",
        send_time.as_secs_f64(),
        accepted.len(),
        rejected.len(),
        ok,
        failed,
        handler.across_reload.load(Ordering::SeqCst),
        under.get("A").copied().unwrap_or(0),
        under.get("B").copied().unwrap_or(0),
    );

    rt.shutdown_timeout(Duration::from_secs(5));
}
