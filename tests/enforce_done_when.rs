//! Issue 4's "done when", as a new user would see it: the `markgate` binary started the way the
//! README says (`markgate run`, here on a free port and with the audit trail in a temporary
//! directory so parallel runs do not collide), the built-in default policy, a Postfix pointed
//! at it, and swaks:
//!
//! 1. RESTRICTED mail to `partner.gcsx.gov.uk` is delivered with both labels and the disclaimer;
//! 2. the same mail to an internet domain is refused with a 550 that says why;
//! 3. an Exchange auto-forward from the council to the internet is refused;
//! 4. unmarked mail is delivered with the disclaimer, once.
//!
//! Each decision is in the audit trail, which verifies. With `MARKGATE_WRITE_DIALOGS=1` the
//! four SMTP dialogs (swaks output) and the delivered messages are written to
//! `docs/enforcement-dialogs.md`.

mod support;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::postfix::{Delivered, Postfix, PostfixConfig, TOOLS};
use support::{peers, ports};

use support::messages::{COUNCIL, EXCHANGE_AUTO_FORWARD, from_council};
const DISCLAIMER: &str = "may be subject to recording and/or monitoring";

/// `markgate run` + Postfix.
struct Gateway {
    pf: Postfix,
    markgate: Option<Child>,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = dir.path().join("audit.jsonl");
        let port = ports::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_markgate"))
            .args(["run", "--listen", &format!("inet:127.0.0.1:{port}")])
            .arg("--audit-log")
            .arg(&audit)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start markgate");
        assert!(ports::wait_listening(port, 20), "markgate did not listen");
        let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}")));
        Gateway {
            pf,
            markgate: Some(child),
            audit,
            _dir: dir,
        }
    }

    /// swaks as a person would type it (no data suppression), against this Postfix.
    fn swaks(&self, args: &[&str]) -> (i32, String) {
        let client = ["--helo", "client.example-council.gcsx.gov.uk"];
        let r = support::mta::swaks(self.pf.smtp_port, &[&client[..], args].concat());
        (r.code, r.dialog)
    }

    fn delivered_to(&self, rcpt: &str) -> Delivered {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(d) = self
                .pf
                .delivered()
                .into_iter()
                .find(|d| d.recipients().iter().any(|r| r == rcpt))
            {
                std::thread::sleep(Duration::from_millis(50));
                return Delivered::parse(&d.path);
            }
            assert!(
                Instant::now() < deadline,
                "nothing delivered to {rcpt}\n{}",
                self.pf.maillog()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stop markgate (SIGTERM), check its exit and the audit trail; returns its log.
    fn stop(mut self) -> (String, String) {
        let mut child = self.markgate.take().expect("running");
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let status = child.wait().expect("wait");
        let mut log = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut log).expect("stderr");
        }
        assert_eq!(status.code(), Some(0), "{log}");
        let report = markgate::audit::verify_files(&[&self.audit]);
        assert!(report.ok(), "{report}");
        let records = std::fs::read_to_string(&self.audit).expect("audit");
        (log, records)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.markgate.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ready() -> bool {
    peers::available("enforce_done_when", TOOLS, true)
}

/// The dialogs collected for docs/enforcement-dialogs.md.
static DIALOGS: Mutex<Vec<(u8, String, String)>> = Mutex::new(Vec::new());

fn keep(n: u8, title: &str, text: String) {
    DIALOGS.lock().unwrap().push((n, title.to_owned(), text));
    write_doc_when_complete();
}

fn write_doc_when_complete() {
    if std::env::var_os("MARKGATE_WRITE_DIALOGS").is_none() {
        return;
    }
    let mut d = DIALOGS.lock().unwrap();
    if d.len() < 4 {
        return;
    }
    d.sort_by_key(|(n, _, _)| *n);
    let mut doc = String::from(
        "# The four enforcement dialogs (issue 4, \"done when\")\n\n\
         Captured by `MARKGATE_WRITE_DIALOGS=1 cargo test --test enforce_done_when`: the\n\
         `markgate` binary started as the README says (`markgate run`, on a free port, audit\n\
         trail in a temporary directory), the built-in default policy (`policies/uk-gpms.toml`),\n\
         a private Postfix with `smtpd_milters` pointing at it relaying to `smtp-sink`, and\n\
         swaks. Ports, queue ids, dates and host names are those of that run. Mail comes from\n\
         127.0.0.1, inside the policy's `networks`, so it is outbound.\n",
    );
    for (n, title, text) in d.iter() {
        doc.push_str(&format!("\n## {n}. {title}\n\n{text}\n"));
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/enforcement-dialogs.md");
    // The Sendmail section at the end is tests/sendmail.rs's: keep it.
    let old = std::fs::read_to_string(path).unwrap_or_default();
    if let Some(i) = old.find("\n## Through Sendmail") {
        doc.push_str(&old[i..]);
    }
    std::fs::write(path, doc).expect("write docs/enforcement-dialogs.md");
}

fn fence(s: &str) -> String {
    format!("```\n{}\n```\n", s.trim_end())
}

#[test]
fn restricted_mail_to_a_gsi_partner_is_delivered_with_both_labels_and_the_disclaimer() {
    if !ready() {
        return;
    }
    let gw = Gateway::start();
    let to = "bob.jones@partner.gcsx.gov.uk";
    let (code, dialog) = gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        to,
        "--header",
        "Subject: RESTRICTED: Budget 2027",
        "--body",
        "Figures for next year attached.",
    ]);
    assert_eq!(code, 0, "{dialog}");
    assert!(dialog.contains("<-  250 2.0.0 Ok: queued as"), "{dialog}");
    let d = gw.delivered_to(to);
    assert_eq!(
        d.header("X-Protective-Marking").as_deref(),
        Some("RESTRICTED")
    );
    assert_eq!(
        d.header("Subject").as_deref(),
        Some("RESTRICTED: Budget 2027")
    );
    let body = String::from_utf8_lossy(d.body()).into_owned();
    assert_eq!(body.matches(DISCLAIMER).count(), 1, "{body}");
    assert!(
        body.starts_with("Figures for next year attached."),
        "{body}"
    );
    let message = String::from_utf8_lossy(&d.message).into_owned();
    let (log, records) = gw.stop();
    assert!(log.contains("message decided"), "{log}");
    assert!(
        records.contains("\"effective_level\":\"RESTRICTED\""),
        "{records}"
    );
    keep(
        1,
        "RESTRICTED mail to partner.gcsx.gov.uk: delivered with both labels and the disclaimer",
        format!(
            "{}\nDelivered (smtp-sink's file, after its own trace lines):\n\n{}",
            fence(&dialog),
            fence(&message)
        ),
    );
}

