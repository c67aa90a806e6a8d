//! End to end through a real Postfix: every scenario folder in `tests/enforce/` is sent with
//! swaks into a private Postfix whose `smtpd_milters` is markgate's production filter (the
//! real pipeline, in process, with an audit trail), and checked in the SMTP reply or in the
//! message `smtp-sink` received.
//!
//! A folder holds `in.eml` (sent as is), `case.toml` (envelope, SMTP client, policy, what to
//! expect; see [`Case`]) and, for delivered mail, `out.eml`: the delivered message after
//! normalisation. Normalised, and nothing else: Postfix's own `Received:` header (the first
//! header, with its continuation lines: it carries the queue id, host and date, which vary per
//! run) is removed, and line ends are LF because smtp-sink strips the CR. Every in.eml carries
//! its own Date and Message-ID, so Postfix adds none. On a mismatch the delivered message is
//! written beside it as `actual.eml`; `MARKGATE_BLESS=1` writes `out.eml` instead.
//!
//! Besides the golden file, each delivered message must equal what `markgate policy test`'s
//! code path (`filter::evaluate` + `rewrite::apply`) makes of the same input, so the tool and
//! the daemon cannot drift. Extra checks: S/MIME still verifies (`openssl smime -verify
//! -noverify`), attachments are byte-identical, the disclaimer appears once, removed
//! recipients get nothing and the sender gets a notice, and the audit trail verifies with one
//! decision per message.
//!
//! One Postfix + markgate pair per policy used, shared by that policy's scenarios, which are
//! sent in parallel; the whole suite takes a few seconds.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use markgate::config::Config;
use markgate::filter::{self, Filter, Notices, RawSource};
use markgate::policy::Policy;
use support::enforce::{
    Scenario, as_postfix_sends, check_notice, end_of_data_reply, message_id, normalise,
    policy_path, scenarios,
};
use support::markgate::Milter;
use support::postfix::{Delivered, Postfix, PostfixConfig, TOOLS, crlf_to_lf};
use support::{peers, ports};

const DISCLAIMER: &str = "may be subject to recording and/or monitoring";
const WAIT: Duration = Duration::from_secs(60);

/// How many attachments were compared and signatures verified (so a check cannot silently
/// never run).
static ATTACHMENTS_CHECKED: AtomicUsize = AtomicUsize::new(0);
static SIGNATURES_VERIFIED: AtomicUsize = AtomicUsize::new(0);

/// Wait for the delivered message(s) carrying this Message-ID.
fn wait_for(pf: &Postfix, id: &str, n: usize) -> Vec<Delivered> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got: Vec<Delivered> = pf
            .delivered()
            .into_iter()
            .filter(|d| {
                String::from_utf8_lossy(&d.message)
                    .lines()
                    .take_while(|l| !l.is_empty())
                    .any(|l| l.trim() == format!("Message-ID: {id}"))
            })
            .collect();
        if got.len() >= n {
            // Postfix logs `removed` after the sink's 250: wait for the file to be complete.
            std::thread::sleep(Duration::from_millis(50));
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not delivered\nqueue:\n{}\nmaillog:\n{}",
            pf.queue(),
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One Postfix + markgate pair for one policy.
struct Stack {
    pf: Postfix,
    _milter: Milter,
    audit: PathBuf,
    _audit_dir: tempfile::TempDir,
    policy: Policy,
}

fn stack(policy_file: &Path) -> Stack {
    let policy = Policy::from_file(policy_file).expect("policy loads");
    let port = ports::free_port();
    let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}")));
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let audit = audit_dir.path().join("audit.jsonl");
    let mut config = Config::default();
    config.limits.spill_threshold = 64 * 1024;
    config.audit.path = audit.clone();
    config.audit.syslog.enabled = false;
    let handle = markgate::audit::start(&config.audit).expect("audit starts");
    let filter = Filter::fixed(policy.clone(), config, Some(handle)).with_notices(Notices::spawn(
        "127.0.0.1".into(),
        pf.smtp_port,
        "markgate@example-council.gcsx.gov.uk".into(),
        Duration::from_secs(30),
    ));
    let milter = Milter::start_tcp_on(port, filter);
    Stack {
        pf,
        _milter: milter,
        audit,
        _audit_dir: audit_dir,
        policy,
    }
}

