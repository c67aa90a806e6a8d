//! Sendmail end to end: the scenario list `tests/enforce_scenarios.rs` runs through Postfix,
//! run through a real Sendmail (Debian's `sendmail-bin`, unpacked, never installed: see
//! `tests/support/sendmail.rs`) whose milter line is the shipped `packaging/sendmail/markgate.mc`
//! snippet, against the `markgate run` binary — over an inet socket and over a unix socket.
//!
//! 1. Every folder of `tests/enforce/`: the delivered message must equal the same `out.eml` the
//!    Postfix run checks (after removing the MTA's own Received header), refused mail must get
//!    a 5xx to DATA with the same text, removed recipients must get nothing and the sender a
//!    notice from `<>`. Inbound cases (a `client` outside the policy's networks, which Postfix
//!    fakes with XCLIENT) are sent from 127.0.0.2 to a copy of the policy whose `networks` is
//!    127.0.0.1 alone, since Sendmail has no XCLIENT.
//! 2. The four dialogs of `docs/enforcement-dialogs.md` plus a per-recipient block, a disclaimer
//!    inside a base64 part and a stopped milter (`F=T`: the client gets 4xx, nothing leaves;
//!    back up, mail flows), as swaks shows them; with `MARKGATE_WRITE_DIALOGS=1` they are
//!    written to the Sendmail section of `docs/enforcement-dialogs.md`.
//! 3. The macros Sendmail sends per stage, from markgate's trace log, checked against what the
//!    README's Sendmail section says.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use markgate::filter::{self, RawSource};
use markgate::policy::Policy;
use support::enforce::{
    Scenario, as_postfix_sends, check_notice, end_of_data_reply, message_id, normalise,
    policy_path, scenarios,
};
use support::postfix::{Delivered, SwaksResult};
use support::sendmail::{MilterSocket, Sendmail, TOOLS};
use support::{peers, ports};

const WAIT: Duration = Duration::from_secs(90);
const COUNCIL: &str = "alice.smith@example-council.gcsx.gov.uk";
const DISCLAIMER: &str = "may be subject to recording and/or monitoring";

fn ready(test: &str) -> bool {
    peers::available(test, TOOLS, true)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Inet,
    Unix,
}

