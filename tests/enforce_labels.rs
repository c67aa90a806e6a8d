//! Issue-13 checks that need more than a scenario folder, end to end through a real Postfix
//! whose milter is markgate's production filter (with an audit trail and alerts):
//!
//! - ORIGIN against the sender: a message carrying an EPMS ORIGIN copied from someone else
//!   raises an `origin_mismatch` incident, and the alert mail (sent by markgate's alert task
//!   through the same Postfix) reaches the test's SMTP sink.
//! - EXPIRES/DOWNTO: the audit record of an expired marking states both levels.

mod support;

use std::time::{Duration, Instant};

use markgate::alert::{AlertConfig, AlertHandle, AlertSettings};
use markgate::config::Config;
use markgate::filter::Filter;
use markgate::policy::Policy;
use support::markgate::Milter;
use support::postfix::{Postfix, PostfixConfig, TOOLS};
use support::{peers, ports};

const WAIT: Duration = Duration::from_secs(60);

fn message(id: &str, origin: &str) -> Vec<u8> {
    message_marked(id, "SEC=OFFICIAL", origin)
}

fn message_marked(id: &str, marking: &str, origin: &str) -> Vec<u8> {
    format!(
        "From: alice@agency.gov.au\r\nTo: bob@agency.gov.au\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@enforce.test>\r\nSubject: Minutes [{marking}]\r\n\
         X-Protective-Marking: VER=2024.1, NS=gov.au, {marking}, ORIGIN={origin}\r\n\r\nMinutes.\r\n"
    )
    .into_bytes()
}

#[test]
fn origin_mismatch_alert_reaches_the_sink() {
    if !peers::available("origin_mismatch_alert_reaches_the_sink", TOOLS, true) {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let policy_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/enforce/policies/au-epms-release.toml");
    let policy = Policy::from_file(&policy_file).expect("policy loads");
    assert!(policy.origin.is_some(), "the test policy checks ORIGIN");
    let port = ports::free_port();
    let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}")));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.audit.path = dir.path().join("audit.jsonl");
    config.audit.syslog.enabled = false;
    let audit = markgate::audit::start(&config.audit).expect("audit starts");
    let alert_config = AlertConfig {
        enabled: true,
        to: vec!["soc@agency.gov.au".into()],
        from: "markgate@agency.gov.au".into(),
        ..AlertConfig::default()
    };
    let mut settings = AlertSettings::from_config(&alert_config).expect("alert settings");
    settings.relay_host = "127.0.0.1".into();
    settings.relay_port = pf.smtp_port;
    settings.relay_timeout = Duration::from_secs(10);
    let alerts = AlertHandle::spawn(settings, None);
    let audit_path = config.audit.path.clone();
    let filter = Filter::fixed(policy, config, Some(audit)).with_alerts(alerts);
    let _milter = Milter::start_tcp_on(port, filter);

    // A label whose ORIGIN is not the sender: copied from Mallory's message.
    let r = pf.send_data_with(
        "alice@agency.gov.au",
        &["bob@agency.gov.au"],
        &message("origin-copied", "mallory@agency.gov.au"),
        &["--xclient", "ADDR=127.0.0.1 NAME=client.test"],
    );
    assert_eq!(
        r.code, 0,
        "accepted (the rule alerts, it does not refuse): {}",
        r.dialog
    );

    let deadline = Instant::now() + WAIT;
    let alert = loop {
        let found = pf.delivered().into_iter().find(|d| {
            d.recipients().iter().any(|r| r == "soc@agency.gov.au")
                && String::from_utf8_lossy(&d.message).contains("origin_mismatch")
        });
        if let Some(d) = found {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no alert reached the sink\nmaillog:\n{}",
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = String::from_utf8_lossy(&alert.message);
    assert!(text.contains("mallory@agency.gov.au"), "{text}");
    assert!(text.contains("alice@agency.gov.au"), "{text}");
    assert!(text.contains("EPMS-ORIGIN"), "names the rule: {text}");
    // The message itself went through to Bob.
    let deadline = Instant::now() + WAIT;
    while !pf.delivered().iter().any(|d| {
        d.recipients().iter().any(|r| r == "bob@agency.gov.au")
            && String::from_utf8_lossy(&d.message).contains("<origin-copied@enforce.test>")
    }) {
        assert!(Instant::now() < deadline, "message not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }

    // An expired marking: delivered to the internet at its DOWNTO level; the audit record says
    // both levels.
    let r = pf.send_data_with(
        "alice@agency.gov.au",
        &["someone@example.com"],
        &message_marked(
            "expired-marking",
            "SEC=PROTECTED, EXPIRES=2020-07-01, DOWNTO=OFFICIAL",
            "alice@agency.gov.au",
        ),
        &["--xclient", "ADDR=127.0.0.1 NAME=client.test"],
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let deadline = Instant::now() + WAIT;
    let record = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| {
            l.contains("<expired-marking@enforce.test>") && l.contains("message_decision")
        }) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for the expired message"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: serde_json::Value = serde_json::from_str(&record).expect("json record");
    let data = &v["data"];
    assert_eq!(data["effective_level"], "OFFICIAL", "{record}");
    let findings = data["findings"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["rule"] == "expires"
            && f["detail"]
                .as_str()
                .is_some_and(|d| d.contains("treated as OFFICIAL (DOWNTO) instead of PROTECTED"))),
        "{record}"
    );
}
