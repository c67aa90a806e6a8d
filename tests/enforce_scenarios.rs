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
use markgate::policy::{Envelope, Policy};
use serde::Deserialize;
use support::markgate::Milter;
use support::postfix::{Delivered, Postfix, PostfixConfig, TOOLS, crlf_to_lf};
use support::{peers, ports};

const DISCLAIMER: &str = "may be subject to recording and/or monitoring";
const WAIT: Duration = Duration::from_secs(60);

/// How many attachments were compared and signatures verified (so a check cannot silently
/// never run).
static ATTACHMENTS_CHECKED: AtomicUsize = AtomicUsize::new(0);
static SIGNATURES_VERIFIED: AtomicUsize = AtomicUsize::new(0);

/// `case.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    from: String,
    to: Vec<String>,
    /// SMTP client address (faked with XCLIENT); default 127.0.0.1, inside the policy's
    /// networks, so outbound.
    client: Option<String>,
    /// A policy file in `tests/enforce/policies/`; default the shipped `policies/uk-gpms.toml`.
    policy: Option<String>,
    /// `deliver` or `reject` (the SMTP reply to DATA is 5xx).
    expect: String,
    /// Fragments the reply to DATA must contain.
    #[serde(default)]
    reply: Vec<String>,
}

struct Scenario {
    name: String,
    dir: PathBuf,
    case: Case,
    input: Vec<u8>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/enforce")
}

fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root()).expect("tests/enforce") {
        let dir = entry.expect("entry").path();
        let case_file = dir.join("case.toml");
        if !case_file.exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&case_file).expect("case.toml");
        let case: Case =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", case_file.display()));
        let input = std::fs::read(dir.join("in.eml")).expect("in.eml");
        out.push(Scenario {
            name,
            dir,
            case,
            input,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn policy_path(case: &Case) -> PathBuf {
    match &case.policy {
        Some(p) => root().join("policies").join(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/uk-gpms.toml"),
    }
}

/// What Postfix hands the milter: the message with CRLF line ends.
fn as_postfix_sends(input: &[u8]) -> Vec<u8> {
    let lf = crlf_to_lf(input);
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 20);
    for &b in &lf {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The delivered message without Postfix's own Received header (the first header).
fn normalise(d: &Delivered) -> Vec<u8> {
    let m = &d.message;
    assert!(m.starts_with(b"Received: "), "no Postfix Received first");
    let mut pos = 0;
    loop {
        let end = m[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(m.len(), |i| pos + i + 1);
        pos = end;
        if !matches!(m.get(pos), Some(b' ' | b'\t')) {
            break;
        }
    }
    m[pos..].to_vec()
}

fn message_id(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    text.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("every in.eml has a Message-ID")
        .trim()
        .to_owned()
}

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
    let envelope = Envelope {
        sender: s.case.from.clone(),
        recipients: s.case.to.clone(),
        client_ip: Some(
            s.case
                .client
                .as_deref()
                .unwrap_or("127.0.0.1")
                .parse()
                .expect("client ip"),
        ),
        auth_user: None,
        daemon_name: None,
    };
    let wire = as_postfix_sends(&s.input);
    let eval = filter::evaluate(&st.policy, envelope, &RawSource::new(&wire))
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
            let mut want_rcpts: Vec<String> = s
                .case
                .to
                .iter()
                .filter(|t| !removed.contains(&t.as_str()))
                .cloned()
                .collect();
            want_rcpts.sort();
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
                for r in &removed {
                    if !nt.contains(r) {
                        problems.push(format!("the notice does not name {r}"));
                    }
                }
                if !notice.mail_args.starts_with("<>") {
                    problems.push(format!("notice not from <>: {}", notice.mail_args));
                }
            }
        }
        other => problems.push(format!("unknown expect {other:?}")),
    }
    for frag in &s.case.reply {
        if !data_reply.contains(frag.as_str()) {
            problems.push(format!("reply to DATA {data_reply:?} lacks {frag:?}"));
        }
    }
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

/// The server's answer to the end of the message data: the last reply before QUIT's 221
/// (all its lines joined with `\n`).
fn end_of_data_reply(r: &support::postfix::SwaksResult) -> String {
    let replies = r.replies();
    let end = replies
        .iter()
        .rposition(|l| l.starts_with("221"))
        .unwrap_or(replies.len());
    let mut lines: Vec<&str> = Vec::new();
    for l in replies[..end].iter().rev() {
        // Lines of one multi-line reply: `550-…` continuations before the final `550 …`.
        if lines.is_empty() || l.as_bytes().get(3) == Some(&b'-') {
            lines.push(l);
        } else {
            break;
        }
    }
    lines.reverse();
    lines.join("\n")
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
        let notices = results
            .iter()
            .filter(|(s, _)| {
                // Policies that remove recipients: their sender notices pass the milter too.
                matches!(
                    s.case.policy.as_deref(),
                    Some("uk-gpms-remove.toml" | "au-epms-release.toml")
                )
            })
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