/// `markgate run` with a config file, and a Sendmail pointed at it.
struct Gateway {
    sm: Sendmail,
    markgate: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    audit: PathBuf,
    socket: MilterSocket,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(policy_text: &str, kind: Kind) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("markgate-smgw.")
            .tempdir_in("/tmp")
            .expect("tempdir");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let socket = match kind {
            Kind::Inet => MilterSocket::Inet(ports::free_port()),
            Kind::Unix => MilterSocket::Unix(dir.path().join("markgate.sock")),
        };
        let sm = Sendmail::start(&socket);
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, policy_text).expect("write policy");
        let audit = dir.path().join("audit.jsonl");
        // The listen address in Sendmail's own spelling, as an admin copies it from the .mc.
        let listen = match &socket {
            MilterSocket::Inet(port) => format!("inet:{port}@127.0.0.1"),
            MilterSocket::Unix(path) => format!("local:{}", path.display()),
        };
        let config = dir.path().join("markgate.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\npolicy = \"{}\"\n\n[logging]\nlevel = \"trace\"\n\n\
                 [audit]\npath = \"{}\"\n\n[audit.syslog]\nenabled = false\n\n\
                 [alerts]\nfrom = \"markgate@example-council.gcsx.gov.uk\"\n\n\
                 [alerts.relay]\nhost = \"127.0.0.1\"\nport = {}\n",
                policy.display(),
                audit.display(),
                sm.smtp_port
            ),
        )
        .expect("write config");
        let log = dir.path().join("markgate.log");
        let mut gw = Gateway {
            sm,
            markgate: None,
            config,
            log,
            audit,
            socket,
            dir,
        };
        gw.start_markgate();
        gw
    }

    fn start_markgate(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_markgate"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start markgate");
        self.markgate = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = match &self.socket {
                MilterSocket::Inet(port) => ports::is_listening(*port),
                MilterSocket::Unix(path) => path.exists(),
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "markgate did not listen:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, wait for a clean exit and the socket to go.
    fn stop_markgate(&mut self) {
        let mut child = self.markgate.take().expect("running");
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "{}", self.log_text());
        match &self.socket {
            MilterSocket::Inet(port) => assert!(ports::wait_closed(*port, 20)),
            MilterSocket::Unix(path) => assert!(!path.exists(), "socket left behind"),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// swaks as a person types it (the data shown), for the dialogs.
    fn swaks(&self, args: &[&str]) -> (i32, String) {
        let client = [
            "--helo",
            "client.example-council.gcsx.gov.uk",
            "--timeout",
            "90",
        ];
        let r = support::mta::swaks(self.sm.smtp_port, &[&client[..], args].concat());
        (r.code, r.dialog)
    }

    /// The delivered copies carrying this text in their headers.
    fn delivered_with(&self, needle: &str, n: usize) -> Vec<Delivered> {
        self.sm.wait_for(n, WAIT, |d| {
            let m = String::from_utf8_lossy(&d.message);
            let head = m.split("\n\n").next().unwrap_or_default();
            head.contains(needle)
        })
    }

    /// Nothing with this text in its headers reached the sink within a short grace.
    fn none_delivered_with(&self, needle: &str) -> bool {
        std::thread::sleep(Duration::from_millis(500));
        !self
            .sm
            .delivered()
            .iter()
            .any(|d| String::from_utf8_lossy(&d.message).contains(needle))
    }

    fn notice_to(&self, sender: &str) -> Delivered {
        self.sm
            .wait_for(1, WAIT, |d| {
                d.recipients().iter().any(|r| r == sender)
                    && String::from_utf8_lossy(&d.message).contains("recipients of your message")
            })
            .remove(0)
    }

    /// Stop markgate, check the audit chain; returns the records.
    fn finish(mut self) -> String {
        if self.markgate.is_some() {
            self.stop_markgate();
        }
        let report = markgate::audit::verify_files(&[&self.audit]);
        assert!(report.ok(), "{report}");
        std::fs::read_to_string(&self.audit).expect("audit")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.markgate.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "markgate log ({}):\n{}",
                self.dir.path().display(),
                self.log_text()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The scenario list.
// ---------------------------------------------------------------------------------------------

/// The client address and policy text a scenario runs with through Sendmail.
fn sendmail_setup(s: &Scenario) -> (bool, String) {
    let text = std::fs::read_to_string(policy_path(&s.case)).expect("policy");
    match &s.case.client {
        None => (false, text),
        Some(_) => {
            let narrowed = text.replace(
                "networks = [\"127.0.0.0/8\", \"::1\"]",
                "networks = [\"127.0.0.1/32\"]",
            );
            assert_ne!(narrowed, text, "the policy's networks line changed; adjust");
            (true, narrowed)
        }
    }
}

fn send(gw: &Gateway, s: &Scenario, inbound: bool) -> SwaksResult {
    let to: Vec<&str> = s.case.to.iter().map(String::as_str).collect();
    let source: &[&str] = if inbound {
        &["--local-interface", "127.0.0.2"]
    } else {
        &[]
    };
    gw.sm.send_data_with(&s.case.from, &to, &s.input, source)
}

fn check(gw: &Gateway, policy: &Policy, s: &Scenario, r: &SwaksResult) -> Vec<String> {
    let mut problems = Vec::new();
    let data_reply = end_of_data_reply(r);
    let eval = filter::evaluate(
        policy,
        s.envelope(),
        &RawSource::new(&as_postfix_sends(&s.input)),
    )
    .expect("the pipeline decides");
    match s.case.expect.as_str() {
        "reject" => {
            if r.code == 0 || !data_reply.starts_with('5') {
                problems.push(format!("expected a 5xx to DATA, got {data_reply:?}"));
            }
        }
        "deliver" => {
            if r.code != 0 {
                problems.push(format!("not accepted: {}", r.dialog));
                return problems;
            }
            let removed = eval.removed();
            let id = message_id(&s.input);
            let got = gw.delivered_with(&format!("Message-ID: {id}"), 1);
            let mut rcpts: Vec<String> = got.iter().flat_map(|d| d.recipients()).collect();
            rcpts.sort();
            let want = s.kept_recipients(&removed);
            if rcpts != want {
                problems.push(format!("delivered to {rcpts:?}, expected {want:?}"));
            }
            let delivered = normalise(&got[0]);
            let golden = std::fs::read(s.dir.join("out.eml")).unwrap_or_default();
            if header_names_folded(&delivered) != header_names_folded(&golden) {
                std::fs::write(s.dir.join("actual-sendmail.eml"), &delivered).ok();
                problems.push(
                    "differs from out.eml, the message Postfix delivers (see actual-sendmail.eml)"
                        .into(),
                );
            } else {
                let _ = std::fs::remove_file(s.dir.join("actual-sendmail.eml"));
            }
            if !removed.is_empty() {
                let notice = gw.notice_to(&s.case.from);
                let text = String::from_utf8_lossy(&notice.message).replace("=\n", "");
                check_notice(&text, &notice, &removed, &mut problems);
            }
        }
        other => problems.push(format!("unknown expect {other:?}")),
    }
    s.check_reply(&data_reply, &mut problems);
    problems
}

fn run_scenarios(kind: Kind) {
    let all = scenarios();
    assert!(all.len() >= 40, "only {} scenarios", all.len());
    let mut groups: BTreeMap<(PathBuf, bool), Vec<&Scenario>> = BTreeMap::new();
    for s in &all {
        let (inbound, _) = sendmail_setup(s);
        groups
            .entry((policy_path(&s.case), inbound))
            .or_default()
            .push(s);
    }
    let mut failures = Vec::new();
    let mut sent = 0;
    for ((_, inbound), cases) in groups {
        let (_, text) = sendmail_setup(cases[0]);
        let policy = Policy::from_str("sendmail-test.toml", &text).expect("policy loads");
        let gw = Gateway::start(&text, kind);
        let results: Vec<(&Scenario, SwaksResult)> = std::thread::scope(|sc| {
            let handles: Vec<_> = cases
                .chunks(cases.len().div_ceil(4).max(1))
                .map(|chunk| {
                    let gw = &gw;
                    sc.spawn(move || {
                        chunk
                            .iter()
                            .map(|s| (*s, send(gw, s, inbound)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("sender"))
                .collect()
        });
        for (s, r) in &results {
            let p = check(&gw, &policy, s, r);
            if !p.is_empty() {
                failures.push(format!("{} ({kind:?}): {}", s.name, p.join("; ")));
            }
        }
        sent += results.len();
        let records = gw.finish();
        let decisions = records.matches("\"event\":\"message_decision\"").count();
        assert!(
            decisions >= results.len(),
            "{decisions} decisions for {}",
            results.len()
        );
    }
    assert_eq!(sent, all.len());
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed through Sendmail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_enforce_scenario_through_sendmail_inet() {
    if !ready("every_enforce_scenario_through_sendmail_inet") {
        return;
    }
    run_scenarios(Kind::Inet);
}

#[test]
fn every_enforce_scenario_through_sendmail_unix_socket() {
    if !ready("every_enforce_scenario_through_sendmail_unix_socket") {
        return;
    }
    run_scenarios(Kind::Unix);
}

// ---------------------------------------------------------------------------------------------
// 2. The dialogs, and 3. the macros.
// ---------------------------------------------------------------------------------------------

fn fence(s: &str) -> String {
    format!("```\n{}\n```\n", s.trim_end())
}

fn shipped() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/uk-gpms.toml"))
        .expect("shipped policy")
}

/// One message through Sendmail as a person would send it; returns (exit code, dialog).
fn restricted_to(gw: &Gateway, to: &str, id: &str) -> (i32, String) {
    gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        to,
        "--header",
        "Subject: RESTRICTED: Budget 2027",
        "--header",
        &format!("Message-Id: <{id}@example-council.gcsx.gov.uk>"),
        "--body",
        "Figures for next year attached.",
    ])
}

fn data_reply(dialog: &str) -> String {
    end_of_data_reply(&SwaksResult {
        code: 0,
        dialog: dialog.to_owned(),
    })
}

#[test]
fn dialogs_stopped_milter_and_macros_through_sendmail() {
    if !ready("dialogs_stopped_milter_and_macros_through_sendmail") {
        return;
    }
    let mut doc: Vec<(String, String)> = Vec::new();
    let mut gw = Gateway::start(&shipped(), Kind::Inet);
    let version = gw.sm.version.clone();

    // 1. RESTRICTED to a GSi-family partner: delivered with both labels and the disclaimer.
    let (code, dialog) = restricted_to(&gw, "bob.jones@partner.gcsx.gov.uk", "sm-dialog-1");
    assert_eq!(code, 0, "{dialog}");
    let d = gw.delivered_with("sm-dialog-1@", 1).remove(0);
    assert_eq!(
        d.header("X-Protective-Marking").as_deref(),
        Some("RESTRICTED")
    );
    assert!(d.header("Subject").unwrap().starts_with("RESTRICTED: "));
    assert_eq!(
        String::from_utf8_lossy(d.body())
            .matches(DISCLAIMER)
            .count(),
        1
    );
    let delivered = String::from_utf8_lossy(&d.message).into_owned();
    doc.push((
        "RESTRICTED mail to partner.gcsx.gov.uk: delivered with both labels and the disclaimer"
            .into(),
        format!(
            "{}\nDelivered (smtp-sink's file, after its own trace lines):\n\n{}",
            fence(&dialog),
            fence(&delivered)
        ),
    ));

    // 2. The same to an internet domain: 550 with the rule's text.
    let (code, dialog) = restricted_to(&gw, "someone@mailbox.example.com", "sm-dialog-2");
    assert_ne!(code, 0, "{dialog}");
    let reply = data_reply(&dialog);
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(reply.contains("GPMS-ABOVE-CEILING"), "{reply}");
    assert!(gw.none_delivered_with("sm-dialog-2@"));
    doc.push((
        "The same mail to an internet domain: refused with a 550 that says why".into(),
        fence(&dialog),
    ));

    // 3. An Exchange inbox-rule auto-forward to the internet: refused.
    let (code, dialog) = gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        "me@mailbox.example.com",
        "--header",
        "Subject: FW: rota",
        "--header",
        "X-MS-Exchange-Inbox-Rules-Loop: alice.smith@example-council.gcsx.gov.uk",
        "--header",
        "Message-Id: <sm-dialog-3@example-council.gcsx.gov.uk>",
        "--body",
        "Forwarded by a mailbox rule.",
    ]);
    assert_ne!(code, 0, "{dialog}");
    let reply = data_reply(&dialog);
    assert!(
        reply.starts_with("550 5.7.1") && reply.contains("AUTOFWD-DOWN"),
        "{reply}"
    );
    doc.push((
        "An Exchange auto-forward from the council to the internet: refused".into(),
        fence(&dialog),
    ));

    // 4. Unmarked mail: delivered with the disclaimer, once, and no label.
    let (code, dialog) = gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        "friend@mailbox.example.com",
        "--header",
        "Subject: Lunch on Friday?",
        "--header",
        "Message-Id: <sm-dialog-4@example-council.gcsx.gov.uk>",
        "--body",
        "12:30 at the usual place?",
    ]);
    assert_eq!(code, 0, "{dialog}");
    let d = gw.delivered_with("sm-dialog-4@", 1).remove(0);
    assert_eq!(d.header("X-Protective-Marking"), None);
    assert_eq!(
        String::from_utf8_lossy(d.body())
            .matches(DISCLAIMER)
            .count(),
        1
    );
    doc.push((
        "Unmarked mail: delivered with the disclaimer, once".into(),
        format!(
            "{}\nDelivered:\n\n{}",
            fence(&dialog),
            fence(&String::from_utf8_lossy(&d.message))
        ),
    ));

    // 6. A disclaimer inside a base64 text part: decoded, appended, re-encoded.
    let b64 = "Date: Sun, 06 Dec 2026 03:40:00 +0000\r\nFrom: alice.smith@example-council.gcsx.gov.uk\r\n\
To: bob.jones@partner.gcsx.gov.uk\r\nSubject: PROTECT: rota\r\nMessage-ID: <sm-dialog-6@example-council.gcsx.gov.uk>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
Q2Fmw6kgcm90YSBmb3IgbmV4dCB3ZWVrLg==\r\n";
    let r = gw.sm.send_data_with(
        COUNCIL,
        &["bob.jones@partner.gcsx.gov.uk"],
        b64.as_bytes(),
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let d = gw.delivered_with("sm-dialog-6@", 1).remove(0);
    let shape = markgate::inspect::mime::analyze(&d.message, None);
    let text: String = shape
        .text_parts
        .iter()
        .map(|&i| {
            markgate::inspect::mime::decode_part_text(&d.message, &shape.parts[i])
                .text
                .into_owned()
        })
        .collect();
    assert!(text.contains("Café rota for next week."), "{text}");
    assert_eq!(text.matches(DISCLAIMER).count(), 1, "{text}");
    assert!(
        d.header("Content-Transfer-Encoding")
            .is_some_and(|c| c.eq_ignore_ascii_case("base64")),
        "still base64"
    );
    doc.push((
        "A disclaimer in a base64 text part: decoded, appended, encoded again".into(),
        format!(
            "Delivered:\n\n{}",
            fence(&String::from_utf8_lossy(&d.message))
        ),
    ));

    // 7. Macros: what Sendmail sent per stage (markgate's trace log).
    let log = gw.log_text();
    let stages = macros_by_stage(&log);
    let summary: Vec<String> = stages
        .iter()
        .map(|(s, names)| format!("{s}: {}", names.join(" ")))
        .collect();
    eprintln!("macros {version} sent per stage:\n{}", summary.join("\n"));
    let has = |stage: char, name: &str| {
        stages
            .get(&stage)
            .is_some_and(|v| v.iter().any(|n| n.starts_with(&format!("{name}="))))
    };
    assert!(has('C', "{daemon_name}"), "{summary:?}");
    assert!(
        has('M', "i"),
        "Sendmail has a queue id at MAIL: {summary:?}"
    );
    assert!(
        has('R', "{rcpt_host}") && has('R', "{rcpt_mailer}"),
        "{summary:?}"
    );
    assert!(
        log.contains("{daemon_name}=MTA"),
        "DAEMON_OPTIONS Name= is the daemon name"
    );
    let pf = postfix_macros();
    let pf_summary: Vec<String> = pf
        .iter()
        .map(|(s, names)| format!("{s}: {}", names.join(" ")))
        .collect();
    eprintln!("macros Postfix sent per stage:\n{}", pf_summary.join("\n"));
    doc.push((
        format!("Macros {version} sent (markgate's trace log), by stage, beside Postfix's"),
        format!(
            "Sendmail (`DAEMON_OPTIONS(... Name=MTA)`, relaying through `SMART_HOST`):\n\n{}\nPostfix (the test harness's instance, relaying through `relayhost`):\n\n{}",
            fence(&summary.join("\n")),
            fence(&pf_summary.join("\n"))
        ),
    ));

    // 8. The milter stopped: F=T makes Sendmail answer 4xx; nothing leaves. Then back up.
    gw.stop_markgate();
    let (code, dialog) = restricted_to(&gw, "bob.jones@partner.gcsx.gov.uk", "sm-dialog-8");
    assert_ne!(code, 0, "accepted with markgate down:\n{dialog}");
    let first_4xx = dialog
        .lines()
        .find(|l| l.starts_with("<** 4"))
        .unwrap_or_else(|| panic!("no 4xx:\n{dialog}"))
        .to_owned();
    assert!(gw.none_delivered_with("sm-dialog-8@"));
    gw.start_markgate();
    let (code, again) = restricted_to(&gw, "bob.jones@partner.gcsx.gov.uk", "sm-dialog-8b");
    assert_eq!(code, 0, "{again}");
    gw.delivered_with("sm-dialog-8b@", 1);
    doc.push((
        format!("markgate stopped: Sendmail answers {} (F=T), nothing is delivered; started again, mail flows", first_4xx.trim_start_matches("<** ")),
        fence(&dialog),
    ));
    let records = gw.finish();
    assert!(records.contains("sm-dialog-1@"));

    // 5. A per-recipient block (the remove-recipients test policy): the internet recipient is
    // removed, the partner gets it, the sender gets a notice — over the unix socket.
    let remove = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/enforce/policies/uk-gpms-remove.toml"),
    )
    .expect("remove policy");
    let gw = Gateway::start(&remove, Kind::Unix);
    let (code, dialog) = gw.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        "bob.jones@partner.gcsx.gov.uk,someone@mailbox.example.com",
        "--header",
        "Subject: RESTRICTED: Budget 2027",
        "--header",
        "Message-Id: <sm-dialog-5@example-council.gcsx.gov.uk>",
        "--body",
        "Figures for next year attached.",
    ]);
    assert_eq!(code, 0, "{dialog}");
    let d = gw.delivered_with("sm-dialog-5@", 1);
    let rcpts: Vec<String> = d.iter().flat_map(|d| d.recipients()).collect();
    assert_eq!(rcpts, vec!["bob.jones@partner.gcsx.gov.uk".to_string()]);
    let notice = gw.notice_to(COUNCIL);
    let text = String::from_utf8_lossy(&notice.message).replace("=\n", "");
    assert!(text.contains("someone@mailbox.example.com"), "{text}");
    assert!(notice.mail_args.starts_with("<>"));
    doc.push((
        "A per-recipient block (unix socket; GPMS-ABOVE-CEILING set to remove-recipients): the internet recipient is removed, the partner gets the message, the sender a notice".into(),
        format!("{}\nThe notice to the sender:\n\n{}", fence(&dialog), fence(&String::from_utf8_lossy(&notice.message))),
    ));
    gw.finish();

    write_doc(&version, doc);
}