#[test]
fn the_same_mail_to_an_internet_domain_is_refused_with_a_550_that_says_why() {
    if !ready() {
        return;
    }
    let gw = Gateway::start();
    let (code, dialog) = gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        "bob@mailbox.example.com",
        "--header",
        "Subject: RESTRICTED: Budget 2027",
        "--body",
        "Figures for next year attached.",
    ]);
    assert_ne!(code, 0, "{dialog}");
    let refusal = dialog
        .lines()
        .find(|l| l.starts_with("<** 550"))
        .unwrap_or_else(|| panic!("no 550 in\n{dialog}"));
    assert!(refusal.contains("5.7.1"), "{refusal}");
    assert!(refusal.contains("GPMS-ABOVE-CEILING"), "{refusal}");
    assert!(
        refusal.contains("marked above what a recipient's domain may receive"),
        "{refusal}"
    );
    assert!(gw.pf.delivered().is_empty());
    let (_, records) = gw.stop();
    assert!(records.contains("\"verdict\":\"reject\""), "{records}");
    keep(
        2,
        "The same mail to an internet domain: refused with a 550 that says why",
        fence(&dialog),
    );
}

#[test]
fn an_exchange_auto_forward_from_the_council_to_the_internet_is_refused() {
    if !ready() {
        return;
    }
    let gw = Gateway::start();
    let (code, dialog) = gw.swaks(&from_council(EXCHANGE_AUTO_FORWARD));
    assert_ne!(code, 0, "{dialog}");
    let refusal = dialog
        .lines()
        .find(|l| l.starts_with("<** 550"))
        .unwrap_or_else(|| panic!("no 550 in\n{dialog}"));
    assert!(refusal.contains("AUTOFWD-DOWN"), "{refusal}");
    assert!(gw.pf.delivered().is_empty());
    let (_, records) = gw.stop();
    assert!(records.contains("\"is_forward\":true"), "{records}");
    assert!(records.contains("\"cause\":\"auto_forward\""), "{records}");
    keep(
        3,
        "An Exchange auto-forward from the council to the internet: refused",
        fence(&dialog),
    );
}

#[test]
fn unmarked_mail_is_delivered_with_the_disclaimer_once() {
    if !ready() {
        return;
    }
    let gw = Gateway::start();
    let to = "friend@mailbox.example.com";
    let (code, dialog) = gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        to,
        "--header",
        "Subject: Lunch on Friday",
        "--body",
        "See you at one.",
    ]);
    assert_eq!(code, 0, "{dialog}");
    let d = gw.delivered_to(to);
    assert_eq!(
        d.header("X-Protective-Marking"),
        None,
        "no marking invented"
    );
    assert_eq!(d.header("Subject").as_deref(), Some("Lunch on Friday"));
    let body = String::from_utf8_lossy(d.body()).into_owned();
    assert_eq!(body.matches(DISCLAIMER).count(), 1, "{body}");
    // Once: the delivered message sent again (a reply quoting it, a second gateway) gets none.
    let again = d.message.clone();
    let (code, _) = gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        "second@mailbox.example.com",
        "--data",
        &String::from_utf8_lossy(&again),
    ]);
    assert_eq!(code, 0);
    let second = gw.delivered_to("second@mailbox.example.com");
    let body2 = String::from_utf8_lossy(second.body()).into_owned();
    assert_eq!(body2.matches(DISCLAIMER).count(), 1, "{body2}");
    let message = String::from_utf8_lossy(&d.message).into_owned();
    gw.stop();
    keep(
        4,
        "Unmarked mail: delivered with the disclaimer once",
        format!("{}\nDelivered:\n\n{}", fence(&dialog), fence(&message)),
    );
}
