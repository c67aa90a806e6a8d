//! markgate's own sender notices pass the gateway again, through a real Postfix, and are not
//! refused by the policy that caused them (`policy::notice`, markgate-policy(5) NOTICE).
//!
//! The shipped `policies/au-epms.toml` (with its EPMS-UNMARKED rule: every outbound message
//! must be marked), plus one foreign partner accredited to PROTECTED so a caveat can remove a
//! recipient: a PROTECTED, RI:AUSTEO message to a colleague and to the partner loses the
//! partner (EPMS-NOT-RELEASABLE), and markgate sends the sender a notice from `<>` through
//! the same Postfix, whose `smtpd_milters` is markgate. The notice must be delivered, marked
//! like the message it is about (it quotes its subject), with a `message_decision` record that
//! accepted it. And the null sender is not exempt: an unmarked message from `<>` (what a
//! bounce looks like) is still refused by EPMS-UNMARKED.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use markgate::config::Config;
use markgate::filter::{Filter, Notices};
use markgate::policy::Policy;
use support::markgate::Milter;
use support::postfix::{Delivered, Postfix, PostfixConfig, TOOLS};
use support::{peers, ports};

const ALICE: &str = "alice@agency.gov.au";
const BOB: &str = "bob@agency.gov.au";
const PARTNER: &str = "dan@defence.example.us";
const WAIT: Duration = Duration::from_secs(60);

/// The shipped au-epms policy, its EPMS-UNMARKED rule untouched, with `defence.example.us`
/// accredited to PROTECTED and in the USA (so RI:AUSTEO removes it, not the ceiling).
fn policy() -> Policy {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/au-epms.toml");
    let text = std::fs::read_to_string(&path).expect("shipped policy");
    assert!(text.contains("id = \"EPMS-UNMARKED\"\n"));
    let text = text
        .replacen(
            "[domains.ceilings]\n",
            "[domains.ceilings]\n\"defence.example.us\" = \"PROTECTED\"\n",
            1,
        )
        .replacen(
            "[release.domains]\n",
            "[release.domains]\n\"defence.example.us\" = \"USA\"\n",
            1,
        );
    match Policy::from_str("au-epms-partner.toml", &text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn message(id: &str, subject: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {ALICE}\r\nTo: {BOB}, {PARTNER}\r\nSubject: {subject}\r\nDate: Sun, 06 Dec 2026 06:00:00 +0000\r\nMessage-ID: <{id}>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThe brief is below.\r\n"
    )
    .into_bytes()
}

/// The reply Postfix gave to the end of DATA.
fn data_reply(r: &support::postfix::SwaksResult) -> String {
    r.replies()
        .iter()
        .rev()
        .find(|l| l.starts_with("250 2.0.0 Ok: queued") || l.starts_with('4') || l.starts_with('5'))
        .map(|s| (*s).to_owned())
        .unwrap_or_else(|| panic!("no answer to DATA in:\n{}", r.dialog))
}

fn wait_delivered(pf: &Postfix, what: &str, found: impl Fn(&Delivered) -> bool) -> Delivered {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(d) = pf.delivered().into_iter().find(&found) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not delivered\nqueue:\n{}\nmaillog:\n{}",
            pf.queue(),
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn records(audit: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn an_epms_notice_passes_the_gateway_that_sent_it() {
    if !peers::available(
        "an_epms_notice_passes_the_gateway_that_sent_it",
        TOOLS,
        true,
    ) {
        return;
    }
    let policy = policy();
    assert!(policy.warnings.is_empty(), "{:?}", policy.warnings);
    let port = ports::free_port();
    let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}")));
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let audit = audit_dir.path().join("audit.jsonl");
    let mut config = Config::default();
    config.audit.path = audit.clone();
    config.audit.syslog.enabled = false;
    let handle = markgate::audit::start(&config.audit).expect("audit starts");
    // Notices go to this Postfix, like a gateway whose [alerts.relay] is its own MTA.
    let filter = Filter::fixed(policy, config, Some(handle)).with_notices(Notices::spawn(
        "127.0.0.1".into(),
        pf.smtp_port,
        "markgate@agency.gov.au".into(),
        Duration::from_secs(30),
    ));
    let _milter = Milter::start_tcp_on(port, filter);
    let client = ["--xclient", "ADDR=127.0.0.1 NAME=client.test"];

    // The null sender is not exempt: an unmarked message from <> is refused like any other.
    let bounce = message(
        "bounce.1@agency.gov.au",
        "Undelivered Mail Returned to Sender",
        "",
    );
    let r = pf.send_data_with("", &[BOB], &bounce, &client);
    let reply = data_reply(&r);
    assert!(
        reply.starts_with("550") && reply.contains("EPMS-UNMARKED"),
        "an unmarked message from <> was not refused: {reply}\n{}",
        r.dialog
    );

    // PROTECTED, RI:AUSTEO to a colleague and to the US partner: the partner is removed.
    let subject = "Force posture brief [SEC=PROTECTED, CAVEAT=RI:AUSTEO]";
    let header = format!(
        "X-Protective-Marking: VER=2024.1, NS=gov.au, SEC=PROTECTED, CAVEAT=RI:AUSTEO,\r\n ORIGIN={ALICE}\r\n"
    );
    let m = message("brief.1@agency.gov.au", subject, &header);
    let r = pf.send_data_with(ALICE, &[BOB, PARTNER], &m, &client);
    assert!(
        data_reply(&r).starts_with("250"),
        "the brief was refused:\n{}",
        r.dialog
    );
    let brief = wait_delivered(&pf, "the brief", |d| {
        String::from_utf8_lossy(&d.message).contains("Message-ID: <brief.1@agency.gov.au>")
    });
    assert_eq!(brief.recipients(), vec![BOB.to_owned()]);

    // The notice came back through Postfix and markgate, and was delivered to the sender.
    let notice = wait_delivered(&pf, "the sender notice", |d| {
        d.recipients().iter().any(|r| r == ALICE)
            && String::from_utf8_lossy(&d.message).contains(PARTNER)
    });
    assert!(
        notice.mail_args.starts_with("<>"),
        "notice not from <>: {}",
        notice.mail_args
    );
    let subject_line = notice.header("Subject").expect("a subject");
    let unfolded = subject_line.replace("\r\n", "").replace('\n', "");
    assert!(
        unfolded.ends_with("[SEC=PROTECTED, CAVEAT=RI:AUSTEO]"),
        "the notice is not marked like the message it quotes: {unfolded}"
    );
    let text = String::from_utf8_lossy(notice.body()).replace("=\n", "");
    assert!(text.contains("EPMS-NOT-RELEASABLE"), "{text}");

    // Its own decision: outbound, from <>, accepted, no EPMS-UNMARKED.
    let deadline = Instant::now() + WAIT;
    let rec = loop {
        let found = records(&audit).into_iter().find(|r| {
            r["event"] == "message_decision"
                && r["data"]["sender"].as_str().is_some_and(str::is_empty)
                && r["data"]["verdict"] != "reject"
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no decision record for the notice"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec["data"]["direction"], "outbound", "{rec}");
    assert_eq!(rec["data"]["verdict"], "accept", "{rec}");
    assert_eq!(rec["data"]["effective_level"], "PROTECTED", "{rec}");
    assert!(
        !rec.to_string().contains("EPMS-UNMARKED"),
        "the notice hit EPMS-UNMARKED: {rec}"
    );
    let report = markgate::audit::verify_files(&[&audit]);
    assert!(report.ok(), "{report}");
}