/// Stage letter → `name=value` (the first value seen), from `macros stage=X macros=…` trace
/// lines, in first-seen order. Values end at a space (enough for these tests' values).
fn macros_by_stage(log: &str) -> BTreeMap<char, Vec<String>> {
    let mut out: BTreeMap<char, Vec<String>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" macros ")) {
        let Some(stage) = line.split("stage=").nth(1).and_then(|s| s.chars().next()) else {
            continue;
        };
        let Some(list) = line.split("macros=").nth(1) else {
            continue;
        };
        let names = out.entry(stage).or_default();
        for pair in list.split(' ') {
            if let Some((name, value)) = pair.split_once('=')
                && (name.len() == 1 || name.starts_with('{'))
                && !names
                    .iter()
                    .any(|n| n.split_once('=').map_or(n.as_str(), |x| x.0) == name)
            {
                names.push(format!("{name}={value}"));
            }
        }
    }
    out
}

/// With `MARKGATE_WRITE_DIALOGS=1`: replace the Sendmail section of
/// docs/enforcement-dialogs.md (everything from its heading on; the Postfix part above is
/// `tests/enforce_done_when.rs`'s).
fn write_doc(version: &str, parts: Vec<(String, String)>) {
    if std::env::var_os("MARKGATE_WRITE_DIALOGS").is_none() {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/enforcement-dialogs.md");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let head = old
        .find(SENDMAIL_HEADING)
        .map_or(old.as_str(), |i| &old[..i])
        .trim_end();
    let mut doc = format!(
        "{head}\n\n{SENDMAIL_HEADING}\n\nCaptured by `MARKGATE_WRITE_DIALOGS=1 cargo test --test sendmail`: {version} from Debian's \
         `sendmail-bin` (unpacked, not installed), its `sendmail.cf` built with m4 from a `.mc` that \
         contains the shipped `packaging/sendmail/markgate.mc` filter line (only the socket changed), \
         `markgate run` with the shipped policy, relaying to `smtp-sink`. Ports, queue ids, dates \
         and host names are those of that run.\n"
    );
    for (i, (title, text)) in parts.iter().enumerate() {
        doc.push_str(&format!("\n### S{}. {title}\n\n{text}\n", i + 1));
    }
    std::fs::write(path, doc).expect("write docs/enforcement-dialogs.md");
}

/// The heading the Sendmail part of docs/enforcement-dialogs.md starts with.
const SENDMAIL_HEADING: &str = "## Through Sendmail";

// ---------------------------------------------------------------------------------------------
// 4. Header indexes and tempfail texts, Sendmail beside Postfix, with one test handler.
// ---------------------------------------------------------------------------------------------

/// The same edits through both MTAs: the header order each delivers, and what a client hears
/// when the milter answers tempfail with its own text. Printed, and checked against what the
/// README's Sendmail section says.
#[test]
fn header_indexes_and_tempfail_sendmail_beside_postfix() {
    use markgate::milter::{Modification, Outcome, SmtpReply, Verdict};
    use support::markgate::{Milter, TestHandler};
    use support::postfix::{Postfix, PostfixConfig};
    if !ready("header_indexes_and_tempfail_sendmail_beside_postfix")
        || !peers::available(
            "header_indexes_and_tempfail_sendmail_beside_postfix",
            support::postfix::TOOLS,
            true,
        )
    {
        return;
    }
    let handler = || {
        TestHandler::new(markgate::transaction::SpillPolicy::default(), |tx| {
            let subject = tx
                .first_header("Subject")
                .map(|h| String::from_utf8_lossy(&h.value).into_owned())
                .unwrap_or_default();
            if subject.contains("tempfail") {
                return Outcome {
                    verdict: Verdict::Tempfail(Some(SmtpReply {
                        code: 451,
                        enhanced: Some("4.7.1".into()),
                        lines: vec!["markgate test: try again later".into()],
                    })),
                    modifications: Vec::new(),
                };
            }
            if subject.contains("insert one") {
                return Outcome {
                    verdict: Verdict::Continue,
                    modifications: vec![Modification::InsertHeader {
                        index: 1,
                        name: "X-Ins-1".into(),
                        value: b"alone".to_vec(),
                    }],
                };
            }
            let h = |index: u32, name: &str, value: &str| {
                (index, name.to_owned(), value.as_bytes().to_vec())
            };
            let mut mods = Vec::new();
            for (index, name, value) in [h(0, "X-Ins-0", "at 0"), h(1, "X-Ins-1", "at 1")] {
                mods.push(Modification::InsertHeader { index, name, value });
            }
            for (index, name, value) in [
                h(2, "X-Dup", "second, changed"),
                h(1, "X-Dup", ""),
                h(5, "X-Missing", "changed at 5 of 0"),
            ] {
                mods.push(Modification::ChangeHeader { index, name, value });
            }
            mods.push(Modification::AddHeader {
                name: "X-Added".into(),
                value: b"appended".to_vec(),
            });
            Outcome {
                verdict: Verdict::Continue,
                modifications: mods,
            }
        })
    };
    let msg = "Date: Sun, 06 Dec 2026 03:45:00 +0000\r\nFrom: a@example.org\r\nTo: b@example.net\r\n\
Subject: header indexes\r\nMessage-ID: <hdr-index@example.org>\r\nX-Dup: first\r\nX-Dup: second\r\n\r\nbody\r\n";
    let names = |d: &Delivered| -> Vec<String> {
        let m = String::from_utf8_lossy(&d.message).into_owned();
        m.split("\n\n")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or((l, ""));
                if n.starts_with("X-") {
                    format!("{n}:{}", v.trim())
                } else {
                    n.to_owned()
                }
            })
            .collect()
    };

    // Sendmail.
    let sm_milter = Milter::start_tcp(handler());
    let sm = Sendmail::start(&MilterSocket::Inet(sm_milter.port().expect("port")));
    let r = sm.send_data_with("a@example.org", &["b@example.net"], msg.as_bytes(), &[]);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let sm_order = names(
        &sm.wait_for(1, WAIT, |d| {
            String::from_utf8_lossy(&d.message).contains("hdr-index@")
        })[0],
    );
    let t = sm.send_data_with(
        "a@example.org",
        &["b@example.net"],
        msg.replace("header indexes", "tempfail")
            .replace("hdr-index", "hdr-tf")
            .as_bytes(),
        &[],
    );
    let sm_tempfail = end_of_data_reply(&t);
    let one = msg
        .replace("header indexes", "insert one")
        .replace("hdr-index", "hdr-one");
    let r = sm.send_data_with("a@example.org", &["b@example.net"], one.as_bytes(), &[]);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let sm_one = names(
        &sm.wait_for(1, WAIT, |d| {
            String::from_utf8_lossy(&d.message).contains("hdr-one@")
        })[0],
    );

    // Postfix, the same handler.
    let pf_milter = Milter::start_tcp(handler());
    let pf = Postfix::start(PostfixConfig::with_milter(pf_milter.postfix_spec()));
    let r = pf.send_data("a@example.org", &["b@example.net"], msg.as_bytes());
    assert_eq!(r.code, 0, "{}", r.dialog);
    let pf_order = names(&pf.wait_delivered(1, WAIT)[0]);
    let t = pf.send_data(
        "a@example.org",
        &["b@example.net"],
        msg.replace("header indexes", "tempfail")
            .replace("hdr-index", "hdr-tf")
            .as_bytes(),
    );
    let pf_tempfail = end_of_data_reply(&t);
    let r = pf.send_data("a@example.org", &["b@example.net"], one.as_bytes());
    assert_eq!(r.code, 0, "{}", r.dialog);
    let pf_one = names(
        &pf.wait_delivered(2, WAIT)
            .into_iter()
            .find(|d| String::from_utf8_lossy(&d.message).contains("hdr-one@"))
            .expect("hdr-one delivered"),
    );
    eprintln!("insheader(1) alone, Sendmail: {sm_one:?}\ninsheader(1) alone, Postfix:  {pf_one:?}");

    eprintln!("header order, Sendmail: {sm_order:?}\nheader order, Postfix:  {pf_order:?}");
    eprintln!("tempfail, Sendmail: {sm_tempfail:?}\ntempfail, Postfix:  {pf_tempfail:?}");
    // Both: the change of X-Dup #2 then the deletion of X-Dup #1 leave one X-Dup, changed;
    // a change beyond the count appends; ADDHEADER appends.
    for order in [&sm_order, &pf_order] {
        assert!(
            order.contains(&"X-Dup:second, changed".to_string()),
            "{order:?}"
        );
        assert!(!order.iter().any(|h| h == "X-Dup:first"), "{order:?}");
        assert_eq!(
            order.last().map(String::as_str),
            Some("X-Added:appended"),
            "{order:?}"
        );
    }
    // Measured (Sendmail 8.17.1.9, Postfix 3.7): the same order. INSHEADER counts the MTA's own
    // Received (hidden from the milter) — index 1 lands just below it, index 0 above it, and
    // once something is above it, it counts like any other header.
    assert_eq!(sm_order, pf_order);
    assert_eq!(sm_one, pf_one);
    assert_eq!(&sm_one[..2], ["Received", "X-Ins-1:alone"]);
    assert_eq!(&sm_order[..3], ["X-Ins-0:at 0", "X-Ins-1:at 1", "Received"]);
    // Both pass the milter's own 451 text to the client.
    for t in [&sm_tempfail, &pf_tempfail] {
        assert!(t.starts_with("451 4.7.1"), "{t}");
        assert!(t.contains("markgate test: try again later"), "{t}");
    }
}

