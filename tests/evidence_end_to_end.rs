//! The evidence report from a trail the real daemon wrote: `markgate run` with the built-in
//! policy and incident alerts on, a private Postfix in front of it (and relaying its alerts),
//! swaks sending a labelled mail and a blocked Exchange auto-forward. The report must map the
//! decisions to their controls through the start record's map, and measure the incident →
//! alert time from the `alert_delivered` record the alert path wrote.

mod support;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::postfix::{Postfix, PostfixConfig, TOOLS};
use support::{peers, ports};

use support::messages::{COUNCIL, EXCHANGE_AUTO_FORWARD, from_council};
const SOC: &str = "soc@example-council.gcsx.gov.uk";

fn swaks(pf: &Postfix, args: &[&str]) -> (i32, String) {
    let client = ["--helo", "client.example-council.gcsx.gov.uk"];
    let r = support::mta::swaks(pf.smtp_port, &[&client[..], args].concat());
    (r.code, r.dialog)
}

fn wait_delivered(pf: &Postfix, rcpt: &str) {
    wait_delivered_n(pf, rcpt, 1);
}

/// Wait until `n` messages to `rcpt` reached the sink.
fn wait_delivered_n(pf: &Postfix, rcpt: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pf
        .delivered()
        .iter()
        .filter(|d| d.recipients().iter().any(|r| r == rcpt))
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} delivered to {rcpt}\n{}",
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row<'a>(j: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    j["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id}"))
}

#[test]
fn the_daemons_trail_becomes_evidence_with_measured_alert_times() {
    if !peers::available("evidence_end_to_end", TOOLS, true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let port = ports::free_port();
    let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}")));
    // Alerts go to the security team through the same Postfix (as they would through the
    // gateway's own MTA), so they reach smtp-sink like any mail.
    let config = dir.path().join("markgate.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nenabled = true\nto = [\"{SOC}\"]\nfrom = \"markgate@example-council.gcsx.gov.uk\"\nmode = \"immediate\"\nretry_initial = 1\n[alerts.relay]\nhost = \"127.0.0.1\"\nport = {}\n",
            pf.smtp_port
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_markgate"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("inet:127.0.0.1:{port}")])
        .arg("--audit-log")
        .arg(&audit)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start markgate");
    assert!(ports::wait_listening(port, 30), "markgate did not listen");

    let to = "bob.jones@partner.gcsx.gov.uk";
    let (code, dialog) = swaks(
        &pf,
        &[
            "--from",
            COUNCIL,
            "--to",
            to,
            "--header",
            "Subject: RESTRICTED: Budget 2027",
            "--body",
            "Figures attached.",
        ],
    );
    assert_eq!(code, 0, "{dialog}");
    wait_delivered(&pf, to);

    let (code, dialog) = swaks(&pf, &from_council(EXCHANGE_AUTO_FORWARD));
    assert_ne!(code, 0, "{dialog}");
    assert!(dialog.contains("AUTOFWD-DOWN"), "{dialog}");
    // Both incident alerts (auto-forward, above ceiling) reach the security team. They pass
    // through markgate too, so it must not be stopped before the second one is through.
    wait_delivered_n(&pf, SOC, 2);

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

    let out = Command::new(env!("CARGO_BIN_EXE_markgate"))
        .args(["audit", "report", "--evidence", "--format", "json"])
        .arg(&audit)
        .output()
        .expect("report");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(j["chain"]["intact"], true, "{}", j["chain"]);
    assert_eq!(
        j["unmapped_messages"], 0,
        "the start record maps the policy"
    );
    let start = &j["policy_events"][0];
    assert_eq!(start["trigger"], "start");
    assert_eq!(start["name"], "uk-gpms");
    assert!(start["mapped_rules"].as_u64().unwrap_or(0) >= 5, "{start}");

    let labels = row(&j, "CoCo-4.1-labels");
    assert_eq!(labels["messages"], 1, "{labels}");
    assert_eq!(labels["rules"], serde_json::json!(["write"]));
    assert!(
        row(&j, "CoCo-4.1-disclaimer")["messages"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );

    let fwd = row(&j, "CoCo-4.1-autoforward");
    assert_eq!(fwd["messages"], 1, "{fwd}");
    assert_eq!(fwd["incidents"], 1, "{fwd}");
    assert_eq!(fwd["alerted"], 1, "{fwd}");
    assert_eq!(fwd["bound_24h"], "met", "{fwd}");
    let p50 = fwd["latency_p50_secs"].as_f64().expect("measured");
    assert!((0.0..120.0).contains(&p50), "incident to alert in {p50} s");

    // The forward was RESTRICTED mail to an internet domain: above its ceiling as well, so the
    // daemon raised two incidents (one per kind), both alerted.
    let coco11 = row(&j, "CoCo-11");
    assert_eq!(coco11["incidents"], 2, "{coco11}");
    assert_eq!(coco11["alerted"], 2, "{coco11}");
    assert_eq!(coco11["bound_24h"], "met", "{coco11}");
    let refused = j["top_refused_rules"].as_array().expect("rules");
    assert!(
        refused.iter().any(|r| r[0] == "AUTOFWD-DOWN" && r[1] == 1),
        "{refused:?}"
    );
}