fn send(pf: &Postfix, s: &Scenario) -> support::postfix::SwaksResult {
    let to: Vec<&str> = s.case.to.iter().map(String::as_str).collect();
    let xclient = format!(
        "ADDR={} NAME=client.test",
        s.case.client.as_deref().unwrap_or("127.0.0.1")
    );
    pf.send_data_with(&s.case.from, &to, &s.input, &["--xclient", &xclient])
}

/// Check one scenario; returns the problems found (empty: passed).
fn check(st: &Stack, s: &Scenario, r: &support::postfix::SwaksResult) -> Vec<String> {
    let mut problems = Vec::new();
    let data_reply = end_of_data_reply(r);
    let wire = as_postfix_sends(&s.input);
    let eval = filter::evaluate(&st.policy, s.envelope(), &RawSource::new(&wire))
        .expect("the pipeline decides");
    match s.case.expect.as_str() {
        "reject" => {
            if r.code == 0 || !data_reply.starts_with('5') {
                problems.push(format!("expected a 5xx to DATA, got {data_reply:?}"));
            }
            if eval.output().is_some() {
                problems.push("policy test's path would deliver it".into());
            }
        }
        "deliver" => {
            if r.code != 0 {
                problems.push(format!("not accepted: {}", r.dialog));
                return problems;
            }
            let removed: Vec<&str> = eval.removed();
            let id = message_id(&s.input);
            let got = wait_for(&st.pf, &id, 1);
            let d = &got[0];
            let want_rcpts = s.kept_recipients(&removed);
            let mut rcpts = d.recipients();
            rcpts.sort();
            if rcpts != want_rcpts {
                problems.push(format!("delivered to {rcpts:?}, expected {want_rcpts:?}"));
            }
            let delivered = normalise(d);
            let same_path = crlf_to_lf(&eval.output().expect("policy test delivers it too"));
            if delivered != same_path {
                std::fs::write(s.dir.join("actual-policy-test.eml"), &same_path).ok();
                problems.push("delivered message differs from `markgate policy test`'s output (written to actual-policy-test.eml)".into());
            }
            let golden = s.dir.join("out.eml");
            if std::env::var_os("MARKGATE_BLESS").is_some() {
                std::fs::write(&golden, &delivered).expect("bless");
            }
            match std::fs::read(&golden) {
                Ok(want) if want == delivered => {
                    let _ = std::fs::remove_file(s.dir.join("actual.eml"));
                }
                Ok(_) => {
                    std::fs::write(s.dir.join("actual.eml"), &delivered).ok();
                    problems.push("differs from out.eml (see actual.eml)".into());
                }
                Err(_) => {
                    std::fs::write(s.dir.join("actual.eml"), &delivered).ok();
                    problems.push("no out.eml (see actual.eml)".into());
                }
            }
            // Every attachment, inline image and signature of the input, byte for byte.
            let shape = markgate::inspect::mime::analyze(&wire, None);
            for &i in &shape.attachments {
                let part = &shape.parts[i];
                let bytes = crlf_to_lf(&wire[part.body_range.clone()]);
                ATTACHMENTS_CHECKED.fetch_add(1, Ordering::Relaxed);
                if !bytes.is_empty() && find(&delivered, &bytes).is_none() {
                    problems.push(format!(
                        "attachment part {i} ({}) not byte-identical",
                        part.content_type
                    ));
                }
            }
            // A signed message still verifies.
            if shape.is_protected() && wire.windows(16).any(|w| w == b"multipart/signed") {
                match smime_verifies(&delivered) {
                    Ok(()) => {
                        SIGNATURES_VERIFIED.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => problems.push(format!("S/MIME signature no longer verifies: {e}")),
                }
            }
            // The disclaimer at most once per text part, and a second pass adds nothing.
            let text = String::from_utf8_lossy(&delivered);
            let disclaimers = text.matches(DISCLAIMER).count();
            let parts = markgate::inspect::mime::analyze(&delivered, None)
                .text_parts
                .len();
            if disclaimers > parts.max(1) {
                problems.push(format!(
                    "disclaimer {disclaimers} times in {parts} text part(s)"
                ));
            }
            let again = filter::evaluate(
                &st.policy,
                eval.envelope.clone(),
                &RawSource::new(&as_postfix_sends(&delivered)),
            )
            .expect("the pipeline decides the delivered message");
            if again.plan.as_ref().is_some_and(|p| p.body.is_some()) {
                problems.push("a second pass would change the body again".into());
            }
            if !removed.is_empty() {
                // The sender is told, from the null sender, through the same gateway.
                let notice = wait_notice(&st.pf, &s.case.from);
                let nt = String::from_utf8_lossy(&notice.message);
                check_notice(&nt, &notice, &removed, &mut problems);
            }
        }
        other => problems.push(format!("unknown expect {other:?}")),
    }
    s.check_reply(&data_reply, &mut problems);
    problems
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `openssl smime -verify -noverify` on a delivered message (the signer's certificate is in
/// the message; -noverify skips the chain, the signature over the content is checked).
fn smime_verifies(message: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("delivered.eml");
    std::fs::write(&file, message).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("openssl")
        .args(["smime", "-verify", "-noverify", "-in"])
        .arg(&file)
        .args(["-out", "/dev/null"])
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && err.contains("Verification successful") {
        Ok(())
    } else {
        Err(err)
    }
}

fn wait_notice(pf: &Postfix, sender: &str) -> Delivered {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(d) = pf.delivered().into_iter().find(|d| {
            d.recipients().iter().any(|r| r == sender)
                && String::from_utf8_lossy(&d.message).contains("recipients of your message")
        }) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "no notice to {sender}\nmaillog:\n{}",
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn every_scenario_through_postfix_and_markgate() {
    if !peers::available("every_scenario_through_postfix_and_markgate", TOOLS, true) {
        return;
    }
    assert!(
        peers::find_tool("openssl").is_some() || !peers::required(),
        "openssl is needed for the S/MIME check"
    );
    let all = scenarios();
    assert!(all.len() >= 40, "only {} scenarios found", all.len());
    let mut by_policy: BTreeMap<PathBuf, Vec<&Scenario>> = BTreeMap::new();
    for s in &all {
        by_policy.entry(policy_path(&s.case)).or_default().push(s);
    }
    let mut failures = Vec::new();
    for (policy, cases) in by_policy {
        let st = stack(&policy);
        let results: Vec<(&Scenario, support::postfix::SwaksResult)> = std::thread::scope(|sc| {
            let handles: Vec<_> = cases
                .chunks(cases.len().div_ceil(6).max(1))
                .map(|chunk| {
                    let pf = &st.pf;
                    sc.spawn(move || chunk.iter().map(|s| (*s, send(pf, s))).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("sender thread"))
                .collect()
        });
        for (s, r) in &results {
            let problems = check(&st, s, r);
            if !problems.is_empty() {
                failures.push(format!("{}: {}", s.name, problems.join("; ")));
            }
        }
        // One decision record per message, a chain that verifies.
        let records = std::fs::read_to_string(&st.audit).expect("audit file");
        let decisions = records.matches("\"event\":\"message_decision\"").count();
        // Sender notices pass through the same gateway and are decided too.
        let notices = st
            .pf
            .delivered()
            .iter()
            .filter(|d| String::from_utf8_lossy(&d.message).contains("recipients of your message"))
            .count();
        if decisions < results.len() || decisions > results.len() + notices {
            failures.push(format!(
                "{}: {decisions} decision records for {} messages",
                policy.display(),
                results.len()
            ));
        }
        let report = markgate::audit::verify_files(&[&st.audit]);
        if !report.ok() {
            failures.push(format!("audit chain broken: {report}"));
        }
    }
    assert!(
        ATTACHMENTS_CHECKED.load(Ordering::Relaxed) >= 7,
        "attachments compared: {}",
        ATTACHMENTS_CHECKED.load(Ordering::Relaxed)
    );
    assert!(
        SIGNATURES_VERIFIED.load(Ordering::Relaxed) >= 1,
        "no S/MIME message verified"
    );
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