/// The macros a private Postfix sends markgate (the binary, trace log) for one message with
/// two recipients, by stage.
fn postfix_macros() -> BTreeMap<char, Vec<String>> {
    use support::postfix::{Postfix, PostfixConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = ports::free_port();
    let config = dir.path().join("markgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"inet:127.0.0.1:{port}\"\n\n[logging]\nlevel = \"trace\"\n\n[audit]\npath = \"{}\"\n\n[audit.syslog]\nenabled = false\n",
            dir.path().join("audit.jsonl").display()
        ),
    )
    .expect("config");
    let log = dir.path().join("markgate.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_markgate"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .spawn()
        .expect("markgate");
    assert!(ports::wait_listening(port, 30), "markgate did not listen");
    let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}")));
    let r = pf.swaks(&[
        "--from",
        COUNCIL,
        "--to",
        "bob.jones@partner.gcsx.gov.uk,erin@example-council.gcsx.gov.uk",
        "--header",
        "Subject: macros",
    ]);
    assert_eq!(r.code, 0, "{}", r.dialog);
    pf.wait_delivered(1, WAIT);
    let _ = child.kill();
    let _ = child.wait();
    macros_by_stage(&std::fs::read_to_string(&log).unwrap_or_default())
}

/// The message with each header field's name in lower case, the rest untouched. A `chgheader`
/// that replaces a header whose name is spelt differently (Janusseal's `x-protective-marking`
/// under the policy's `X-Protective-Marking`) keeps the old spelling in Sendmail and takes the
/// milter's in Postfix; header names are case-insensitive (RFC 5322), so only that may differ.
fn header_names_folded(m: &[u8]) -> Vec<u8> {
    let end = m
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(m.len(), |i| i + 1);
    let mut out = Vec::with_capacity(m.len());
    for line in m[..end].split_inclusive(|&b| b == b'\n') {
        match line.iter().position(|&b| b == b':') {
            Some(colon) if !matches!(line.first(), Some(b' ' | b'\t')) => {
                out.extend(line[..colon].to_ascii_lowercase());
                out.extend(&line[colon..]);
            }
            _ => out.extend(line),
        }
    }
    out.extend(&m[end..]);
    out
}
